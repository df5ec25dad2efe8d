"""Tests: masked convolution gradients (TF op, pybind backprops, float64 oracle) and causality."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_fast import reference

Case = collections.namedtuple("Case", "n h w cin cout kh kw mask groups dilation padding")


def _case_id(c):
    d = c.dilation if np.isscalar(c.dilation) else "x".join(map(str, c.dilation))
    return (f"n{c.n}-{c.h}x{c.w}-c{c.cin}to{c.cout}-k{c.kh}x{c.kw}{c.mask}-g{c.groups}"
            f"-d{d}-{c.padding}")


def _dil(d):
    return (d, d) if np.isscalar(d) else tuple(d)


def _out_hw(c):
    if c.padding == "same":
        return c.h, c.w
    dh, dw = _dil(c.dilation)
    return c.h - dh * (c.kh - 1), c.w - dw * (c.kw - 1)


# Fewer cases than the forward tests, still covering every axis (kernel shapes, dilation,
# groups, masks, paddings, 1-wide images, batch 1/3, odd channel counts, a larger one).
GRAD_CASES = [Case(*c) for c in [
    (1, 1, 1, 1, 1, 1, 1, "B", 1, 1, "same"),
    (3, 5, 7, 2, 3, 1, 1, "A", 1, 1, "same"),      # no live tap: all gradients exactly 0
    (1, 13, 17, 3, 5, 3, 3, "B", 1, 1, "same"),
    (3, 6, 5, 5, 7, 3, 3, "A", 1, 2, "same"),
    (1, 7, 9, 11, 9, 5, 5, "B", 1, 3, "same"),
    (3, 8, 8, 1, 1, 7, 7, "A", 1, 1, "same"),
    (1, 1, 7, 4, 6, 7, 7, "B", 1, 1, "same"),
    (3, 7, 9, 4, 5, 3, 5, "A", 1, (2, 1), "same"),
    (1, 9, 4, 3, 7, 5, 1, "B", 1, 1, "same"),
    (1, 6, 7, 3, 3, 3, 3, "A", 3, 1, "same"),
    (3, 5, 5, 6, 9, 5, 5, "B", 3, 2, "same"),
    (1, 5, 7, 3, 6, 1, 1, "A", 3, 1, "same"),
    (3, 13, 17, 4, 2, 5, 3, "A", 1, 2, "valid"),
    (1, 7, 7, 3, 6, 7, 7, "A", 3, 1, "valid"),
    (1, 7, 5, 24, 33, 3, 3, "B", 3, 1, "same"),
]]


def _inputs(rng, c):
    x = rng.standard_normal((c.n, c.h, c.w, c.cin)).astype(np.float32)
    kernel = rng.standard_normal((c.kh, c.kw, c.cin, c.cout)).astype(np.float32)
    dy = rng.standard_normal((c.n, *_out_hw(c), c.cout)).astype(np.float32)
    return x, kernel, dy


def _oracle_grads(direct, x, kernel, dy, c):
    args = (c.mask, c.groups, c.dilation, c.padding)
    dx = direct.backprop_input(dy, kernel, (c.h, c.w), *args)
    dk = direct.backprop_filter(x, dy, (c.kh, c.kw), *args)
    sx = np.max(direct.backprop_input(np.abs(dy), np.abs(kernel), (c.h, c.w), *args),
                initial=0.0)
    sk = np.max(direct.backprop_filter(np.abs(x), np.abs(dy), (c.kh, c.kw), *args),
                initial=0.0)
    return dx, dk, sx, sk


def _tape_grads(fn, x, kernel, dy, c):
    xt, kt = tf.constant(x), tf.constant(kernel)
    with tf.GradientTape() as tape:
        tape.watch([xt, kt])
        y = fn(xt, kt, c.mask, color_groups=c.groups, dilation_rate=c.dilation,
               padding=c.padding)
    gx, gk = tape.gradient(y, [xt, kt], output_gradients=tf.constant(dy))
    return gx.numpy(), gk.numpy()


def _dead(direct, c):
    return direct.dense_mask(c.kh, c.kw, c.cin, c.cout, c.mask, c.groups) == 0


# --------------------------------------------------------------------------- the oracle

TINY = [Case(*c) for c in [
    (1, 3, 4, 2, 3, 3, 3, "B", 1, 1, "same"),
    (2, 4, 3, 3, 3, 3, 3, "A", 3, 1, "same"),
    (1, 5, 5, 1, 2, 3, 1, "A", 1, 2, "valid"),
    (1, 3, 5, 3, 6, 1, 3, "B", 3, (1, 2), "same"),
]]


@pytest.mark.parametrize("c", TINY, ids=_case_id)
def test_oracle_gradients_match_finite_differences(rng, direct, c):
    # The float64 analytic gradients are checked against central differences of the float64
    # forward.  L = sum(y * g) is linear in x and in the kernel, so a central difference has
    # no truncation error: only float64 rounding (~1e-16 * |L| / h) separates the two.
    x = rng.standard_normal((c.n, c.h, c.w, c.cin))
    kernel = rng.standard_normal((c.kh, c.kw, c.cin, c.cout))
    g = rng.standard_normal((c.n, *_out_hw(c), c.cout))
    args = (c.mask, c.groups, c.dilation, c.padding)

    def loss(x_, k_):
        return float(np.sum(direct.forward(x_, k_, *args) * g))

    h = 1e-3
    num_dx = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num_dx[idx] = (loss(xp, kernel) - loss(xm, kernel)) / (2 * h)
    num_dk = np.zeros_like(kernel)
    for idx in np.ndindex(kernel.shape):
        kp, km = kernel.copy(), kernel.copy()
        kp[idx] += h
        km[idx] -= h
        num_dk[idx] = (loss(x, kp) - loss(x, km)) / (2 * h)
    np.testing.assert_allclose(direct.backprop_input(g, kernel, (c.h, c.w), *args), num_dx,
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(direct.backprop_filter(x, g, (c.kh, c.kw), *args), num_dk,
                               rtol=0, atol=1e-9)
    # A dead kernel entry does not enter the forward at all.
    assert np.all(num_dk[_dead(direct, c)] == 0.0)


# --------------------------------------------------------------------------- fast paths

@pytest.mark.parametrize("c", GRAD_CASES, ids=_case_id)
def test_op_gradients(rng, direct, fast_ops, close_to_f64, c):
    x, kernel, dy = _inputs(rng, c)
    dx64, dk64, sx, sk = _oracle_grads(direct, x, kernel, dy, c)
    gx_ref, gk_ref = _tape_grads(reference.masked_conv2d, x, kernel, dy, c)
    gx, gk = _tape_grads(fast_ops.masked_conv2d, x, kernel, dy, c)
    assert gx.shape == x.shape and gk.shape == kernel.shape
    close_to_f64("d ops.masked_conv2d / dx", gx, gx_ref, dx64, sx)
    close_to_f64("d ops.masked_conv2d / dkernel", gk, gk_ref, dk64, sk)
    dead = _dead(direct, c)
    assert np.all(gk[dead] == 0.0), "kernel gradient at a dead tap must be exactly 0"


@pytest.mark.parametrize("c", GRAD_CASES, ids=_case_id)
def test_pybind_backprops(rng, direct, core, close_to_f64, c):
    # The pybind functions are float32: compared with the float64 analytic gradients (whose
    # own correctness the finite-difference test above establishes) by the tolerance rule,
    # the float32 yardstick being TF's gradient of the reference.
    x, kernel, dy = _inputs(rng, c)
    dx64, dk64, sx, sk = _oracle_grads(direct, x, kernel, dy, c)
    gx_ref, gk_ref = _tape_grads(reference.masked_conv2d, x, kernel, dy, c)
    kw = dict(color_groups=c.groups, dilation=_dil(c.dilation), padding=c.padding)
    dx = core.masked_conv2d_backprop_input(dy, kernel, (c.h, c.w), c.mask, **kw)
    dk = core.masked_conv2d_backprop_filter(x, dy, (c.kh, c.kw), c.mask, **kw)
    close_to_f64("_core.masked_conv2d_backprop_input", dx, gx_ref, dx64, sx)
    close_to_f64("_core.masked_conv2d_backprop_filter", dk, gk_ref, dk64, sk)
    assert np.all(np.asarray(dk)[_dead(direct, c)] == 0.0)


# --------------------------------------------------------------------------- causality

def _jacobian(fn, x):
    """Full Jacobian J[p_y, p_x, co, q_y, q_x, ci] = d y[p, co] / d x[q, ci] of fn at x (1,H,W,C).

    One backward pass: the input is replicated once per output element and each replica's
    upstream gradient selects its own output element (the conv never mixes the batch).
    """
    _, h, w, c = x.shape
    ho, wo, co = fn(tf.constant(x)).shape[1:]
    b = ho * wo * co
    xs = tf.constant(np.repeat(x, b, axis=0))
    select = tf.constant(np.eye(b, dtype=np.float32).reshape(b, ho, wo, co))
    with tf.GradientTape() as tape:
        tape.watch(xs)
        ys = fn(xs)
    g = tape.gradient(ys, xs, output_gradients=select)
    return g.numpy().reshape(ho, wo, co, h, w, c)


def _layer_dependency(direct, h, w, cin, cout, kh, kw, mask, groups, dilation):
    """Boolean D[r, co, q, ci]: output (r, co) of one 'same' masked conv reads input (q, ci)."""
    dh, dw = _dil(dilation)
    dep = np.zeros((h, w, cout, h, w, cin), bool)
    for (ky, kx), cm in direct.tap_channel_mask(kh, kw, cin, cout, mask, groups).items():
        oy, ox = dh * (ky - kh // 2), dw * (kx - kw // 2)
        for ry in range(h):
            for rx in range(w):
                qy, qx = ry + oy, rx + ox
                if 0 <= qy < h and 0 <= qx < w:
                    dep[ry, rx, :, qy, qx, :] |= cm.T.astype(bool)
    return dep.reshape(h * w * cout, h * w * cin)


# Stacks of 'same' masked convs: (kh, kw, mask, color_groups, dilation) per layer, channels.
STACKS = {
    "A7-B3": ([(7, 7, "A", 1, 1), (3, 3, "B", 1, 1)], [2, 4, 2]),
    "A3d2-B3": ([(3, 3, "A", 1, 2), (3, 3, "B", 1, 1)], [1, 3, 2]),
    "A3x5-B1x3d2-B5x1": ([(3, 5, "A", 1, 1), (1, 3, "B", 1, 2), (5, 1, "B", 1, 1)],
                         [2, 3, 3, 1]),
    "rgb:A3-B3": ([(3, 3, "A", 3, 1), (3, 3, "B", 3, 1)], [3, 6, 3]),
    "rgb:A1": ([(1, 1, "A", 3, 1)], [3, 3]),
    "rgb:B1": ([(1, 1, "B", 3, 1)], [3, 6]),
    "rgb:A5-B1-B3d2": ([(5, 5, "A", 3, 1), (1, 1, "B", 3, 1), (3, 3, "B", 3, 2)],
                       [3, 6, 3, 3]),
}


@pytest.mark.parametrize("name", list(STACKS))
def test_structural_causality(rng, direct, fast_ops, name):
    layers, chans = STACKS[name]
    h, w = 5, 6
    # Weights scaled by 1/sqrt(fan-in) keep pre-activations O(1): a saturated tanh has a
    # derivative of exactly 0 in float32 and would hide genuine dependencies.
    kernels = [(rng.standard_normal((kh, kw, chans[i], chans[i + 1]))
                / np.sqrt(kh * kw * chans[i])).astype(np.float32)
               for i, (kh, kw, *_rest) in enumerate(layers)]

    def net(x):
        for i, ((kh, kw, mask, groups, dil), k) in enumerate(zip(layers, kernels)):
            x = fast_ops.masked_conv2d(x, k, mask, color_groups=groups, dilation_rate=dil,
                                       padding="same")
            if i + 1 < len(layers):
                x = tf.tanh(x)  # nonlinear, with a derivative that is never 0
        return x

    x = rng.standard_normal((1, h, w, chans[0])).astype(np.float32)
    jac = _jacobian(net, x)
    p = h * w
    jflat = jac.reshape(p, chans[-1], p, chans[0])

    # The structure the masks allow: compose the per-layer dependency patterns.
    allowed = np.eye(p * chans[0], dtype=np.int64)
    for i, (kh, kw, mask, groups, dil) in enumerate(layers):
        dep = _layer_dependency(direct, h, w, chans[i], chans[i + 1], kh, kw, mask, groups,
                                dil).astype(np.int64)
        allowed = dep @ allowed
    allowed = allowed.reshape(jflat.shape) > 0

    # Forbidden entries must be EXACTLY zero -- not small: a leak of 1e-30 is still a leak.
    leaks = np.argwhere((jflat != 0) & ~allowed)
    assert leaks.size == 0, (
        f"{len(leaks)} forbidden dependencies, first (out pixel, out ch, in pixel, in ch) = "
        f"{tuple(leaks[0])}, value {jflat[tuple(leaks[0])]!r}")
    # And every allowed path is really there (a dropped tap or channel block shows here).
    missing = np.argwhere((jflat == 0) & allowed)
    assert missing.size == 0, f"{len(missing)} allowed dependencies are 0, first {missing[0]}"

    # The causal statement itself, independent of the bookkeeping above (raster order).
    groups = layers[0][3]
    first_is_a = layers[0][2] == "A"
    if groups == 1:
        for q in range(p):
            upto = q + 1 if first_is_a else q  # mask A first: not even the pixel itself
            assert np.all(jflat[:upto, :, q, :] == 0.0), f"output at <= {q} reads input {q}"
    else:
        # Colour groups: block j of the output at q reads block i of the input at q only
        # when i < j (any A layer in the stack) or i <= j (B layers only); never the future.
        strict = any(m == "A" for (_, _, m, _, _) in layers)
        bo, bi = chans[-1] // 3, chans[0] // 3
        for q in range(p):
            assert np.all(jflat[:q, :, q, :] == 0.0)
            for j in range(3):
                for i in range(3):
                    block = jflat[q, j * bo:(j + 1) * bo, q, i * bi:(i + 1) * bi]
                    if i < j or (i == j and not strict):
                        assert np.all(block != 0.0), f"block {i}->{j} at {q} should be live"
                    else:
                        assert np.all(block == 0.0), f"block {i}->{j} at {q} must be dead"


# --------------------------------------------------------------------------- narrow inputs
# The input gradient of a layer with 1-4 input channels is one GEMM on dy in place and a gather-add
# (csrc/core/masked_conv.cc, run_gather_narrow) instead of an im2col copy: first layers of the
# keras.io (1->128) and RGB (3->128, 3->12 with colour groups) shapes, odd sizes, batch 1, dilation,
# 'valid', an image smaller than the kernel, and pixel counts that are not multiples of the 4-row tile
# or the 6-row tile, and a 64-wide panel of (tap, channel) columns partly used.
NARROW_CASES = [Case(*c) for c in [
    (2, 9, 11, 1, 128, 7, 7, "A", 1, 1, "same"),
    (1, 17, 15, 3, 128, 7, 7, "A", 1, 1, "same"),   # 72 (tap, channel) columns: two panels
    (3, 7, 8, 3, 12, 5, 5, "B", 3, 1, "same"),      # colour groups: one segment per input channel
    (1, 8, 7, 2, 40, 7, 7, "A", 1, 2, "same"),
    (1, 9, 9, 4, 33, 3, 5, "B", 1, 1, "valid"),
    (1, 2, 3, 1, 64, 7, 7, "A", 1, 1, "same"),      # most taps fall outside the image
]]


@pytest.mark.parametrize("c", NARROW_CASES, ids=_case_id)
def test_narrow_input_gradient_without_im2col(rng, direct, core, fast_ops, close_to_f64, c):
    x, kernel, dy = _inputs(rng, c)
    dx64, dk64, sx, sk = _oracle_grads(direct, x, kernel, dy, c)
    gx_ref, gk_ref = _tape_grads(reference.masked_conv2d, x, kernel, dy, c)
    out = np.full(x.shape, np.nan, np.float32)  # poisoned: every element must be written
    dx = core.masked_conv2d_backprop_input(dy, kernel, (c.h, c.w), c.mask, color_groups=c.groups,
                                           dilation=_dil(c.dilation), padding=c.padding, out=out)
    assert not np.isnan(out).any(), "NaN left in out: not every element was written"
    close_to_f64("_core.masked_conv2d_backprop_input (narrow)", np.asarray(dx), gx_ref, dx64, sx)
    # Images per thread (batch >= threads) and the batch-1 split (pixel blocks, then rows): the same
    # per-pixel sums in the same order, so the same bits whatever the thread count.
    threads = core.get_num_threads()
    try:
        for t in (1, 4):
            core.set_num_threads(t)
            again = core.masked_conv2d_backprop_input(dy, kernel, (c.h, c.w), c.mask, color_groups=c.groups,
                                                      dilation=_dil(c.dilation), padding=c.padding)
            np.testing.assert_array_equal(np.asarray(again), out)
    finally:
        core.set_num_threads(threads)
    gx, gk = _tape_grads(fast_ops.masked_conv2d, x, kernel, dy, c)
    close_to_f64("d ops.masked_conv2d / dx (narrow)", gx, gx_ref, dx64, sx)
    close_to_f64("d ops.masked_conv2d / dkernel (narrow)", gk, gk_ref, dk64, sk)
