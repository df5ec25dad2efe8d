# Benchmarks: masked 2-D convolution — our C++ op vs tf.nn.conv2d on the masked kernel vs the dense sub-conv decomposition.
"""Masked-convolution speed, measured as ratios in one run (docs/SEMANTICS.md, "How speed is shown").

Run alone (from the repository root, ~4 minutes on 2 cores), or with the other suites through
benchmarks/run.py (README, "Benchmarks"):

    .venv/bin/python -m pytest benchmarks/bench_masked_conv.py --benchmark-json=/tmp/conv.json && .venv/bin/python benchmarks/report.py /tmp/conv.json /tmp/CONV.md

Shapes: the masked layers of every seed model, at that model's image size and training batch
(SHAPES below): keras.io (7x7 A 1->128, 3x3 B 128->64; 28x28, batch 128), the 256-level
notebook (7x7 A 1->64, 3x3 B 64->64; 28x28, batch 128), the book (7x7 A 1->128, 3x3 B 64->64;
16x16, batch 128) and the CIFAR blog's RGB model (colour groups 3: 7x7 A 3->768, 3x3 B 384->384,
1x1 B 768->384; 32x32, batch 16). Padding "same".

Passes:
  * ``fwd``      y = conv(x, kernel)
  * ``fwd+bwd``  y and the gradients of sum(y * w_out) w.r.t. x and kernel, for a
    fixed random w_out. Computed with ``tape.gradient(y, ..., output_gradients=w_out)``,
    which *is* that gradient without timing an extra multiply+reduction, and ``y`` is
    returned: the gradients of a linear op do not depend on y, so without it
    grappler may prune the forward conv and "fwd+bwd" would time only the backward.

Variants (each inside ``tf.function``; inputs are function arguments, not captured
constants, so nothing can be constant-folded):
  a. ``ours``               pixelcnn_fast.ops.masked_conv2d (C++ custom op)
  b. ``tf_conv2d_masked``   tf.nn.conv2d(x, kernel * mask), mask precomputed
  c. ``tf_subconv_decomp``  dense sub-convolutions over the live taps only: a
     (kh//2) x kw conv on the rows above + a 1 x (kw//2) conv on the pixels to the
     left in the centre row (1 x (kw//2 + 1), centre included, for mask B).
     Colour groups 1 only (a groups-3 centre tap is itself masked by channel blocks).

Before anything is timed every variant's outputs (and, for fwd+bwd, both
gradients) are compared with the reference (pixelcnn_fast.reference.masked_conv2d,
or tf.nn.conv2d on the masked kernel when that module is missing), and kernel
gradients must be exactly 0 at dead taps: a fast wrong path never posts a number.

FLOP convention (extra_info):
  * ``flops_dense`` = 2*N*H*W*kh*kw*cin*cout per conv pass (x3 for fwd+bwd: forward,
    backprop-input, backprop-filter); ``flops_live`` the same with only the live
    taps (7x7 A: 24 of 49, 3x3 B: 5 of 9) and, for colour groups 3, the live channel blocks
    of the centre tap (live_weight_fraction). Border taps that fall in the "same"
    padding are counted, as every conv FLOP count does.
  * ``gflops`` counts the work the variant actually performs: live FLOPs for
    ``ours`` and for the decomposition (they skip dead taps), dense FLOPs for
    ``tf_conv2d_masked`` (it multiplies the zeros too). ``pct_of_peak`` is
    ``gflops`` over the float32 GEMM peak measured in the same run (conftest.py).
    ``gflops_dense_equiv`` (dense FLOPs / time for every variant) is an inverse
    time on a common yardstick.

Each (shape, pass) is one ``benchmark.group``; its variants run back to back so a
table compares them under the same machine conditions. Rounds are chosen per
benchmark from a timed call so each takes ~BENCH_SECONDS (env
PIXELCNN_BENCH_SECONDS, default 2.0), within [MIN_ROUNDS, MAX_ROUNDS].
"""

