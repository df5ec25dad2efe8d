"""The column program's vectorised elementwise rows (csrc/core/kernels_isa.inc: exp, expm1, tanh, sigmoid, log1p by
range reduction and polynomials) on every instruction-set build this CPU runs, against the exact value (float64)
and against elementwise.h's scalar libm functions (the GPU executor's and its host emulation's), over a dense
sweep of float32: every 4099th bit pattern (both signs, subnormals, +-inf, NaN) plus a fine grid on [-12, 12]
and the edge cases by name. The bounds are docs/KERNELS.md's stated accuracy."""

import numpy as np
import pytest

from pixelcnn_fast._core import supported_isas
from pixelcnn_fast._core import testing as core_testing

ISAS = supported_isas()
SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 1e-45, -1e-45, 1e-7, -1e-7, 0.5, -0.5,
                    0.49999997, -0.49999997, 0.625, -0.625, 0.62499994, 20, -20, 88.72, 88.73, 89, -87.3, -88.73,
                    -103, -104, -105, 1e30, -1e30], np.float32)


def sweep():
    bits = np.arange(0, 2 ** 32, 4099, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([bits.view(np.float32), SPECIAL, np.linspace(-12, 12, 200001, dtype=np.float32)])


X = sweep()
SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772


def exact(fn, x):
    """fn of float32 x in float64 (the float32 result's correctly rounded value is its nearest float32)."""
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        return {
            "elu": lambda: np.where(x > 0, x, np.expm1(x)),
            "selu": lambda: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
            "tanh": lambda: np.tanh(x),
            "sigmoid": lambda: 1 / (1 + np.exp(-x)),
            "softplus": lambda: np.logaddexp(0, x),
            "exp": lambda: np.exp(x),
            "softsign": lambda: x / (1 + np.abs(x)),
        }[fn]()


def ulp_error(y, truth):
    """|y - truth| in units of the float32 spacing at truth (subnormal results: 2**-149); 0 where y is the
    correctly rounded value, inf where exactly one of them is inf or NaN."""
    t32 = truth.astype(np.float32)
    with np.errstate(all="ignore"):
        err = np.abs(y.astype(np.float64) - truth) / np.spacing(np.abs(t32)).astype(np.float64)
    same = (y == t32) | (np.isnan(y) & np.isnan(truth))
    return np.where(same, 0.0, np.where(np.isfinite(err), err, np.inf))


# Max error in ulp against the exact value: the vectorised rows' stated accuracy (docs/KERNELS.md), measured
# max plus a margin of ~0.3 ulp.
BOUND_ULP = {"exp": 1.3, "elu": 1.5, "selu": 2.3, "tanh": 1.5, "sigmoid": 3.0, "softplus": 3.0, "softsign": 1.8}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fn", sorted(BOUND_ULP))
def test_transcendental_rows_are_accurate_to_a_few_ulp(isa, fn):
    y = core_testing.act_row(isa, fn, X)
    err = ulp_error(y, exact(fn, X))
    worst = int(np.argmax(err))
    assert err[worst] <= BOUND_ULP[fn], f"{isa} {fn}: {err[worst]:.2f} ulp at x = {X[worst]!r} (got {y[worst]!r})"
    # Against elementwise.h's libm form, where that form is itself within a few ulp of exact (its 1 / (1 +
    # expf(-x)) flushes sigmoid to 0 below x = -88.7, where the vectorised row keeps the subnormal).
    scalar = core_testing.act_row("scalar", fn, X)
    trusted = ulp_error(scalar, exact(fn, X)) <= 2.5
    vs_libm = ulp_error(y[trusted], scalar[trusted].astype(np.float64))
    assert vs_libm.max() <= BOUND_ULP[fn] + 2.5, f"{isa} {fn}: {vs_libm.max():.2f} ulp from the libm form"
    # The edge cases exactly: signs of zero, infinities, NaN.
    for x in (0.0, np.inf, -np.inf):
        want = exact(fn, np.float32([x])).astype(np.float32)[0]
        got = core_testing.act_row(isa, fn, np.float32([x]))[0]
        assert got == want or (np.isnan(got) and np.isnan(want)), (isa, fn, x, got, want)
    assert np.isnan(core_testing.act_row(isa, fn, np.float32([np.nan]))[0]), (isa, fn, "NaN")
    if fn in ("elu", "selu", "tanh", "softsign"):  # odd near 0: -0 stays -0
        assert np.signbit(core_testing.act_row(isa, fn, np.float32([-0.0]))[0]), (isa, fn, "-0")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fn", ["relu", "relu6", "leaky_relu", "neg", "square", "abs", "erf"])
def test_exact_rows_equal_the_scalar_functions(isa, fn):
    x = X[~np.isnan(X)]  # NaN: relu / relu6 below
    np.testing.assert_array_equal(core_testing.act_row(isa, fn, x, 0.3), core_testing.act_row("scalar", fn, x, 0.3))
    if fn in ("relu", "relu6"):  # fmax(NaN, 0) = 0, as IEEE fmax / CUDA's fmaxf
        assert core_testing.act_row(isa, fn, np.float32([np.nan]))[0] == 0.0
    elif fn != "erf":
        assert np.isnan(core_testing.act_row(isa, fn, np.float32([np.nan]))[0])


@pytest.mark.parametrize("isa", ISAS)
def test_rows_of_every_length_equal_the_long_row(isa):
    """Odd lengths exercise the padded tail vector; each element must not depend on where it sits."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(80) * 4).astype(np.float32)
    for fn in ["tanh", "sigmoid", "elu", "softplus", "exp", "relu"]:
        full = core_testing.act_row(isa, fn, x)
        for n in (1, 2, 3, 7, 15, 16, 17, 33, 65):
            for start in (0, 1, 5):
                np.testing.assert_array_equal(core_testing.act_row(isa, fn, x[start:start + n].copy()),
                                              full[start:start + n], err_msg=f"{isa} {fn} n={n} start={start}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fn", ["add", "sub", "mul", "div", "max", "min"])
def test_binary_rows_equal_the_scalar_functions(isa, fn):
    rng = np.random.default_rng(7)
    for n in (1, 3, 7, 17, 33, 64, 70):
        a = rng.standard_normal(n).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        a[::5], b[::7] = 0.0, np.nan  # division by zero, NaN operands (max / min keep the scalar's rule)
        for u, v in [(a, b), (a, b[:1].copy()), (a[:1].copy(), b), (a[:1].copy(), b[:1].copy())]:
            got = core_testing.binary_row(isa, fn, u, v)
            want = core_testing.binary_row("scalar", fn, u, v)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} {fn} n={n}")


def test_row_seams_refuse_bad_arguments():
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="isa must be"):
        core_testing.act_row("avx9000", "tanh", x)
    with pytest.raises(ValueError, match="fn must be one of"):
        core_testing.act_row("scalar", "tanhh", x)
    with pytest.raises(ValueError, match="same length"):
        core_testing.binary_row("scalar", "add", x, np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="float32"):
        core_testing.act_row("scalar", "tanh", np.zeros(3))
    with pytest.raises(ValueError, match="have 2 and 3 rows"):
        core_testing.binary_row("scalar", "add", np.zeros((2, 3), np.float32), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="exceeds the row length"):
        core_testing.act_row("scalar", "tanh", np.zeros((2, 3), np.float32), 0.2, 4)


@pytest.mark.parametrize("isa", ISAS)
def test_one_call_over_rows_equals_each_row_alone(isa):
    """act_rows / binary_rows (the fused epilogue's one call per op over every image of a position): each row's
    values are the ones a call for that row alone gives, for odd lengths and strides, and nothing past a row's
    length is written."""
    rng = np.random.default_rng(11)
    for rows, length, n in [(1, 17, 17), (8, 128, 128), (3, 70, 33), (5, 19, 1), (16, 64, 61)]:
        x = (rng.standard_normal((rows, length)) * 4).astype(np.float32)
        for fn in ["tanh", "sigmoid", "elu", "relu", "erf"]:
            got = core_testing.act_row(isa, fn, x, 0.2, n)
            for r in range(rows):
                np.testing.assert_array_equal(got[r, :n], core_testing.act_row(isa, fn, x[r, :n].copy()),
                                              err_msg=f"{isa} {fn} rows={rows} n={n} row {r}")
            assert np.isnan(got[:, n:]).all(), f"{isa} {fn}: wrote past n = {n}"
        b_row = rng.standard_normal(length).astype(np.float32)
        b_rows = rng.standard_normal((rows, length)).astype(np.float32)
        for fn in ["add", "mul", "div", "max"]:
            for a, b in [(x, b_row), (x, b_rows), (x, b_rows[:, :1].copy()), (b_row[:1].copy(), x)]:
                got = core_testing.binary_row(isa, fn, a, b)
                for r in range(rows):
                    ar = a[r] if a.ndim == 2 else a
                    br = b[r] if b.ndim == 2 else b
                    np.testing.assert_array_equal(got[r], core_testing.binary_row(isa, fn, ar.copy(), br.copy()),
                                                  err_msg=f"{isa} {fn} rows={rows} row {r}")
                    np.testing.assert_array_equal(got[r], core_testing.binary_row("scalar", fn, ar.copy(), br.copy()),
                                                  err_msg=f"{isa} {fn} rows={rows} row {r} vs scalar")
