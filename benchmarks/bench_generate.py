# Benchmarks: dataset generation throughput (images/s): the Beam pipeline with 1 and 2 workers vs Sampler.sample in one process, one run.
"""Generation throughput, measured in one run on one machine (README, "Generate a dataset").

    PYTHONPATH=. python benchmarks/bench_generate.py [--n 512] [--shard-size 64] [--model PATH.keras]

(with apache-beam installed: pip install -e ".[beam]"). Three ways to draw the same n images of the bundled
model (seed 0), each reported as images/s:

  * sample      Sampler.sample in this process, one call per shard (image_offset = shard start): the
                executor alone; also the achieved GFLOP/s (executed multiply-adds of the live taps) against
                the float32 GEMM peak (NumPy or TensorFlow) reached in this run.
  * beam 1 / 2  `pixelcnn-fast generate --workers 1|2` in a fresh process each (DirectRunner; 2 workers:
                multi_processing): everything a user waits for (TensorFlow import, Beam's start, one model
                load per worker in DoFn.setup, sampling, TFRecord + PNG encoding, the manifest), from the
                command's start to its exit, and the pipeline alone (the command's own clock, after its
                imports).

The shards the two pipelines write are checked byte-identical. The machine is shared: say what else ran.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def gemm_peak_gflops():
    """The best float32 square-GEMM rate of NumPy's BLAS and TensorFlow's matmul in this process now:
    benchmarks/conftest.py's measurement (the pytest suites' gemm_peak_gflops fixture), called directly."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import conftest

    rates = list(conftest.measure_numpy_peak().values()) + list(conftest.measure_tf_peak().values())
    return max(rates)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    from pixelcnn_fast import models
    from pixelcnn_fast.sampler import Sampler

    model_path = args.model or models.bundled_model_path()
    sampler = Sampler(models.load_model(model_path))
    h, w, c = sampler.program.image_shape
    n, size = args.n, args.shard_size
    sampler.sample(min(size, n), 0)  # warm: the first call builds the program
    start = time.perf_counter()
    for first in range(0, n, size):
        sampler.sample(min(size, n - first), 0, image_offset=first)
    seconds = time.perf_counter() - start
    exe = sampler.executor(min(size, n), [])
    flops = 2.0 * exe.executed_macs_per_position() * h * w * n
    peak = gemm_peak_gflops()
    print(f"sample (this process, {-(-n // size)} calls of <= {size}): {n / seconds:.1f} images/s "
          f"({seconds:.2f} s; {flops / seconds / 1e9:.1f} GFLOP/s = {100 * flops / seconds / 1e9 / peak:.0f}% "
          f"of the {peak:.0f} GFLOP/s float32 GEMM peak measured now)")

    root = tempfile.mkdtemp(prefix="bench_generate_")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    outputs = []
    try:
        for workers in (1, 2):
            out = os.path.join(root, f"w{workers}")
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "pixelcnn_fast.cli", "generate", "--model", model_path,
                                   "--n", str(n), "--shard-size", str(size), "--out", out, "--workers", str(workers)],
                                  env=env, capture_output=True, text=True)
            total = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"generate --workers {workers} failed:\n{proc.stderr[-3000:]}")
            inner = float(re.search(r"in ([0-9.]+) s, Beam", proc.stdout).group(1))
            print(f"beam, {workers} worker(s): {n / total:.1f} images/s from command start to exit ({total:.1f} s), "
                  f"{n / inner:.1f} images/s for the pipeline itself ({inner:.1f} s)")
            outputs.append({f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out))
                            if f.endswith(".tfrecord")})
        print(f"shards byte-identical between 1 and 2 workers: {outputs[0] == outputs[1]}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
