# Benchmarks: what Sampler.sample costs over the executor's own call (the build cache's weight check, the checks).
"""Times, in one process per model: the bare executor call (`exe.sample`), `Sampler.sample` (the same call plus the
argument checks and the build cache's weight check, sampler_cache.py), and the weight check alone
(`same_inputs`: the TF op PixelcnnFastSameVariables comparing each variable in place), right after a sample
call (its caches cold, as in `Sampler.sample`) and back to back; and, right after a sample, the check the op
replaced where it can (its fallback: one concrete-function call reading the variables, one memcmp per array).
Best and median milliseconds.

    python benchmarks/call_overhead.py [models: keras_io,gated_shifted] [batch: 16] [rounds: 15]

Models: split_policies.MODELS (keras_io, gated_shifted, vqvae).
"""

import os
import sys
import time

import numpy as np

from pixelcnn_fast._ext import core

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from split_policies import MODELS  # noqa: E402


def _stats(v):
    return f"best {min(v) * 1e3:6.2f} median {np.median(v) * 1e3:6.2f}"


def main():
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else ["keras_io", "gated_shifted"]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    for name in names:
        sampler = MODELS[name]()
        sampler.sample(n, seed=0)
        cache = sampler._programs
        build = cache.builds[next(iter(cache.builds))]
        exe = build["exe"]
        bare, full, cold, warm, read = [], [], [], [], []
        for r in range(rounds):
            t0 = time.perf_counter()
            exe.sample(n, r, 1.0, 0)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sampler.sample(n, seed=r)
            full.append(time.perf_counter() - t0)
            exe.sample(n, r, 1.0, 0)
            for times in (cold, warm):
                t0 = time.perf_counter()
                assert cache.same_inputs(build, [])
                times.append(time.perf_counter() - t0)
            exe.sample(n, r, 1.0, 0)
            t0 = time.perf_counter()
            assert core().same_bytes([np.ascontiguousarray(a) for a in cache.read_variables()], build["snapshot"])
            read.append(time.perf_counter() - t0)
        path = "the op" if build.get("snapshot_t") is not None else "the concrete function"
        print(f"{name} batch {n}: bare call {_stats(bare)} | Sampler.sample {_stats(full)} | weight check ({path}) "
              f"after a sample {_stats(cold)}, back to back {_stats(warm)} | by the concrete function after a "
              f"sample {_stats(read)} ms", flush=True)


if __name__ == "__main__":
    main()
