"""Python front end: model builders — the keras.io PixelCNN architecture on MaskedConv2D.

The keras.io example (7x7 mask A, residual blocks 1x1 -> 3x3 mask B (half the filters) -> 1x1 added to
their input, two 1x1 mask-B layers, a 1x1 sigmoid head; 128 filters, 5 blocks: 532,673 parameters),
built from our layer so that training uses the fast op and the weights load into either.
"""

import keras
from keras import layers

from pixelcnn_fast.layers import MaskedConv2D


@keras.saving.register_keras_serializable(package="pixelcnn_fast")
class ResidualBlock(layers.Layer):
    """1x1 conv (relu) -> 3x3 mask-B conv with half the filters (relu) -> 1x1 conv (relu), plus input."""

    def __init__(self, filters, implementation="fast", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.implementation = implementation
        self.conv1 = layers.Conv2D(self.filters, 1, activation="relu")
        self.pixel_conv = MaskedConv2D(self.filters // 2, 3, mask_type="B", activation="relu",
                                       implementation=implementation)
        self.conv2 = layers.Conv2D(self.filters, 1, activation="relu")

    def build(self, input_shape):
        # Builds the children here so a .keras file's weights have variables to load into.
        lead = tuple(input_shape[:-1])
        self.conv1.build(input_shape)
        self.pixel_conv.build(lead + (self.filters,))
        self.conv2.build(lead + (self.filters // 2,))

    def call(self, inputs):
        return inputs + self.conv2(self.pixel_conv(self.conv1(inputs)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "implementation": self.implementation}


def keras_io_pixelcnn(height=28, width=28, filters=128, blocks=5, implementation="fast", name="pixelcnn"):
    """The keras.io PixelCNN (sigmoid head, binarized images) on MaskedConv2D."""
    inputs = keras.Input((height, width, 1), name="image")
    x = MaskedConv2D(filters, 7, mask_type="A", activation="relu", implementation=implementation,
                     name="pixel_conv_a")(inputs)
    for k in range(blocks):
        x = ResidualBlock(filters, implementation=implementation, name=f"residual_block_{k}")(x)
    for k in range(2):
        x = MaskedConv2D(filters, 1, mask_type="B", activation="relu", implementation=implementation,
                         name=f"pixel_conv_1x1_{k}")(x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="head")(x)
    return keras.Model(inputs, outputs, name=name)
