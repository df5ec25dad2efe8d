# Benchmarks (GPU, issue 7): one command -> masked conv vs cuDNN, CUDA sampler vs PyTorch naive loops, measured ceilings; JSON + markdown report.
"""GPU benchmarks in one run on one device, reported with the device's name (issue 7; docs/SEMANTICS.md, "How speed is
shown": ratios measured in the same run, achieved rates against ceilings measured in the same run).

    python benchmarks/bench_cuda.py [--quick] [--out DIR]      # on the GPU machine (torch + CuPy, no TF)
    python benchmarks/bench_cuda.py --dry-run                  # anywhere with torch: CPU stand-ins, tiny sizes
    python benchmarks/bench_cuda.py --render DIR/results.json  # re-render the report from a results file

Needs torch (with CUDA and cuDNN), CuPy and pixelcnn_fast's CUDA module (pixelcnn_fast._cuda, built in place
with nvcc) on the GPU machine; not TensorFlow (pixelcnn_fast imports its TF parts lazily, so _core, _cuda and
pixelcnn_fast.cuda import without it) and not pytest. Writes DIR/results.json (every number) and DIR/REPORT.md (default DIR:
benchmarks/gpu/). Exit status 0 when everything ran and every correctness check passed (goals may be NOT MET:
that is a result, not an error), 1 when a check failed or a section broke, 2 when there is no GPU (nothing
measured; --dry-run exits 0 after its CPU run).

What is measured (all on one CUDA stream, torch's current one, which our kernels are given explicitly):

1. Ceilings: float32 GEMM (torch.mm, 8192^3) with TF32 off and with TF32 on, and device copy bandwidth
   (Tensor.copy_ of 1 GiB, read + write bytes counted); each the best of its repetitions.
2. Masked conv at the keras.io training shapes (7x7 mask A 1->128 and 3x3 mask B 128->64, 28x28, batch 128,
   'same'): ours = pixelcnn_fast.cuda.masked_conv2d_forward / _backprop_input / _backprop_filter on CuPy views
   (DLPack) of NHWC tensors, out= buffers preallocated; cuDNN = torch F.conv2d and
   aten.convolution_backward (what autograd calls) on the masked dense kernel, in NCHW and in NHWC
   (channels_last), torch.backends.cudnn.benchmark on (cuDNN picks its fastest algorithm during the warm-up).
   Passes fwd, bwd_input, bwd_filter and fwd+bwd (all three, as benchmarks/bench_masked_conv.py's fwd+bwd).
   Each with TF32 off and on (cuDNN's convolutions use TF32 tensor cores when allowed; our kernels are plain
   float32 FMA either way). Before any timing: ours and cuDNN (TF32 off) against a float64 cuDNN computation of
   the same data with the project's tolerance rule (tests/conftest.py: error <= 3 x the float32 reference's error
   + 8 eps x scale), and our filter gradient exactly 0 at every dead tap. Timing: CUDA events around `inner`
   back-to-back calls (inner chosen so one repetition takes >= ~2 ms), after warm-up; the median over the
   repetitions is reported (mean, sd too). GFLOP/s count live taps for ours (24 of 49, 5 of 9) and every tap
   for cuDNN (it multiplies the zeros); "dense-equivalent" GFLOP/s (dense FLOPs / time) compares both on one
   yardstick. GB/s counts the minimum traffic of a pass (read the operands once, write the result once).
   Goals (TF32 off, fwd+bwd, against the faster cuDNN layout): >= 1.5x (7x7 A), >= 1.3x (3x3 B).
3. Sampler on the bundled trained keras.io model (benchmarks/data/keras_io_program.npz, written by
   scripts/export_program.py): the CUDA cached sampler pixelcnn_fast.cuda.ColumnProgram(spec, arrays, n).sample
   vs benchmarks/torch_program.py's naive loops on the same weights (cuDNN forwards, TF32 off): "full" re-runs
   the whole image once per pixel (784 forwards), "rows" only rows 0..i (naive.py's "rows"). Batches 1, 16, 64,
   256. Before timing: the PyTorch interpreter's and the CUDA sampler's teacher forcing against Keras' logits
   (teacher_logits in the npz; |err| <= 1e-5 (max |logit| + 1), tests/test_sampler.py's rule), the CUDA sampler
   against a complete naive rows run (n = 4, same seed: same images up to draws within rounding of a CDF
   boundary, tests/sampling_checks.py's rule) and against the CPU core's sampler where pixelcnn_fast._core is
   built, and the CUDA sampler deterministic. Timing: the CUDA sampler's call including the wait for its result
   (wall clock, the median of its repetitions; CUDA-event time recorded too); the program is built once per
   batch size (its build time recorded apart). The naive loops are timed as benchmarks/bench_sampler.py times
   TF's, extrapolated from counted steps:
     full: K steps (K from a 2-step probe so one round takes ~NAIVE_SECONDS; all 784 when that fits) per round,
           full-image time = seconds x 784 / K (every step runs the same forward, so its cost is constant);
     rows: the loop's own steps at rows 0, 9, 18, 27 (k columns each, from the image the CUDA sampler drew),
           the cost per step interpolated linearly in the row and summed over every row and column; plus one
           real row-0 loop whose time per step is recorded next to the interpolated c(0).
   The first run of each new input shape (cuDNN autotuning, each crop height in "rows") is excluded, as
   naive.py excludes tf.function tracing. Every naive run's draws must agree with the CUDA sampler's.
   GFLOP/s of the CUDA sampler: 2 x live multiply-adds per position (dead taps not counted, border taps counted)
   x 784 x n / time, against the TF32-off GEMM ceiling. Goals: >= 500x faster than the naive full-image loop at
   batch 64, and a batch of 64 in < 10 ms on an H100.
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.append(HERE)  # torch_program (when imported as a module, e.g. by the tests)
if ROOT not in sys.path:
    sys.path.append(ROOT)  # the checkout's pixelcnn_fast when it is not installed

import importlib  # noqa: E402
import torch_program as tp  # noqa: E402

NPZ_DEFAULT = os.path.join(HERE, "data", "keras_io_program.npz")
OUT_DEFAULT = os.path.join(HERE, "gpu")
EPS32 = float(np.finfo(np.float32).eps)
K_FACTOR, ATOL_ULPS = 3.0, 8.0  # tests/conftest.py's tolerance rule
TF_TOL = 1e-5  # tests/test_sampler.py's teacher-forcing rule
SEED = 7

CONV_SHAPES = (
    dict(id="kerasio_7x7A", label="keras.io 7x7 A 1->128", kh=7, kw=7, cin=1, cout=128, mask="A", n=128, h=28,
         w=28, goal=1.5),
    dict(id="kerasio_3x3B", label="keras.io 3x3 B 128->64", kh=3, kw=3, cin=128, cout=64, mask="B", n=128, h=28,
         w=28, goal=1.3),
)
CONV_PASSES = ("fwd", "bwd_input", "bwd_filter", "fwd+bwd")
SAMPLER_BATCHES = (1, 16, 64, 256)
SAMPLER_GOAL_BATCH, SAMPLER_GOAL_RATIO, SAMPLER_GOAL_MS = 64, 500.0, 10.0
ROWS_POINTS = 4

# Sizes per mode: the default must finish in ~4 minutes on an H100 (scripts/gpu_check.sh runs it).
SETTINGS = {
    "full": dict(gemm_n=8192, gemm_reps=10, copy_mib=1024, copy_reps=20, conv_reps=25, conv_rep_s=0.002,
                 conv_warmup=5, conv_batch=None, cached_reps=20, naive_seconds=1.0, naive_rounds=3,
                 naive_min_steps=8, small_case_n=4, small_case_steps=None, batches=SAMPLER_BATCHES),
    "quick": dict(gemm_n=8192, gemm_reps=4, copy_mib=512, copy_reps=8, conv_reps=10, conv_rep_s=0.002,
                  conv_warmup=3, conv_batch=None, cached_reps=8, naive_seconds=0.3, naive_rounds=2,
                  naive_min_steps=8, small_case_n=4, small_case_steps=None, batches=SAMPLER_BATCHES),
    # CPU stand-ins at tiny sizes: exercises every code path except the GPU's (see --dry-run).
    "dry-run": dict(gemm_n=256, gemm_reps=2, copy_mib=16, copy_reps=2, conv_reps=2, conv_rep_s=0.0,
                    conv_warmup=1, conv_batch=2, cached_reps=2, naive_seconds=0.05, naive_rounds=1,
                    naive_min_steps=2, small_case_n=2, small_case_steps=56, batches=(1, 2)),
}


def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------- environment

def set_tf32(torch, on):
    """TF32 for cuBLAS matmuls and cuDNN convolutions, with the API this torch has (mixing the legacy
    allow_tf32 flags with the fp32_precision ones is an error in recent torch)."""
    if _new_tf32_api(torch):
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
        torch.backends.cudnn.conv.fp32_precision = "tf32" if on else "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def _new_tf32_api(torch):
    return (hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")
            and hasattr(torch.backends.cudnn.conv, "fp32_precision"))


def tf32_state(torch):
    if _new_tf32_api(torch):
        return {"matmul": torch.backends.cuda.matmul.fp32_precision, "cudnn_conv": torch.backends.cudnn.conv.fp32_precision}
    return {"matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
            "cudnn_conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"}


def _cmd(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20, cwd=ROOT).stdout.strip()
    except Exception:
        return ""


def environment(torch, cuda):
    """Device, driver, toolkit and library versions, and what of pixelcnn_fast is usable."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "numpy": np.__version__,
           "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": _cmd(["git", "rev-parse", "--short=12", "HEAD"]),
           "dirty": bool(_cmd(["git", "status", "--porcelain", "--untracked-files=no"]))}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), capability="%d.%d" % (props.major, props.minor),
                   sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2 ** 30, 1),
                   cudnn=torch.backends.cudnn.version())
        smi = _cmd(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit",
                    "--format=csv,noheader"])
        if smi:
            env["nvidia_smi"] = smi.splitlines()[0]
            env["driver"] = smi.splitlines()[0].split(",")[1].strip()
    else:
        env.update(device="none (no CUDA device visible to torch)", cpu=platform.processor() or platform.machine(),
                   cpu_count=os.cpu_count())
    try:
        import cupy

        env["cupy"] = cupy.__version__
        if cuda:
            env["cuda_driver_api"] = cupy.cuda.runtime.driverGetVersion()
            env["cuda_runtime_cupy"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as exc:  # CuPy missing or broken: our kernels cannot run, the baselines still can
        env["cupy"] = "unavailable: %s" % exc
    try:
        env["pixelcnn_fast_build"] = importlib.import_module("pixelcnn_fast._ext").build_info()
    except Exception as exc:
        env["pixelcnn_fast_build"] = "unavailable: %s: %s" % (type(exc).__name__, exc)
    env["pixelcnn_fast_import"] = os.path.dirname(importlib.import_module("pixelcnn_fast").__file__)
    return env


def load_ours(cuda):
    """(pixelcnn_fast.cuda or None, reason it cannot run or None, has the CUDA sampler API, _core or None)."""
    core = None
    try:
        core = importlib.import_module("pixelcnn_fast._core")
    except Exception:
        core = None
    try:
        mod = importlib.import_module("pixelcnn_fast.cuda")
    except Exception as exc:
        return None, "pixelcnn_fast.cuda cannot be imported: %s: %s" % (type(exc).__name__, exc), False, core
    try:
        reason = mod.unavailable_reason() if cuda else "no CUDA device"
    except Exception as exc:  # e.g. the package was never built here (no _build_info)
        reason = "pixelcnn_fast.cuda cannot tell whether it can run: %s: %s" % (type(exc).__name__, exc)
    return mod, reason, hasattr(mod, "ColumnProgram"), core


# ----------------------------------------------------------------------------- timing

class Clock:
    """Times calls on the device: CUDA events on the current stream (GPU) or perf_counter (CPU dry run)."""

    def __init__(self, torch, cuda):
        self.torch, self.cuda = torch, cuda

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def wall(self, fn):
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def calls(self, fn, warmup, reps, rep_s=0.0, inner=None):
        """Seconds per call of fn, one value per repetition (each the mean of `inner` back-to-back calls)."""
        for _ in range(warmup):
            fn()
        if inner is None:
            one = self.wall(fn)
            inner = max(1, min(200, int(math.ceil(rep_s / max(one, 1e-7)))))
        times = []
        for _ in range(reps):
            if self.cuda:
                start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(inner):
                    fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3 / inner)
            else:
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                times.append((time.perf_counter() - t0) / inner)
        return times, inner


