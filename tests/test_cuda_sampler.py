"""Tests: the CUDA cached sampler (csrc/cuda/column_program.cu over csrc/core/flat_program.h).

Everywhere: the GPU executor's loops and per-thread arithmetic run on the host (`_core.testing.
EmulatedGpuProgram.*_emulated`) and must draw the CPU executor's images for a seed and reproduce its
teacher-forced head values, for every seed program (tests/fixtures/programs.npz), several images-per-block splits and odd sizes.
GPU only (skipped, saying why, without a CUDA build, CuPy or a device; PIXELCNN_FAST_REQUIRE_GPU=1 turns
those skips into failures, tests/conftest.py): the kernel itself against the CPU executor, poisoned outputs, launch shapes,
streams and bad input. Nothing here needs TensorFlow except the fixture's freshness check, so the GPU
tests run on a GPU machine without it.
"""

import importlib
import os
import sys

import numpy as np
import pytest

from pixelcnn_fast import build_info

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures import make_programs  # noqa: E402

PROGRAMS = make_programs.load()
head_levels = make_programs.head_levels
NAMES = sorted(PROGRAMS)


def core():
    return importlib.import_module("pixelcnn_fast._core")


def require_module(name, why, skip):
    """Imports `name` or skips saying why; on a GPU machine too that is no GPU problem (the lent GPU
    machines have no TensorFlow)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        skip(f"{name} is not installed: {why}")


def cpu_program(name):
    spec, arrays, n = PROGRAMS[name]
    return core().ColumnProgram.from_spec(spec, arrays, n), n


def emulated_program(name):
    """The same program as the GPU executor's flat tables, its loops run on the host."""
    spec, arrays, n = PROGRAMS[name]
    return core().testing.EmulatedGpuProgram.from_spec(spec, arrays, n)


def image_shape(spec):
    line = next(ln for ln in spec.splitlines() if ln.startswith("image "))
    kv = dict(tok.split("=") for tok in line.split()[1:])
    return int(kv["height"]), int(kv["width"]), int(kv["channels"])


def boundary_tolerance(n_levels, ulps=4.0):
    """pixelcnn_fast.rng.boundary_tolerance's formula (numba-free, for the GPU machine);
    test_boundary_tolerance_matches_rng keeps the two equal."""
    return float((2 * n_levels + 2 * ulps + 4) * 2.0 ** -24)


