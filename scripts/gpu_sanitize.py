"""GPU checks: a small driver for compute-sanitizer (memcheck, racecheck) over the CUDA backend, run by
scripts/gpu_check.sh. Needs CuPy and a GPU, no TensorFlow.

    compute-sanitizer --tool memcheck --error-exitcode 1 python3 scripts/gpu_sanitize.py conv
    compute-sanitizer --tool racecheck --error-exitcode 1 python3 scripts/gpu_sanitize.py sampler

`conv`: each masked-conv function (forward, backprop_input, backprop_filter) once per case on small
arrays -- mask A and B, colour groups 3, dilation 2, valid padding, batch 1, odd sizes, channels past
one tile, taps from the kernel's zeros -- synchronizing after every call and comparing with the CPU core
(loosely: the sanitizer's job is memory and races; tests/test_cuda.py checks the arithmetic).
`sampler`: pixelcnn_fast.cuda.ColumnProgram (when the package has it) on
benchmarks/data/keras_io_program.npz (when present): one sample() and one teacher_forced().

CuPy's memory pool is switched off, so every array is its own cudaMalloc and memcheck sees an access
past an array's end. Exit status: 0 passed, 1 failed, 77 nothing to run here (the reason is printed).
"""

import argparse
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # the checkout's in-place build, when the package is not installed

SKIP = 77
PROGRAM = os.path.join(ROOT, "benchmarks", "data", "keras_io_program.npz")

# (n, h, w, cin, cout, kh, kw, mask, groups, dilation, padding)
CONV_CASES = [
    (1, 5, 7, 3, 6, 3, 3, "A", 3, (1, 1), "same"),
    (1, 7, 9, 6, 9, 5, 5, "B", 3, (2, 2), "same"),
    (2, 9, 11, 4, 5, 3, 3, "A", 1, (2, 2), "valid"),
    (1, 7, 7, 3, 6, 7, 7, "A", 3, (1, 1), "valid"),     # output 1x1
    (3, 6, 5, 19, 45, 7, 7, "B", 1, (1, 1), "same"),    # cin not a multiple of 8, cout > 32
    (1, 1, 1, 3, 2, 5, 5, "B", 1, (1, 1), "same"),      # one pixel
    (1, 5, 8, 6, 3, 3, 1, "B", 3, (2, 1), "valid"),
    (2, 6, 9, 4, 7, 5, 3, None, 1, (2, 1), "same"),     # taps from the kernel's non-zeros (no filter gradient)
]


def log(*args):
    print(*args, flush=True)


def out_hw(h, w, kh, kw, dilation, padding):
    if padding == "same":
        return h, w
    return h - dilation[0] * (kh - 1), w - dilation[1] * (kw - 1)


def check_close(name, got, want):
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-6)
    err = float(np.max(np.abs(got - want), initial=0.0))
    if not np.all(np.isfinite(got)) or err > 1e-4 * scale + 1e-5:
        raise AssertionError(f"{name}: GPU differs from the CPU core by {err:.3e} (scale {scale:.3e})")


