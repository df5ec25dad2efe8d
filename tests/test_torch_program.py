# Tests: benchmarks/torch_program.py (the GPU benchmarks' PyTorch interpreter of a program spec and its naive loops) on CPU tensors, against the C++ core.
"""The PyTorch baseline of benchmarks/bench_cuda.py must compute what the cached sampler computes, or its
ratios mean nothing. Checked here on CPU tensors against pixelcnn_fast._core (the C++ executor reading the same
spec): every step kind and activation, teacher forcing (one full forward pass == the cached
path), its draws (pixelcnn_fast.rng) and the naive full-image and row-cropped loops (same seed -> same images
as _core's sampler, up to draws within float rounding of a CDF boundary).

PyTorch is not a dependency of this package: without it the module is skipped, saying so.
"""

import importlib
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: benchmarks/torch_program.py (the GPU "
                                           "benchmarks' baseline) cannot be exercised here")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, "benchmarks") not in sys.path:
    sys.path.append(os.path.join(ROOT, "benchmarks"))  # appended: benchmarks/run.py, report.py must shadow nothing
import torch_program as tp  # noqa: E402

from pixelcnn_fast import rng  # noqa: E402
from pixelcnn_fast.program.ir import ACT_FNS, BINARY_FNS  # noqa: E402

NPZ = os.path.join(ROOT, "benchmarks", "data", "keras_io_program.npz")
TF_TOL = 1e-5  # tests/test_sampler.py: |got - want| <= 1e-5 * (max |want| + 1)


@pytest.fixture(scope="module")
def core():
    """pixelcnn_fast._core, also where TensorFlow is missing (a venv with torch only); a failure, never a skip."""
    try:
        return importlib.import_module("pixelcnn_fast._core")
    except Exception as exc:
        pytest.fail(f"cannot import pixelcnn_fast._core: {type(exc).__name__}: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def keras_io():
    with np.load(NPZ) as z:
        count = sum(1 for k in z.files if k.startswith("array_"))
        return (str(z["spec"][()]), [z[f"array_{k}"] for k in range(count)], z["teacher_image"], z["teacher_logits"])


def close(got, want, tol=TF_TOL):
    assert got.shape == want.shape, (got.shape, want.shape)
    err = float(np.abs(got - want).max())
    assert err <= tol * (float(np.abs(want).max()) + 1.0), f"max |err| = {err:.3e} (scale {np.abs(want).max():.3e})"


# --------------------------------------------------------------------------- synthetic programs

def masked(rng, kh, kw, cin, cout, mask_type, dh=1, dw=1):
    """A random kernel zeroed outside the causal taps: TF 'same' padding puts tap (ky, kx) at offset
    (ky * dh - pad_top, kx * dw - pad_left); live when that offset is before (0, 0) in raster order (mask A), or
    at it too (mask B). Even sizes included (their 'same' padding is asymmetric)."""
    k = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32) / np.sqrt(kh * kw * cin)
    pt, pl = ((kh - 1) * dh) // 2, ((kw - 1) * dw) // 2
    m = np.zeros((kh, kw), np.float32)
    for ky in range(kh):
        for kx in range(kw):
            oy, ox = ky * dh - pt, kx * dw - pl
            m[ky, kx] = oy < 0 or (oy == 0 and (ox < 0 or (mask_type == "B" and ox == 0)))
    return np.ascontiguousarray(k * m[:, :, None, None], np.float32)