def assert_same_draws(levels_a, margins_a, levels_b, margins_b, n_levels, head_error, temperature, what):
    """Two executors' draws for one seed: equal, except that an image may diverge at a draw whose uniform lay
    within rounding of a CDF boundary (then everything after it legitimately differs). A bound on that
    distance: the draw's own rounding plus how far the head values themselves differ (|dp| <= |dz| / T for
    a sigmoid or softmax cdf, doubled for safety)."""
    tol = boundary_tolerance(n_levels) + 2.0 * head_error / temperature
    diverged = 0
    for k in range(levels_a.shape[0]):
        la, lb = levels_a[k].ravel(), levels_b[k].ravel()
        diff = np.flatnonzero(la != lb)
        if diff.size == 0:
            continue
        idx = int(diff[0])
        margin = float(min(margins_a[k].ravel()[idx], margins_b[k].ravel()[idx]))
        where = tuple(int(v) for v in np.unravel_index(idx, levels_a.shape[1:]))
        assert margin < tol, (f"{what}: image {k} differs at (row, col, channel) {where}: levels {la[idx]} vs "
                              f"{lb[idx]} with margin {margin:.3e} >= tolerance {tol:.3e}")
        diverged += 1
    assert diverged <= max(1, levels_a.shape[0] // 4), f"{what}: {diverged} images diverged near boundaries"


def random_image(rng, name, n):
    spec = PROGRAMS[name][0]
    h, w, c = image_shape(spec)
    levels = head_levels(spec)
    kv = dict(tok.split("=") for tok in next(ln for ln in spec.splitlines() if ln.startswith("head ")).split()[1:])
    return (rng.integers(0, levels, (n, h, w, c)) * float(kv["scale"]) + float(kv["offset"])).astype(np.float32)


# --------------------------------------------------------------------------- everywhere (CPU)

def test_fixture_programs_are_current(skip_not_a_gpu_problem):
    """The committed programs.npz equals what the lowering writes today (else regenerate it:
    python tests/fixtures/make_programs.py)."""
    require_module("tensorflow", "regenerating the fixture needs TensorFlow", skip_not_a_gpu_problem)
    import re

    fresh = make_programs.programs()
    assert sorted(fresh) == NAMES

    def unnamed(spec):  # layer names carry Keras's per-process counters (conv2d_5 after other tests)
        return re.sub(r" name=\S*", "", spec)

    for name in NAMES:
        spec, arrays, n = PROGRAMS[name]
        fspec, farrays, fn = fresh[name]
        assert unnamed(fspec) == unnamed(spec), f"{name}: the spec changed; run python tests/fixtures/make_programs.py"
        assert fn == n and len(farrays) == len(arrays)
        for a, b in zip(arrays, farrays):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: an array changed; regenerate the fixture")


def test_boundary_tolerance_matches_rng(skip_not_a_gpu_problem):
    require_module("numba", "pixelcnn_fast.rng needs numba", skip_not_a_gpu_problem)
    from pixelcnn_fast import rng as prng

    for levels in (2, 4, 256):
        assert boundary_tolerance(levels) == prng.boundary_tolerance(levels)


@pytest.mark.parametrize("name", NAMES)
def test_emulated_gpu_loops_teacher_force_like_the_cpu_executor(name, rng):
    program, n = cpu_program(name)
    gpu = emulated_program(name)
    batch = n or 5
    image = random_image(rng, name, batch)
    want = program.teacher_forced(image)
    scale = np.abs(want).max() + 1e-30
    for ipb in (1, 2, 5):  # 5 > kImagesPerItem: an item group and a partial one
        got = gpu.teacher_forced_emulated(image, ipb)
        assert got.shape == want.shape
        err = np.abs(got - want).max() / scale
        assert err < 1e-5, f"{name}, {ipb} images per block: max relative error {err:.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_emulated_gpu_loops_draw_the_cpu_executors_images(name, rng):
    program, n = cpu_program(name)
    gpu = emulated_program(name)
    spec = PROGRAMS[name][0]
    h, w, c = image_shape(spec)
    batch = n or 6
    seed = int(rng.integers(0, 2 ** 63))
    temperature = float(rng.choice([1.0, 0.7, 1.5]))
    offset = int(rng.integers(0, 100))
    levels, margins = program.sample(batch, seed, temperature, offset, h, w, c)
    # How far the two executors' head values differ (summation order) bounds how near a CDF boundary a
    # legitimately different draw can be.
    probe = random_image(rng, name, batch)
    head_error = 4 * float(np.abs(gpu.teacher_forced_emulated(probe, 1) - program.teacher_forced(probe)).max())
    for ipb in (1, 4, 6):
        got_levels, got_margins = gpu.sample_emulated(batch, seed, temperature, offset, ipb)
        assert_same_draws(got_levels, got_margins, levels, margins, head_levels(spec), head_error, temperature,
                          f"{name}, {ipb} images per block")
        np.testing.assert_array_equal(np.isfinite(got_margins), True)


SPLITS = ([1, 1, 1, 1, 1], [2, 3], [4, 1], [1, 3, 1])


@pytest.mark.parametrize("name", [k for k in NAMES if PROGRAMS[k][2] == 0])  # no per-image constants
def test_emulated_gpu_loops_split_into_calls_with_offsets_draw_the_one_call_images(name, rng):
    """The global image index (docs/SEMANTICS.md) on the GPU executor's loops: any split of a job into calls with
    image_offset draws the images of one call, bit for bit."""
    gpu = emulated_program(name)
    seed, start = int(rng.integers(0, 2 ** 63)), int(rng.integers(0, 2 ** 31))
    whole, _ = gpu.sample_emulated(5, seed, 1.0, start, 2)
    for sizes in SPLITS:
        offsets = np.cumsum([0] + sizes[:-1])
        parts = [gpu.sample_emulated(k, seed, 1.0, start + int(o), 1)[0] for k, o in zip(sizes, offsets)]
        np.testing.assert_array_equal(np.concatenate(parts), whole, err_msg=f"{name}: split {sizes}")
    with pytest.raises(ValueError, match=r"sample_emulated: image_offset \+ n must be <= 2\*\*32"):
        gpu.sample_emulated(2, seed, 1.0, 2 ** 32 - 1, 1)


def test_gpu_program_fuses_elementwise_chains_into_convs():
    """keras.io's conv -> bias -> relu (-> residual add) chains become one GPU step each (the teacher-forcing
    and sampling tests above show the fused program computes the same values)."""
    steps, fused, dropped = emulated_program("keras_io").gpu_step_count()
    spec = PROGRAMS["keras_io"][0]
    kinds = [ln.split()[0] for ln in spec.splitlines()]
    convs, total = kinds.count("conv"), sum(kinds.count(k) for k in ("conv", "binary", "act"))
    assert steps + fused + dropped == total
    assert dropped == 1, "the final sigmoid beside the logits head is read by nothing"
    assert steps == convs, f"{steps} GPU steps for {convs} convs: some chain was not fused ({fused} fused)"
    # The colour-group model: 4 convs with bias and relu/elu fused; its final softmax (the head reads the
    # logits before it) dropped.
    steps, fused, dropped = emulated_program("dilated_rgb_groups").gpu_step_count()
    assert (steps, dropped) == (4, 1) and fused > 0


def test_emulated_gpu_loops_refuse_bad_arguments():
    program, _ = cpu_program("keras_io")
    gpu = emulated_program("keras_io")
    with pytest.raises(ValueError, match=r"sample_emulated: images_per_block must be >= 1, got 0"):
        gpu.sample_emulated(2, 0, 1.0, 0, 0)
    with pytest.raises(ValueError, match=r"sample_emulated: n must be an integer in \[1, 2\*\*32\), got 0"):
        gpu.sample_emulated(0, 0, 1.0, 0, 1)
    with pytest.raises(ValueError, match=r"sample_emulated: temperature must be a positive finite float32, got nan"):
        gpu.sample_emulated(1, 0, float("nan"), 0, 1)
    with pytest.raises(ValueError, match=r"image must have shape \(n >= 1, 8, 8, 1\), got \(2, 8, 7, 1\)"):
        gpu.teacher_forced_emulated(np.zeros((2, 8, 7, 1), np.float32), 1)
    with pytest.raises(ValueError, match=r"ColumnProgram.teacher_forced: image must have shape \(n >= 1, 8, 8, 1\)"):
        program.teacher_forced(np.zeros((1, 9, 8, 1), np.float32))
    with pytest.raises(ValueError, match=r"n must equal the 3 images the program's per-image constants were built for, got 2"):
        emulated_program("conditional_n3").sample_emulated(2, 0, 1.0, 0, 1)


def test_sampler_refuses_the_cuda_backend_where_it_cannot_run(skip_not_a_gpu_problem):
    require_module("tensorflow", "Sampler lowers a Keras model", skip_not_a_gpu_problem)
    from pixelcnn_fast import Sampler, cuda
    from fixtures import seed_models

    reason = cuda.unavailable_reason()
    if reason is None:
        skip_not_a_gpu_problem("the GPU backend can run here: test_sampler_cuda_backend_matches_cpu covers it")
    with pytest.raises(RuntimeError, match=r"Sampler: backend='cuda' cannot run here: ") as e:
        Sampler(seed_models.keras_io().model, backend="cuda")
    assert str(e.value).endswith(reason)


# --------------------------------------------------------------------------- GPU only

@pytest.fixture
def gpu():
    """(cupy, pixelcnn_fast._cuda) or a skip naming what is missing (a failure under
    PIXELCNN_FAST_REQUIRE_GPU=1, tests/conftest.py: on a GPU machine these tests must run)."""
    missing = pytest.skip
    status = build_info()["cuda"]
    if status != "built":
        missing(f"built without CUDA ({status})")
    module = importlib.import_module("pixelcnn_fast._cuda")
    try:
        import cupy
    except ImportError:
        missing("CuPy not installed")
    problem = module.device_problem()
    if problem:
        missing(f"no CUDA device: {problem}")
    return cupy, module


def gpu_program(cuda, name):
    spec, arrays, n = PROGRAMS[name]
    return cuda.ColumnProgram.from_spec(spec, arrays, n)


@pytest.mark.parametrize("name", NAMES)
def test_cuda_teacher_forcing_equals_the_cpu_executor(gpu, name, rng):
    cupy, cuda = gpu
    program, n = cpu_program(name)
    gp = gpu_program(cuda, name)
    batch = n or 7
    image = random_image(rng, name, batch)
    want = program.teacher_forced(image)
    scale = np.abs(want).max() + 1e-30
    for ipb, threads in [(0, 0), (1, 32), (3, 64), (7, 256)]:
        out = cupy.full(want.shape, np.nan, cupy.float32)  # poisoned: every value must be written
        got = gp.teacher_forced(cupy.asarray(image), out=out, images_per_block=ipb, threads=threads)
        assert got is out
        err = np.abs(cupy.asnumpy(got) - want).max() / scale
        assert err < 1e-5, f"{name}, launch ({ipb}, {threads}): max relative error {err:.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_cuda_sampler_draws_the_cpu_executors_images(gpu, name, rng):
    cupy, cuda = gpu
    program, n = cpu_program(name)
    spec = PROGRAMS[name][0]
    h, w, c = image_shape(spec)
    gp = gpu_program(cuda, name)
    batch = n or 9
    seed = int(rng.integers(0, 2 ** 64, dtype=np.uint64))
    temperature = float(rng.choice([1.0, 0.8]))
    levels, margins = program.sample(batch, seed, temperature, 5, h, w, c)
    # How far the two executors' head values differ (summation order, the device's expf) bounds how near a
    # CDF boundary a legitimately different draw can be.
    probe = random_image(rng, name, batch)
    head_error = 4 * float(np.abs(cupy.asnumpy(gp.teacher_forced(cupy.asarray(probe))) -
                                  program.teacher_forced(probe)).max())
    for ipb, threads in [(0, 0), (1, 32), (2, 128), (9, 256)]:
        lv = cupy.full((batch, h, w, c), -7, cupy.int32)  # poisoned
        mg = cupy.full((batch, h, w, c), np.nan, cupy.float32)
        got_levels, got_margins = gp.sample(batch, seed, temperature, 5, lv, mg, None, ipb, threads)
        assert got_levels is lv and got_margins is mg
        gl, gm = cupy.asnumpy(got_levels), cupy.asnumpy(got_margins)
        assert np.isfinite(gm).all() and (gl >= 0).all()
        assert_same_draws(gl, gm, levels, margins, head_levels(spec), head_error + 1e-6, temperature,
                          f"{name}, launch ({ipb}, {threads})")


def test_cuda_sampler_is_deterministic_and_splits_batches_by_image_index(gpu):
    cupy, cuda = gpu
    gp = gpu_program(cuda, "keras_io")
    a, _ = gp.sample(6, 123)
    b, _ = gp.sample(6, 123)
    np.testing.assert_array_equal(cupy.asnumpy(a), cupy.asnumpy(b))
    tail, _ = gp.sample(2, 123, image_offset=4)  # images 4 and 5 of the batch, drawn alone
    np.testing.assert_array_equal(cupy.asnumpy(tail), cupy.asnumpy(a)[4:])


def test_cuda_sampler_runs_on_the_given_stream(gpu):
    cupy, cuda = gpu
    gp = gpu_program(cuda, "categorical4")
    want, _ = gp.sample(3, 9)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        got_current, _ = gp.sample(3, 9)
    got_explicit, _ = gp.sample(3, 9, stream=stream.ptr)
    stream.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(got_current), cupy.asnumpy(want))
    np.testing.assert_array_equal(cupy.asnumpy(got_explicit), cupy.asnumpy(want))


