"""Tests: bad input to the masked convolution -- TF op, pybind11 module, reference and layer."""

# Every refusal must say which argument is wrong and show what came (docs/SEMANTICS.md: "Inputs are
# checked once, at the adapter, with messages that name the argument, what was expected and
# what came").  The TF op may refuse in Python (ValueError/TypeError) or in the kernel
# (InvalidArgumentError); the pybind module with TypeError/ValueError.

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_fast import reference
from pixelcnn_fast.layers import MaskedConv2D

OP_ERRORS = (ValueError, TypeError, tf.errors.InvalidArgumentError)
PYBIND_ERRORS = (ValueError, TypeError)
BACKENDS = ["op", "pybind", "reference"]


def _dil_pair(d):
    return (d, d) if np.isscalar(d) else tuple(d)


@pytest.fixture
def conv(request, backend):
    """conv(x, kernel, mask_type, color_groups, dilation, padding) on the chosen backend."""
    if backend == "op":
        ops = request.getfixturevalue("fast_ops")

        def run(x, kernel, mask_type="B", color_groups=1, dilation=1, padding="same"):
            return ops.masked_conv2d(tf.constant(x), tf.constant(kernel), mask_type,
                                     color_groups=color_groups, dilation_rate=dilation,
                                     padding=padding)
        return run, OP_ERRORS
    if backend == "pybind":
        core = request.getfixturevalue("core")

        def run(x, kernel, mask_type="B", color_groups=1, dilation=1, padding="same"):
            return core.masked_conv2d_forward(x, kernel, mask_type, color_groups=color_groups,
                                              dilation=_dil_pair(dilation), padding=padding)
        return run, PYBIND_ERRORS

    def run(x, kernel, mask_type="B", color_groups=1, dilation=1, padding="same"):
        return reference.masked_conv2d(tf.constant(x), tf.constant(kernel), mask_type,
                                       color_groups=color_groups, dilation_rate=dilation,
                                       padding=padding)
    return run, (ValueError,)


def _raises(errors, call, *patterns):
    """Assert `call` raises one of `errors` whose message matches every regex in `patterns`."""
    with pytest.raises(errors, match=patterns[0] if patterns else None) as info:
        call()
    msg = str(info.value)
    for pat in patterns[1:]:
        assert re.search(pat, msg, re.IGNORECASE | re.DOTALL), \
            f"message {msg!r} does not match {pat!r}"
    return msg