def synthetic(rng, head, act="relu", binary="mul", h=5, w=6, dilation=(2, 1)):
    """(spec text, arrays) of a small causal grey program that uses every step kind: a 3x3 mask-A conv, a
    dilated 3x3 mask-B conv, an even 4x2 mask-B conv (asymmetric padding), a 1x1 'valid' conv, broadcast
    constants (per channel, per pixel), binary steps between buffers (one of them with 1 channel), gather,
    concat with a constant, reduce, softmax, and a step the head does not read. head: 'bernoulli', 'logits'
    (4 levels, log-softmax) or 'probs' (4 levels, softmax)."""
    dh, dw = dilation
    arrays = [masked(rng, 3, 3, 1, 8, "A"),                                   # i0
              (0.1 * rng.standard_normal((1, 1, 1, 8))).astype(np.float32),  # i1 bias
              masked(rng, 3, 3, 8, 6, "B", dh, dw),                           # i2 (dilated)
              (0.5 + rng.random((1, h, w, 6))).astype(np.float32),            # i3 one value per pixel
              rng.standard_normal((1, 1, 1, 2)).astype(np.float32),          # i4 concatenated
              (rng.standard_normal((1, 1, 14, 4)) / 4).astype(np.float32),   # i5 1x1
              (0.1 * rng.standard_normal((1, 1, 1, 4))).astype(np.float32),  # i6 bias
              masked(rng, 4, 2, 8, 3, "B")]                                   # i7 even kernel
    lines = ["pixelcnn_fast.column_program 1", "# a comment", "",
             f"image height={h} width={w} channels=1",
             "buffers channels=1,8,8,8,6,6,6,4,14,14,4,4,3,1,%s,6" % ("1,1" if head == "bernoulli" else "4,4"),
             "input index=0 kind=kernel shape=3,3,1,8", "input index=1 kind=const",
             "input index=2 kind=kernel shape=3,3,8,6", "input index=3 kind=const", "input index=4 kind=const",
             "input index=5 kind=kernel shape=1,1,14,4", "input index=6 kind=const",
             "input index=7 kind=kernel shape=4,2,8,3",
             "conv out=1 in=0 kernel=0 dh=1 dw=1 padding=same phase=0 name=first%20layer%25",
             "binary out=2 fn=add a=b1 b=i1 phase=0",
             f"act out=3 in=2 fn={act} alpha=0.1 phase=0",
             f"conv out=4 in=3 kernel=2 dh={dh} dw={dw} padding=same phase=0",
             # the constant first (i3 op b4), except for div: a divisor near 0 amplifies rounding
             f"binary out=5 fn={binary} a=b4 b=i3 phase=0" if binary == "div" else
             f"binary out=5 fn={binary} a=i3 b=b4 phase=0",
             "binary out=6 fn=sub a=b5 b=b4 phase=0",
             "gather out=7 in=6 channels=0,2,4,1 phase=0",
             "concat out=8 parts=b7,i4,b3 phase=0",
             "act out=9 in=8 fn=leaky_relu alpha=0.1 phase=0",
             "conv out=10 in=9 kernel=5 dh=1 dw=1 padding=valid phase=0",
             "binary out=11 fn=add a=b10 b=i6 phase=0",
             "conv out=12 in=3 kernel=7 dh=1 dw=1 padding=same phase=0"]
    if head == "bernoulli":
        lines += ["reduce out=13 in=12 fn=mean phase=0",
                  "reduce out=14 in=11 fn=sum phase=0",
                  "binary out=15 fn=add a=b14 b=b13 phase=0"]
        levels, scale = 1, 1.0
    else:
        lines += ["reduce out=13 in=12 fn=%s phase=0" % ("max" if head == "logits" else "min"),
                  "binary out=14 fn=sub a=b11 b=b13 phase=0",
                  "softmax out=15 in=14 group=4 log=%d phase=0" % (head == "logits")]
        levels, scale = 4, 1.0 / 3.0
    lines += ["binary out=16 fn=div a=b5 b=b13 phase=0",  # read by nothing: the interpreter skips it
              "head kind=%s buffer=15 levels=%d scale=%.9g offset=0" % (head, levels, np.float32(scale)), "end"]
    return "\n".join(lines) + "\n", arrays


# The spec parser's tests (pixelcnn_fast.program.spec.parse_spec, which this module runs programs from) are in
# tests/test_program_spec.py: they need no torch.


# --------------------------------------------------------------------------- randomness

@pytest.mark.parametrize("seed", [0, 7, 2 ** 32 + 5, 2 ** 64 - 1])
def test_philox_grid_is_bit_identical_to_the_core(core, seed):
    got = rng.uniform_grid(seed, 3, 4, 5, 3, image_offset=11)
    want = core.testing.philox_uniform_grid(seed, 3, 4, 5, 3, 11)
    assert got.dtype == np.float32 and np.array_equal(got, want)