def test_cuda_sampler_refuses_bad_input(gpu):
    cupy, cuda = gpu
    gp = gpu_program(cuda, "keras_io")
    with pytest.raises(TypeError, match=r"ColumnProgram.teacher_forced: image: expected a CuPy \(device\) array, "
                                        r"got numpy.ndarray \(host memory"):
        gp.teacher_forced(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(TypeError, match=r"image must have dtype float32"):
        gp.teacher_forced(cupy.zeros((1, 8, 8, 1), cupy.float64))
    with pytest.raises(ValueError, match=r"image must have shape \(n >= 1, 8, 8, 1\), got \(1, 8, 8, 3\)"):
        gp.teacher_forced(cupy.zeros((1, 8, 8, 3), cupy.float32))
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 2\*\*32\), got 0"):
        gp.sample(0, 1)
    with pytest.raises(ValueError, match=r"temperature must be a positive finite float32, got 0.0"):
        gp.sample(1, 1, 0.0)
    with pytest.raises(ValueError, match=r"threads must be a multiple of 32 in \[32, 256\]"):
        gp.sample(1, 1, threads=48)
    with pytest.raises(TypeError, match=r"levels must have dtype int32"):
        gp.sample(1, 1, levels=cupy.zeros((1, 8, 8, 1), cupy.float32))
    with pytest.raises(ValueError, match=r"levels must have shape \(2, 8, 8, 1\)"):
        gp.sample(2, 1, levels=cupy.zeros((1, 8, 8, 1), cupy.int32))
    with pytest.raises(ValueError, match=r"ColumnProgram.from_spec: "):
        cuda.ColumnProgram.from_spec("not a spec", [], 0)
    conditional = gpu_program(cuda, "conditional_n3")
    with pytest.raises(ValueError, match=r"n must equal the 3 images the program's per-image constants were built for, got 2"):
        conditional.sample(2, 0)


