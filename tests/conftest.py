"""Tests: shared fixtures -- seeded RNG, a float64 direct masked convolution, tolerance rule."""

# The float64 "direct" computation below is written from docs/SEMANTICS.md's definition of the masks
# and of TF's padding convention, independently of pixelcnn_fast.masks: it re-derives the
# live taps and the centre-tap channel rule itself, so a bug in make_mask cannot hide by
# being shared between the code under test and its oracle.

import fnmatch
import importlib
import os
import secrets
import types

import numpy as np
import pytest

EPS32 = float(np.finfo(np.float32).eps)

# Tolerance rule (flash-attention style): a float32 fast path may sum in a different order
# than TF's conv2d (blocked GEMMs, FMA, a different tap order), so it cannot match the
# float32 reference bit for bit.  It is accepted when its error against the float64 direct
# computation is at most K_FACTOR times the float32 reference's own error against float64,
# plus ATOL_ULPS * eps32 * scale, where scale is the largest |x|*|w| sum feeding one output
# (the natural size of a rounding error; it covers outputs the reference gets exactly, e.g.
# a single product).  K_FACTOR = 3: the max error of a different but equally good summation
# order fluctuates by a small factor around the reference's; a wrong tap or channel block
# gives errors of order `scale`, millions of times larger.
K_FACTOR = 3.0
ATOL_ULPS = 8.0


# --------------------------------------------------------------------------- GPU machines: no silent skips
# PIXELCNN_FAST_REQUIRE_GPU=1 (scripts/gpu_check.sh sets it) says "this machine has a GPU": then a test in
# tests/test_cuda*.py that skips FAILS instead (no CUDA build, no CuPy, no device, no PyTorch ...), and so
# does a module of them skipped at collection, because a GPU run whose GPU tests silently skipped proves
# nothing. A skip that is right on a GPU machine too (a CPU-only test skipped because a device is present,
# "needs two devices") says so by starting its reason with NOT_A_GPU_PROBLEM (the skip_not_a_gpu_problem fixture).

REQUIRE_GPU = os.environ.get("PIXELCNN_FAST_REQUIRE_GPU", "0") not in ("", "0")
NOT_A_GPU_PROBLEM = "not a GPU problem: "


def _skip_not_a_gpu_problem(reason):
    __tracebackhide__ = True  # report the test's line, not this one
    pytest.skip(NOT_A_GPU_PROBLEM + reason)


@pytest.fixture
def skip_not_a_gpu_problem():
    """A pytest.skip(reason) that stays a skip under PIXELCNN_FAST_REQUIRE_GPU=1."""
    return _skip_not_a_gpu_problem


def _is_gpu_test_file(path):
    return fnmatch.fnmatch(os.path.basename(str(path)), "test_cuda*.py")


def _skip_reason(report):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _fail_gpu_skip(report, what):
    reason = _skip_reason(report)
    if reason.startswith(NOT_A_GPU_PROBLEM):
        return
    report.outcome = "failed"
    report.longrepr = f"PIXELCNN_FAST_REQUIRE_GPU=1 (a GPU machine), but {what} skipped: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if REQUIRE_GPU and report.skipped and not hasattr(report, "wasxfail") and _is_gpu_test_file(item.path):
        _fail_gpu_skip(report, "this GPU test")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    report = (yield).get_result()
    if REQUIRE_GPU and report.skipped and _is_gpu_test_file(getattr(collector, "path", "")):
        _fail_gpu_skip(report, "this whole GPU test module")


# --------------------------------------------------------------------------- randomness

@pytest.fixture
def rng(request):
    """A numpy Generator seeded fresh for every test; the seed is printed (shown on failure).

    Reproduce a failure with PIXELCNN_FAST_TEST_SEED=<seed>.
    """
    env = os.environ.get("PIXELCNN_FAST_TEST_SEED")
    seed = int(env) if env else secrets.randbits(32)
    print(f"[{request.node.nodeid}] seed={seed} (rerun with PIXELCNN_FAST_TEST_SEED={seed})")
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- compiled parts

