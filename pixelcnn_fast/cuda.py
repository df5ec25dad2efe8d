"""Python front end: the CUDA backend (pixelcnn_fast._cuda) on CuPy arrays, with clear errors when it cannot run.

The functions mirror pixelcnn_fast._core's (NumPy) masked conv: same arguments, same checks and messages,
plus `stream` (an int cudaStream_t; by default CuPy's current stream on the arrays' device). They return
CuPy arrays (or `out`) without waiting for the GPU. CuPy is imported only when the backend is used.
"""

from pixelcnn_fast._ext import build_info

__all__ = ["unavailable_reason", "masked_conv2d_forward", "masked_conv2d_backprop_input",
           "masked_conv2d_backprop_filter"]


def _load():
    """The compiled module, or the exception saying why the GPU backend cannot run here."""
    status = build_info().get("cuda", "unknown")
    if status != "built":
        return ImportError(f"pixelcnn_fast was built without CUDA ({status}); reinstall it on a machine with the "
                           "CUDA toolkit (nvcc) to get the GPU backend")
    try:
        from pixelcnn_fast import _cuda
    except ImportError as e:
        return ImportError(f"pixelcnn_fast._cuda (the CUDA kernels) could not be loaded: {e}")
    try:
        import cupy  # noqa: F401  (the backend's arrays are CuPy's)
    except ImportError as e:
        return ImportError("the CUDA backend works on CuPy arrays, but CuPy is not installed "
                           f"({e}); install the cupy package that matches your CUDA driver, e.g. cupy-cuda12x")
    problem = _cuda.device_problem()
    if problem:
        return RuntimeError(f"the CUDA backend cannot run: {problem}")
    return _cuda


def unavailable_reason():
    """None when the GPU backend can run here, else a sentence saying why not."""
    loaded = _load()
    return str(loaded) if isinstance(loaded, Exception) else None


def _backend():
    loaded = _load()
    if isinstance(loaded, Exception):
        raise loaded
    return loaded


def masked_conv2d_forward(x, kernel, mask_type, color_groups=1, dilation=1, padding="same", out=None, stream=None):
    """y = masked conv of x (N,H,W,Cin) with kernel (kh,kw,Cin,Cout), float32 CuPy arrays, live taps only.

    mask_type 'A', 'B', or None: the live taps and channel ranges are read from the kernel's non-zeros.
    """
    return _backend().masked_conv2d_forward(x, kernel, mask_type, color_groups, dilation, padding, out, stream)


def masked_conv2d_backprop_input(dy, kernel, input_hw, mask_type, color_groups=1, dilation=1, padding="same",
                                 out=None, stream=None):
    """Gradient of the masked conv w.r.t. its input (N, *input_hw, Cin)."""
    return _backend().masked_conv2d_backprop_input(dy, kernel, input_hw, mask_type, color_groups, dilation, padding,
                                                   out, stream)


def masked_conv2d_backprop_filter(x, dy, kernel_hw, mask_type, color_groups=1, dilation=1, padding="same",
                                  out=None, stream=None):
    """Gradient w.r.t. the kernel (kh, kw, Cin, Cout); dead entries exactly 0; deterministic."""
    return _backend().masked_conv2d_backprop_filter(x, dy, kernel_hw, mask_type, color_groups, dilation, padding,
                                                    out, stream)
