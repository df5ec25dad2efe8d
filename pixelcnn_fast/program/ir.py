"""Python front end (program IR): the lowered program's records -- steps over named buffers, the program,
the step vocabulary shared with the spec format -- and the errors the lowering raises.

Importable without TensorFlow (the spec reader and the causality analysis use it on machines that have only
NumPy); the methods of Program that run the traced model import TensorFlow when called.
"""

import dataclasses

import numpy as np

__all__ = ["LoweringError", "NotCausalError", "Step", "Program", "STEP_KINDS", "BINARY_FNS", "ACT_FNS",
           "REDUCE_FNS", "HEAD_KINDS", "MIXTURE_HEAD_KIND", "SPEC_HEAD_KINDS", "SHIFT_KINDS", "conv_taps",
           "step_conv_taps", "conv_kernel_4d", "GRID_KINDS", "image_grid", "is_grid_step", "image_tap_offsets"]

# The vocabulary of a program step, as csrc/core/program_spec.cc reads it (the spec writer emits only these
# names; the spec reader refuses any other).
STEP_KINDS = ("conv", "binary", "act", "concat", "gather", "softmax", "reduce", "shift")
BINARY_FNS = ("add", "sub", "mul", "div", "max", "min")
ACT_FNS = ("relu", "relu6", "elu", "selu", "tanh", "sigmoid", "softplus", "softsign", "leaky_relu", "neg", "exp",
           "square", "abs", "erf")
REDUCE_FNS = ("sum", "mean", "max", "min")
# Steps of shifted models (program/lower_shift_ops.py): shift (out[i, j] = in[i + dy, j + dx], zero outside the
# image). A conv with offset taps is a conv with attrs padding="OFFSET", oy, ox (its top-left tap's offset).
SHIFT_KINDS = ("shift",)
# Steps of multi-resolution models (program/lower_grid_ops.py; docs/SEMANTICS.md, "Grids"): conv_transpose (a
# transposed conv from a coarse grid to a finer one). A strided conv is a conv with attrs sy, sx > 1. The spec writes
# a conv_transpose as a conv line with transpose=1 (and the buffers' grids in its `grids` statement).
GRID_KINDS = ("conv_transpose",)
HEAD_KINDS = ("bernoulli", "logits", "probs")  # one draw per image channel from that channel's values
# A head that draws every channel of a pixel from the pixel's whole prediction (docs/SEMANTICS.md, "Logistic-mixture
# heads"); its spec line adds components=K. The spec's head kinds are both.
MIXTURE_HEAD_KIND = "logistic_mixture"
SPEC_HEAD_KINDS = HEAD_KINDS + (MIXTURE_HEAD_KIND,)


class LoweringError(ValueError):
    """The model contains an op the lowering does not support (the message names op, layer, class)."""


class NotCausalError(ValueError):
    """The model's prediction at a position depends on that position or later positions."""


@dataclasses.dataclass
class Step:
    """One program step: out = kind(ins, consts; attrs). Every buffer is (batch, H, W, channels)."""
    kind: str             # one of STEP_KINDS
    out: int              # buffer written
    ins: list             # buffers read
    consts: list          # constant slots read
    attrs: dict
    op_name: str          # the TF op it came from, for messages
    op_type: str
    layer: str            # the Keras layer that created the op (from its name scope)
    layer_class: str


