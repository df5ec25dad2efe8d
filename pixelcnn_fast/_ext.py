"""Python front end: loads the compiled parts (pybind11 core module, TF op library) with clear errors."""

import os

from pixelcnn_fast._version import TF_REQUIREMENT

_HERE = os.path.dirname(os.path.abspath(__file__))


def build_info():
    """What was compiled: backends, instruction sets, CUDA architectures, the TF built against."""
    try:
        from pixelcnn_fast import _build_info
    except ImportError as e:  # pragma: no cover - only a broken checkout gets here
        raise ImportError(
            "pixelcnn_fast is not built: install it with `pip install .` (see README.md)") from e
    return dict(_build_info.BUILD_INFO)


def core():
    """The pybind11 module of csrc/core (NumPy arrays)."""
    try:
        from pixelcnn_fast import _core
    except ImportError as e:
        raise ImportError(
            f"pixelcnn_fast._core (the compiled C++ core) could not be loaded: {e}. "
            "Install the package with `pip install .` (see README.md).") from e
    return _core


_TF_OPS = None


def tf_ops():
    """The TF custom-op library, loaded once; refuses a TensorFlow other than the one built against."""
    global _TF_OPS
    if _TF_OPS is not None:
        return _TF_OPS
    status = build_info().get("tf_ops", "built")  # builds before the field existed always had the ops
    if status != "built":
        raise ImportError(
            f"pixelcnn_fast was built without its TensorFlow ops ({status}): the TF layer, ops and TF sampler "
            f"need them. Install TensorFlow {TF_REQUIREMENT}.x and reinstall pixelcnn_fast (pip install .), "
            "without PIXELCNN_FAST_TF=0.")
    import tensorflow as tf

    built = build_info().get("tensorflow") or "unknown"
    running = tf.__version__
    if ".".join(running.split(".")[:2]) != TF_REQUIREMENT or \
            ".".join(built.split(".")[:2]) != ".".join(running.split(".")[:2]):
        raise ImportError(
            f"pixelcnn_fast's TF ops were built against TensorFlow {built} and need "
            f"TensorFlow {TF_REQUIREMENT}.x, but TensorFlow {running} is installed. Install "
            f"tensorflow=={TF_REQUIREMENT}.* and reinstall pixelcnn_fast (pip install .).")
    path = os.path.join(_HERE, "_tf_ops.so")
    if not os.path.exists(path):
        raise ImportError(f"pixelcnn_fast's TF op library is missing ({path}): reinstall with "
                          "`pip install .` (see README.md).")
    try:
        _TF_OPS = tf.load_op_library(path)
    except tf.errors.NotFoundError as e:
        # An undefined symbol here almost always means a TF/ABI mismatch.
        raise ImportError(
            f"loading {path} failed ({e}); it was built against TensorFlow {built}, "
            f"TensorFlow {running} is running. Reinstall pixelcnn_fast.") from e
    return _TF_OPS
