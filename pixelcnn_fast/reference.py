"""Python front end: the pure-TF reference masked convolution every fast path is tested against."""

# Deliberately the obvious implementation: multiply the dense kernel by the 0/1 mask and run
# TF's own convolution over every tap.  Its gradients come from TF's own conv and multiply
# gradients, so the kernel gradient at a dead tap is exactly 0 (gradient * 0).
#
# Why tf.nn.convolution and not tf.nn.conv2d(dilations=...): TF's CPU Conv2DBackpropInput (and
# BackpropFilter) without oneDNN refuse dilation > 1 ("Current CPU implementations do not yet support
# dilation rates larger than 1"), and TF turns oneDNN on by default only on CPUs with AVX-512-class
# features (TF_ENABLE_ONEDNN_OPTS overrides it).  tf.nn.convolution runs a dilated conv as
# SpaceToBatchND -> Conv2D (VALID, dilation 1) -> BatchToSpaceND, whose gradients exist on every
# CPU with oneDNN on or off; without dilation it emits the same single Conv2D as tf.nn.conv2d.

import numpy as np
import tensorflow as tf

from pixelcnn_fast.checks import check_conv_inputs
from pixelcnn_fast.masks import make_mask

__all__ = ["masked_conv2d"]

_WHERE = "masked_conv2d"


def masked_conv2d(x, kernel, mask_type, color_groups=1, dilation_rate=1, padding="same"):
    """Masked 2-D convolution, stride 1: tf.nn.convolution(x, kernel * mask).

    Args:
      x: (N, H, W, Cin) floating tensor.
      kernel: (kh, kw, Cin, Cout) tensor of the same dtype; kh and kw odd.
      mask_type: "A" or "B" (case-insensitive).
      color_groups: 1 or 3 (contiguous channel blocks).
      dilation_rate: int or (dh, dw), >= 1.
      padding: "same" or "valid".

    Returns:
      (N, H', W', Cout) tensor in x's dtype.  Works in whatever float dtype it is given
      (the compute dtype under a mixed-precision policy).
    """
    x = tf.convert_to_tensor(x)
    kernel = tf.convert_to_tensor(kernel)
    # The same checks and wording as the fast op (any floating dtype is fine here).
    kh, kw, mask_type, (dh, dw), padding = check_conv_inputs(
        x, kernel, mask_type, color_groups, dilation_rate, padding, where=_WHERE)
    kcin, kcout = int(kernel.shape[2]), int(kernel.shape[3])
    mask = make_mask(kh, kw, kcin, kcout, mask_type, color_groups)
    masked = kernel * tf.constant(mask.astype(np.dtype(kernel.dtype.as_numpy_dtype)))
    return tf.nn.convolution(x, masked, strides=1, padding=padding.upper(), dilations=[dh, dw])
