# Benchmarks: the sampler's GEMM row tiles and categorical draw, and the sampler's rate per CPU-second, in one process.
"""Where the cached sampler's small-M GEMM and its draw stand against the GEMM microkernel's own rate.

    .venv/bin/python benchmarks/kernel_rates.py [--models gated_shifted,gated_masked,pixelcnn_pp,keras_io]
                                                [--batch 16] [--isa avx512]

Prints, all measured in this process (docs/KERNELS.md, "Row tiles" and "The categorical draw", quote it):

1. `gemm` GFLOP/s (one thread, _core.testing.gemm, per thread CPU-second, packing excluded) for every row count M = 1..17 at the sampler's
   shapes (K = 384 and 640, N = 128: the gated models' 5x5 vertical conv and keras.io's 3x3 B), and at M = 600 (the
   conv drivers' large blocks): the per-core reference rate; then keras.io's convs as the sampler runs them (a
   batch-1 split thread's window, batch 16's 8 rows per thread) with B streamed from L2 and from L3.
2. CPU ns per 256-level logits draw: philox.h's scalar draw and each build's vectorised draw_logits.
3. Per model: one sample call's FLOPs (live MACs, as bench_sampler counts them) over the process CPU seconds it
   took (best of 3), against (1)'s per-core rate. CPU seconds, not wall time: on this shared 2-core machine the
   sampler's threads wait for the CPU, and wall-clock % of peak then measures the neighbours (the CPU-time
   fraction of the call's wall time is printed as "busy").
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(1, HERE)
sys.path.insert(1, os.path.join(os.path.dirname(HERE), "tests"))

from pixelcnn_fast import _core  # noqa: E402
from pixelcnn_fast._core import testing  # noqa: E402


def gemm_rate(isa, m, k, n, rng, window=False, footprint_kb=0):
    """GFLOP/s of one thread's gemm; window: B packed as a batch-1 split window; footprint_kb: the timed calls
    cycle through copies of B taking about that much memory (0: one copy)."""
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    reps = max(3, int(2e8 / (m * k * n)))
    copies = max(1, int(footprint_kb * 1024 / (4 * k * max(n, 16))))
    best = min(testing.gemm(isa, a, b, None, 0, reps, window, copies)[1] for _ in range(5))
    return 2 * m * k * n / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gated_shifted,gated_masked,pixelcnn_pp,keras_io")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--isa", default=_core.isa())
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"isa {args.isa}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    peak = gemm_rate(args.isa, 600, 512, 256, rng)
    print(f"\n1. gemm, one thread, GFLOP/s (M = 600, K = 512, N = 256: {peak:.0f})")
    for k in (384, 640):
        rates = "  ".join(f"{m}:{gemm_rate(args.isa, m, k, 128, rng):.0f}" for m in range(1, 18))
        print(f"   K = {k}, N = 128, by M: {rates}")
    # The sampler streams each step's weights once per position: from L2 when a thread's share fits its 1 MB, else
    # from L3 (keras.io's 1.45 MB of live weights at batch 16; each split thread's half at batch 1).
    print("   the sampler's shapes with B from L2 (~700 KB of copies) / L3 (~8 MB):")
    for label, m, k, n, window in (("batch-1 split window, keras.io 3x3 (2 vectors)", 1, 640, 32, True),
                                   ("batch-1 split window, keras.io 1x1 (4 vectors)", 1, 128, 64, True),
                                   ("batch 16 on 2 threads (8 rows), keras.io 3x3", 8, 640, 64, False),
                                   ("batch 16 on 2 threads (8 rows), keras.io 1x1", 8, 128, 128, False)):
        l2, l3 = (gemm_rate(args.isa, m, k, n, rng, window, kb) for kb in (700, 8000))
        print(f"   {label}: M = {m}, K = {k}, N = {n}: {l2:.0f} / {l3:.0f}")

    print("\n2. one 256-level logits draw, ns")
    z = (rng.standard_normal((20000, 256)) * 3).astype(np.float32)
    u = rng.random(20000, dtype=np.float32)
    for isa in ["scalar"] + list(_core.supported_isas()):
        best = 1e9
        for _ in range(5):
            t0 = time.thread_time()  # CPU time of this thread: the draws run on it
            testing.draw_levels(z, "logits", 1.0, u, isa=isa)
            best = min(best, time.thread_time() - t0)
        print(f"   {isa:8s} {best / len(u) * 1e9:6.0f}")

    if not args.models:
        return
    import bench_sampler as bs
    from pixelcnn_fast import Sampler

    print(f"\n3. sampler, batch {args.batch}: GFLOP per process CPU-second vs the per-core gemm rate {peak:.0f}")
    for mid in args.models.split(","):
        sm = bs.MODEL_SPECS[mid].make()  # read as bench_sampler reads a seed model
        subclassed = not getattr(sm.model, "inputs", None)
        s = Sampler(sm.model, head=sm.head, levels=sm.levels, value_map=sm.value_map,
                    image_shape=tuple(sm.image_shape) if subclassed else None)
        exe = s.executor(args.batch, [])
        h, w, _ = s.program.image_shape
        flops = 2 * exe.macs_per_position() * h * w * args.batch
        s.sample(args.batch, 7)
        runs = []
        for _ in range(3):
            c0, t0 = time.process_time(), time.perf_counter()
            s.sample(args.batch, 7)
            runs.append((time.process_time() - c0, time.perf_counter() - t0))
        cpu, wall = min(runs)
        print(f"   {mid:14s} {flops / 1e9:6.2f} GFLOP  CPU {cpu * 1e3:7.1f} ms  wall {wall * 1e3:7.1f} ms "
              f"(busy {cpu / wall / os.cpu_count() * 100:3.0f}%)  {flops / cpu / 1e9:6.1f} GFLOP/s per CPU-s = "
              f"{flops / cpu / 1e9 / peak * 100:5.1f}% of the per-core rate", flush=True)


if __name__ == "__main__":
    main()
