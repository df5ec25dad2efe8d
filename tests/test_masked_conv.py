"""Tests: masked convolution forward -- TF op and pybind11 module vs reference and float64."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_fast import reference

Case = collections.namedtuple(
    "Case", "n h w cin cout kh kw mask groups dilation padding")


def _case_id(c):
    d = c.dilation if np.isscalar(c.dilation) else "x".join(map(str, c.dilation))
    return (f"n{c.n}-{c.h}x{c.w}-c{c.cin}to{c.cout}-k{c.kh}x{c.kw}{c.mask}-g{c.groups}"
            f"-d{d}-{c.padding}")


# A curated cross-section rather than a cartesian product (the suite must stay fast): every
# kernel size 1/3/5/7 and rectangular shapes, dilation 1/2/3 and unequal (dh, dw), groups
# 1/3, masks A/B, same/valid, odd H and W including 1, batch 1 and 3, channel counts 1..11
# that are not multiples of 8 plus a few larger ones.
FORWARD_CASES = [Case(*c) for c in [
    (1, 1, 1, 1, 1, 1, 1, "B", 1, 1, "same"),      # everything 1
    (3, 5, 7, 2, 3, 1, 1, "A", 1, 1, "same"),      # 1x1 mask A: no live tap, output exactly 0
    (1, 13, 17, 3, 5, 3, 3, "B", 1, 1, "same"),
    (3, 6, 5, 5, 7, 3, 3, "A", 1, 2, "same"),
    (1, 9, 11, 7, 4, 5, 5, "A", 1, 1, "same"),
    (1, 7, 9, 11, 9, 5, 5, "B", 1, 3, "same"),
    (3, 8, 8, 1, 1, 7, 7, "A", 1, 1, "same"),
    (1, 1, 7, 4, 6, 7, 7, "B", 1, 1, "same"),      # one row: only the left taps see data
    (1, 5, 1, 2, 5, 3, 3, "A", 1, 1, "same"),      # one column
    (1, 1, 1, 3, 2, 5, 5, "B", 1, 1, "same"),      # one pixel: only the centre sees data
    (3, 7, 9, 4, 5, 3, 5, "A", 1, 1, "same"),
    (1, 6, 8, 5, 3, 1, 3, "B", 1, 2, "same"),
    (1, 9, 4, 3, 7, 5, 1, "A", 1, 1, "same"),      # 5x1 A: only the rows above
    (3, 7, 7, 5, 6, 3, 3, "B", 1, (2, 1), "same"),
    (1, 9, 11, 6, 5, 3, 3, "a", 1, (1, 3), "same"),  # lower-case mask_type
    (1, 6, 7, 3, 3, 3, 3, "A", 3, 1, "same"),
    (3, 5, 5, 6, 9, 5, 5, "B", 3, 2, "same"),
    (1, 5, 7, 3, 6, 1, 1, "A", 3, 1, "same"),      # 1x1 colour masks: the centre only
    (1, 5, 7, 9, 3, 1, 1, "B", 3, 1, "same"),
    (1, 7, 7, 3, 9, 7, 7, "A", 3, 1, "same"),
    (1, 7, 5, 24, 33, 3, 3, "B", 3, 1, "same"),
    (1, 9, 11, 3, 5, 3, 3, "B", 1, 1, "valid"),
    (3, 13, 17, 4, 2, 5, 3, "A", 1, 2, "valid"),
    (1, 7, 7, 3, 6, 7, 7, "A", 3, 1, "valid"),     # output 1x1
    (1, 5, 8, 6, 3, 3, 1, "b", 3, (2, 1), "valid"),
    (1, 3, 5, 2, 2, 1, 1, "B", 1, 1, "valid"),
    (1, 8, 8, 16, 32, 3, 3, "B", 1, 1, "same"),
    (3, 5, 5, 24, 33, 3, 3, "A", 3, 1, "same"),
    (1, 9, 7, 32, 10, 7, 7, "A", 1, 1, "same"),
]]


def make_inputs(rng, c):
    x = rng.standard_normal((c.n, c.h, c.w, c.cin)).astype(np.float32)
    # Random values in the dead taps too: every implementation must ignore them.
    kernel = rng.standard_normal((c.kh, c.kw, c.cin, c.cout)).astype(np.float32)
    return x, kernel


def dil_pair(d):
    return (d, d) if np.isscalar(d) else tuple(d)


def oracle(direct, x, kernel, c):
    """float64 result and the rounding scale max(|x| (*) |w|)."""
    exact = direct.forward(x, kernel, c.mask, c.groups, c.dilation, c.padding)
    scale = np.max(direct.forward(np.abs(x), np.abs(kernel), c.mask, c.groups, c.dilation,
                                  c.padding), initial=0.0)
    return exact, scale


def ref32(x, kernel, c):
    return reference.masked_conv2d(x, kernel, c.mask, color_groups=c.groups,
                                   dilation_rate=c.dilation, padding=c.padding).numpy()


def expected_hw(c):
    if c.padding == "same":
        return c.h, c.w
    dh, dw = dil_pair(c.dilation)
    return c.h - dh * (c.kh - 1), c.w - dw * (c.kw - 1)


# --------------------------------------------------------------------------- the oracles

@pytest.mark.parametrize("c", FORWARD_CASES[::3] + FORWARD_CASES[20:26], ids=_case_id)
def test_direct_oracle_matches_tf_conv2d_float64(rng, direct, c):
    # Validates the oracle itself (padding convention, dilation, tap rule) against TF's own
    # float64 conv2d of the densely masked kernel; only float64 rounding may differ.
    x, kernel = make_inputs(rng, c)
    dh, dw = dil_pair(c.dilation)
    dense = kernel.astype(np.float64) * direct.dense_mask(c.kh, c.kw, c.cin, c.cout, c.mask,
                                                          c.groups)
    tf64 = tf.nn.conv2d(x.astype(np.float64), dense, strides=1, padding=c.padding.upper(),
                        dilations=[1, dh, dw, 1]).numpy()
    np.testing.assert_allclose(direct.forward(x, kernel, c.mask, c.groups, c.dilation,
                                              c.padding), tf64, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", FORWARD_CASES, ids=_case_id)
def test_reference_forward(rng, direct, c):
    # The reference is float32 TF conv2d: within a loose float32 rounding bound of float64.
    x, kernel = make_inputs(rng, c)
    exact, scale = oracle(direct, x, kernel, c)
    got = ref32(x, kernel, c)
    assert got.shape == (c.n, *expected_hw(c), c.cout) and got.dtype == np.float32
    # A float32 dot product of m terms errs by at most ~m * eps32 * scale; m <= kh*kw*cin.
    m = c.kh * c.kw * c.cin
    assert np.max(np.abs(got - exact), initial=0.0) <= m * 1.2e-7 * scale + 1e-30


# --------------------------------------------------------------------------- fast paths

@pytest.mark.parametrize("c", FORWARD_CASES, ids=_case_id)
def test_op_forward(rng, direct, fast_ops, close_to_f64, c):
    x, kernel = make_inputs(rng, c)
    exact, scale = oracle(direct, x, kernel, c)
    y = fast_ops.masked_conv2d(tf.constant(x), tf.constant(kernel), c.mask,
                               color_groups=c.groups, dilation_rate=c.dilation,
                               padding=c.padding)
    assert y.dtype == tf.float32
    assert tuple(y.shape) == (c.n, *expected_hw(c), c.cout)
    close_to_f64("ops.masked_conv2d", y.numpy(), ref32(x, kernel, c), exact, scale)


@pytest.mark.parametrize("c", FORWARD_CASES, ids=_case_id)
def test_pybind_forward(rng, direct, core, close_to_f64, c):
    x, kernel = make_inputs(rng, c)
    exact, scale = oracle(direct, x, kernel, c)
    y = core.masked_conv2d_forward(x, kernel, c.mask, color_groups=c.groups,
                                   dilation=dil_pair(c.dilation), padding=c.padding)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    close_to_f64("_core.masked_conv2d_forward", y, ref32(x, kernel, c), exact, scale)


def test_op_and_pybind_leave_inputs_untouched(rng, fast_ops, core):
    c = FORWARD_CASES[16]
    x, kernel = make_inputs(rng, c)
    x0, k0 = x.copy(), kernel.copy()
    core.masked_conv2d_forward(x, kernel, c.mask, color_groups=c.groups,
                               dilation=dil_pair(c.dilation), padding=c.padding)
    fast_ops.masked_conv2d(x, kernel, c.mask, color_groups=c.groups,
                           dilation_rate=c.dilation, padding=c.padding)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(kernel, k0)


# --------------------------------------------------------------------------- out= buffers

# Dead taps, the centre colour rule and a valid border all leave entries that a careless
# kernel would skip writing; NaN poison shows any such entry.
OUT_CASES = [FORWARD_CASES[16], FORWARD_CASES[22], FORWARD_CASES[17], FORWARD_CASES[1]]


@pytest.mark.parametrize("c", OUT_CASES, ids=_case_id)
def test_pybind_out_poisoned_forward(rng, direct, core, close_to_f64, c):
    x, kernel = make_inputs(rng, c)
    exact, scale = oracle(direct, x, kernel, c)
    out = np.full(exact.shape, np.nan, np.float32)
    y = core.masked_conv2d_forward(x, kernel, c.mask, color_groups=c.groups,
                                   dilation=dil_pair(c.dilation), padding=c.padding, out=out)
    assert not np.isnan(out).any(), "NaN left in out: not every element was written"
    np.testing.assert_array_equal(np.asarray(y), out)
    close_to_f64("forward(out=)", out, ref32(x, kernel, c), exact, scale)


@pytest.mark.parametrize("c", OUT_CASES, ids=_case_id)
def test_pybind_out_poisoned_backprop_input(rng, direct, core, close_to_f64, c):
    x, kernel = make_inputs(rng, c)
    dy = rng.standard_normal((c.n, *expected_hw(c), c.cout)).astype(np.float32)
    exact = direct.backprop_input(dy, kernel, (c.h, c.w), c.mask, c.groups, c.dilation,
                                  c.padding)
    scale = np.max(direct.backprop_input(np.abs(dy), np.abs(kernel), (c.h, c.w), c.mask,
                                         c.groups, c.dilation, c.padding), initial=0.0)
    out = np.full(x.shape, np.nan, np.float32)
    dx = core.masked_conv2d_backprop_input(dy, kernel, (c.h, c.w), c.mask,
                                           color_groups=c.groups,
                                           dilation=dil_pair(c.dilation), padding=c.padding,
                                           out=out)
    assert not np.isnan(out).any(), "NaN left in out: not every element was written"
    np.testing.assert_array_equal(np.asarray(dx), out)
    # Reference float32 gradient for the tolerance rule.
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = reference.masked_conv2d(xt, kernel, c.mask, color_groups=c.groups,
                                    dilation_rate=c.dilation, padding=c.padding)
    ref = tape.gradient(y, xt, output_gradients=tf.constant(dy)).numpy()
    close_to_f64("backprop_input(out=)", out, ref, exact, scale)


@pytest.mark.parametrize("c", OUT_CASES, ids=_case_id)
def test_pybind_out_poisoned_backprop_filter(rng, direct, core, close_to_f64, c):
    x, kernel = make_inputs(rng, c)
    dy = rng.standard_normal((c.n, *expected_hw(c), c.cout)).astype(np.float32)
    exact = direct.backprop_filter(x, dy, (c.kh, c.kw), c.mask, c.groups, c.dilation,
                                   c.padding)
    scale = np.max(direct.backprop_filter(np.abs(x), np.abs(dy), (c.kh, c.kw), c.mask,
                                          c.groups, c.dilation, c.padding), initial=0.0)
    out = np.full(kernel.shape, np.nan, np.float32)
    dk = core.masked_conv2d_backprop_filter(x, dy, (c.kh, c.kw), c.mask,
                                            color_groups=c.groups,
                                            dilation=dil_pair(c.dilation), padding=c.padding,
                                            out=out)
    assert not np.isnan(out).any(), "NaN left in out: dead entries must be written as 0"
    np.testing.assert_array_equal(np.asarray(dk), out)
    dead = direct.dense_mask(c.kh, c.kw, c.cin, c.cout, c.mask, c.groups) == 0
    assert np.all(out[dead] == 0.0)
    kt = tf.constant(kernel)
    with tf.GradientTape() as tape:
        tape.watch(kt)
        y = reference.masked_conv2d(x, kt, c.mask, color_groups=c.groups,
                                    dilation_rate=c.dilation, padding=c.padding)
    ref = tape.gradient(y, kt, output_gradients=tf.constant(dy)).numpy()
    close_to_f64("backprop_filter(out=)", out, ref, exact, scale)


def test_pybind_thread_count(rng, direct, core, close_to_f64):
    # set_num_threads changes the partitioning of the work, never the result's accuracy.
    c = FORWARD_CASES[20]
    x, kernel = make_inputs(rng, c)
    exact, scale = oracle(direct, x, kernel, c)
    before = core.get_num_threads()
    try:
        for n in (1, 2):
            core.set_num_threads(n)
            assert core.get_num_threads() == n
            y = core.masked_conv2d_forward(x, kernel, c.mask, color_groups=c.groups,
                                           dilation=dil_pair(c.dilation), padding=c.padding)
            close_to_f64(f"forward with {n} threads", y, ref32(x, kernel, c), exact, scale)
    finally:
        core.set_num_threads(before)


# --------------------------------------------------------------------------- dtypes, modes

# rtol: one final rounding to the half type (2^-11 for float16, 2^-8 for bfloat16) with
# headroom; atol covers results that land in float16's subnormal range.
@pytest.mark.parametrize("dtype,rtol", [(tf.float16, 1e-3), (tf.bfloat16, 8e-3)])
def test_op_half_precision_inputs(rng, fast_ops, dtype, rtol):
    # float16/bfloat16 are computed in float32 and cast back: the result must equal the
    # float32 computation on the same (already rounded) inputs, up to the final rounding.
    c = FORWARD_CASES[16]
    x, kernel = make_inputs(rng, c)
    xh, kh_ = tf.cast(x, dtype), tf.cast(kernel, dtype)
    y = fast_ops.masked_conv2d(xh, kh_, c.mask, color_groups=c.groups,
                               dilation_rate=c.dilation, padding=c.padding)
    assert y.dtype == dtype
    y32 = fast_ops.masked_conv2d(tf.cast(xh, tf.float32), tf.cast(kh_, tf.float32), c.mask,
                                 color_groups=c.groups, dilation_rate=c.dilation,
                                 padding=c.padding).numpy()
    scale = np.max(np.abs(y32))
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), y32, rtol=rtol,
                               atol=1e-5 * scale)


def test_op_eager_and_tf_function_agree(rng, fast_ops):
    c = FORWARD_CASES[4]
    x, kernel = make_inputs(rng, c)
    eager = fast_ops.masked_conv2d(x, kernel, c.mask, color_groups=c.groups,
                                   dilation_rate=c.dilation, padding=c.padding).numpy()

    # Unknown batch and spatial sizes at trace time: the op's shape function must cope.
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, c.cin], tf.float32),
                                  tf.TensorSpec([c.kh, c.kw, c.cin, c.cout], tf.float32)])
    def f(x_, k_):
        y_ = fast_ops.masked_conv2d(x_, k_, c.mask, color_groups=c.groups,
                                    dilation_rate=c.dilation, padding=c.padding)
        assert y_.shape.rank == 4 and y_.shape[-1] == c.cout
        return y_

    traced = f(x, kernel).numpy()
    # The same kernel on the same data: the graph path must give the very same numbers.
    np.testing.assert_array_equal(traced, eager)
    x2 = np.concatenate([x, x[:, :3]], axis=1)  # another shape through the same trace
    assert f(x2, kernel).shape == (c.n, c.h + 3, c.w, c.cout)


def test_op_in_model_fit(rng, fast_ops):
    assert callable(fast_ops.masked_conv2d)  # fail clearly if the op is not built
    from pixelcnn_fast.layers import MaskedConv2D
    x = rng.standard_normal((12, 6, 7, 3)).astype(np.float32)
    y = rng.standard_normal((12, 6, 7, 2)).astype(np.float32)
    inp = keras.Input((6, 7, 3))
    h = MaskedConv2D(6, 3, "A", color_groups=3, implementation="fast", activation="tanh")(inp)
    out = MaskedConv2D(2, 1, "B", implementation="fast")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    assert model.jit_compile is False  # "auto" must not pick XLA for a custom op
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    losses = hist.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(np.any(a != b) for a, b in zip(before, model.get_weights()))