def run_conv(cp, cuda, core):
    rng = np.random.default_rng(0)
    sync = cp.cuda.Device().synchronize
    for n, h, w, cin, cout, kh, kw, mask, groups, dilation, padding in CONV_CASES:
        name = f"n{n} {h}x{w} c{cin}->{cout} k{kh}x{kw} mask={mask} groups={groups} dilation={dilation} {padding}"
        x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
        kernel = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32)
        if mask is None:
            kernel[kh // 2 + 1:] = 0.0
            kernel[kh // 2, kw // 2:] = 0.0
        dy = rng.standard_normal((n, *out_hw(h, w, kh, kw, dilation, padding), cout)).astype(np.float32)
        kw_args = dict(color_groups=groups, dilation=dilation, padding=padding)
        xd, kd, dyd = cp.asarray(x), cp.asarray(kernel), cp.asarray(dy)
        sync()
        t = time.perf_counter()
        y = cuda.masked_conv2d_forward(xd, kd, mask, **kw_args)
        sync()
        dx = cuda.masked_conv2d_backprop_input(dyd, kd, (h, w), mask, **kw_args)
        sync()
        if mask is not None:  # the filter gradient needs the mask (it has no kernel to read the taps from)
            dk = cuda.masked_conv2d_backprop_filter(xd, dyd, (kh, kw), mask, **kw_args)
            sync()
        check_close(name + " forward", cp.asnumpy(y), core.masked_conv2d_forward(x, kernel, mask, **kw_args))
        check_close(name + " backprop_input", cp.asnumpy(dx),
                    core.masked_conv2d_backprop_input(dy, kernel, (h, w), mask, **kw_args))
        if mask is not None:
            check_close(name + " backprop_filter", cp.asnumpy(dk),
                        core.masked_conv2d_backprop_filter(x, dy, (kh, kw), mask, **kw_args))
        log(f"conv ok: {name} ({time.perf_counter() - t:.2f} s)")
    return 0


def load_program(path):
    """(spec text, arrays, n): n is the batch the program's constants were made for (their first dimension
    when above 1), else 2."""
    with np.load(path) as data:
        spec = str(data["spec"][()])
        keys = sorted((k for k in data.files if re.fullmatch(r"array_\d+", k)), key=lambda k: int(k[6:]))
        arrays = [np.ascontiguousarray(data[k], np.float32) for k in keys]
    consts = {int(m.group(1)) for m in re.finditer(r"input index=(\d+) kind=const", spec)}
    batches = {a.shape[0] for i, a in enumerate(arrays) if i in consts and a.ndim == 4 and a.shape[0] > 1}
    n = batches.pop() if len(batches) == 1 else 2
    return spec, arrays, n


def run_sampler(cp, cuda):
    if not hasattr(cuda, "ColumnProgram"):
        log("sampler: SKIP: pixelcnn_fast.cuda has no ColumnProgram in this checkout")
        return SKIP
    if not os.path.exists(PROGRAM):
        log(f"sampler: SKIP: no program to run ({os.path.relpath(PROGRAM, ROOT)} is missing)")
        return SKIP
    spec, arrays, n = load_program(PROGRAM)
    head = re.search(r"^head .*$", spec, re.M)
    scale = float(re.search(r"scale=(\S+)", head.group(0)).group(1)) if head else 1.0
    offset = float(re.search(r"offset=(\S+)", head.group(0)).group(1)) if head else 0.0
    log(f"sampler: {os.path.relpath(PROGRAM, ROOT)}: {len(arrays)} arrays, batch {n}")
    sync = cp.cuda.Device().synchronize
    t = time.perf_counter()
    program = cuda.ColumnProgram(spec, arrays, n)
    levels, margins = program.sample(n, seed=7, temperature=1.0)
    sync()
    levels_h, margins_h = cp.asnumpy(levels), cp.asnumpy(margins)
    if levels_h.ndim != 4 or levels_h.shape[0] != n or levels_h.dtype != np.int32:
        raise AssertionError(f"sample: levels {levels_h.shape} {levels_h.dtype}, expected ({n}, H, W, C) int32")
    if not np.all(np.isfinite(margins_h)):
        raise AssertionError("sample: non-finite margins")
    log(f"sampler ok: sample {levels_h.shape} ({time.perf_counter() - t:.2f} s)")
    t = time.perf_counter()
    image = levels.astype(cp.float32) * np.float32(scale) + np.float32(offset)
    head_values = program.teacher_forced(image)
    sync()
    values = cp.asnumpy(head_values)
    if values.shape[:3] != levels_h.shape[:3] or not np.all(np.isfinite(values)):
        raise AssertionError(f"teacher_forced: head values {values.shape}, finite={np.all(np.isfinite(values))}")
    log(f"sampler ok: teacher_forced {values.shape} ({time.perf_counter() - t:.2f} s)")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["conv", "sampler", "all"], nargs="?", default="all")
    args = ap.parse_args(argv)
    import pixelcnn_fast.cuda as cuda
    from pixelcnn_fast import _core as core

    log(f"pixelcnn_fast from {os.path.dirname(cuda.__file__)}; build {cuda.build_info()}")
    reason = cuda.unavailable_reason()
    if reason is not None:
        log(f"SKIP: the CUDA backend cannot run here: {reason}")
        return SKIP
    import cupy as cp

    cp.cuda.set_allocator(None)  # plain cudaMalloc per array: memcheck sees the arrays' real bounds
    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
    log(f"device: {name.decode() if isinstance(name, bytes) else name}")
    results = []
    if args.part in ("conv", "all"):
        results.append(run_conv(cp, cuda, core))
    if args.part in ("sampler", "all"):
        results.append(run_sampler(cp, cuda))
    if any(r not in (0, SKIP) for r in results):
        return 1
    return SKIP if all(r == SKIP for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
