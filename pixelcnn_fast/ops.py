"""TF adapter (Python side): the masked-conv custom op, its argument checks and its registered gradient."""

import tensorflow as tf

from pixelcnn_fast._ext import tf_ops
from pixelcnn_fast.checks import check_conv_inputs

__all__ = ["masked_conv2d"]

_ops = tf_ops()

# Dtypes computed in float32 and cast back: what Keras hands an op under mixed precision.
_CAST_TO_FLOAT32 = (tf.float16, tf.bfloat16)


def masked_conv2d(x, kernel, mask_type, color_groups=1, dilation_rate=1, padding="same", name=None):
    """Masked 2-D convolution (stride 1) that reads only the live taps of `kernel`.

    Same signature and result as `pixelcnn_fast.reference.masked_conv2d`: the dense kernel
    (kh, kw, Cin, Cout) is passed as is and the mask is never multiplied in; dead taps are
    skipped by the C++ core. float16/bfloat16 are computed in float32 and cast back.
    float64 is refused (the op is float32; use the reference for float64).
    """
    with tf.name_scope(name or "masked_conv2d"):
        x = tf.convert_to_tensor(x)
        kernel = tf.convert_to_tensor(kernel)
        kh, kw, mask_type, (dh, dw), padding = check_conv_inputs(
            x, kernel, mask_type, color_groups, dilation_rate, padding, where="masked_conv2d",
            dtypes=(tf.float32,) + _CAST_TO_FLOAT32)
        dtype = x.dtype
        if dtype in _CAST_TO_FLOAT32:
            x = tf.cast(x, tf.float32)
            kernel = tf.cast(kernel, tf.float32)
        y = _ops.pixelcnn_fast_masked_conv2d(
            x, kernel, mask_type=mask_type, color_groups=int(color_groups), dilations=[dh, dw],
            padding=padding)
        return tf.cast(y, dtype) if dtype != tf.float32 else y


def _attrs(op):
    return dict(mask_type=op.get_attr("mask_type"), color_groups=op.get_attr("color_groups"),
                dilations=op.get_attr("dilations"), padding=op.get_attr("padding"))


@tf.RegisterGradient("PixelcnnFastMaskedConv2D")
def _masked_conv2d_grad(op, dy):
    # Two separate ops so that graph pruning drops the input gradient of a first layer whose
    # input needs none (the image), as TF does for Conv2DBackpropInput.
    x, kernel = op.inputs
    attrs = _attrs(op)
    dx = _ops.pixelcnn_fast_masked_conv2d_backprop_input(tf.shape(x), kernel, dy, **attrs)
    dk = _ops.pixelcnn_fast_masked_conv2d_backprop_filter(x, tf.shape(kernel), dy, **attrs)
    return dx, dk