import functools
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import pytest
import tensorflow as tf

N, H, W = 128, 28, 28  # the seeds' training batch and image size

BENCH_SECONDS = float(os.environ.get("PIXELCNN_BENCH_SECONDS", "2.0"))
MIN_ROUNDS, MAX_ROUNDS, WARMUP_ROUNDS = 5, 40, 2

# float32 convs summing up to N*H*W = 100352 products (the filter gradient) in an
# implementation-defined order: errors are relative to the tensor's scale, not to
# each element (elements near 0 would otherwise fail on rounding alone).
RTOL, ATOL_REL = 1e-4, 1e-4


@dataclass(frozen=True)
class Shape:
    id: str
    label: str
    kh: int
    kw: int
    cin: int
    cout: int
    mask_type: str
    groups: int = 1
    n: int = N
    h: int = H
    w: int = W
    model: str = ""


# The masked layers of every seed model (tests/fixtures/seed_models.py at full size; the 1x1 convs
# of the grey models are unmasked, so only their 7x7 A and 3x3 B layers appear), at each model's
# training batch and image size. The book's 28x28 SimplePixelCnn (seed 001) has the keras.io
# 7x7 A 1->128 and the notebook's 3x3 B 64->64 shapes, so it adds no row. The RGB blog model (seed
# 004) trains at batch 16 on 32x32x3; its other 1x1 colour-group convs (768->3072, 3072->3072,
# 3072->768, one each in the head) are the 768->384 row's kind of layer, 4-25x bigger.
SHAPES = (
    Shape("kerasio_7x7A", "keras.io 7x7 A 1->128", 7, 7, 1, 128, "A", model="002 keras.io"),
    Shape("kerasio_3x3B", "keras.io 3x3 B 128->64", 3, 3, 128, 64, "B", model="002 keras.io"),
    Shape("nb256_7x7A", "256-level notebook 7x7 A 1->64", 7, 7, 1, 64, "A", model="003 notebook"),
    Shape("nb256_3x3B", "256-level notebook 3x3 B 64->64", 3, 3, 64, 64, "B", model="003 notebook"),
    Shape("book16_7x7A", "book 16x16 7x7 A 1->128", 7, 7, 1, 128, "A", h=16, w=16, model="000 book"),
    Shape("book16_3x3B", "book 16x16 3x3 B 64->64", 3, 3, 64, 64, "B", h=16, w=16, model="000 book"),
    # A first layer on a 3-channel image without colour groups (issue 19's narrow-input gradient case).
    Shape("rgb28_7x7A", "3-channel 7x7 A 3->128", 7, 7, 3, 128, "A", model="narrow input"),
    Shape("rgb_7x7A", "RGB blog 32x32 7x7 A groups 3, 3->768", 7, 7, 3, 768, "A", groups=3, n=16, h=32, w=32,
          model="004 CIFAR blog"),
    Shape("rgb_3x3B", "RGB blog 32x32 3x3 B groups 3, 384->384", 3, 3, 384, 384, "B", groups=3, n=16, h=32,
          w=32, model="004 CIFAR blog"),
    Shape("rgb_1x1B", "RGB blog 32x32 1x1 B groups 3, 768->384", 1, 1, 768, 384, "B", groups=3, n=16, h=32,
          w=32, model="004 CIFAR blog"),
)
PASSES = ("fwd", "fwd+bwd")
VARIANTS = ("ours", "tf_conv2d_masked", "tf_subconv_decomp")
# Which FLOP count is the work each variant performs (see module docstring).
COUNTED = {"ours": "live", "tf_conv2d_masked": "dense", "tf_subconv_decomp": "live"}


# --------------------------------------------------------------------------- masks, variants

