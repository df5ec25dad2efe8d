"""Python front end (program IR): every exception that leaves lower() / Sampler() for an op the cached sampler
does not take is a typed LoweringError naming the op (name and type), its Keras layer path and class (issue 15).
The test walks a list of ops a user's model may contain, each wrapped in a layer of its own."""

import keras
import pytest
import tensorflow as tf
from keras import layers

from pixelcnn_fast import LoweringError, MaskedConv2D, Sampler, check

# (what the layer does to an image-dependent (B, H, W, C) tensor, the TF op type expected in the message)
UNSUPPORTED = [
    (lambda t: tf.roll(t, shift=1, axis=2), "Roll"),
    (lambda t: tf.image.resize(t, (10, 10)), "ResizeBilinear"),
    (lambda t: tf.nn.max_pool2d(t, 2, 1, "SAME"), "MaxPool"),
    (lambda t: tf.nn.avg_pool2d(t, 3, 1, "SAME"), "AvgPool"),
    (lambda t: tf.math.cumsum(t, axis=1), "Cumsum"),
    (lambda t: tf.reverse(t, axis=[2]), "ReverseV2"),
    (lambda t: tf.nn.depth_to_space(tf.concat([t] * 4, axis=-1), 2)[:, :5, :5], "DepthToSpace"),
    (lambda t: tf.sort(t, axis=-1), "TopKV2"),
    (lambda t: tf.transpose(t, [0, 2, 1, 3]), "Transpose"),
    (lambda t: t - tf.reduce_mean(t, axis=[1, 2], keepdims=True), "Mean"),
    # A strided conv is a step to a coarser grid now (tests/test_grids.py); up-sampling past the image is not.
    (lambda t: tf.nn.conv2d_transpose(t, tf.ones((3, 3, 4, 4)), tf.stack([tf.shape(t)[0], 10, 10, 4]), 2, "SAME"),
     "Conv2DBackpropInput"),
]


class UserOp(layers.Layer):
    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, t):
        return self.fn(t)


def _model(fn, name):
    inp = keras.Input((5, 5, 1))
    x = MaskedConv2D(4, 3, mask_type="A", padding="same")(inp)
    x = UserOp(fn, name=name)(x)
    if x.shape[1:3] != (5, 5):   # keep the model's output an image of the input's size where the op changed it
        x = layers.Resizing(5, 5)(x)
    return keras.Model(inp, layers.Conv2D(1, 1, name="logits")(x))


@pytest.mark.parametrize("fn,op_type", UNSUPPORTED, ids=[t for _, t in UNSUPPORTED])
def test_each_unsupported_op_is_refused_naming_op_layer_and_class(fn, op_type):
    name = f"user_{op_type.lower()}"
    model = _model(fn, name)
    for entry in (check, lambda m: Sampler(m, head="bernoulli")):
        with pytest.raises(LoweringError) as info:
            entry(model)
        message = str(info.value)
        assert f"({op_type})" in message, message
        assert f"of layer '{name}' (UserOp)" in message, message
        assert "op '" in message and name in message.split("op '")[1], message
