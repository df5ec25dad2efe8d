"""Python front end: models -- the keras.io PixelCNN architecture on MaskedConv2D, the bundled model's path,
and loading a saved model with this package's layers registered (the CLI, generate, scripts and tests load
models here).

The keras.io example (7x7 mask A, residual blocks 1x1 -> 3x3 mask B (half the filters) -> 1x1 added to
their input, two 1x1 mask-B layers, a 1x1 sigmoid head; 128 filters, 5 blocks: 532,673 parameters),
built from our layer so that training uses the fast op and the weights load into either.
"""

import os

import keras
from keras import layers

from pixelcnn_fast.checks import ModelLoadError, check_model_file, one_line
from pixelcnn_fast.layers import MaskedConv2D

__all__ = ["ResidualBlock", "keras_io_pixelcnn", "bundled_model_path", "load_model", "ModelLoadError"]


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


# ----------------------------------------------------------------------------------- saved models

def bundled_model_path():
    """Path of the bundled model (pixelcnn_fast/assets/pixelcnn_mnist.keras), whether or not it exists."""
    from pixelcnn_fast.train import BUNDLED_NAME

    try:
        from importlib.resources import files

        return os.fspath(files("pixelcnn_fast").joinpath("assets", BUNDLED_NAME))
    except (ImportError, TypeError, ModuleNotFoundError):
        # A loader without filesystem paths (a zipped package): fall back on the package directory.
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", BUNDLED_NAME)


def load_model(path):
    """keras.models.load_model(path, compile=False) with this package's layers registered (MaskedConv2D by
    pixelcnn_fast.layers, ResidualBlock by this module, both imported here); ModelLoadError
    "cannot load model 'path': <reason>" for a missing, unreadable or corrupt file (the file is checked first,
    checks.check_model_file, then Keras's own error is quoted)."""
    check_model_file(path)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, KeyError, zipfile errors ... for bad files
        raise ModelLoadError(f"cannot load model '{path}': {one_line(exc)}") from exc
