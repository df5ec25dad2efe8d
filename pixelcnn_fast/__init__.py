"""pixelcnn_fast: fast masked convolutions for PixelCNN-style models in TensorFlow/Keras.

Public surface: MaskedConv2D (Keras layer), ops.masked_conv2d (TF custom op), reference
(pure-TF implementations every fast path is tested against), check(model) (lowering and causality
report), Sampler (cached incremental sampling), convert(model) (masked convs -> MaskedConv2D),
keras.SampleCallback, build_info().

Without TensorFlow: `import pixelcnn_fast`, build_info(), pixelcnn_fast.cuda (CuPy), pixelcnn_fast._core
(NumPy) and pixelcnn_fast._cuda work; the TF names above are imported on first use (PEP 562), and then
raise an ImportError saying TensorFlow 2.21 is needed. When TensorFlow is already imported (the usual
`import keras` first), the TF parts load at once, as they always did, so saved models with our layers
load without touching any pixelcnn_fast name; a program that imports pixelcnn_fast before Keras and only
calls keras.models.load_model must import pixelcnn_fast.models (or use any TF name) first.
"""

import importlib as _importlib
import sys as _sys

from pixelcnn_fast._version import TF_REQUIREMENT as _TF_REQUIREMENT, __version__
from pixelcnn_fast._ext import build_info

# Top-level names that need TensorFlow: name -> the module defining it.
_TF_NAMES = {
    "MaskedConv2D": "pixelcnn_fast.layers",
    "check": "pixelcnn_fast.program.report",
    "LoweringError": "pixelcnn_fast.program.ir",
    "NotCausalError": "pixelcnn_fast.program.ir",
    "Sampler": "pixelcnn_fast.sampler",
    "convert": "pixelcnn_fast.conversion",
}
# Submodules this package used to import eagerly (so `pixelcnn_fast.layers` worked after a bare import).
_TF_SUBMODULES = ("layers", "sampler", "conversion", "models")
_PLAIN_SUBMODULES = ("masks",)

__all__ = ["__version__", "build_info", "MaskedConv2D", "Sampler", "check", "convert", "LoweringError",
           "NotCausalError"]


def _load_tf_parts(wanted):
    """Imports the TF-dependent modules (models registers ResidualBlock, layers MaskedConv2D, so saved
    keras.io-style models load) and binds the TF names here; a clear ImportError without TensorFlow."""
    try:
        import tensorflow  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"pixelcnn_fast.{wanted} needs TensorFlow {_TF_REQUIREMENT} (pip install "
            f"'tensorflow=={_TF_REQUIREMENT}.*'), which could not be imported: {e}. Without TensorFlow, "
            "pixelcnn_fast.cuda (CuPy), pixelcnn_fast._core (NumPy), pixelcnn_fast._cuda and build_info() "
            "still work.") from e
    for module in _TF_SUBMODULES:
        _importlib.import_module(f"pixelcnn_fast.{module}")
    g = globals()
    for name, module in _TF_NAMES.items():
        g[name] = getattr(_importlib.import_module(module), name)


def __getattr__(name):
    if name in _TF_NAMES or name in _TF_SUBMODULES:
        _load_tf_parts(name)
        return globals()[name]
    if name in _PLAIN_SUBMODULES:
        return _importlib.import_module(f"pixelcnn_fast.{name}")
    raise AttributeError(f"module 'pixelcnn_fast' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_TF_NAMES) | set(_TF_SUBMODULES) | set(_PLAIN_SUBMODULES))


if _sys.modules.get("tensorflow") is not None:
    # TensorFlow is loaded already: registering the layers now costs little and behaves exactly as before.
    _load_tf_parts("MaskedConv2D")
