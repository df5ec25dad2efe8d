"""Python front end: the CUDA backend (pixelcnn_fast._cuda) on CuPy arrays, with clear errors when it cannot run.

The masked-conv functions mirror pixelcnn_fast._core's (NumPy) ones: same arguments, same checks and messages,
plus `stream` (an int cudaStream_t; by default CuPy's current stream on the arrays' device). `ColumnProgram` is
the cached sampler on the GPU (one kernel per sample call); `Sampler(model, backend="cuda")` uses it. All return
CuPy arrays (or `out`) without waiting for the GPU. CuPy is imported only when the backend is used; nothing here
needs TensorFlow.
"""

from pixelcnn_fast._ext import build_info

__all__ = ["unavailable_reason", "masked_conv2d_forward", "masked_conv2d_backprop_input",
           "masked_conv2d_backprop_filter", "ColumnProgram"]


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


class ColumnProgram:
    """A column program (the text spec and arrays of pixelcnn_fast.sampler.program_spec) on the current GPU.

    The tables (kernels over live taps, constants) are uploaded once; each `sample` call is one kernel launch
    in which every block draws whole images position by position (csrc/cuda/column_program.cu). For a seed
    it draws the same images as the CPU executor up to draws within float rounding of a CDF boundary
    (`margins` says how close each draw was).

    Args:
      spec: the program's text (csrc/core/program_spec.h).
      arrays: the float32 NumPy arrays the spec lists.
      n: the batch the program's per-image constants (e.g. condition embeddings) were evaluated for; 0 when
        it has none.
    """

    def __init__(self, spec, arrays, n=0):
        self._program = _backend().ColumnProgram.from_spec(spec, list(arrays), int(n))

    @property
    def image_shape(self):
        return self._program.image_shape

    @property
    def head_channels(self):
        return self._program.head_channels

    def macs_per_position(self):
        return self._program.macs_per_position()

    def executed_macs_per_position(self):
        return self._program.executed_macs_per_position()

    def auto_launch(self, n):
        """(images_per_block, threads) chosen for n images when sample() is not told."""
        return self._program.auto_launch(int(n))

    def sample(self, n, seed, temperature=1.0, image_offset=0, levels=None, margins=None, stream=None,
               images_per_block=0, threads=0, known=None):
        """(levels int32, margins float32) CuPy arrays (n, H, W, C), returned without waiting for the GPU.
        known (image completion): int32 CuPy (n, H, W, C), a level >= 0 written instead of drawn, -1 drawn."""
        # n, seed, temperature, image_offset go through unconverted: the binding checks them (checks.h), so
        # 1.5 images or a negative seed are errors, not silently truncated or wrapped.
        return self._program.sample(n, seed, temperature, image_offset, levels, margins, stream,
                                    int(images_per_block), int(threads), known)

    def teacher_forced(self, image, out=None, stream=None, images_per_block=0, threads=0):
        """Head values (n, H, W, head channels) at every position with `image` (CuPy float32 (n, H, W, C))
        fed in through the cached path: equals one full forward pass of the model."""
        return self._program.teacher_forced(image, out, stream, int(images_per_block), int(threads))