def stats(times):
    t = np.asarray(times, np.float64)
    mean = float(t.mean())
    return dict(median_s=float(np.median(t)), mean_s=mean, min_s=float(t.min()),
                sd_pct=float(100 * t.std(ddof=1) / mean) if t.size > 1 and mean > 0 else 0.0, reps=int(t.size),
                times_s=[float(v) for v in t])


# ----------------------------------------------------------------------------- 1. ceilings

def ceilings(torch, clock, dev, st):
    out = {}
    n = st["gemm_n"]
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    c = torch.empty(n, n, device=dev)
    for name, on in (("gemm_fp32", False), ("gemm_tf32", True)):
        set_tf32(torch, on)
        times, inner = clock.calls(lambda: torch.mm(a, b, out=c), warmup=2, reps=st["gemm_reps"], inner=1)
        s = stats(times)
        flops = 2.0 * n ** 3
        out[name] = dict(n=n, tf32=on, tf32_state=tf32_state(torch), gflops=flops / s["min_s"] / 1e9,
                         gflops_median=flops / s["median_s"] / 1e9, **s)
        log("  %s %d^3: %.1f GFLOP/s (best), %.1f (median)" % (name, n, out[name]["gflops"], out[name]["gflops_median"]))
    set_tf32(torch, False)
    del a, b, c
    nbytes = st["copy_mib"] * 2 ** 20
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).fill_(1.0)
    dst = torch.empty_like(src)
    times, _ = clock.calls(lambda: dst.copy_(src), warmup=2, reps=st["copy_reps"], inner=1)
    s = stats(times)
    out["copy"] = dict(bytes=nbytes, counted="read + write (2 x bytes)", gbps=2 * nbytes / s["min_s"] / 1e9,
                       gbps_median=2 * nbytes / s["median_s"] / 1e9, **s)
    log("  copy %d MiB: %.0f GB/s (best, read + write)" % (st["copy_mib"], out["copy"]["gbps"]))
    del src, dst
    if clock.cuda:
        torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- 2. masked conv