@dataclasses.dataclass
class Program:
    image_shape: tuple            # (H, W, C) of the image input; (H, W, 1) for a code input
    buffer_channels: list         # channels of each buffer; buffer 0 is the image
    steps: list
    const_shapes: list            # static shapes of the constant slots (batch dims as traced)
    output_buffer: int            # buffer of the model's output, before any reshape
    output_levels: int            # trailing group size of the output (1 if the output is rank 4)
    final_activation: str         # "sigmoid", "softmax", or "" when the output is raw values
    logits_buffer: int            # input of the final sigmoid/softmax, else output_buffer
    trace: object = None          # the traced tf.function: (image, *conditions) -> consts
    cond_specs: tuple = ()
    input_dtype: str = "float32"  # the image input's dtype: an integer dtype means codes (levels as they are)
    input_rank: int = 4           # 3 for a (batch, H, W) code input
    # Each buffer's grid (fy, fx, ny, nx): position (I, J) of an ny x nx grid s coarser by (fy, fx) than the image
    # sits at image position (fy I, fx J) (its anchor). None: every buffer on the image grid (1, 1, H, W).
    buffer_grids: list = None

    def grid(self, buffer):
        """The grid (fy, fx, ny, nx) of a buffer (docs/SEMANTICS.md, "Grids")."""
        if self.buffer_grids is None:
            return image_grid(self.image_shape)
        return tuple(self.buffer_grids[buffer])

    @property
    def grid_steps(self):
        """The steps that make a buffer on another grid than their input's (strided and transposed convs)."""
        return [s for s in self.steps if is_grid_step(s)]

    @property
    def image_spec(self):
        """The traced function's image argument: (None, H, W, C) float32, or the code input's own spec."""
        import tensorflow as tf

        h, w, c = self.image_shape
        return tf.TensorSpec((None, h, w) if self.input_rank == 3 else (None, h, w, c), self.input_dtype)

    @property
    def codes(self):
        """True for an integer image input: the model takes levels (codes), not values."""
        import tensorflow as tf

        return tf.as_dtype(self.input_dtype).is_integer

    def model_image(self, image):
        """The model's image input for buffer-0 values (n, H, W, C) float32: itself, or the codes."""
        image = np.asarray(image)
        if not self.codes:
            return image.astype(np.float32, copy=False)
        codes = np.rint(image).astype(self.input_dtype)
        return codes[..., 0] if self.input_rank == 3 else codes

    def evaluate_consts(self, n, conditions=()):
        """Runs the traced model once (zeros image) and returns the constant slots as numpy arrays."""
        import tensorflow as tf

        h, w, c = self.image_shape
        shape = (n, h, w) if self.input_rank == 3 else (n, h, w, c)
        consts = self.trace(tf.zeros(shape, self.input_dtype), *conditions)
        return [np.asarray(v) for v in consts]


def image_grid(image_shape):
    """The image's own grid: factor 1, H x W positions."""
    return (1, 1, int(image_shape[0]), int(image_shape[1]))


def is_grid_step(step):
    """A strided conv (output on a coarser grid) or a transposed conv (output on a finer grid)."""
    return step.kind in GRID_KINDS or (step.kind == "conv" and (step.attrs.get("sy", 1), step.attrs.get("sx", 1))
                                       != (1, 1))


def conv_taps(kernel, dh, dw, padding):
    """(ky, kx, offset_y, offset_x) of a conv, TF's 'same' placement (offsets relative to the output)."""
    kh, kw = kernel.shape[:2]
    if padding == "SAME":
        pt, pl = ((kh - 1) * dh) // 2, ((kw - 1) * dw) // 2
    else:
        pt = pl = 0
    return [(ky, kx, ky * dh - pt, kx * dw - pl) for ky in range(kh) for kx in range(kw)]


def step_conv_taps(step, kernel):
    """conv_taps of a conv step: SAME / VALID placement, or the offset taps of a pad + VALID conv."""
    a = step.attrs
    if step.kind == "conv_transpose":  # fine (i, j) reads coarse ((i + oy - ky) / sy, (j + ox - kx) / sx)
        kh, kw = np.shape(kernel)[:2]
        return [(ky, kx, a["oy"] - ky, a["ox"] - kx) for ky in range(kh) for kx in range(kw)]
    if a["padding"] == "OFFSET":
        kh, kw = np.shape(kernel)[:2]
        return [(ky, kx, a["oy"] + ky * a["dh"], a["ox"] + kx * a["dw"]) for ky in range(kh) for kx in range(kw)]
    return conv_taps(kernel, a["dh"], a["dw"], a["padding"])


def image_tap_offsets(program, step, kernel):
    """(ky, kx, dy, dx) of a conv or transposed conv step: the image-coordinate offset, from the anchor of the
    output position, of the anchor of the input position that tap (ky, kx) reads (docs/SEMANTICS.md, "Grids").
    A conv on a grid of factor f reads input (s I + o) at image offset f o from its anchor f s I; a transposed conv
    to a grid of factor f reads coarse ((i + o - k) / s) at offset f (o - k), for the output phases (i mod s)
    at which that divides: each tap is live at some phase, so the list is every phase's taps together."""
    f = program.grid(step.out if step.kind == "conv_transpose" else step.ins[0])
    return [(ky, kx, f[0] * oy, f[1] * ox) for ky, kx, oy, ox in step_conv_taps(step, kernel)]


def conv_kernel_4d(step, kernel):
    """A conv step's kernel as (kh, kw, cin, cout); a MatMul (Dense) weight becomes a 1x1 kernel, a transposed
    conv's (kh, kw, cout, cin) its (kh, kw, cin, cout)."""
    kernel = np.asarray(kernel)
    if step.kind == "conv_transpose":
        return kernel.transpose(0, 1, 3, 2)
    if step.attrs.get("matmul"):
        kernel = kernel.T if step.attrs.get("transpose_b") else kernel
        kernel = kernel[None, None]
    return kernel