def causal_mask_2d(kh, kw, mask_type):
    """(kh, kw) 0/1 float32 tap mask, colour groups 1: rows above + left of centre (+ centre for B).

    Written here independently of pixelcnn_fast.masks so the baselines do not share
    a bug with the code under test.
    """
    mask = np.zeros((kh, kw), np.float32)
    ch, cw = kh // 2, kw // 2
    mask[:ch, :] = 1.0
    mask[ch, :cw] = 1.0
    if mask_type.upper() == "B":
        mask[ch, cw] = 1.0
    return mask


def causal_mask_4d(shape):
    """(kh, kw, cin, cout) 0/1 mask. Colour groups 3 (the PixelCNN paper's RGB rule): channels in
    three contiguous blocks; at the centre tap input block i feeds output block j when i < j (A) or
    i <= j (B); every other live tap connects all channels. Independent of pixelcnn_fast.masks."""
    mask = np.broadcast_to(causal_mask_2d(shape.kh, shape.kw, "A")[:, :, None, None],
                           (shape.kh, shape.kw, shape.cin, shape.cout)).copy()
    ch, cw = shape.kh // 2, shape.kw // 2
    if shape.groups == 1:
        mask[ch, cw] = 1.0 if shape.mask_type == "B" else 0.0
        return mask
    gi = np.arange(shape.cin) // (shape.cin // 3)
    go = np.arange(shape.cout) // (shape.cout // 3)
    live = gi[:, None] < go[None, :] if shape.mask_type == "A" else gi[:, None] <= go[None, :]
    mask[ch, cw] = live.astype(np.float32)
    return mask


def masked_conv_dense(x, kernel, mask):
    """Baseline b: tf.nn.conv2d on kernel * mask (mask a constant of the traced graph)."""
    return tf.nn.conv2d(x, kernel * mask, strides=1, padding="SAME")


def subconv_decomposition(x, kernel, mask_type):
    """Baseline c: the masked conv as dense convs over the live taps only ("same", stride 1, dilation 1).

    Rows above: kernel rows 0..ch-1 (every column). Output row i must read input rows
    i-ch .. i-1, so drop the last input row, pad ch zero rows on top (and cw columns
    each side, the usual "same" width padding) and run a VALID conv: output row i
    then covers padded rows i .. i+ch-1 = input rows i-ch .. i-1, and there are
    (H-1+ch) - ch + 1 = H of them.
    Centre row: kernel[ch, :cw] (A) reads input columns j-cw .. j-1: drop the last
    column, pad cw on the left, VALID 1 x cw conv -> W columns. Mask B uses
    kernel[ch, :cw+1] on the full width (columns j-cw .. j).
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    ch, cw = kh // 2, kw // 2
    out = None
    if ch > 0:
        xt = tf.pad(x[:, :-1], [[0, 0], [ch, 0], [cw, cw], [0, 0]])
        out = tf.nn.conv2d(xt, kernel[:ch], strides=1, padding="VALID")
    ncols = cw + (1 if mask_type.upper() == "B" else 0)
    if ncols > 0:
        xl = x if mask_type.upper() == "B" else x[:, :, :-1]
        xl = tf.pad(xl, [[0, 0], [0, 0], [cw, 0], [0, 0]])
        left = tf.nn.conv2d(xl, kernel[ch:ch + 1, :ncols], strides=1, padding="VALID")
        out = left if out is None else out + left
    if out is None:  # 1x1 mask A: no live tap at all
        out = tf.zeros(tf.concat([tf.shape(x)[:3], tf.shape(kernel)[3:]], 0), x.dtype)
    return out


def _ours():
    try:
        from pixelcnn_fast import ops
    except (ImportError, tf.errors.NotFoundError) as e:
        # Not built yet (no module, or its .so missing): skip this variant, keep the
        # baselines; the report then says "NOT MEASURED". Any other error is a bug
        # and propagates.
        pytest.skip("pixelcnn_fast.ops not importable (%s: %s)" % (type(e).__name__, e))
    return ops.masked_conv2d


def _reference():
    """(conv fn(x, kernel, shape), name): the package's pure-TF reference."""
    from pixelcnn_fast.reference import masked_conv2d as ref

    return (lambda x, k, shape: ref(x, k, shape.mask_type, color_groups=shape.groups),
            "pixelcnn_fast.reference.masked_conv2d")


