# Benchmarks: the one command — every suite in one pytest process (one GEMM peak), then the report, plot and README table.
"""Runs the whole benchmark suite and writes its report.

    .venv/bin/python benchmarks/run.py            # ~13 minutes on 2 cores

1. pytest benchmarks/bench_masked_conv.py benchmarks/bench_sampler.py benchmarks/bench_training.py
   in one process, so every row shares the GEMM peak measured at its start (benchmarks/conftest.py)
   and the machine's state; JSON to benchmarks/results.json (--json).
2. benchmarks/report.py on that JSON: benchmarks/REPORT.md (tables, per-layer share, every goal
   met / not met / not measured), benchmarks/sampler_speedup.png (speedup vs batch + where the time
   goes), and the README's speed section between its benchmarks markers (--no-readme to leave it).

Each benchmark checks its result against a reference before it is timed, so a wrong fast path fails
the run instead of posting a number. Extra arguments go to pytest (e.g. -k "keras_io").
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SUITES = ("bench_masked_conv.py", "bench_sampler.py", "bench_training.py")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"), help="pytest-benchmark JSON to write")
    ap.add_argument("--report", default=os.path.join(HERE, "REPORT.md"), help="markdown report to write")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite README.md's speed section")
    args, pytest_args = ap.parse_known_args(argv)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--benchmark-json", args.json,
           "--benchmark-columns=mean,median,stddev,rounds"] + [os.path.join(HERE, s) for s in SUITES] + pytest_args
    print("+ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    bench_s = time.perf_counter() - start
    if rc != 0:
        print("benchmarks failed (pytest exit %d): no report written" % rc, file=sys.stderr)
        return rc
    report = [sys.executable, os.path.join(HERE, "report.py"), args.json, args.report]
    if not args.no_readme:
        report += ["--readme", os.path.join(ROOT, "README.md")]
    rc = subprocess.call(report, cwd=ROOT)
    print("benchmarks: %.1f min (suites), %.1f min in all" % (bench_s / 60, (time.perf_counter() - start) / 60),
          file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