class _CompiledModule:
    """Imports a compiled module on first attribute access, inside the test body.

    A missing compiled module is a test FAILURE, never a skip: these tests exist to show the
    fast path works, and "not built" must not read as "passed".  Importing lazily (rather
    than in the fixture) makes pytest report FAILED rather than a setup ERROR.
    """

    def __init__(self, name):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        if self._module is None:
            try:
                self._module = importlib.import_module(self._name)
            except Exception as exc:  # ImportError, or a load error of the shared library
                pytest.fail(f"cannot import {self._name}: {type(exc).__name__}: {exc}",
                            pytrace=False)
        return getattr(self._module, attr)


@pytest.fixture
def fast_ops():
    """pixelcnn_fast.ops (the TF custom op); a test using it fails if it cannot be imported."""
    return _CompiledModule("pixelcnn_fast.ops")


@pytest.fixture
def core():
    """pixelcnn_fast._core (the pybind11 module); a test using it fails if it is missing."""
    return _CompiledModule("pixelcnn_fast._core")


@pytest.fixture
def core_testing():
    """pixelcnn_fast._core.testing (the core's test seams); a test using it fails if it is missing."""
    return _CompiledModule("pixelcnn_fast._core.testing")


@pytest.fixture
def restore_threads():
    """The module pool's thread count and the position-split policy (set to the product's "auto" here) as they were
    before the test, whatever the test sets."""
    from pixelcnn_fast import _core
    from pixelcnn_fast._core import testing

    before = _core.get_num_threads()
    policy = testing.set_position_split("auto")
    yield
    _core.set_num_threads(before)
    testing.set_position_split(policy)


# --------------------------------------------------------------------------- float64 direct

def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def tap_channel_mask(kh, kw, cin, cout, mask_type, color_groups=1):
    """{(ky, kx): (cin, cout) 0/1 float64 matrix} for every tap with any live entry.

    From first principles: a tap is strictly before the centre in raster order (row above,
    or same row and column to the left) -> all channels live; the centre -> input channel c
    (block c*g//cin) feeds output channel d (block d*g//cout) when in_block < out_block
    (A) or <= (B); after the centre -> dead.
    """
    mask_type = mask_type.upper()
    cy, cx = kh // 2, kw // 2
    taps = {}
    for ky in range(kh):
        for kx in range(kw):
            before = ky < cy or (ky == cy and kx < cx)
            if before:
                taps[(ky, kx)] = np.ones((cin, cout))
            elif (ky, kx) == (cy, cx):
                m = np.zeros((cin, cout))
                for c in range(cin):
                    for d in range(cout):
                        bi, bo = c * color_groups // cin, d * color_groups // cout
                        if bi < bo or (mask_type == "B" and bi == bo):
                            m[c, d] = 1.0
                if m.any():
                    taps[(ky, kx)] = m
    return taps


def dense_mask(kh, kw, cin, cout, mask_type, color_groups=1):
    """The same rule as a dense (kh, kw, cin, cout) float64 array."""
    m = np.zeros((kh, kw, cin, cout))
    for (ky, kx), cm in tap_channel_mask(kh, kw, cin, cout, mask_type, color_groups).items():
        m[ky, kx] = cm
    return m


