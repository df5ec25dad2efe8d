# Benchmarks: fused epilogues on programs on grids (PixelCNN++ U-net, tfd.PixelCNN), fused vs unfused in one process.
"""The CPU executor's epilogue fusion on grids (docs/SAMPLER.md, "Fused epilogues"), as a ratio measured in one
process: the same built program sampled with fusion on and off (pixelcnn_fast._core.testing.set_epilogue_fusion),
rounds interleaved so that load from other processes falls on both alike, and the achieved GFLOP/s (executed
multiply-adds per image x 2 x n / time) against the float32 GEMM peak measured in the same run
(benchmarks/conftest.py's NumPy and TF GEMMs).

    PIXELCNN_FAST_SKIP_WHEEL_TEST=1 python benchmarks/grid_fusion_ab.py [models] [batches] [rounds]

models: a comma list of pixelcnn_pp_unet (bench_sampler.py's: 32x32x3, 3 resolutions, 64 filters, 2 resnets,
K = 10) and tfp16 / tfp32 (tfd.PixelCNN, 32 filters, 3 hierarchies; needs the tfp extra); batches default 1,16.
Before timing, the fused and unfused programs must draw the same levels for the seed and agree bit for bit in
teacher forcing (as tests/test_epilogue_fusion.py checks on small cases).
"""

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # this checkout's build, not an installed pixelcnn_fast
sys.path.append(str(_HERE.parent / "tests"))

from fixtures import mixture_models, zoo_unet  # noqa: E402

from pixelcnn_fast import _core  # noqa: E402
from pixelcnn_fast._core import testing as core_testing  # noqa: E402
from pixelcnn_fast.sampler import Sampler  # noqa: E402


def _conftest():
    spec = importlib.util.spec_from_file_location("bench_conftest", _HERE / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sampler_of(model_id):
    if model_id == "pixelcnn_pp_unet":
        sm = mixture_models.as_seed_model(zoo_unet.pixelcnn_pp_unet(
            height=32, width=32, channels=3, filters=64, resnets=2, nr_mix=10, seed=0).model)
        return Sampler(sm.model, head=sm.head, levels=sm.levels, value_map=sm.value_map)
    size = {"tfp16": 16, "tfp32": 32}[model_id]
    why = zoo_unet.tfp_available()
    if why:
        raise SystemExit(why)
    z = zoo_unet.tfp_pixelcnn(height=size, width=size, channels=3, hierarchies=3, filters=32, resnets=2, nr_mix=5,
                              seed=0)
    return Sampler(z.dist)


def main():
    models = (sys.argv[1] if len(sys.argv) > 1 else "pixelcnn_pp_unet,tfp16").split(",")
    batches = [int(b) for b in (sys.argv[2] if len(sys.argv) > 2 else "1,16").split(",")]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    conf = _conftest()
    peak = max(list(conf.measure_numpy_peak().values()) + list(conf.measure_tf_peak().values()))
    print(f"{_core.__file__}: GEMM peak measured now {peak:.1f} GFLOP/s; {_core.get_num_threads()} threads")
    for model_id in models:
        sampler = sampler_of(model_id)
        for n in batches:
            sampler.executor(n, [])
            spec, arrays = sampler.last_spec
            programs = {}
            for fused in (True, False):
                p = _core.ColumnProgram.from_spec(spec, arrays, 0)
                core_testing.set_epilogue_fusion(p, fused)
                programs[fused] = p
            fused_steps = sum(k >= 0 for k in core_testing.fused_into(programs[True]))
            h, w, c = programs[True].image_shape
            x = np.random.default_rng(0).uniform(-1, 1, (n, h, w, c)).astype(np.float32)
            assert np.array_equal(programs[True].teacher_forced(x), programs[False].teacher_forced(x))
            assert np.array_equal(programs[True].sample(n, 7, 1.0)[0], programs[False].sample(n, 7, 1.0)[0])
            times = {True: [], False: []}
            for _ in range(rounds):
                for fused in (True, False):
                    t0 = time.perf_counter()
                    programs[fused].sample(n, 7, 1.0)
                    times[fused].append(time.perf_counter() - t0)
            flops = 2 * programs[True].executed_macs_per_image() * n
            med = {f: float(np.median(t)) for f, t in times.items()}
            cache = {f: programs[f].cache_floats_per_image() * 4 / 1e6 for f in (True, False)}
            steps = len(core_testing.fused_into(programs[True]))
            print(f"{model_id} batch {n}: fused {med[True] * 1e3:.1f} ms ({flops / med[True] / 1e9:.1f} GFLOP/s, "
                  f"{100 * flops / med[True] / 1e9 / peak:.1f}% of peak), unfused {med[False] * 1e3:.1f} ms "
                  f"({100 * flops / med[False] / 1e9 / peak:.1f}%): {med[False] / med[True]:.2f}x; {fused_steps} "
                  f"of {steps} steps fused; cache {cache[True]:.2f} MB vs {cache[False]:.2f} MB per image; medians "
                  f"of {rounds} interleaved rounds", flush=True)


if __name__ == "__main__":
    main()