def conv_for(variant, shape):
    """conv(x, kernel) for one variant at one shape (mask type and groups baked in)."""
    if variant == "ours":
        op = _ours()
        return lambda x, k: op(x, k, shape.mask_type, color_groups=shape.groups)
    if variant == "tf_conv2d_masked":
        mask = tf.constant(causal_mask_4d(shape))
        return lambda x, k: masked_conv_dense(x, k, mask)
    if variant == "tf_subconv_decomp":
        return lambda x, k: subconv_decomposition(x, k, shape.mask_type)
    raise ValueError("unknown variant %r" % (variant,))


def make_pass(conv, pass_):
    """A tf.function(x, kernel, w_out) for one pass."""
    if pass_ == "fwd":

        @tf.function
        def fwd(x, kernel, w_out):
            del w_out  # same signature for both passes
            return (conv(x, kernel),)

        return fwd

    @tf.function
    def fwd_bwd(x, kernel, w_out):
        with tf.GradientTape() as tape:
            tape.watch(x)
            tape.watch(kernel)
            y = conv(x, kernel)
        # d sum(y * w_out) / d(x, kernel) == VJP of y with cotangent w_out.
        dx, dk = tape.gradient(y, [x, kernel], output_gradients=w_out)
        return y, dx, dk  # y returned so the forward conv cannot be pruned

    return fwd_bwd


# --------------------------------------------------------------------------- inputs, reference

@functools.lru_cache(maxsize=None)
def inputs_for(shape):
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((shape.n, shape.h, shape.w, shape.cin), dtype=np.float32)
    # He-like scale keeps y's magnitude O(1) whatever the fan-in.
    k = rng.standard_normal((shape.kh, shape.kw, shape.cin, shape.cout), dtype=np.float32)
    k *= np.float32(math.sqrt(2.0 / (shape.kh * shape.kw * shape.cin)))
    w_out = rng.standard_normal((shape.n, shape.h, shape.w, shape.cout), dtype=np.float32)
    return tf.constant(x), tf.constant(k), tf.constant(w_out)


@functools.lru_cache(maxsize=None)
def reference_for(shape, pass_):
    """Reference outputs (numpy) for (shape, pass), checked once against tf.nn.conv2d(kernel*mask)."""
    ref, ref_name = _reference()
    args = inputs_for(shape)
    want = [t.numpy() for t in make_pass(lambda x, k: ref(x, k, shape), pass_)(*args)]
    # The package's reference must itself be the masked dense conv (with this file's own mask), or
    # every comparison below would be against the wrong thing.
    dense = [t.numpy() for t in make_pass(conv_for("tf_conv2d_masked", shape), pass_)(*args)]
    assert_same(dense, want, "reference vs tf.nn.conv2d(kernel*mask)", shape)
    return want, ref_name


def assert_same(got, want, what, shape):
    names = ("y", "dx", "dkernel")
    assert len(got) == len(want), "%s: %d outputs, expected %d" % (what, len(got), len(want))
    for name, g, r in zip(names, got, want):
        assert g.shape == r.shape, "%s %s: shape %s, expected %s" % (what, name, g.shape, r.shape)
        assert np.all(np.isfinite(g)), "%s %s: non-finite values" % (what, name)
        scale = float(np.max(np.abs(r))) or 1.0
        np.testing.assert_allclose(
            g, r, rtol=RTOL, atol=ATOL_REL * scale, err_msg="%s: %s (%s)" % (what, name, shape.label)
        )
    if len(got) == 3:
        # Gradient at dead taps (and dead centre-tap channel blocks) must be exactly zero: the
        # mask's zeros are the contract.
        dead = causal_mask_4d(shape) == 0
        bad = np.abs(got[2][dead]).max() if dead.any() else 0.0
        assert bad == 0.0, "%s: dkernel at dead taps is %g, must be exactly 0 (%s)" % (what, bad, shape.label)


