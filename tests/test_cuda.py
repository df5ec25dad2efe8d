"""Tests: the CUDA backend — build record, import without a GPU, the kernels' per-element arithmetic on the
CPU (everywhere), and the kernels themselves against the CPU core, float64 and PyTorch (GPU only: skipped,
with the reason, where there is no CUDA build, no CuPy or no device; failed instead under
PIXELCNN_FAST_REQUIRE_GPU=1, see conftest.py). Needs no TensorFlow (tests/test_without_tf.py runs it without)."""

import collections
import importlib
import os

import numpy as np
import pytest

from pixelcnn_fast import build_info

Case = collections.namedtuple("Case", "n h w cin cout kh kw mask groups dilation padding")

# setup.py's default; a quick build for one GPU (PIXELCNN_FAST_CUDA_ARCHS=90, as scripts/gpu_check.sh does, the
# same variable set for the build and for this test) has only those.
EXPECTED_ARCHS = ([f"sm_{a}" for a in os.environ.get("PIXELCNN_FAST_CUDA_ARCHS", "").replace(",", " ").split()]
                  or ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90"])


def _case_id(c):
    d = "x".join(map(str, c.dilation))
    return f"n{c.n}-{c.h}x{c.w}-c{c.cin}to{c.cout}-k{c.kh}x{c.kw}{c.mask}-g{c.groups}-d{d}-{c.padding}"


# Edge cases every backend must get right: no live tap, one pixel, one row, a 1x1 'valid' output,
# colour groups with one channel per block, unequal dilation, channels past one 32-wide tile.
EDGE_CASES = [Case(*c) for c in [
    (3, 5, 7, 2, 3, 1, 1, "A", 1, (1, 1), "same"),       # 1x1 mask A: no live tap, output exactly 0
    (1, 1, 1, 3, 2, 5, 5, "B", 1, (1, 1), "same"),       # one pixel: only the centre sees data
    (1, 1, 7, 4, 6, 7, 7, "B", 1, (1, 1), "same"),       # one row
    (1, 7, 7, 3, 6, 7, 7, "A", 3, (1, 1), "valid"),      # output 1x1
    (1, 6, 7, 3, 3, 3, 3, "A", 3, (1, 1), "same"),
    (3, 7, 7, 5, 6, 3, 3, "B", 1, (2, 1), "same"),
    (1, 5, 8, 6, 3, 3, 1, "b", 3, (2, 1), "valid"),
    (2, 9, 7, 19, 45, 5, 5, "B", 1, (1, 2), "same"),     # cin not a multiple of the 8-channel tile, cout > 32
]]


def random_case(rng):
    """A fresh shape: odd and even sizes, batch 1 often, groups 1/3, dilation 1-3, same/valid."""
    groups = int(rng.choice([1, 3]))
    kh, kw = int(rng.choice([1, 3, 5, 7])), int(rng.choice([1, 3, 5]))
    dh, dw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    padding = str(rng.choice(["same", "valid"]))
    h, w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
    if padding == "valid":
        h += (kh - 1) * dh
        w += (kw - 1) * dw
    return Case(int(rng.choice([1, 1, 2, 3])), h, w, groups * int(rng.integers(1, 7)),
                groups * int(rng.integers(1, 13)), kh, kw, str(rng.choice(["A", "B"])), groups, (dh, dw), padding)


def out_hw(c):
    if c.padding == "same":
        return c.h, c.w
    return c.h - c.dilation[0] * (c.kh - 1), c.w - c.dilation[1] * (c.kw - 1)


def make_problem(rng, c):
    x = rng.standard_normal((c.n, c.h, c.w, c.cin)).astype(np.float32)
    kernel = rng.standard_normal((c.kh, c.kw, c.cin, c.cout)).astype(np.float32)  # dead taps random too
    dy = rng.standard_normal((c.n, *out_hw(c), c.cout)).astype(np.float32)
    return x, kernel, dy


def oracles(direct, x, kernel, dy, c):
    """float64 (forward, input gradient, filter gradient) and their rounding scales."""
    args = (c.mask, c.groups, c.dilation, c.padding)
    ax, ak, ady = np.abs(x), np.abs(kernel), np.abs(dy)
    return {
        "forward": (direct.forward(x, kernel, *args),
                    np.max(direct.forward(ax, ak, *args), initial=0.0)),
        "backprop_input": (direct.backprop_input(dy, kernel, (c.h, c.w), *args),
                           np.max(direct.backprop_input(ady, ak, (c.h, c.w), *args), initial=0.0)),
        "backprop_filter": (direct.backprop_filter(x, dy, (c.kh, c.kw), *args),
                            np.max(direct.backprop_filter(ax, ady, (c.kh, c.kw), *args), initial=0.0)),
    }


def cpu_results(core, x, kernel, dy, c, suffix=""):
    """The three functions of the CPU module (_core: the blocked fast path, or _core.testing with suffix
    "_elementwise": the CUDA kernels' per-element arithmetic), every output buffer poisoned with NaN first."""
    kw = dict(color_groups=c.groups, dilation=c.dilation, padding=c.padding)
    outs = {"forward": np.full((c.n, *out_hw(c), c.cout), np.nan, np.float32),
            "backprop_input": np.full(x.shape, np.nan, np.float32),
            "backprop_filter": np.full(kernel.shape, np.nan, np.float32)}
    getattr(core, "masked_conv2d_forward" + suffix)(x, kernel, c.mask, out=outs["forward"], **kw)
    getattr(core, "masked_conv2d_backprop_input" + suffix)(dy, kernel, (c.h, c.w), c.mask,
                                                           out=outs["backprop_input"], **kw)
    getattr(core, "masked_conv2d_backprop_filter" + suffix)(x, dy, (c.kh, c.kw), c.mask,
                                                            out=outs["backprop_filter"], **kw)
    return outs


def check_results(name, got, ref32, exact, close_to_f64, direct, c):
    """Every entry written, dead filter entries exactly 0, and the tolerance rule of conftest.py (the float32
    reference is the CPU core, itself checked against TF's conv2d in test_masked_conv.py)."""
    for fn, value in got.items():
        assert not np.isnan(value).any(), f"{name} {fn}: NaN left in out: not every element was written"
        close_to_f64(f"{name} {fn}", value, ref32[fn], *exact[fn])
    dead = direct.dense_mask(c.kh, c.kw, c.cin, c.cout, c.mask, c.groups) == 0
    assert np.all(got["backprop_filter"][dead] == 0.0), f"{name}: dead filter-gradient entries must be exactly 0"


# --------------------------------------------------------------------------- everywhere: the build

def test_build_info_records_cuda():
    info = build_info()
    status = info["cuda"]
    assert status == "built" or status.startswith("not built: "), status
    if status == "built":
        assert info["cuda_archs"] == EXPECTED_ARCHS
    else:
        assert info["cuda_archs"] == []


def test_cuda_module_imports_without_a_device():
    # cudart is linked statically and nothing touches a device at import: the module must import on any
    # machine where it was built, GPU or not.
    if build_info()["cuda"] != "built":
        pytest.skip(f"built without CUDA ({build_info()['cuda']})")
    module = importlib.import_module("pixelcnn_fast._cuda")
    assert isinstance(module.device_problem(), str)
    for fn in ("masked_conv2d_forward", "masked_conv2d_backprop_input", "masked_conv2d_backprop_filter"):
        assert callable(getattr(module, fn))


def test_cuda_functions_without_a_device_say_so(skip_not_a_gpu_problem):
    if build_info()["cuda"] != "built":
        pytest.skip(f"built without CUDA ({build_info()['cuda']})")
    module = importlib.import_module("pixelcnn_fast._cuda")
    problem = module.device_problem()
    if not problem:
        skip_not_a_gpu_problem("a CUDA device is present: the GPU tests below cover the functions")
    assert problem.startswith("no CUDA device available")
    x = np.zeros((1, 4, 4, 2), np.float32)
    k = np.zeros((3, 3, 2, 2), np.float32)
    for call in (lambda: module.masked_conv2d_forward(x, k, "A"),
                 lambda: module.masked_conv2d_backprop_input(x, k, (4, 4), "A"),
                 lambda: module.masked_conv2d_backprop_filter(x, x, (3, 3), "A")):
        with pytest.raises(RuntimeError, match=r"masked_conv2d_\w+: no CUDA device available"):
            call()


def test_front_end_says_why_the_gpu_backend_cannot_run(skip_not_a_gpu_problem):
    from pixelcnn_fast import cuda

    reason = cuda.unavailable_reason()
    if reason is None:
        skip_not_a_gpu_problem("the GPU backend can run here: the GPU tests below cover it")
    status = build_info()["cuda"]
    if status != "built":
        assert reason.startswith(f"pixelcnn_fast was built without CUDA ({status})")
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises((ImportError, RuntimeError)) as e:
        cuda.masked_conv2d_forward(x, np.zeros((3, 3, 2, 2), np.float32), "A")
    assert str(e.value) == reason


def test_front_end_reports_a_build_without_cuda(monkeypatch):
    from pixelcnn_fast import cuda

    monkeypatch.setattr(cuda, "build_info", lambda: {"cuda": "not built: disabled by PIXELCNN_FAST_CUDA=0"})
    with pytest.raises(ImportError, match=r"^pixelcnn_fast was built without CUDA \(not built: disabled by "
                                          r"PIXELCNN_FAST_CUDA=0\)"):
        cuda.masked_conv2d_backprop_filter(None, None, (3, 3), "A")


# --------------------------------------------------------------------------- everywhere: GPU arithmetic on CPU
# _core.testing.*_elementwise run csrc/core/masked_conv_element.h — the per-thread code of csrc/cuda/masked_conv.cu,
# with the index math of csrc/core/conv_index.h — over every element on the host.

@pytest.mark.parametrize("c", EDGE_CASES, ids=_case_id)
def test_gpu_arithmetic_on_cpu_edge_cases(rng, direct, core, core_testing, close_to_f64, c):
    x, kernel, dy = make_problem(rng, c)
    exact = oracles(direct, x, kernel, dy, c)
    check_results("elementwise", cpu_results(core_testing, x, kernel, dy, c, "_elementwise"),
                  cpu_results(core, x, kernel, dy, c), exact, close_to_f64, direct, c)


@pytest.mark.parametrize("draw", range(12))
def test_gpu_arithmetic_on_cpu_random_shapes(rng, direct, core, core_testing, close_to_f64, draw):
    c = random_case(rng)
    print("case", _case_id(c))
    x, kernel, dy = make_problem(rng, c)
    exact = oracles(direct, x, kernel, dy, c)
    check_results("elementwise", cpu_results(core_testing, x, kernel, dy, c, "_elementwise"),
                  cpu_results(core, x, kernel, dy, c), exact, close_to_f64, direct, c)


def test_gpu_arithmetic_on_cpu_taps_from_kernel_zeros(rng, core, core_testing):
    # mask_type None: the tap tables come from the kernel's non-zeros (hulls per (tap, output)); the
    # per-element sums must equal the CPU core's on the same tap set, including a kernel with a hole.
    kernel = rng.standard_normal((5, 3, 4, 7)).astype(np.float32)
    kernel[3:] = 0.0
    kernel[2, 2:] = 0.0
    kernel[2, 1, 1:3, 2:5] = 0.0   # zeros inside a hull
    kernel[0, 1, :, 6] = 0.0       # an output that does not read one tap
    x = rng.standard_normal((2, 6, 9, 4)).astype(np.float32)
    dy = rng.standard_normal((2, 6, 9, 7)).astype(np.float32)
    kw = dict(dilation=(2, 1), padding="same")
    pairs = [(core.masked_conv2d_forward(x, kernel, None, **kw),
              core_testing.masked_conv2d_forward_elementwise(x, kernel, None, **kw)),
             (core.masked_conv2d_backprop_input(dy, kernel, (6, 9), None, **kw),
              core_testing.masked_conv2d_backprop_input_elementwise(dy, kernel, (6, 9), None, **kw))]
    for blocked, elementwise in pairs:
        np.testing.assert_allclose(elementwise, blocked, rtol=1e-5, atol=1e-5 * np.max(np.abs(blocked)))


# --------------------------------------------------------------------------- GPU only

@pytest.fixture
def gpu():
    """(cupy, pixelcnn_fast._cuda) or a skip naming what is missing."""
    status = build_info()["cuda"]
    if status != "built":
        pytest.skip(f"built without CUDA ({status})")
    module = importlib.import_module("pixelcnn_fast._cuda")
    try:
        import cupy
    except ImportError:
        pytest.skip("CuPy not installed")
    problem = module.device_problem()
    if problem:
        pytest.skip(f"no CUDA device: {problem}")
    return cupy, module


def gpu_results(cupy, cuda, x, kernel, dy, c):
    """The three CUDA functions with NaN-poisoned out= buffers, copied back to the host."""
    kw = dict(color_groups=c.groups, dilation=c.dilation, padding=c.padding)
    outs = {"forward": cupy.full((c.n, *out_hw(c), c.cout), np.nan, cupy.float32),
            "backprop_input": cupy.full(x.shape, np.nan, cupy.float32),
            "backprop_filter": cupy.full(kernel.shape, np.nan, cupy.float32)}
    xd, kd, dyd = cupy.asarray(x), cupy.asarray(kernel), cupy.asarray(dy)
    assert cuda.masked_conv2d_forward(xd, kd, c.mask, out=outs["forward"], **kw) is outs["forward"]
    cuda.masked_conv2d_backprop_input(dyd, kd, (c.h, c.w), c.mask, out=outs["backprop_input"], **kw)
    cuda.masked_conv2d_backprop_filter(xd, dyd, (c.kh, c.kw), c.mask, out=outs["backprop_filter"], **kw)
    return {k: cupy.asnumpy(v) for k, v in outs.items()}


@pytest.mark.parametrize("c", EDGE_CASES, ids=_case_id)
def test_cuda_edge_cases(rng, direct, core, close_to_f64, gpu, c):
    cupy, cuda = gpu
    x, kernel, dy = make_problem(rng, c)
    check_results("cuda", gpu_results(cupy, cuda, x, kernel, dy, c), cpu_results(core, x, kernel, dy, c),
                  oracles(direct, x, kernel, dy, c), close_to_f64, direct, c)


@pytest.mark.parametrize("draw", range(24))
def test_cuda_random_shapes(rng, direct, core, close_to_f64, gpu, draw):
    cupy, cuda = gpu
    c = random_case(rng)
    print("case", _case_id(c))
    x, kernel, dy = make_problem(rng, c)
    check_results("cuda", gpu_results(cupy, cuda, x, kernel, dy, c), cpu_results(core, x, kernel, dy, c),
                  oracles(direct, x, kernel, dy, c), close_to_f64, direct, c)


def test_cuda_large_reduction_is_deterministic(rng, direct, core, close_to_f64, gpu):
    # Enough pixels that the filter gradient splits them over blocks; two runs must agree bit for bit.
    cupy, cuda = gpu
    c = Case(8, 33, 31, 16, 40, 7, 7, "A", 1, (1, 1), "same")
    x, kernel, dy = make_problem(rng, c)
    first = gpu_results(cupy, cuda, x, kernel, dy, c)
    second = gpu_results(cupy, cuda, x, kernel, dy, c)
    for fn in first:
        np.testing.assert_array_equal(first[fn], second[fn])
    check_results("cuda", first, cpu_results(core, x, kernel, dy, c), oracles(direct, x, kernel, dy, c),
                  close_to_f64, direct, c)


def test_cuda_default_out_and_stream(rng, core, gpu):
    cupy, cuda = gpu
    c = EDGE_CASES[5]
    x, kernel, _ = make_problem(rng, c)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        y = cuda.masked_conv2d_forward(cupy.asarray(x), cupy.asarray(kernel), c.mask, dilation=c.dilation)
    y_explicit = cuda.masked_conv2d_forward(cupy.asarray(x), cupy.asarray(kernel), c.mask, dilation=c.dilation,
                                            stream=stream.ptr)
    stream.synchronize()
    assert isinstance(y, cupy.ndarray) and y.dtype == cupy.float32
    want = core.masked_conv2d_forward(x, kernel, c.mask, dilation=c.dilation)
    np.testing.assert_allclose(cupy.asnumpy(y), want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want)))
    np.testing.assert_array_equal(cupy.asnumpy(y), cupy.asnumpy(y_explicit))


