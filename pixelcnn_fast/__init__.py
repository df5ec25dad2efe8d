"""pixelcnn_fast: fast masked convolutions for PixelCNN-style models in TensorFlow/Keras.

Public surface: MaskedConv2D (Keras layer), ops.masked_conv2d (TF custom op), reference
(pure-TF implementations every fast path is tested against), check(model) (lowering and causality
report), Sampler (cached incremental sampling), convert(model) (masked convs -> MaskedConv2D),
keras.SampleCallback, build_info().
"""

from pixelcnn_fast._version import __version__
from pixelcnn_fast._ext import build_info
from pixelcnn_fast.layers import MaskedConv2D
from pixelcnn_fast.lowering import LoweringError, NotCausalError, check
from pixelcnn_fast.sampler import Sampler
from pixelcnn_fast.conversion import convert
from pixelcnn_fast import models  # noqa: F401  registers ResidualBlock, so saved keras.io-style models load

__all__ = ["__version__", "build_info", "MaskedConv2D", "Sampler", "check", "convert", "LoweringError",
           "NotCausalError"]