def flop_counts(shape, pass_):
    """(dense FLOPs, live FLOPs, live taps): live counts each live (tap, cin, cout) weight."""
    mask = causal_mask_4d(shape)
    per_weight = 2 * shape.n * shape.h * shape.w
    passes = 3 if pass_ == "fwd+bwd" else 1  # fwd, backprop-input, backprop-filter
    taps_live = int((mask.reshape(shape.kh * shape.kw, -1).max(axis=1) > 0).sum())
    return passes * per_weight * mask.size, passes * per_weight * int(mask.sum()), taps_live


def choose_rounds(fn, args):
    """Rounds so one benchmark takes ~BENCH_SECONDS, from one timed (already traced) call."""
    t0 = time.perf_counter()
    fn(*args)
    dt = time.perf_counter() - t0
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(math.ceil(BENCH_SECONDS / max(dt, 1e-6)))))


# --------------------------------------------------------------------------- the benchmarks

# Variants innermost so a group's rows are measured back to back. The sub-conv decomposition is
# spatial only: a colour-group mask's centre tap has no dense sub-conv form (it is itself masked
# by channel blocks), so groups-3 shapes compare ours with tf.nn.conv2d only.
CASES = [
    pytest.param(s, p, v, id="%s-%s-%s" % (s.id, p.replace("+", ""), v))
    for s in SHAPES
    for p in PASSES
    for v in VARIANTS
    if not (v == "tf_subconv_decomp" and s.groups != 1)
]


@pytest.mark.parametrize("shape,pass_,variant", CASES)
def test_masked_conv(benchmark, record_flops, shape, pass_, variant):
    benchmark.group = "%s | %s" % (shape.label, pass_)
    fn = make_pass(conv_for(variant, shape), pass_)
    args = inputs_for(shape)

    # Correctness first (this call also traces the tf.function).
    got = [t.numpy() for t in fn(*args)]
    want, ref_name = reference_for(shape, pass_)
    assert_same(got, want, variant, shape)

    rounds = choose_rounds(fn, args)
    record_flops.quiet()  # bounded wait for other processes to leave the 2 cores alone
    benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=WARMUP_ROUNDS, iterations=1)

    flops_dense, flops_live, taps_live = flop_counts(shape, pass_)
    record_flops(
        flops_dense,
        flops_live,
        COUNTED[variant],
        variant=variant,
        shape_id=shape.id,
        shape=shape.label,
        model=shape.model,
        **{"pass": pass_},
        batch=shape.n,
        hw=[shape.h, shape.w],
        kernel=[shape.kh, shape.kw, shape.cin, shape.cout],
        mask_type=shape.mask_type,
        color_groups=shape.groups,
        taps_live=taps_live,
        taps_total=shape.kh * shape.kw,
        live_weight_fraction=round(flops_live / flops_dense, 4),
        checked_against=ref_name,
    )


# A broader check of baseline c than the four benchmark shapes (not timed): other
# kernel sizes, odd non-square images, batch 1, both masks.
@pytest.mark.parametrize("kh,kw", [(1, 1), (1, 3), (3, 1), (3, 3), (5, 5), (7, 7), (3, 5)])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_subconv_decomposition_equals_masked_conv(kh, kw, mask_type):
    rng = np.random.default_rng(kh * 10 + kw)
    x = tf.constant(rng.standard_normal((1, 9, 11, 3), dtype=np.float32))
    k = tf.constant(rng.standard_normal((kh, kw, 3, 4), dtype=np.float32))
    got = subconv_decomposition(x, k, mask_type).numpy()
    want = masked_conv_dense(x, k, causal_mask_2d(kh, kw, mask_type)[:, :, None, None]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