def test_sampler_cuda_backend_matches_cpu(gpu, skip_not_a_gpu_problem):
    require_module("tensorflow", "Sampler lowers a Keras model", skip_not_a_gpu_problem)
    from pixelcnn_fast import Sampler
    from fixtures import seed_models

    sm = seed_models.keras_io()
    cpu = Sampler(sm.model)
    gpu_sampler = Sampler(sm.model, backend="cuda")
    levels, margins = cpu.sample(4, seed=3, return_margins=True)
    got, got_margins = gpu_sampler.sample(4, seed=3, return_margins=True)
    assert isinstance(got, np.ndarray)
    assert_same_draws(got, got_margins, levels, margins, 2, 1e-5, 1.0, "Sampler(backend='cuda')")
    image = levels.astype(np.float32)
    np.testing.assert_allclose(gpu_sampler.teacher_forced(image), cpu.teacher_forced(image), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["keras_io", "rgb_3x256"])
def test_cuda_sampler_split_into_calls_with_offsets_draws_the_one_call_images(gpu, name, rng):
    cupy, cuda = gpu
    gp = gpu_program(cuda, name)
    seed, start = int(rng.integers(0, 2 ** 63)), int(rng.integers(0, 2 ** 31))
    whole = cupy.asnumpy(gp.sample(5, seed, 1.0, start)[0])
    for sizes in SPLITS:
        offsets = np.cumsum([0] + sizes[:-1])
        parts = [cupy.asnumpy(gp.sample(k, seed, 1.0, start + int(o))[0]) for k, o in zip(sizes, offsets)]
        np.testing.assert_array_equal(np.concatenate(parts), whole, err_msg=f"{name}: split {sizes}")
    with pytest.raises(ValueError, match=r"image_offset \+ n must be <= 2\*\*32"):
        gp.sample(2, seed, 1.0, 2 ** 32 - 1)