def _geometry(in_hw, kernel_hw, dilation, padding):
    (h, w), (kh, kw), (dh, dw) = in_hw, kernel_hw, _pair(dilation)
    if padding.lower() == "same":
        # TF "SAME", stride 1, odd dilated extent: pad (extent-1)/2 on each side, so the
        # centre tap reads offset 0.
        pt, pl = dh * (kh // 2), dw * (kw // 2)
        ho, wo = h, w
    else:
        pt, pl = 0, 0
        ho, wo = h - dh * (kh - 1), w - dw * (kw - 1)
    hp, wp = ho + dh * (kh - 1), wo + dw * (kw - 1)  # padded input extent
    return pt, pl, ho, wo, hp, wp, dh, dw


def direct_forward(x, kernel, mask_type, color_groups=1, dilation=1, padding="same"):
    """float64 masked convolution: loop over live taps, each a (pixels x cin) @ (cin x cout)."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, h, w, cin = x.shape
    kh, kw, _, cout = kernel.shape
    pt, pl, ho, wo, hp, wp, dh, dw = _geometry((h, w), (kh, kw), dilation, padding)
    xp = np.zeros((n, hp, wp, cin))
    xp[:, pt:pt + h, pl:pl + w] = x
    y = np.zeros((n, ho, wo, cout))
    for (ky, kx), cm in tap_channel_mask(kh, kw, cin, cout, mask_type, color_groups).items():
        window = xp[:, dh * ky:dh * ky + ho, dw * kx:dw * kx + wo, :]
        y += window @ (kernel[ky, kx] * cm)
    return y


def direct_backprop_input(dy, kernel, input_hw, mask_type, color_groups=1, dilation=1,
                          padding="same"):
    """float64 d(sum(y * dy))/dx: every live tap scatters dy @ W^T back to its window."""
    dy = np.asarray(dy, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, ho_, wo_, cout = dy.shape
    kh, kw, cin, _ = kernel.shape
    h, w = input_hw
    pt, pl, ho, wo, hp, wp, dh, dw = _geometry((h, w), (kh, kw), dilation, padding)
    assert (ho, wo) == (ho_, wo_), "dy does not match the forward output shape"
    dxp = np.zeros((n, hp, wp, cin))
    for (ky, kx), cm in tap_channel_mask(kh, kw, cin, cout, mask_type, color_groups).items():
        dxp[:, dh * ky:dh * ky + ho, dw * kx:dw * kx + wo, :] += dy @ (kernel[ky, kx] * cm).T
    return dxp[:, pt:pt + h, pl:pl + w, :]


def direct_backprop_filter(x, dy, kernel_hw, mask_type, color_groups=1, dilation=1,
                           padding="same"):
    """float64 d(sum(y * dy))/dkernel; dead entries are exactly 0 (never written)."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    n, h, w, cin = x.shape
    cout = dy.shape[-1]
    kh, kw = kernel_hw
    pt, pl, ho, wo, hp, wp, dh, dw = _geometry((h, w), (kh, kw), dilation, padding)
    xp = np.zeros((n, hp, wp, cin))
    xp[:, pt:pt + h, pl:pl + w] = x
    dk = np.zeros((kh, kw, cin, cout))
    dy2 = dy.reshape(-1, cout)
    for (ky, kx), cm in tap_channel_mask(kh, kw, cin, cout, mask_type, color_groups).items():
        window = xp[:, dh * ky:dh * ky + ho, dw * kx:dw * kx + wo, :].reshape(-1, cin)
        dk[ky, kx] = (window.T @ dy2) * cm
    return dk


@pytest.fixture(scope="session")
def direct():
    """The float64 oracle: forward, input gradient, filter gradient and the mask rule."""
    return types.SimpleNamespace(
        forward=direct_forward,
        backprop_input=direct_backprop_input,
        backprop_filter=direct_backprop_filter,
        tap_channel_mask=tap_channel_mask,
        dense_mask=dense_mask,
    )


# --------------------------------------------------------------------------- tolerance rule

def check_against_f64(name, got, ref32, exact64, scale, k=K_FACTOR, atol_ulps=ATOL_ULPS):
    """Assert the tolerance rule above; `scale` is max |x|*|w| (see K_FACTOR's comment)."""
    got = np.asarray(got, np.float64)
    ref32 = np.asarray(ref32, np.float64)
    exact64 = np.asarray(exact64, np.float64)
    assert got.shape == exact64.shape, f"{name}: shape {got.shape} != expected {exact64.shape}"
    assert np.all(np.isfinite(got)), f"{name}: non-finite values in the result"
    err = float(np.max(np.abs(got - exact64), initial=0.0))
    ref_err = float(np.max(np.abs(ref32 - exact64), initial=0.0))
    atol = atol_ulps * EPS32 * max(float(scale), 1e-30)
    bound = k * ref_err + atol
    where = np.unravel_index(np.argmax(np.abs(got - exact64)), got.shape) if got.size else ()
    assert err <= bound, (
        f"{name}: max |err| vs float64 = {err:.3e} at {tuple(int(i) for i in where)} > bound "
        f"{bound:.3e} (= {k} * float32 reference error {ref_err:.3e} + atol {atol:.3e}, "
        f"scale {scale:.3e})")


@pytest.fixture(scope="session")
def close_to_f64():
    return check_against_f64
