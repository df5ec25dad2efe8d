"""Python front end: the MaskedConv2D Keras layer."""

# A drop-in replacement for the masked convolutions of Keras PixelCNNs (the keras.io
# PixelConvLayer, a kernel-times-mask layer, an RGB colour-group layer).  The weights are
# Conv2D's, in Conv2D's layout and order ([kernel (kh, kw, cin, filters), bias (filters,)]),
# so a trained model's weights transfer with set_weights.  The mask is never stored: the
# fast op only visits live taps and the reference multiplies by the mask, so whatever sits
# in a dead tap of the kernel variable is ignored; dead taps are still initialised to 0 so
# the variable itself reads as the effective kernel (and stays so: their gradient is 0).

import keras
import numpy as np
import tensorflow as tf

from pixelcnn_fast.masks import check_mask_args, make_mask

__all__ = ["MaskedConv2D"]

_IMPLEMENTATIONS = ("fast", "reference")


class _DeadTapsZero(keras.initializers.Initializer):
    """Wraps a kernel initializer so that entries outside the mask start at exactly 0."""

    def __init__(self, base, mask):
        self.base = base
        self.mask = mask

    def __call__(self, shape, dtype=None):
        value = self.base(shape, dtype=dtype)
        mask = keras.ops.convert_to_tensor(self.mask, dtype=value.dtype)
        return value * mask

    def get_config(self):
        # Never serialised on its own: MaskedConv2D.get_config stores the base initializer.
        return keras.initializers.serialize(self.base)


def _strides_are_one(strides):
    if isinstance(strides, (int, np.integer)) and not isinstance(strides, bool):
        return int(strides) == 1
    try:
        items = tuple(strides)
    except TypeError:
        return False
    return len(items) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and int(s) == 1
        for s in items)


@keras.saving.register_keras_serializable(package="pixelcnn_fast")
class MaskedConv2D(keras.layers.Layer):
    """Causally masked 2-D convolution (PixelCNN mask "A" or "B"), stride 1, NHWC.

    Args:
      filters: number of output channels (divisible by color_groups).
      kernel_size: int or (kh, kw), both odd.
      mask_type: "A" (the centre tap excluded: first layer) or "B" (centre included).
      color_groups: 1, or 3 for RGB channel-group masks (contiguous channel blocks).
      dilation_rate: int or (dh, dw), >= 1.
      padding: "same" or "valid".
      strides: must be 1 (accepted for Conv2D-compatible configs).
      implementation: "fast" (the compiled pixelcnn_fast.ops kernel) or "reference"
        (pure TF, tf.nn.convolution on kernel * mask).
      The remaining arguments are Conv2D's.
    """

    def __init__(self, filters, kernel_size, mask_type="B", color_groups=1, dilation_rate=1,
                 padding="same", strides=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, implementation="fast",
                 **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        where = f"MaskedConv2D({self.name})"
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) \
                or int(filters) < 1:
            raise ValueError(f"{where}: filters must be a positive int, got {filters!r}")
        kh, kw, mask_type, dilation, padding = check_mask_args(
            kernel_size, mask_type, color_groups, cin=None, cout=int(filters),
            dilation_rate=dilation_rate, padding=padding, where=where)
        if not _strides_are_one(strides):
            raise ValueError(f"{where}: strides must be 1 (masked convolutions are stride 1), "
                             f"got {strides!r}")
        if implementation not in _IMPLEMENTATIONS:
            raise ValueError(f"{where}: implementation must be 'fast' or 'reference', got "
                             f"{implementation!r}")
        self.filters = int(filters)
        self.kernel_size = (kh, kw)
        self.mask_type = mask_type
        self.color_groups = int(color_groups)
        self.dilation_rate = dilation
        self.padding = padding
        self.strides = (1, 1)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.implementation = implementation
        self.input_spec = keras.InputSpec(ndim=4)
        # A custom TF op: XLA cannot compile it, so jit_compile="auto" must resolve to False.
        self.supports_jit = False

    def build(self, input_shape):
        cin = input_shape[-1]
        if cin is None:
            raise ValueError(f"MaskedConv2D({self.name}): the input channel dimension must be "
                             f"known at build time, got input shape {tuple(input_shape)}")
        cin = int(cin)
        kh, kw = self.kernel_size
        check_mask_args(self.kernel_size, self.mask_type, self.color_groups, cin=cin,
                        cout=self.filters, dilation_rate=self.dilation_rate,
                        padding=self.padding, where=f"MaskedConv2D({self.name})")
        if self.implementation == "fast":
            # Imported here, not at module import, so the layer module (and the reference
            # implementation) work before the compiled op is built; a missing op is then a
            # clear ImportError when the layer is first used.
            import pixelcnn_fast.ops  # noqa: F401
        mask = make_mask(kh, kw, cin, self.filters, self.mask_type, self.color_groups)
        self.kernel = self.add_weight(
            name="kernel", shape=(kh, kw, cin, self.filters),
            initializer=_DeadTapsZero(self.kernel_initializer, mask),
            regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
            trainable=True, dtype=self.dtype)
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                trainable=True, dtype=self.dtype)
        else:
            self.bias = None
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: cin})

    def _conv_fn(self):
        if self.implementation == "fast":
            from pixelcnn_fast import ops
            return ops.masked_conv2d
        from pixelcnn_fast import reference
        return reference.masked_conv2d

    def call(self, inputs):
        # Under a mixed policy Keras hands us compute-dtype inputs and reads self.kernel
        # autocast to the compute dtype; the fast op computes float16/bfloat16 in float32
        # internally, the reference simply runs in the compute dtype.
        kernel = self.kernel
        if kernel.dtype != inputs.dtype:
            kernel = tf.cast(kernel, inputs.dtype)
        outputs = self._conv_fn()(inputs, kernel, self.mask_type,
                                  color_groups=self.color_groups,
                                  dilation_rate=self.dilation_rate, padding=self.padding)
        if self.use_bias:
            bias = self.bias
            if bias.dtype != outputs.dtype:
                bias = tf.cast(bias, outputs.dtype)
            outputs = tf.nn.bias_add(outputs, bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        # Given explicitly so functional-model construction never has to trace the op.
        n, h, w, _ = input_shape
        if self.padding == "valid":
            kh, kw = self.kernel_size
            dh, dw = self.dilation_rate
            h = None if h is None else h - dh * (kh - 1)
            w = None if w is None else w - dw * (kw - 1)
        return (n, h, w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "mask_type": self.mask_type,
            "color_groups": self.color_groups,
            "dilation_rate": self.dilation_rate,
            "padding": self.padding,
            "strides": self.strides,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "implementation": self.implementation,
        })
        return config