def test_cuda_taps_from_kernel_zeros(rng, core, gpu):
    cupy, cuda = gpu
    kernel = rng.standard_normal((5, 3, 4, 7)).astype(np.float32)
    kernel[3:] = 0.0
    kernel[2, 2:] = 0.0
    kernel[2, 1, 1:3, 2:5] = 0.0
    x = rng.standard_normal((2, 6, 9, 4)).astype(np.float32)
    dy = rng.standard_normal((2, 6, 9, 7)).astype(np.float32)
    y = cupy.asnumpy(cuda.masked_conv2d_forward(cupy.asarray(x), cupy.asarray(kernel), None, dilation=(2, 1)))
    dx = cupy.asnumpy(cuda.masked_conv2d_backprop_input(cupy.asarray(dy), cupy.asarray(kernel), (6, 9), None,
                                                        dilation=(2, 1)))
    for got, want in ((y, core.masked_conv2d_forward(x, kernel, None, dilation=(2, 1))),
                      (dx, core.masked_conv2d_backprop_input(dy, kernel, (6, 9), None, dilation=(2, 1)))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want)))


@pytest.mark.parametrize("draw", range(6))
def test_cuda_against_torch_float64(rng, direct, gpu, draw):
    # An independent float64 convolution (PyTorch's) of the densely masked kernel.
    torch = pytest.importorskip("torch", reason="PyTorch not installed")
    cupy, cuda = gpu
    c = random_case(rng)
    x, kernel, _ = make_problem(rng, c)
    dense = kernel.astype(np.float64) * direct.dense_mask(c.kh, c.kw, c.cin, c.cout, c.mask, c.groups)
    want = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2),
                                      torch.from_numpy(dense).permute(3, 2, 0, 1), dilation=c.dilation,
                                      padding=c.padding).permute(0, 2, 3, 1).numpy()
    got = cupy.asnumpy(cuda.masked_conv2d_forward(cupy.asarray(x), cupy.asarray(kernel), c.mask,
                                                  color_groups=c.groups, dilation=c.dilation, padding=c.padding))
    scale = np.max(direct.forward(np.abs(x), np.abs(kernel), c.mask, c.groups, c.dilation, c.padding), initial=0.0)
    m = c.kh * c.kw * c.cin
    assert np.max(np.abs(got - want), initial=0.0) <= m * 1.2e-7 * scale + 1e-30