@pytest.mark.parametrize("kind, levels", [("bernoulli", 1), ("logits", 5), ("probs", 5)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_draws_agree_with_the_core(core, rng, kind, levels, temperature):
    m = 4000
    if kind == "probs":
        v = rng.random((m, levels)).astype(np.float32) ** 3
        v[:50] = 0.0  # all-zero rows: the uniform fallback
        v = (v / np.maximum(v.sum(1, keepdims=True), 1e-30)).astype(np.float32)
    else:
        v = (3 * rng.standard_normal((m, levels))).astype(np.float32)
    u = rng.random(m).astype(np.float32)
    want, want_margin = core.testing.draw_levels(v, kind, temperature, u, True)
    got, margin = tp.draw_levels(torch.from_numpy(v), kind, temperature, torch.from_numpy(u))
    got, margin = got.numpy(), margin.numpy()
    diff = got != want
    tol = rng.boundary_tolerance(max(levels, 2))
    assert np.all(np.minimum(margin, want_margin)[diff] < tol), "a draw differs away from a CDF boundary"
    assert diff.mean() < 0.01
    same = ~diff
    np.testing.assert_allclose(margin[same], want_margin[same], rtol=0, atol=tol)


# --------------------------------------------------------------------------- teacher forcing

@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_keras_io_teacher_forcing_matches_keras_logits(keras_io, layout):
    spec, arrays, image, logits = keras_io
    prog = tp.TorchProgram(spec, arrays, layout=layout)
    assert prog.skipped_steps == 1  # the final sigmoid: the head is the logits before it
    assert prog.fused_biases == 19  # every conv's bias add
    close(prog.teacher_forced(image), logits)


def test_keras_io_rows_crop_equals_full_image_rows(keras_io):
    spec, arrays, image, _ = keras_io
    prog = tp.TorchProgram(spec, arrays)
    x = prog.to_input(image[:2])
    with torch.no_grad():
        full = prog.forward(x)
        for r in (1, 9, 20):
            crop = prog.forward(x[:, :, :r])
            close(crop.numpy(), full[:, :, :r].numpy())


@pytest.mark.parametrize("act", ACT_FNS)
def test_every_activation_matches_the_core(core, rng, act):
    spec, arrays = synthetic(rng, "logits", act=act)
    image = (rng.random((2, 5, 6, 1)) < 0.5).astype(np.float32)
    want = core.ColumnProgram.from_spec(spec, arrays, 2).teacher_forced(image)
    close(tp.TorchProgram(spec, arrays).teacher_forced(image), want)


@pytest.mark.parametrize("binary", BINARY_FNS)
@pytest.mark.parametrize("head", ["bernoulli", "logits", "probs"])
def test_every_binary_and_head_matches_the_core(core, rng, binary, head):
    spec, arrays = synthetic(rng, head, binary=binary, dilation=(1, 2))
    image = rng.integers(0, 2 if head == "bernoulli" else 4, (3, 5, 6, 1)).astype(np.float32)
    want = core.ColumnProgram.from_spec(spec, arrays, 3).teacher_forced(image)
    for layout in ("nchw", "nhwc"):
        close(tp.TorchProgram(spec, arrays, layout=layout).teacher_forced(image), want)
    f64 = tp.TorchProgram(spec, arrays, dtype=torch.float64).teacher_forced(image)
    close(f64, want)


# --------------------------------------------------------------------------- naive loops vs the core's sampler

@pytest.mark.parametrize("head", ["bernoulli", "logits", "probs"])
@pytest.mark.parametrize("mode", ["full", "rows"])
@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_naive_loops_draw_the_core_samplers_images(core, rng, head, mode, temperature):
    spec, arrays = synthetic(rng, head)
    sp = tp.parse_spec(spec)
    n, seed = 4, int(rng.integers(0, 2 ** 63))
    levels, margins = core.ColumnProgram.from_spec(spec, arrays, n).sample(n, seed, temperature, 0, sp.height,
                                                                           sp.width, sp.channels)
    prog = tp.TorchProgram(spec, arrays)
    res = tp.naive_sample(prog, n, seed, temperature, mode=mode)
    assert res.complete and res.steps_run == sp.height * sp.width
    assert res.levels.min() >= 0
    tp.first_disagreements(res.levels, res.margins, levels, margins, 2 if head == "bernoulli" else 4)
    assert (res.levels == levels).mean() > 0.5
    # the images hold the value map of the levels (scale = 1/3 for the categorical heads)
    np.testing.assert_allclose(res.images, res.levels.astype(np.float32) * np.float32(sp.head["scale"]), rtol=1e-6)


def test_naive_loops_on_keras_io_agree_with_the_core_over_the_first_rows(core, keras_io):
    spec, arrays, _, _ = keras_io
    n, seed = 2, 7
    levels, margins = core.ColumnProgram.from_spec(spec, arrays, n).sample(n, seed, 1.0, 0, 28, 28, 1)
    prog = tp.TorchProgram(spec, arrays)
    for mode, steps in (("rows", 40), ("full", 6)):
        res = tp.naive_sample(prog, n, seed, mode=mode, max_steps=steps)
        assert res.steps_run == steps
        assert (res.levels >= 0).sum() == n * steps
        tp.first_disagreements(res.levels, res.margins, levels, margins, 2)
    # positions + a starting image (what the rows estimate uses): draws at row 20 from the core's own image
    res = tp.naive_sample(prog, n, seed, mode="rows", positions=[(20, 3), (20, 4)], image=levels.astype(np.float32))
    tp.first_disagreements(res.levels, res.margins, levels, margins, 2)


def test_rows_estimate_interpolates_the_timed_rows(keras_io):
    spec, arrays, _, _ = keras_io
    prog = tp.TorchProgram(spec, arrays)
    est, costs = tp.rows_seconds_estimate(prog, 1, rows=(0, 3), steps_per_row=2)
    assert len(costs) == 2 and all(c > 0 for c in costs)
    h, w = 28, 28
    want = w * float(np.interp(np.arange(h), [0, 3], costs).sum())
    assert est == pytest.approx(want)


# --------------------------------------------------------------------------- benchmarks/bench_cuda.py without a GPU

@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One CPU dry run of the GPU harness (CPU stand-ins at tiny sizes): (exit status, results, report)."""
    import json

    import bench_cuda

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: bench_cuda.py measures it instead (run it directly)")
    out = tmp_path_factory.mktemp("gpu_dry")
    rc = bench_cuda.main(["--dry-run", "--out", str(out)])
    with open(out / "results.json") as f:
        res = json.load(f)
    return rc, res, (out / "REPORT.md").read_text()


def test_bench_cuda_dry_run_exercises_the_harness_and_says_no_gpu(dry_run):
    rc, res, report = dry_run
    assert rc == 0, res["errors"]
    assert res["mode"] == "dry-run" and res["errors"] == []
    assert "no GPU" in report and "DRY-RUN" in report
    assert all(c["ok"] for s in res["conv"]["shapes"] for c in s["checks"])
    assert {r["variant"] for s in res["conv"]["shapes"] for r in s["rows"]} == {"ours", "cudnn"}
    smp = res["sampler"]
    assert smp["baseline_correct"] and smp["cached_correct"] and all(c["ok"] for c in smp["checks"])
    assert [b["n"] for b in smp["batches"]] == [1, 2]
    for b in smp["batches"]:
        assert {"cached", "full", "rows"} <= set(b) and "error" not in b
        assert b["full"]["draws"]["ok"] and b["rows"]["draws"]["ok"]
    # a dry run gives no verdict
    assert report.count("**NOT MEASURED**") == 4 and "**MET**" not in report


def test_bench_cuda_renders_verdicts_for_a_gpu_run(dry_run, tmp_path):
    """The GPU branch of the report on the dry run's numbers relabelled as a GPU run (formatting only)."""
    import copy
    import json

    import bench_cuda

    res = copy.deepcopy(dry_run[1])
    res.update(mode="gpu", settings_name="full")
    res["env"]["device"] = "NVIDIA H100 80GB HBM3"
    res["conv"]["ours"] = "pixelcnn_fast.cuda"
    smp = res["sampler"]
    smp["cached"].update(kind="cuda", label="CUDA sampler: pixelcnn_fast.cuda.ColumnProgram")
    b64 = copy.deepcopy(smp["batches"][-1])
    b64["n"] = 64
    smp["batches"].append(b64)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(res))
    assert bench_cuda.main(["--render", str(path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    verdicts = [v for v, _ in bench_cuda.goals(res)]
    assert len(verdicts) == 4 and "NOT MEASURED" not in verdicts
    assert "| 64 | cached: CUDA sampler" in report and "ours (CUDA)" in report


def test_bench_cuda_without_a_gpu_and_without_dry_run_exits_2(tmp_path):
    import bench_cuda

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert bench_cuda.main(["--out", str(tmp_path), "--only", "ceilings"]) == 2
    report = (tmp_path / "REPORT.md").read_text()
    assert "NO-GPU" in report and "no GPU" in report
