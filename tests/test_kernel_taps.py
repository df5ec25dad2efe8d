"""Core tap sets read from a kernel's non-zeros (docs/SEMANTICS.md: "the kernel's zeros are the mask"): the
conv over those taps equals the dense conv of the same kernel, whatever mechanism zeroed it, and dead
taps are not counted as work."""

import numpy as np
import pytest


def dense_conv_f64(x, k, dilation=1, padding="same"):
    """Plain float64 conv over every tap (TF's 'same' placement), from first principles."""
    n, h, w, cin = x.shape
    kh, kw, _, cout = k.shape
    eh, ew = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    if padding == "same":
        pt, pl, ho, wo = (eh - 1) // 2, (ew - 1) // 2, h, w
    else:
        pt, pl, ho, wo = 0, 0, h - eh + 1, w - ew + 1
    xp = np.zeros((n, h + 2 * eh, w + 2 * ew, cin))
    xp[:, eh:eh + h, ew:ew + w] = x
    y = np.zeros((n, ho, wo, cout))
    for a in range(kh):
        for b in range(kw):
            oy, ox = a * dilation - pt + eh, b * dilation - pl + ew
            y += xp[:, oy:oy + ho, ox:ox + wo] @ k[a, b].astype(np.float64)
    return y


def dense_backprop_input_f64(dy, k, input_hw, dilation=1, padding="same"):
    """Adjoint of dense_conv_f64 w.r.t. x, via its linearity: x -> <dense_conv(x), dy>."""
    n = dy.shape[0]
    h, w = input_hw
    cin = k.shape[2]
    eye = np.eye(h * w * cin).reshape(h * w * cin, h, w, cin)
    cols = np.stack([dense_conv_f64(e[None], k, dilation, padding)[0] for e in eye])  # (HWC, Ho, Wo, Co)
    return np.einsum("pabo,nabo->np", cols, dy).reshape(n, h, w, cin)


def zero_patterns(rng, kh, kw, cin, cout):
    """Kernels zeroed by different mechanisms: a PixelCNN mask, dead taps, irregular channel runs."""
    k = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32)
    cy, cx = kh // 2, kw // 2
    mask_a = np.zeros_like(k)
    mask_a[:cy] = 1
    mask_a[cy, :cx] = 1
    yield "mask A", k * mask_a
    mask_b = mask_a.copy()
    mask_b[cy, cx] = 1
    yield "mask B", k * mask_b
    dead = k * (rng.random((kh, kw, 1, 1)) < 0.4)
    yield "random dead taps", dead
    # Per (tap, output channel) a random contiguous run of live input channels: many distinct ranges,
    # beyond the segment limit, so the hull fallback (with zeros packed in) is exercised.
    ragged = np.zeros_like(k)
    for a in range(kh):
        for b in range(kw):
            for o in range(cout):
                lo = rng.integers(0, cin + 1)
                hi = rng.integers(lo, cin + 1)
                ragged[a, b, lo:hi, o] = k[a, b, lo:hi, o]
    yield "ragged channel runs", ragged
    # Scattered zeros inside live taps: hulls cover them, the zeros are multiplied, results stay exact.
    yield "scattered zeros", k * (rng.random(k.shape) < 0.7)
    yield "all zero", np.zeros_like(k)


@pytest.mark.parametrize("shape", [(1, 5, 7, 3, 4, 3, 3, 1, "same"), (2, 6, 5, 5, 20, 5, 3, 2, "same"),
                                   (1, 9, 8, 2, 1, 3, 5, 1, "valid"), (2, 4, 4, 6, 70, 3, 3, 1, "same")])
def test_taps_from_kernel_match_dense_conv(core, rng, shape):
    n, h, w, cin, cout, kh, kw, dil, pad = shape
    x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
    for name, k in zero_patterns(rng, kh, kw, cin, cout):
        y = core.masked_conv2d_forward(x, np.ascontiguousarray(k), None, 1, (dil, dil), pad,
                                       out=None)
        ref = dense_conv_f64(x.astype(np.float64), k, dil, pad)
        scale = np.abs(x).max() * np.abs(k).max() * kh * kw * cin + 1e-30
        assert np.max(np.abs(y - ref)) <= 1e-5 * scale, name
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = core.masked_conv2d_backprop_input(dy, np.ascontiguousarray(k), (h, w), None, 1, (dil, dil), pad)
        dx_ref = dense_backprop_input_f64(dy.astype(np.float64), k, (h, w), dil, pad)
        scale = np.abs(dy).max() * np.abs(k).max() * kh * kw * cout + 1e-30
        assert np.max(np.abs(dx - dx_ref)) <= 1e-5 * scale, name


def test_kernel_live_taps_reads_structure(core_testing, rng):
    k = rng.standard_normal((7, 7, 1, 8)).astype(np.float32)
    k[3, 3:] = 0
    k[4:] = 0  # mask A by zeros alone
    taps, live_macs, dense_macs = core_testing.kernel_live_taps(k)
    assert len(taps) == 24 and live_macs == 24 * 8 and dense_macs == 49 * 8
    assert taps == [(y, x) for y in range(7) for x in range(7) if y < 3 or (y == 3 and x < 3)]
    # Colour-group centre tap (mask B, groups 3): input block i feeds output block j iff i <= j.
    k3 = rng.standard_normal((1, 1, 6, 9)).astype(np.float32)
    for i in range(3):
        for j in range(3):
            if i > j:
                k3[0, 0, 2 * i:2 * i + 2, 3 * j:3 * j + 3] = 0
    _, live, _ = core_testing.kernel_live_taps(k3)
    assert live == 3 * (2 + 4 + 6)  # output block j reads (j+1)*2 input channels


def test_mask_none_refuses_colour_groups_and_filter_gradient(core):
    x = np.zeros((1, 3, 3, 3), np.float32)
    k = np.zeros((3, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="color_groups must be 1 with mask_type=None"):
        core.masked_conv2d_forward(x, k, None, 3)
    with pytest.raises(ValueError, match="mask_type must be 'A' or 'B' here, got None"):
        core.masked_conv2d_backprop_filter(x, x, (3, 3), None)
    with pytest.raises(TypeError, match="mask_type must be 'A', 'B' or None, got 7"):
        core.masked_conv2d_forward(x, k, 7)