def test_cuda_argument_errors(gpu, core):
    cupy, cuda = gpu
    x = cupy.zeros((1, 5, 5, 3), cupy.float32)
    k = cupy.zeros((3, 3, 3, 6), cupy.float32)
    with pytest.raises(TypeError, match=r"masked_conv2d_forward: x: expected a CuPy \(device\) array, got "
                                        r"numpy\.ndarray"):
        cuda.masked_conv2d_forward(np.zeros((1, 5, 5, 3), np.float32), k, "A")
    with pytest.raises(TypeError, match=r"kernel must have dtype float32 \(typestr '<f4'\), got typestr '<f8'"):
        cuda.masked_conv2d_forward(x, k.astype(cupy.float64), "A")
    with pytest.raises(ValueError, match=r"x must have rank 4, got shape \(5, 5, 3\)"):
        cuda.masked_conv2d_forward(x[0], k, "A")
    with pytest.raises(ValueError, match=r"x must be C-contiguous"):
        cuda.masked_conv2d_forward(cupy.zeros((1, 5, 10, 3), cupy.float32)[:, :, ::2], k, "A")
    with pytest.raises(ValueError, match=r"out must have shape \(1, 5, 5, 6\), got \(1, 5, 5, 5\)"):
        cuda.masked_conv2d_forward(x, k, "A", out=cupy.zeros((1, 5, 5, 5), cupy.float32))
    with pytest.raises(ValueError, match=r"dy must have shape \(1, 5, 5, 6\) \(batch and output size of the "
                                         r"forward pass on x\), got \(1, 5, 4, 6\)"):
        cuda.masked_conv2d_backprop_filter(x, cupy.zeros((1, 5, 4, 6), cupy.float32), (3, 3), "A")
    with pytest.raises(ValueError, match=r"dy must have shape \(1, 5, 5, 6\) \(the forward output for input_hw "
                                         r"and this kernel\), got \(1, 4, 5, 6\)"):
        cuda.masked_conv2d_backprop_input(cupy.zeros((1, 4, 5, 6), cupy.float32), k, (5, 5), "A")
    # The semantic arguments go through the core's shared checker: the same messages as the CPU module.
    xh, kh = np.zeros((1, 5, 5, 3), np.float32), np.zeros((3, 3, 3, 6), np.float32)
    for kwargs in (dict(mask_type="C"), dict(mask_type="A", color_groups=2), dict(mask_type="B", padding="full"),
                   dict(mask_type="A", dilation=0), dict(mask_type=None, color_groups=3), dict(mask_type=7)):
        with pytest.raises((ValueError, TypeError)) as cpu_err:
            core.masked_conv2d_forward(xh, kh, **kwargs)
        with pytest.raises(type(cpu_err.value)) as gpu_err:
            cuda.masked_conv2d_forward(x, k, **kwargs)
        assert str(gpu_err.value) == str(cpu_err.value)


def test_cuda_arrays_on_different_devices(gpu, skip_not_a_gpu_problem):
    cupy, cuda = gpu
    if cupy.cuda.runtime.getDeviceCount() < 2:
        skip_not_a_gpu_problem("needs two CUDA devices")
    with cupy.cuda.Device(0):
        x = cupy.zeros((1, 5, 5, 3), cupy.float32)
    with cupy.cuda.Device(1):
        k = cupy.zeros((3, 3, 3, 6), cupy.float32)
    with pytest.raises(ValueError, match=r"all arrays must be on one device, got x on device 0 and kernel on "
                                         r"device 1"):
        cuda.masked_conv2d_forward(x, k, "A")