def tap_mask(kh, kw, mask):
    """(kh, kw) 0/1: rows above and left of the centre (+ the centre for B); written here independently of
    pixelcnn_fast.masks, as benchmarks/bench_masked_conv.py does."""
    m = np.zeros((kh, kw), np.float32)
    m[:kh // 2, :] = 1
    m[kh // 2, :kw // 2] = 1
    if mask.upper() == "B":
        m[kh // 2, kw // 2] = 1
    return m


class OursConv:
    """Our masked conv on torch NHWC tensors: CuPy views through DLPack (GPU) or, in a dry run, the CPU core on
    NumPy views (a stand-in that exercises the harness, not a GPU number)."""

    def __init__(self, torch, module, on_gpu):
        self.torch, self.mod, self.gpu = torch, module, on_gpu
        if on_gpu:
            import cupy

            self.cupy = cupy
            self.stream = torch.cuda.current_stream().cuda_stream
            self.kw = {"stream": self.stream}
        else:
            self.kw = {}

    def view(self, t):
        if self.gpu:
            try:
                return self.cupy.from_dlpack(t)
            except Exception:
                return self.cupy.asarray(t)
        return t.numpy()

    def forward(self, x, k, mask, out):
        return self.mod.masked_conv2d_forward(x, k, mask, out=out, **self.kw)

    def bwd_input(self, dy, k, hw, mask, out):
        return self.mod.masked_conv2d_backprop_input(dy, k, hw, mask, out=out, **self.kw)

    def bwd_filter(self, x, dy, khw, mask, out):
        return self.mod.masked_conv2d_backprop_filter(x, dy, khw, mask, out=out, **self.kw)


def tolerance_check(name, got, ref32, exact64, scale):
    """tests/conftest.check_against_f64 on tensors: (ok, details)."""
    err = float((got.double() - exact64).abs().max())
    ref_err = float((ref32.double() - exact64).abs().max())
    bound = K_FACTOR * ref_err + ATOL_ULPS * EPS32 * max(float(scale), 1e-30)
    finite = bool(got.isfinite().all())
    return finite and err <= bound, dict(name=name, err=err, ref_err=ref_err, bound=bound, scale=float(scale),
                                        finite=finite)


def conv_shape(torch, clock, dev, shp, st, ours, peaks, bw):
    F = torch.nn.functional
    n = st["conv_batch"] or shp["n"]
    h, w, cin, cout, kh, kw = shp["h"], shp["w"], shp["cin"], shp["cout"], shp["kh"], shp["kw"]
    mask2 = tap_mask(kh, kw, shp["mask"])
    live = int(mask2.sum())
    pad = (kh // 2, kw // 2)
    g = torch.Generator(device=dev).manual_seed(1234)
    x = torch.randn(n, h, w, cin, device=dev, generator=g)
    mask4 = torch.from_numpy(mask2).to(dev)[:, :, None, None]
    kern = (torch.randn(kh, kw, cin, cout, device=dev, generator=g) / math.sqrt(live * cin)) * mask4
    dy = torch.randn(n, h, w, cout, device=dev, generator=g)
    x_c, dy_c = x.permute(0, 3, 1, 2).contiguous(), dy.permute(0, 3, 1, 2).contiguous()
    w_c = kern.permute(3, 2, 0, 1).contiguous()
    mask_oihw = mask4.permute(3, 2, 0, 1)
    rec = dict(shape=dict(shp, n=n), live_taps=live, taps=kh * kw, checks=[], rows=[])
    bwd = torch.ops.aten.convolution_backward

    def cudnn_bwd(dy_, x_, w_, which):
        return bwd(dy_, x_, w_, None, [1, 1], list(pad), [1, 1], False, [0, 0], 1, list(which))

    # -- correctness first: float64 cuDNN of the same data, the float32 cuDNN (TF32 off) reference, ours
    set_tf32(torch, False)
    with torch.no_grad():
        x64, w64, dy64 = x_c.double(), w_c.double(), dy_c.double()
        y64 = F.conv2d(x64, w64, padding=pad)
        dx64, dw64, _ = cudnn_bwd(dy64, x64, w64, (True, True, False))
        dw64 = dw64 * mask_oihw
        sy = float(F.conv2d(x64.abs(), w64.abs(), padding=pad).max())
        sdx, sdw, _ = cudnn_bwd(dy64.abs(), x64.abs(), w64.abs(), (True, True, False))
        sdx, sdw = float(sdx.max()), float(sdw.max())
        y32 = F.conv2d(x_c, w_c, padding=pad)
        dx32, dw32, _ = cudnn_bwd(dy_c, x_c, w_c, (True, True, False))
        dw32 = dw32 * mask_oihw
        for name, got, exact, scale in (("cuDNN fwd", y32, y64, sy), ("cuDNN bwd_input", dx32, dx64, sdx),
                                        ("cuDNN bwd_filter", dw32, dw64, sdw)):
            # the float32 reference's own error: what the rule allows ours a multiple of (informational)
            err = float((got.double() - exact).abs().max())
            rec["checks"].append(dict(name=name + " (TF32 off) vs float64, the reference's own error", ok=True,
                                      informational=True, err=err, bound=ATOL_ULPS * EPS32 * scale, scale=scale))
        set_tf32(torch, True)
        y_t = F.conv2d(x_c, w_c, padding=pad)
        rec["tf32_fwd_max_abs_err_vs_f64"] = float((y_t.double() - y64).abs().max())
        rec["tf32_fwd_scale"] = sy
        set_tf32(torch, False)

    ours_ok = ours is not None
    if ours is not None:
        xo, ko, dyo = ours.view(x), ours.view(kern), ours.view(dy)
        yo = ours.view(torch.empty(n, h, w, cout, device=dev))
        dxo = ours.view(torch.empty(n, h, w, cin, device=dev))
        dwo_t = torch.full((kh, kw, cin, cout), float("nan"), device=dev)  # poisoned: dead entries must be written 0
        dwo = ours.view(dwo_t)
        ours.forward(xo, ko, shp["mask"], yo)
        ours.bwd_input(dyo, ko, (h, w), shp["mask"], dxo)
        ours.bwd_filter(xo, dyo, (kh, kw), shp["mask"], dwo)
        clock.sync()
        to_t = (lambda a: torch.from_dlpack(a)) if ours.gpu else torch.from_numpy
        y_o = to_t(yo).permute(0, 3, 1, 2)
        dx_o = to_t(dxo).permute(0, 3, 1, 2)
        dw_o = to_t(dwo).permute(3, 2, 0, 1)
        for name, got, ref, exact, scale in (("ours fwd", y_o, y32, y64, sy), ("ours bwd_input", dx_o, dx32, dx64, sdx),
                                             ("ours bwd_filter", dw_o, dw32, dw64, sdw)):
            ok, d = tolerance_check(name + " vs float64", got, ref, exact, scale)
            d["ok"] = ok
            rec["checks"].append(d)
            ours_ok &= ok
        dead = (mask_oihw.expand_as(dw_o) == 0)
        dead_zero = bool((dw_o[dead] == 0).all())
        rec["checks"].append(dict(name="ours bwd_filter: dead taps exactly 0", ok=dead_zero,
                                  dead_entries=int(dead.sum())))
        ours_ok &= dead_zero
    rec["ours_correct"] = bool(ours_ok) if ours is not None else None
    for c in rec["checks"]:
        log("    check %-48s %s%s" % (c["name"], "ok" if c["ok"] else "FAILED",
                                      "" if "err" not in c else "  (|err| %.2e, bound %.2e)" % (c["err"], c["bound"])))

    # -- timing
    elems_x, elems_y, elems_k = n * h * w * cin, n * h * w * cout, kh * kw * cin * cout
    pass_bytes = {"fwd": 4 * (elems_x + elems_k + elems_y), "bwd_input": 4 * (elems_y + elems_k + elems_x),
                  "bwd_filter": 4 * (elems_x + elems_y + elems_k)}
    pass_bytes["fwd+bwd"] = sum(pass_bytes.values())
    dense1 = 2.0 * n * h * w * kh * kw * cin * cout
    live1 = dense1 * live / (kh * kw)
    passes_n = {"fwd": 1, "bwd_input": 1, "bwd_filter": 1, "fwd+bwd": 3}

    def add_rows(variant, layout, tf32, fns, counted):
        for p in CONV_PASSES:
            times, inner = clock.calls(fns[p], warmup=st["conv_warmup"], reps=st["conv_reps"], rep_s=st["conv_rep_s"])
            s = stats(times)
            flops = (live1 if counted == "live" else dense1) * passes_n[p]
            peak = peaks["gemm_tf32" if (tf32 and variant == "cudnn") else "gemm_fp32"]["gflops"]
            gf = flops / s["median_s"] / 1e9
            gbps = pass_bytes[p] / s["median_s"] / 1e9
            rec["rows"].append(dict(variant=variant, layout=layout, tf32=tf32, tf32_state=tf32_state(torch), pass_=p,
                                    inner=inner, counted=counted, flops=flops, gflops=gf,
                                    gflops_dense_equiv=dense1 * passes_n[p] / s["median_s"] / 1e9,
                                    peak_gflops=peak, pct_of_peak=100 * gf / peak, bytes=pass_bytes[p], gbps=gbps,
                                    pct_of_copy_bw=100 * gbps / bw, **s))
            log("    %-6s %-4s tf32=%-5s %-10s %9.3f ms  %8.1f GFLOP/s (%s)" % (variant, layout, tf32, p,
                                                                               1e3 * s["median_s"], gf, counted))

    with torch.no_grad():
        for tf32 in (False, True):
            set_tf32(torch, tf32)
            if ours is not None and ours_ok:
                fns = {"fwd": lambda: ours.forward(xo, ko, shp["mask"], yo),
                       "bwd_input": lambda: ours.bwd_input(dyo, ko, (h, w), shp["mask"], dxo),
                       "bwd_filter": lambda: ours.bwd_filter(xo, dyo, (kh, kw), shp["mask"], dwo)}
                fns["fwd+bwd"] = lambda: (fns["fwd"](), fns["bwd_input"](), fns["bwd_filter"]())
                add_rows("ours", "NHWC", tf32, fns, "live")
            for layout in ("NCHW", "NHWC"):
                fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
                xl, wl, dyl = (t.contiguous(memory_format=fmt) for t in (x_c, w_c, dy_c))
                fns = {"fwd": lambda: F.conv2d(xl, wl, padding=pad),
                       "bwd_input": lambda: cudnn_bwd(dyl, xl, wl, (True, False, False)),
                       "bwd_filter": lambda: cudnn_bwd(dyl, xl, wl, (False, True, False)),
                       "fwd+bwd": lambda: (F.conv2d(xl, wl, padding=pad), cudnn_bwd(dyl, xl, wl, (True, True, False)))}
                add_rows("cudnn", layout, tf32, fns, "dense")
        set_tf32(torch, False)
    return rec


def masked_conv(torch, clock, dev, st, ours, peaks):
    torch.backends.cudnn.benchmark = True
    out = {"cudnn_benchmark": True, "shapes": []}
    bw = peaks["copy"]["gbps"]
    for shp in CONV_SHAPES:
        log("  %s (batch %d)" % (shp["label"], st["conv_batch"] or shp["n"]))
        out["shapes"].append(conv_shape(torch, clock, dev, shp, st, ours, peaks, bw))
        if clock.cuda:
            torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- 3. sampler

def load_program(path):
    with np.load(path) as z:
        count = sum(1 for k in z.files if k.startswith("array_"))
        return (str(z["spec"][()]), [np.ascontiguousarray(z["array_%d" % k], np.float32) for k in range(count)],
                np.asarray(z["teacher_image"], np.float32), np.asarray(z["teacher_logits"], np.float32))


class Cached:
    """The cached sampler under test: pixelcnn_fast.cuda.ColumnProgram (GPU), or in a dry run the CPU core's
    ColumnProgram as a stand-in (exercises the harness; its numbers are no GPU result)."""

    def __init__(self, torch, module, kind, spec, arrays, hwc):
        self.torch, self.mod, self.kind, self.spec, self.arrays = torch, module, kind, spec, arrays
        self.h, self.w, self.c = hwc
        if kind == "cuda":
            import cupy

            self.cupy = cupy
            self.stream = torch.cuda.current_stream().cuda_stream
        self.label = ("CUDA sampler: pixelcnn_fast.cuda.ColumnProgram" if kind == "cuda" else
                      "STAND-IN (dry run): CPU pixelcnn_fast._core.ColumnProgram")

    def build(self, n):
        if self.kind == "cuda":
            return self.mod.ColumnProgram(self.spec, self.arrays, n)
        return self.mod.ColumnProgram.from_spec(self.spec, self.arrays, n)

    def sample(self, prog, n, seed, temperature=1.0):
        if self.kind == "cuda":
            return prog.sample(n, seed, temperature=temperature, image_offset=0, stream=self.stream)
        return prog.sample(n, seed, temperature, 0, self.h, self.w, self.c)

    def numpy(self, a):
        return self.cupy.asnumpy(a) if self.kind == "cuda" else np.asarray(a)

    def teacher_forced(self, prog, image):
        if self.kind == "cuda":
            return self.cupy.asnumpy(prog.teacher_forced(self.cupy.asarray(image)))
        return np.asarray(prog.teacher_forced(image))

    def macs(self, prog, spec_obj):
        if hasattr(prog, "macs_per_position"):
            return int(prog.macs_per_position()), "the program's macs_per_position()"
        return tp.macs_per_position(spec_obj, self.arrays), "counted from the kernels' non-zero taps"


def teacher_check(name, got, want):
    err = float(np.abs(got - want).max())
    bound = TF_TOL * (float(np.abs(want).max()) + 1.0)
    ok = bool(np.isfinite(got).all()) and got.shape == want.shape and err <= bound
    return dict(name=name, ok=ok, err=err, bound=bound)


def draws_check(name, levels_a, margins_a, levels_b, margins_b, n_levels):
    try:
        near = tp.first_disagreements(levels_a, margins_a, levels_b, margins_b, n_levels)
    except AssertionError as exc:
        return dict(name=name, ok=False, error=str(exc))
    reached = levels_a >= 0
    agree = float((levels_a[reached] == levels_b[reached]).mean()) if reached.any() else 0.0
    return dict(name=name, ok=agree > 0.5, agree=agree, draws=int(reached.sum()),
                near_boundary_divergences=[[k, list(w), m] for k, w, m in near])


def naive_full(prog_t, n, seed, st, total, ref):
    probe = tp.naive_sample(prog_t, n, seed, mode="full", max_steps=2)
    per = probe.seconds / probe.steps_run
    k = max(st["naive_min_steps"], min(total, int(math.ceil(st["naive_seconds"] / max(per, 1e-7)))))
    runs = [tp.naive_sample(prog_t, n, seed, mode="full", max_steps=k) for _ in range(st["naive_rounds"])]
    est = [r.seconds * total / r.steps_run for r in runs]
    rec = dict(timed=("complete run (%d steps)" % total if k >= total else "extrapolated from %d of %d steps" % (k, total)),
               steps_timed=k, per_step_s=[r.seconds / r.steps_run for r in runs], warm_s=[r.warm_seconds for r in runs],
               **stats(est))
    if ref is not None:
        rec["draws"] = draws_check("naive full vs cached (batch %d)" % n, runs[-1].levels, runs[-1].margins, *ref)
    return rec


def naive_rows(prog_t, n, seed, st, image, ref):
    h, w, c = prog_t.height, prog_t.width, prog_t.channels
    check = tp.naive_sample(prog_t, n, seed, mode="rows", max_steps=w * c)
    spread = [int(r) for r in np.linspace(0, h - 1, ROWS_POINTS).round()]
    probe = tp.naive_sample(prog_t, n, seed, mode="rows", positions=[(spread[-1], 0)], image=image)
    c_deep = probe.seconds / probe.steps_run
    kmin = 3 if st["naive_min_steps"] > 2 else 1
    k = max(kmin, min(w, int(math.ceil(st["naive_seconds"] / len(spread) / max(c_deep, 1e-7)))))
    est, costs = [], []
    for _ in range(st["naive_rounds"]):
        e, cost = tp.rows_seconds_estimate(prog_t, n, spread, k, image=image, seed=seed)
        est.append(e)
        costs.append(cost)
    c_rows = np.mean(costs, axis=0)
    line = np.interp(spread, [spread[0], spread[-1]], [c_rows[0], c_rows[-1]])
    rec = dict(timed="extrapolated from %d of %d steps (%d at each of rows %s), integrated over the rows"
                     % (len(spread) * k, h * w * c, k, ", ".join(map(str, spread))),
               steps_timed=len(spread) * k, rows_spread=spread, steps_per_row=k,
               per_step_s_by_row={str(r): float(v) for r, v in zip(spread, c_rows)},
               rows_affine_dev_pct=float(100 * np.max(np.abs(c_rows - line) / line)),
               rows_check_real_loop_row0_per_step_s=check.seconds / check.steps_run,
               rows_check_timed_row0_per_step_s=float(c_rows[0]), **stats(est))
    if ref is not None:
        rec["draws"] = draws_check("naive rows, row 0 vs cached (batch %d)" % n, check.levels, check.margins, *ref)
    return rec


def sampler(torch, clock, dev, st, args, ours_mod, ours_reason, has_api, core, peaks, dry):
    torch.backends.cudnn.benchmark = True
    set_tf32(torch, False)
    spec, arrays, t_image, t_logits = load_program(args.npz)
    sp = tp.parse_spec(spec)
    h, w, c = sp.height, sp.width, sp.channels
    total = h * w * c
    n_levels = 2 if sp.head["kind"] == "bernoulli" else sp.head["levels"]
    out = dict(model="bundled keras.io PixelCNN (trained; %s)" % os.path.relpath(args.npz, ROOT), hw=[h, w],
               channels=c, steps_total=total, seed=SEED, checks=[], batches=[], tf32_state=tf32_state(torch),
               dense_macs_per_position=tp.dense_macs_per_position(sp))

    # the baseline: the PyTorch interpreter, in the faster of the two layouts (the strongest naive loop)
    layouts = {}
    probe_n = 2 if dry else 64
    for layout in (("nchw",) if dry else ("nchw", "nhwc")):
        prog = tp.TorchProgram(sp, arrays, device=dev, layout=layout)
        x = torch.zeros((probe_n, c, h, w), device=dev).contiguous(memory_format=prog.memory_format)
        with torch.no_grad():
            times, _ = clock.calls(lambda: prog.forward(x), warmup=2, reps=3, inner=1)
        layouts[layout] = float(np.median(times))
    layout = min(layouts, key=layouts.get)
    prog_t = tp.TorchProgram(sp, arrays, device=dev, layout=layout)
    out.update(naive_layout=layout, naive_forward_s_batch=dict(batch=probe_n, **layouts),
               naive_ops_per_forward=prog_t.num_ops, naive_fused_biases=prog_t.fused_biases)
    log("  naive baseline: %s layout (one forward at batch %d: %s)" % (
        layout, probe_n, ", ".join("%s %.3f ms" % (k, 1e3 * v) for k, v in layouts.items())))

    chk = teacher_check("PyTorch interpreter teacher forcing (%s, TF32 off) vs Keras logits" % layout,
                        prog_t.teacher_forced(t_image), t_logits)
    out["checks"].append(chk)
    baseline_ok = chk["ok"]

    cached = None
    if dry and core is not None:
        cached = Cached(torch, core, "core", spec, arrays, (h, w, c))
    elif not dry and ours_mod is not None and ours_reason is None and has_api:
        cached = Cached(torch, ours_mod, "cuda", spec, arrays, (h, w, c))
    if cached is None:
        why = ("the CPU core is not built" if dry else ours_reason if ours_reason else
               "pixelcnn_fast.cuda has no ColumnProgram (this build predates the CUDA sampler)")
        out["cached"] = dict(available=False, reason=why)
        log("  cached sampler: NOT AVAILABLE (%s)" % why)
    else:
        out["cached"] = dict(available=True, label=cached.label, kind=cached.kind)
    cached_ok = cached is not None
    if cached is not None:
        try:
            prog_c = cached.build(t_image.shape[0])
            chk = teacher_check("%s teacher forcing vs Keras logits" % cached.kind, cached.teacher_forced(prog_c, t_image),
                                t_logits)
            out["checks"].append(chk)
            cached_ok &= chk["ok"]
            m = st["small_case_n"]
            prog_m = cached.build(m)
            lv, mg = (cached.numpy(a) for a in cached.sample(prog_m, m, SEED + 1))
            lv2, _ = (cached.numpy(a) for a in cached.sample(prog_m, m, SEED + 1))
            det = bool(np.array_equal(lv, lv2))
            out["checks"].append(dict(name="%s deterministic (same seed, same images)" % cached.kind, ok=det))
            cached_ok &= det
            ref = tp.naive_sample(prog_t, m, SEED + 1, mode="rows", max_steps=st["small_case_steps"])
            chk = draws_check("%s vs naive rows loop, n=%d, %s" % (cached.kind, m, "complete images" if ref.complete
                                                                   else "first %d steps" % ref.steps_run),
                              ref.levels, ref.margins, lv, mg, n_levels)
            out["checks"].append(chk)
            cached_ok &= chk["ok"] and baseline_ok
            if cached.kind == "cuda" and core is not None:
                clv, cmg = core.ColumnProgram.from_spec(spec, arrays, m).sample(m, SEED + 1, 1.0, 0, h, w, c)
                chk = draws_check("cuda vs CPU core sampler, n=%d" % m, lv, mg, clv, cmg, n_levels)
                out["checks"].append(chk)
                cached_ok &= chk["ok"]
        except Exception as exc:
            out["checks"].append(dict(name="cached sampler checks", ok=False,
                                      error="%s: %s" % (type(exc).__name__, exc), traceback=traceback.format_exc()))
            cached_ok = False
    for ck in out["checks"]:
        log("    check %-70s %s" % (ck["name"][:70], "ok" if ck["ok"] else "FAILED %s" % ck.get("error", "")))
    out["baseline_correct"], out["cached_correct"] = bool(baseline_ok), bool(cached_ok)
    if not baseline_ok:
        out["error"] = "the PyTorch baseline failed its teacher-forcing check: no sampler numbers posted"
        return out

    for n in st["batches"]:
        b = dict(n=n)
        out["batches"].append(b)
        if time.perf_counter() > st.get("deadline", math.inf):
            b["skipped"] = "over the time budget (--budget-s): not measured"
            log("  batch %d skipped: over the time budget" % n)
            continue
        try:
            ref = None
            if cached_ok:
                t0 = time.perf_counter()
                prog_c = cached.build(n)
                b["cached_build_s"] = time.perf_counter() - t0
                holder = {}

                def call():
                    holder["r"] = cached.sample(prog_c, n, SEED)

                wall = [clock.wall(call) for _ in range(2)]  # warm-up
                wall = [clock.wall(call) for _ in range(st["cached_reps"])]
                ev, _ = clock.calls(call, warmup=0, reps=min(5, st["cached_reps"]), inner=1)
                lv, mg = (cached.numpy(a) for a in holder["r"])
                macs, how = cached.macs(prog_c, sp)
                s = stats(wall)
                flops = 2.0 * macs * h * w * n
                peak = peaks["gemm_fp32"]["gflops"]
                b["cached"] = dict(timed="full image, %d calls (wall clock incl. the wait for the result)" % len(wall),
                                   event_median_s=float(np.median(ev)), macs_per_position=macs, macs_counted=how,
                                   gflops=flops / s["median_s"] / 1e9, pct_of_peak=100 * flops / s["median_s"] / 1e9 / peak,
                                   pixels_per_s=n * h * w / s["median_s"], **s)
                if hasattr(prog_c, "cache_floats_per_image"):
                    b["cached"]["cache_bytes"] = int(prog_c.cache_floats_per_image()) * 4 * n
                ref = (lv, mg, n_levels)
                image = (lv.astype(np.float32) * np.float32(sp.head["scale"]) + np.float32(sp.head["offset"]))
                log("  batch %3d cached %9.3f ms (median; events %.3f ms)" % (n, 1e3 * s["median_s"], 1e3 * b["cached"]["event_median_s"]))
            else:
                image = np.zeros((n, h, w, c), np.float32)
            b["full"] = naive_full(prog_t, n, SEED, st, total, ref)
            b["full"]["dense_gflops_per_forward"] = (2.0 * out["dense_macs_per_position"] * h * w * n /
                                                     np.median(b["full"]["per_step_s"]) / 1e9)
            log("  batch %3d naive full %10.3f s (%s)" % (n, b["full"]["median_s"], b["full"]["timed"]))
            b["rows"] = naive_rows(prog_t, n, SEED, st, image, ref)
            log("  batch %3d naive rows %10.3f s (%s)" % (n, b["rows"]["median_s"], b["rows"]["timed"]))
            for key in ("full", "rows"):
                d = b[key].get("draws")
                if d is not None and not d["ok"]:
                    b["error"] = "naive %s draws disagree with the cached sampler: %s" % (key, d.get("error", d))
        except Exception as exc:
            b["error"] = "%s: %s" % (type(exc).__name__, exc)
            b["traceback"] = traceback.format_exc()
            log("  batch %d FAILED: %s" % (n, b["error"]))
        if clock.cuda:
            torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- report

def fmt(v, spec=".2f", none="—"):
    return none if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def goals(res):
    """[(verdict, line)] for every goal of issue 7, from a results dict. Only a GPU run gives verdicts."""
    lines = []
    if res.get("mode") != "gpu":
        why = "no GPU run (%s): the numbers below come from CPU stand-ins" % res.get("mode")
        return [("NOT MEASURED", "%s fwd+bwd >= %.1fx vs cuDNN (TF32 off): %s" % (s["label"], s["goal"], why))
                for s in CONV_SHAPES] + [
            ("NOT MEASURED", "batch %d: CUDA sampler >= %.0fx faster than the naive full-image loop: %s"
             % (SAMPLER_GOAL_BATCH, SAMPLER_GOAL_RATIO, why)),
            ("NOT MEASURED", "batch %d of 28x28 in < %.0f ms on an H100: %s" % (SAMPLER_GOAL_BATCH, SAMPLER_GOAL_MS, why))]
    conv = res.get("conv") or {}
    for shp in CONV_SHAPES:
        rec = next((s for s in conv.get("shapes", []) if s["shape"]["id"] == shp["id"]), None)
        what = "%s fwd+bwd, ours vs cuDNN (TF32 off, the faster cuDNN layout)" % shp["label"]
        if rec is None:
            lines.append(("NOT MEASURED", "%s >= %.1fx: %s" % (what, shp["goal"], conv.get("error", "not in this run"))))
            continue
        rows = [r for r in rec["rows"] if r["pass_"] == "fwd+bwd" and not r["tf32"]]
        ours = next((r for r in rows if r["variant"] == "ours"), None)
        cud = [r for r in rows if r["variant"] == "cudnn"]
        if ours is None or not cud:
            why = ("our kernels failed their correctness check" if rec.get("ours_correct") is False
                   else "our kernels are not available here")
            lines.append(("NOT MEASURED", "%s >= %.1fx: %s" % (what, shp["goal"], why)))
            continue
        best = min(cud, key=lambda r: r["median_s"])
        ratio = best["median_s"] / ours["median_s"]
        on = [r for r in rec["rows"] if r["pass_"] == "fwd+bwd" and r["tf32"]]
        on_o = next((r for r in on if r["variant"] == "ours"), None)
        on_c = [r for r in on if r["variant"] == "cudnn"]
        tf32 = ""
        if on_o and on_c:
            bc = min(on_c, key=lambda r: r["median_s"])
            tf32 = "; with TF32 on (stated, not the goal): %.2fx vs cuDNN %s" % (bc["median_s"] / on_o["median_s"], bc["layout"])
        met = ratio >= shp["goal"]
        gap = "" if met else "; gap: ours must take <= %.3f ms, takes %.3f ms" % (
            1e3 * best["median_s"] / shp["goal"], 1e3 * ours["median_s"])
        lines.append(("MET" if met else "NOT MET", "%s: %.2fx (median; ours %.3f ms, cuDNN %s %.3f ms), goal >= %.1fx%s%s"
                      % (what, ratio, 1e3 * ours["median_s"], best["layout"], 1e3 * best["median_s"], shp["goal"], gap, tf32)))
    smp = res.get("sampler") or {}
    b = next((x for x in smp.get("batches", []) if x["n"] == SAMPLER_GOAL_BATCH), None)
    cached_kind = (smp.get("cached") or {}).get("kind")
    if b is None or "cached" not in b or "full" not in b or cached_kind != "cuda":
        why = (smp.get("error") or (smp.get("cached") or {}).get("reason") or
               ("the cached sampler in this run is a CPU stand-in" if cached_kind == "core" else
                (b or {}).get("error") or (b or {}).get("skipped") or "not in this run"))
        lines.append(("NOT MEASURED", "batch %d: CUDA sampler >= %.0fx faster than the naive full-image loop: %s"
                      % (SAMPLER_GOAL_BATCH, SAMPLER_GOAL_RATIO, why)))
        lines.append(("NOT MEASURED", "batch %d of 28x28 in < %.0f ms on an H100: %s" % (SAMPLER_GOAL_BATCH, SAMPLER_GOAL_MS, why)))
    else:
        ratio = b["full"]["median_s"] / b["cached"]["median_s"]
        met = ratio >= SAMPLER_GOAL_RATIO
        rows_ratio = b["rows"]["median_s"] / b["cached"]["median_s"] if "rows" in b else None
        gap = "" if met else "; gap: %.2fx short (the CUDA call must take <= %.2f ms)" % (
            SAMPLER_GOAL_RATIO / ratio, 1e3 * b["full"]["median_s"] / SAMPLER_GOAL_RATIO)
        lines.append(("MET" if met else "NOT MET",
                      "batch %d: CUDA sampler %.0fx faster than the naive full-image loop (median; naive %s; mean "
                      "ratio %.0fx), goal >= %.0fx%s; vs the row-cropped loop %sx (no goal)" % (
                          SAMPLER_GOAL_BATCH, ratio, b["full"]["timed"], b["full"]["mean_s"] / b["cached"]["mean_s"],
                          SAMPLER_GOAL_RATIO, gap, fmt(rows_ratio, ".0f"))))
        ms = 1e3 * b["cached"]["median_s"]
        dev = res.get("env", {}).get("device", "?")
        h100 = "H100" in dev
        met = ms < SAMPLER_GOAL_MS
        lines.append(("MET" if met and h100 else "NOT MET" if h100 else "NOT MEASURED",
                      "batch %d of 28x28 in %.2f ms (median wall clock incl. the wait; GPU events %.2f ms), goal < %.0f ms "
                      "on an H100%s" % (SAMPLER_GOAL_BATCH, ms, 1e3 * b["cached"]["event_median_s"], SAMPLER_GOAL_MS,
                                        "" if h100 else " — this device is %s, not an H100 (%s there)" % (
                                            dev, "would be met" if met else "not met"))))
    return lines


def conv_section(conv):
    md = ["## Masked convolution vs cuDNN (keras.io training shapes)", ""]
    if conv.get("error"):
        md += ["**FAILED**: %s" % conv["error"], ""]
    md += ["ours = pixelcnn_fast.cuda (NHWC, live taps only, float32 FMA whatever the TF32 setting); cuDNN = torch "
           "F.conv2d / aten.convolution_backward on the masked dense kernel (NCHW, and NHWC = channels_last), "
           "cudnn.benchmark on. fwd+bwd = forward + input gradient + filter gradient (3 passes). Times are medians "
           "of CUDA-event timings after warm-up. speedup = that cuDNN row's time / ours (same pass, same TF32 "
           "setting). GFLOP/s: live taps for ours, all taps for cuDNN (it multiplies the zeros); dense-eq = dense "
           "FLOPs / time for both. % of peak: against the TF32-off GEMM ceiling, except cuDNN with TF32 on "
           "(against the TF32 ceiling). GB/s: minimum traffic (operands read once, result written once), % of the "
           "measured copy bandwidth.", ""]
    ours_label = "ours (CUDA)" if conv.get("ours") == "pixelcnn_fast.cuda" else "ours: %s" % conv.get("ours")
    for rec in conv.get("shapes", []):
        s = rec["shape"]
        md += ["### %s (taps %d/%d; batch %d, %dx%d)" % (s["label"], rec["live_taps"], rec["taps"], s["n"], s["h"], s["w"]), ""]
        for c in rec["checks"]:
            md.append("- check: %s — %s%s" % (c["name"], "ok" if c["ok"] else "**FAILED**",
                                              "" if "err" not in c else " (max |err| %.2e, bound %.2e)" % (c["err"], c["bound"])))
        if "tf32_fwd_max_abs_err_vs_f64" in rec:
            md.append("- cuDNN forward with TF32 on: max |err| vs float64 %.2e (scale %.2e): TF32 rounds the inputs to "
                      "10-bit mantissas" % (rec["tf32_fwd_max_abs_err_vs_f64"], rec["tf32_fwd_scale"]))
        md.append("")
        for tf32 in (False, True):
            rows = [r for r in rec["rows"] if r["tf32"] == tf32]
            if not rows:
                continue
            md += ["TF32 %s (%s)" % ("on" if tf32 else "off", ", ".join("%s=%s" % kv for kv in rows[0]["tf32_state"].items())),
                   "", "| variant | pass | median ms | mean ms | sd % | reps x inner | ours' speedup vs this | GFLOP/s | "
                       "counted | dense-eq GFLOP/s | % of peak | GB/s | % of copy bw |",
                   "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
            for p in CONV_PASSES:
                ours = next((r for r in rows if r["variant"] == "ours" and r["pass_"] == p), None)
                for r in (x for x in rows if x["pass_"] == p):
                    name = ours_label if r["variant"] == "ours" else "cuDNN %s" % r["layout"]
                    sp = "—" if r["variant"] == "ours" or ours is None else "%.2fx" % (r["median_s"] / ours["median_s"])
                    md.append("| %s | %s | %.3f | %.3f | %.0f | %d x %d | %s | %.0f | %s | %.0f | %.1f | %.0f | %.1f |" % (
                        name, p, 1e3 * r["median_s"], 1e3 * r["mean_s"], r["sd_pct"], r["reps"], r["inner"], sp,
                        r["gflops"], r["counted"], r["gflops_dense_equiv"], r["pct_of_peak"], r["gbps"], r["pct_of_copy_bw"]))
            md.append("")
    return md


def sampler_section(smp):
    md = ["## Sampler: CUDA cached sampler vs PyTorch naive repredict loops (%s)" % smp.get("model", "keras.io"), ""]
    if smp.get("error"):
        md += ["**FAILED**: %s" % smp["error"], ""]
    cached = smp.get("cached") or {}
    if not cached.get("available", False):
        md += ["Cached sampler: **NOT AVAILABLE** — %s. The naive loops are still timed." % cached.get("reason", "?"), ""]
    elif cached.get("kind") != "cuda":
        md += ["Cached sampler: %s — a dry run: no GPU number." % cached.get("label"), ""]
    md += ["Naive loops: benchmarks/torch_program.py, the program run as full-image PyTorch ops (cuDNN, TF32 off, "
           "conv biases fused, %s layout: the faster of NCHW/NHWC for one forward at batch %s), everything kept on "
           "the device between steps; \"full\" re-runs the whole image per pixel, \"rows\" rows 0..i. The first run "
           "of each input shape (cuDNN autotuning) is excluded. Extrapolation as each row's 'timed' says (module "
           "docstring of benchmarks/bench_cuda.py). CUDA sampler: wall-clock time of a call including the wait "
           "for its result (median); GPU-event time beside it. GFLOP/s: live multiply-adds (dead taps not counted) "
           "x 2 x H*W*n / time, %% of the TF32-off GEMM ceiling; naive: dense GFLOP/s of one forward." % (
               smp.get("naive_layout", "?").upper(), (smp.get("naive_forward_s_batch") or {}).get("batch", "?")), ""]
    for c in smp.get("checks", []):
        extra = ""
        if "err" in c:
            extra = " (max |err| %.2e, bound %.2e)" % (c["err"], c["bound"])
        elif "agree" in c:
            extra = " (%.1f%% of %d draws agree; divergences at a CDF boundary: %d)" % (
                100 * c["agree"], c["draws"], len(c.get("near_boundary_divergences", [])))
        md.append("- check: %s — %s%s%s" % (c["name"], "ok" if c["ok"] else "**FAILED**", extra,
                                            "" if c.get("ok") or "error" not in c else ": " + c["error"][:300]))
    md.append("")
    md += ["| batch | variant | timed | full image ms (median) | mean ms | sd % | rounds | pixels/s | cached sampler's "
           "speedup (median) | (mean) | GFLOP/s | % of peak |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in smp.get("batches", []):
        n = b["n"]
        cr = b.get("cached")
        for key, label in (("cached", "cached: " + cached.get("label", "?")), ("full", "naive full image"),
                           ("rows", "naive rows 0..i")):
            r = b.get(key)
            if r is None:
                continue
            px = n * smp["hw"][0] * smp["hw"][1]
            g = r.get("gflops") if key == "cached" else r.get("dense_gflops_per_forward")
            pk = r.get("pct_of_peak")
            md.append("| %d | %s | %s | %s | %s | %.0f | %d | %s | %s | %s | %s | %s |" % (
                n, label, r["timed"], fmt(1e3 * r["median_s"], ",.2f"), fmt(1e3 * r["mean_s"], ",.2f"), r["sd_pct"],
                r["reps"], fmt(px / r["median_s"], ",.0f"),
                "—" if key == "cached" or not cr else "%sx" % fmt(r["median_s"] / cr["median_s"], ",.0f"),
                "—" if key == "cached" or not cr else "%sx" % fmt(r["mean_s"] / cr["mean_s"], ",.0f"),
                fmt(g, ",.1f") + ("" if key == "cached" else " (dense, 1 fwd)") if g else "—", fmt(pk, ".1f")))
        if b.get("error"):
            md.append("| %d | **FAILED** | %s | | | | | | | | | |" % (n, b["error"].replace("|", "/")[:300]))
        if b.get("skipped"):
            md.append("| %d | skipped | %s | | | | | | | | | |" % (n, b["skipped"]))
    md.append("")
    for b in smp.get("batches", []):
        r = b.get("rows")
        if r:
            md.append("- batch %d rows loop: cost per step by row %s s; middle rows deviate %.0f%% from the line through "
                      "the end rows; real row-0 loop %.3g s/step vs timed c(0) %.3g s/step%s" % (
                          b["n"], {k: float("%.3g" % v) for k, v in r["per_step_s_by_row"].items()},
                          r["rows_affine_dev_pct"], r["rows_check_real_loop_row0_per_step_s"],
                          r["rows_check_timed_row0_per_step_s"],
                          "; cached program build %.1f ms (not in the timed calls)" % (1e3 * b["cached_build_s"])
                          if "cached_build_s" in b else ""))
    md.append("")
    return md


def render(res):
    env = res.get("env", {})
    mode = res.get("mode", "?")
    md = ["# GPU benchmarks (issue 7): %s" % env.get("device", "?"), ""]
    if mode != "gpu":
        md += ["**%s** — %s" % (mode.upper(), res.get("note", "")), ""]
    md += ["Device: **%s** (compute capability %s, %s SMs, %s GiB); driver %s; CUDA (torch) %s; cuDNN %s; torch %s; "
           "CuPy %s; Python %s. pixelcnn_fast build: %s. Commit %s%s; %s; %s mode, %.0f s in all." % (
               env.get("device"), env.get("capability", "—"), env.get("sms", "—"), env.get("memory_gib", "—"),
               env.get("driver", env.get("cuda_driver_api", "—")), env.get("torch_cuda"), env.get("cudnn", "—"),
               env.get("torch"), env.get("cupy"), env.get("python"),
               json.dumps(env.get("pixelcnn_fast_build")), env.get("commit", "?"),
               " (uncommitted changes)" if env.get("dirty") else "", env.get("date"), res.get("settings_name", "?"),
               res.get("elapsed_s", 0.0)), ""]
    ours = res.get("ours", {})
    md += ["Our CUDA backend: %s; CUDA sampler API (pixelcnn_fast.cuda.ColumnProgram): %s." % (
        "available" if ours.get("reason") is None else "**NOT AVAILABLE** (%s)" % ours.get("reason"),
        "present" if ours.get("sampler_api") else "**absent**"), ""]
    md += ["## Goals (issue 7), as measured in this run", ""]
    md += ["- **%s** — %s" % g for g in goals(res)] + [""]
    ce = res.get("ceilings") or {}
    md += ["## Ceilings measured in this run", ""]
    if ce.get("error"):
        md += ["**FAILED**: %s" % ce["error"], ""]
    if "gemm_fp32" in ce:
        md += ["| ceiling | best | median | how |", "|---|---:|---:|---|",
               "| float32 GEMM, TF32 off | %.1f GFLOP/s | %.1f | torch.mm %d^3, %d reps (%s) |" % (
                   ce["gemm_fp32"]["gflops"], ce["gemm_fp32"]["gflops_median"], ce["gemm_fp32"]["n"],
                   ce["gemm_fp32"]["reps"], ce["gemm_fp32"]["tf32_state"]),
               "| float32 GEMM, TF32 on | %.1f GFLOP/s | %.1f | same (%s) |" % (
                   ce["gemm_tf32"]["gflops"], ce["gemm_tf32"]["gflops_median"], ce["gemm_tf32"]["tf32_state"]),
               "| device copy bandwidth | %.0f GB/s | %.0f | Tensor.copy_ of %d MiB, read + write bytes |" % (
                   ce["copy"]["gbps"], ce["copy"]["gbps_median"], ce["copy"]["bytes"] // 2 ** 20), ""]
    if res.get("conv"):
        md += conv_section(res["conv"])
    if res.get("sampler"):
        md += sampler_section(res["sampler"])
    if res.get("errors"):
        md += ["## Errors", ""] + ["- %s" % e for e in res["errors"]] + [""]
    return "\n".join(md)


def write(res, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1, default=str)
    report = os.path.join(out_dir, "REPORT.md")
    try:
        text = render(res)
    except Exception:  # the numbers are in results.json: re-render with --render after a fix
        text = "# GPU benchmarks: the report could not be rendered\n\n```\n%s```\n" % traceback.format_exc()
        res.setdefault("errors", []).append("report rendering failed (see REPORT.md)")
    with open(report, "w") as f:
        f.write(text + "\n")
    return path, report


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT_DEFAULT, help="directory for results.json and REPORT.md (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and shorter naive rounds (~1-2 min)")
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU needed: CPU stand-ins at tiny sizes, to check the harness (numbers mean nothing)")
    ap.add_argument("--npz", default=NPZ_DEFAULT, help="exported program (scripts/export_program.py)")
    ap.add_argument("--only", default="ceilings,conv,sampler", help="comma-separated sections to run")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop starting new sampler batches after this many seconds (default 240, --quick 150); "
                         "results.json is also rewritten after every section, so a killed run leaves its numbers")
    ap.add_argument("--render", metavar="RESULTS_JSON", help="only re-render REPORT.md (next to it) from a results file")
    args = ap.parse_args(argv)

    if args.render:
        with open(args.render) as f:
            res = json.load(f)
        path = os.path.join(os.path.dirname(os.path.abspath(args.render)), "REPORT.md")
        with open(path, "w") as f:
            f.write(render(res) + "\n")
        log("wrote %s" % path)
        return 0

    start = time.perf_counter()
    try:
        import torch
    except ImportError as exc:
        log("bench_cuda: PyTorch is required (the cuDNN baselines and the naive loops run on it): %s" % exc)
        return 2
    if tp.torch is None:  # pragma: no cover - torch_program imported before torch was importable
        tp.torch, tp.F = torch, torch.nn.functional
    cuda = bool(torch.cuda.is_available())
    dry = args.dry_run or not cuda
    name = "dry-run" if dry else ("quick" if args.quick else "full")
    st = dict(SETTINGS[name])
    budget = args.budget_s if args.budget_s is not None else {"full": 240.0, "quick": 150.0}.get(name, 600.0)
    st["deadline"] = start + budget
    sections = set(s.strip() for s in args.only.split(",") if s.strip())
    res = dict(mode="gpu" if not dry else ("dry-run" if args.dry_run else "no-gpu"), settings_name=name,
               settings={k: v for k, v in st.items() if k != "deadline"}, budget_s=budget,
               argv=sys.argv[1:] if argv is None else list(argv), errors=[])
    if dry:
        res["note"] = ("no GPU: nothing here is a GPU measurement. CPU stand-ins at tiny sizes (torch CPU ops, the "
                       "C++ core for ours) ran every step of the harness to check it." if cuda is False else
                       "--dry-run on a machine with a GPU: CPU stand-ins only.")
        if not cuda:
            log("bench_cuda: no GPU (torch.cuda.is_available() is False)%s" % (
                "" if args.dry_run else ": nothing to measure; running the CPU dry run of the harness instead"))
    dev = torch.device("cuda" if not dry else "cpu")
    clock = Clock(torch, not dry)
    res["env"] = environment(torch, cuda)
    log("device: %s | torch %s (CUDA %s, cuDNN %s) | CuPy %s" % (res["env"]["device"], torch.__version__,
                                                                torch.version.cuda, res["env"].get("cudnn", "—"),
                                                                res["env"].get("cupy")))
    ours_mod, reason, has_api, core = load_ours(cuda and not dry)
    if dry:
        reason = reason or "dry run"
    res["ours"] = dict(reason=reason, sampler_api=has_api, core_available=core is not None)
    log("ours: %s; CUDA sampler API: %s" % ("available" if reason is None else "NOT AVAILABLE (%s)" % reason,
                                            "present" if has_api else "absent"))

    def checkpoint():
        res["elapsed_s"] = time.perf_counter() - start
        try:
            write(res, args.out)
        except Exception as exc:  # pragma: no cover - an unwritable --out shows at the end too
            log("could not write %s: %s" % (args.out, exc))

    peaks = None
    if "ceilings" in sections or "conv" in sections or "sampler" in sections:
        log("ceilings")
        try:
            peaks = res["ceilings"] = ceilings(torch, clock, dev, st)
        except Exception as exc:
            res["ceilings"] = {"error": "%s: %s" % (type(exc).__name__, exc), "traceback": traceback.format_exc()}
            res["errors"].append("ceilings: %s" % res["ceilings"]["error"])
            log(res["ceilings"]["traceback"])
        checkpoint()
    if peaks is not None and "conv" in sections:
        log("masked conv")
        try:
            if reason is None:
                ours = OursConv(torch, ours_mod, True)
            elif dry and core is not None:
                ours = OursConv(torch, core, False)
            else:
                ours = None
            res["conv"] = masked_conv(torch, clock, dev, st, ours, peaks)
            res["conv"]["ours"] = ("pixelcnn_fast.cuda" if reason is None else
                                   "STAND-IN (dry run): CPU pixelcnn_fast._core" if ours is not None else None)
            for s in res["conv"]["shapes"]:
                if s.get("ours_correct") is False:
                    res["errors"].append("masked conv %s: our kernels failed a correctness check (not timed)" % s["shape"]["id"])
                for c in s["checks"]:
                    if not c["ok"] and not c.get("informational"):
                        log("  FAILED: %s" % c)
        except Exception as exc:
            res["conv"] = {"error": "%s: %s" % (type(exc).__name__, exc), "traceback": traceback.format_exc()}
            res["errors"].append("masked conv: %s" % res["conv"]["error"])
            log(res["conv"]["traceback"])
        checkpoint()
    if peaks is not None and "sampler" in sections:
        log("sampler")
        try:
            res["sampler"] = sampler(torch, clock, dev, st, args, ours_mod, reason, has_api, core, peaks, dry)
            smp = res["sampler"]
            if smp.get("error"):
                res["errors"].append("sampler: %s" % smp["error"])
            if smp["cached"].get("available") and not smp.get("cached_correct"):
                res["errors"].append("sampler: the cached sampler failed a correctness check (not timed)")
            for b in smp["batches"]:
                if b.get("error"):
                    res["errors"].append("sampler batch %d: %s" % (b["n"], b["error"]))
        except Exception as exc:
            res["sampler"] = {"error": "%s: %s" % (type(exc).__name__, exc), "traceback": traceback.format_exc()}
            res["errors"].append("sampler: %s" % res["sampler"]["error"])
            log(res["sampler"]["traceback"])

    res["elapsed_s"] = time.perf_counter() - start
    path, report = write(res, args.out)
    for verdict, line in goals(res):
        log("%-12s %s" % (verdict, line))
    log("wrote %s and %s (%.0f s)" % (path, report, res["elapsed_s"]))
    if res["errors"]:
        log("errors:\n  " + "\n  ".join(res["errors"]))
        return 1
    if not cuda and not args.dry_run:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
