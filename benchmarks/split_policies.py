# Benchmarks: the CPU executor's thread policies (csrc/core/column_split.cc) compared in one process.
"""Times one ColumnProgram.sample call per policy, interleaved round by round in the same process, on the
bench_sampler models at their benchmark sizes: "never" (one thread per image: the executor before the position
split), "auto" (the product: split each position when there are fewer images than threads, falling back to one
thread when that is slower) and "always" (split every row, never falling back). Prints the best and median
milliseconds per policy, never/auto, and the machine's load average before and after (the split needs every
thread on a core of its own: on a busy machine "always" is far slower and "auto" falls back), and before each line
what a two-thread meeting costs then (`testing.barrier_ns`): on this VM it flips between ~65 and ~350-600 ns within
seconds, and the split pays only at the low end.

    python benchmarks/split_policies.py [models: keras_io,gated_shifted,vqvae] [batches: 1,4,16] [rounds: 7]
    python benchmarks/split_policies.py keras_io 1 --by-meeting 80

--by-meeting S: for S seconds per model and batch, blocks of 4 calls per policy (interleaved call by call, with an
idle 0.5 s before every third block: the host re-places the vCPUs), each block filed by the meeting cost measured
before and after it (both <= 150 ns, both > 180 ns, or changed); prints each policy's median per kind of block.

Threads: the module pool's (_core.set_num_threads; default every core).
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from fixtures import seed_models, zoo_models  # noqa: E402
from pixelcnn_fast import _core  # noqa: E402
from pixelcnn_fast._core import testing  # noqa: E402
from pixelcnn_fast.sampler import Sampler  # noqa: E402

MODELS = {
    "keras_io": lambda: Sampler(seed_models.keras_io(full=True).model, head="bernoulli"),
    "gated_shifted": lambda: Sampler(zoo_models.gated_shifted(height=28, width=28, filters=64, layers=7, levels=256,
                                                                seed=0).model, head="categorical",
                                     value_map="level/(N-1)"),
    "vqvae": lambda: Sampler(zoo_models.vqvae_prior(full=True, seed=0).model, head="categorical"),
}
POLICIES = ("never", "auto", "always")


def by_meeting(exe, n, seconds):
    """Medians per policy over blocks filed by the two-thread meeting's cost around them (see the module doc)."""
    kinds = {}
    end, block = time.time() + seconds, 0
    while time.time() < end:
        if block % 3 == 2:
            time.sleep(0.5)
        ns0 = testing.barrier_ns(2, 5000)
        times = {p: [] for p in POLICIES}
        for r in range(4):
            for p in POLICIES:
                testing.set_position_split(p)
                t0 = time.perf_counter()
                exe.sample(n, r, 1.0, 0)
                times[p].append(time.perf_counter() - t0)
        ns1 = testing.barrier_ns(2, 5000)
        kind = "<= 150 ns" if max(ns0, ns1) <= 150 else "> 180 ns" if min(ns0, ns1) > 180 else "changed"
        for p, v in times.items():
            kinds.setdefault(kind, {}).setdefault(p, []).extend(v)
        block += 1
    for kind, times in sorted(kinds.items()):
        row = "  ".join(f"{p} {np.median(v) * 1e3:7.2f}" for p, v in times.items())
        print(f"  meetings {kind:9s} ({len(times['auto']) // 4:3d} blocks): median ms {row}", flush=True)


def main():
    seconds = None
    if "--by-meeting" in sys.argv:
        k = sys.argv.index("--by-meeting")
        seconds = float(sys.argv[k + 1])
        del sys.argv[k:k + 2]
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(MODELS)
    batches = [int(b) for b in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["1", "4", "16"])]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    print(f"threads {_core.get_num_threads()}, load average {os.getloadavg()}")
    before = testing.set_position_split("auto")
    try:
        for name in names:
            sampler = MODELS[name]()
            for n in batches:
                exe = sampler.executor(n, [])
                exe.sample(n, 0, 1.0, 0)
                if seconds is not None and _core.get_num_threads() >= 2:
                    print(f"{name:14s} batch {n:3d}, {seconds:.0f} s:", flush=True)
                    by_meeting(exe, n, seconds)
                    continue
                meeting_ns = testing.barrier_ns(2, 20000) if _core.get_num_threads() >= 2 else float("nan")
                times = {p: [] for p in POLICIES}
                for r in range(rounds):
                    for p in POLICIES:
                        testing.set_position_split(p)
                        t0 = time.perf_counter()
                        exe.sample(n, r, 1.0, 0)
                        times[p].append(time.perf_counter() - t0)
                row = "  ".join(f"{p} {min(v) * 1e3:7.2f} (median {np.median(v) * 1e3:7.2f})" for p, v in times.items())
                print(f"{name:14s} batch {n:3d}: {row} ms; never/auto {min(times['never']) / min(times['auto']):.2f}x; "
                      f"a meeting {meeting_ns:.0f} ns before", flush=True)
    finally:
        testing.set_position_split(before)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