@pytest.mark.parametrize("name", ["keras_io", "rgb_3x256", "categorical4"])
def test_cuda_sampler_completes_like_the_cpu_executor(gpu, name, rng):
    """Image completion on the GPU: known levels written bit for bit, the rest the CPU executor's draws; a bad
    known level is refused (checked on a host copy)."""
    cupy, cuda = gpu
    program, _ = cpu_program(name)
    spec = PROGRAMS[name][0]
    h, w, c = image_shape(spec)
    gp = gpu_program(cuda, name)
    n, seed = 6, int(rng.integers(0, 2 ** 63))
    images = rng.integers(0, head_levels(spec), (n, h, w, c)).astype(np.int32)
    mask = rng.random((n, h, w, c)) < 0.5
    given = np.where(mask, images, -1).astype(np.int32)
    want, want_margins = program.sample(n, seed, 1.0, 3, h, w, c, None, given)
    got, margins = (cupy.asnumpy(a) for a in gp.sample(n, seed, 1.0, 3, known=cupy.asarray(given)))
    np.testing.assert_array_equal(got[mask], images[mask])
    probe = random_image(rng, name, n)
    head_error = 4 * float(np.abs(cupy.asnumpy(gp.teacher_forced(cupy.asarray(probe))) -
                                  program.teacher_forced(probe)).max())
    assert_same_draws(got, margins, want, want_margins, head_levels(spec), head_error, 1.0, f"{name} completion")
    given[0, 0, 0, 0] = head_levels(spec)
    with pytest.raises(ValueError, match=r"known levels must be -1 \(draw\) or in \[0, "):
        gp.sample(n, seed, 1.0, 3, known=cupy.asarray(given))