def f32(*shape):
    return np.ones(shape, np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_rank_x(conv, backend):
    run, errors = conv
    # Rank 3 instead of 4: the message names x and shows the rank (3) or the shape.
    _raises(errors, lambda: run(f32(5, 6, 2), f32(3, 3, 2, 4)),
            r"(?i)\bx\b", r"\b3\b|5, ?6, ?2")


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_rank_kernel(conv, backend):
    run, errors = conv
    _raises(errors, lambda: run(f32(1, 5, 6, 2), f32(3, 3, 2)),
            r"(?i)kernel", r"\b3\b|3, ?3, ?2")


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_dtype(conv, backend):
    run, errors = conv
    x = np.ones((1, 5, 5, 2), np.int32)
    _raises(errors, lambda: run(x, f32(3, 3, 2, 4)), r"(?i)\bx\b", r"int32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_input_channel_mismatch(conv, backend):
    run, errors = conv
    # x has 4 channels, the kernel expects 5: both numbers must be shown.
    _raises(errors, lambda: run(f32(1, 5, 5, 4), f32(3, 3, 5, 6)),
            r"(?i)kernel|channel", r"\b5\b", r"\b4\b")


@pytest.mark.parametrize("backend", BACKENDS)
def test_color_groups_input_channels_not_divisible(conv, backend):
    run, errors = conv
    _raises(errors, lambda: run(f32(1, 5, 5, 4), f32(3, 3, 4, 6), color_groups=3),
            r"(?i)color_groups", r"\b4\b")


@pytest.mark.parametrize("backend", BACKENDS)
def test_color_groups_output_channels_not_divisible(conv, backend):
    run, errors = conv
    _raises(errors, lambda: run(f32(1, 5, 5, 3), f32(3, 3, 3, 4), color_groups=3),
            r"(?i)color_groups", r"\b4\b")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_mask_type(conv, backend):
    run, errors = conv
    _raises(errors, lambda: run(f32(1, 5, 5, 2), f32(3, 3, 2, 4), mask_type="C"),
            r"(?i)mask_type", r"\bC\b")


@pytest.mark.parametrize("backend", BACKENDS)
def test_dilation_below_one(conv, backend):
    run, errors = conv
    _raises(errors, lambda: run(f32(1, 5, 5, 2), f32(3, 3, 2, 4), dilation=(0, 1)),
            r"(?i)dilation", r"\b0\b")


@pytest.mark.parametrize("backend", BACKENDS)
def test_even_kernel_size(conv, backend):
    run, errors = conv
    _raises(errors, lambda: run(f32(1, 5, 5, 2), f32(4, 3, 2, 4)),
            r"(?i)kernel", r"\b4\b", r"even|odd")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_padding(conv, backend):
    run, errors = conv
    _raises(errors, lambda: run(f32(1, 5, 5, 2), f32(3, 3, 2, 4), padding="full"),
            r"(?i)padding", r"full")


# --------------------------------------------------------------------------- pybind only

@pytest.mark.parametrize("which", ["x", "kernel"])
def test_pybind_non_contiguous(core, which):
    # "no silent copies": a strided view must be refused, naming the argument.
    x = np.ones((1, 5, 10, 2), np.float32)[:, :, ::2, :]
    kernel = np.ones((3, 3, 4, 2), np.float32).transpose(0, 1, 3, 2)
    args = {"x": x if which == "x" else np.ascontiguousarray(x),
            "kernel": kernel if which == "kernel" else np.ascontiguousarray(kernel)}
    assert not args[which].flags.c_contiguous
    _raises(PYBIND_ERRORS, lambda: core.masked_conv2d_forward(args["x"], args["kernel"], "B"),
            rf"(?i)\b{which}\b", r"contiguous")


@pytest.mark.parametrize("which", ["x", "kernel"])
def test_pybind_float64(core, which):
    x = np.ones((1, 5, 5, 2), np.float64 if which == "x" else np.float32)
    kernel = np.ones((3, 3, 2, 4), np.float64 if which == "kernel" else np.float32)
    _raises(PYBIND_ERRORS, lambda: core.masked_conv2d_forward(x, kernel, "B"),
            rf"(?i)\b{which}\b", r"float64|double")


def test_pybind_backprop_input_non_contiguous_dy(core):
    dy = np.ones((1, 5, 10, 4), np.float32)[:, :, ::2, :]
    _raises(PYBIND_ERRORS,
            lambda: core.masked_conv2d_backprop_input(dy, f32(3, 3, 2, 4), (5, 5), "B"),
            r"(?i)\bdy\b", r"contiguous")


def test_pybind_backprop_filter_float64_x(core):
    x = np.ones((1, 5, 5, 2), np.float64)
    _raises(PYBIND_ERRORS,
            lambda: core.masked_conv2d_backprop_filter(x, f32(1, 5, 5, 4), (3, 3), "B"),
            r"(?i)\bx\b", r"float64|double")


def test_pybind_backprop_input_dy_channels_mismatch(core):
    # dy has 7 channels, the kernel produces 6.
    _raises(PYBIND_ERRORS,
            lambda: core.masked_conv2d_backprop_input(f32(1, 5, 5, 7), f32(3, 3, 2, 6),
                                                      (5, 5), "B"),
            r"(?i)\bdy\b|kernel", r"\b7\b")


def test_pybind_backprop_filter_even_kernel_hw(core):
    _raises(PYBIND_ERRORS,
            lambda: core.masked_conv2d_backprop_filter(f32(1, 5, 5, 2), f32(1, 5, 5, 4),
                                                       (3, 2), "B"),
            r"(?i)kernel", r"\b2\b", r"even|odd")


@pytest.mark.parametrize("fn", ["forward", "backprop_input", "backprop_filter"])
def test_pybind_out_wrong_shape(core, fn):
    x, kernel, dy = f32(1, 5, 5, 2), f32(3, 3, 2, 6), f32(1, 5, 5, 6)
    if fn == "forward":
        out = np.zeros((1, 5, 5, 7), np.float32)   # right: (1, 5, 5, 6)
        call = lambda: core.masked_conv2d_forward(x, kernel, "B", out=out)  # noqa: E731
    elif fn == "backprop_input":
        out = np.zeros((1, 5, 7, 2), np.float32)   # right: (1, 5, 5, 2)
        call = lambda: core.masked_conv2d_backprop_input(dy, kernel, (5, 5), "B",  # noqa
                                                         out=out)
    else:
        out = np.zeros((3, 3, 2, 7), np.float32)   # right: (3, 3, 2, 6)
        call = lambda: core.masked_conv2d_backprop_filter(x, dy, (3, 3), "B",  # noqa
                                                          out=out)
    _raises(PYBIND_ERRORS, call, r"(?i)\bout\b", r"\b7\b")
    assert np.all(out == 0), "a refused out= buffer must not have been written"


def test_pybind_out_wrong_dtype(core):
    out = np.zeros((1, 5, 5, 6), np.float64)
    _raises(PYBIND_ERRORS,
            lambda: core.masked_conv2d_forward(f32(1, 5, 5, 2), f32(3, 3, 2, 6), "B", out=out),
            r"(?i)\bout\b", r"float64|double")


# --------------------------------------------------------------------------- the layer

@pytest.mark.parametrize("kwargs,pattern", [
    (dict(kernel_size=4), r"kernel_size must be odd.*\(4, 4\)"),
    (dict(kernel_size=(3, 2)), r"kernel_size must be odd.*\(3, 2\)"),
    (dict(mask_type="C"), r"mask_type must be 'A' or 'B', got 'C'"),
    (dict(color_groups=3, filters=4), r"color_groups=3 needs output channels.*got 4"),
    (dict(color_groups=2), r"color_groups must be 1 or 3, got 2"),
    (dict(dilation_rate=0), r"dilation_rate must be >= 1, got 0"),
    (dict(padding="causal"), r"padding must be 'same' or 'valid', got 'causal'"),
    (dict(strides=2), r"strides must be 1.*got 2"),
    (dict(strides=(1, 2)), r"strides must be 1.*got \(1, 2\)"),
    (dict(filters=0), r"filters must be a positive int, got 0"),
    (dict(implementation="cuda"), r"implementation must be 'fast' or 'reference', got 'cuda'"),
])
def test_layer_refuses_bad_arguments_at_construction(kwargs, pattern):
    args = dict(filters=6, kernel_size=3, mask_type="B", implementation="reference")
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        MaskedConv2D(**args)


def test_layer_refuses_channels_not_divisible_by_groups_at_build():
    layer = MaskedConv2D(6, 3, "A", color_groups=3, implementation="reference")
    with pytest.raises(ValueError, match=r"color_groups=3 needs input channels.*got 4"):
        layer.build((None, 5, 5, 4))


def test_layer_refuses_wrong_rank_input():
    layer = MaskedConv2D(6, 3, "A", implementation="reference")
    with pytest.raises(ValueError, match=r"ndim=4"):
        layer(keras.ops.ones((2, 5, 5)))
