"""Python front end: lowering a Keras model's traced TF graph into a column program, and its causality.

DESIGN.md, "Lowering from the traced graph" and "Causality is computed, not assumed". The model is
traced once with `tf.function`; while the trace is open we walk the graph's ops (not the Keras layer
list, so subclassed layers and models are as visible as functional ones) and turn every op that
depends on the image's values into a step of a small program over named buffers (batch, H, W, C).
Tensors that do not depend on the image (effective kernels after any masking mechanism, biases, a
class-label embedding) become constant slots that the same traced function returns, so one call of it
evaluates them exactly as the model computes them: once per sampling call.
"""

import dataclasses
import re

import numpy as np
import tensorflow as tf

__all__ = ["LoweringError", "NotCausalError", "Step", "Program", "CheckReport", "check", "lower",
           "analyse_causality",
           "run_program", "encode_frontier", "decode_frontier", "NO_DEPENDENCY"]


class LoweringError(ValueError):
    """The model contains an op the lowering does not support (the message names op, layer, class)."""


class NotCausalError(ValueError):
    """The model's prediction at a position depends on that position or later positions."""


# Elementwise activations: TF op type -> program name.
ACTIVATIONS = {
    "Relu": "relu", "Relu6": "relu6", "Elu": "elu", "Selu": "selu", "Tanh": "tanh",
    "Sigmoid": "sigmoid", "Softplus": "softplus", "Softsign": "softsign", "LeakyRelu": "leaky_relu",
    "Neg": "neg", "Exp": "exp", "Square": "square", "Abs": "abs", "Erf": "erf",
}
# Binary elementwise ops: TF op type -> program name.
BINARY = {"AddV2": "add", "Add": "add", "Sub": "sub", "Mul": "mul", "RealDiv": "div",
          "Maximum": "max", "Minimum": "min"}
# Ops that pass their first input through unchanged (for a float32 model).
PASS_THROUGH = {"Identity", "StopGradient", "PreventGradient", "Snapshot", "EnsureShape"}
# Ops whose output depends on a tensor's shape, never on its values (ones_like / zeros_like: a constant
# channel concatenated to the image, PixelCNN++'s zero rows of a shift).
SHAPE_ONLY = {"Shape", "ShapeN", "Size", "Rank", "OnesLike", "ZerosLike"}
# Integer code inputs (a VQ-VAE prior's indices): ops on the codes themselves, before they become vectors.
CODE_OPS = {"OneHot", "GatherV2", "ResourceGather", "Less", "LessEqual", "Greater", "GreaterEqual", "SelectV2",
            "Select"}
# Channel selections, lowered by probing which input channel each output channel takes.
CHANNEL_SELECT = {"StridedSlice", "Slice", "Split", "SplitV", "GatherV2"}
# Reductions over the channel axis (keepdims): TF op type -> program name.
REDUCE = {"Sum": "sum", "Mean": "mean", "Max": "max", "Min": "min"}

# What to change, for the constructs the cached sampler does not take yet.
SHIFT_HINT = ("make the layers causal with masked kernels and padding='same' instead (MaskedConv2D, or "
              "multiplying the kernel by a mask), or sample this model with pixelcnn_fast.naive")
SUPPORTED = sorted({"Conv2D", "PixelcnnFastMaskedConv2D", "SpaceToBatchND", "BatchToSpaceND", "MatMul", "BiasAdd", "ConcatV2", "Softmax", "LogSoftmax", "Reshape",
                    "Transpose", "Cast"} | set(ACTIVATIONS) | set(BINARY) | set(REDUCE) | PASS_THROUGH
                   | CHANNEL_SELECT | CODE_OPS)


@dataclasses.dataclass
class Step:
    """One program step: out = kind(ins, consts; attrs). Every buffer is (batch, H, W, channels)."""
    kind: str             # conv | binary | act | concat | gather | softmax | reduce
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

    @property
    def image_spec(self):
        """The traced function's image argument: (None, H, W, C) float32, or the code input's own spec."""
        h, w, c = self.image_shape
        return tf.TensorSpec((None, h, w) if self.input_rank == 3 else (None, h, w, c), self.input_dtype)

    @property
    def codes(self):
        """True for an integer image input: the model takes levels (codes), not values."""
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
        h, w, c = self.image_shape
        shape = (n, h, w) if self.input_rank == 3 else (n, h, w, c)
        consts = self.trace(tf.zeros(shape, self.input_dtype), *conditions)
        return [np.asarray(v) for v in consts]


# ----------------------------------------------------------------------------------- frontiers
# A frontier is the latest image element (dy, dx, image channel) a buffer channel depends on,
# relative to its own position, in raster order. Encoded as one int64 so that integer order is
# raster order and a tap offset is an addition.
_OFF = 1 << 15
NO_DEPENDENCY = np.int64(-(1 << 62))


def encode_frontier(dy, dx, c):
    return np.int64(((dy + _OFF) << 32) | ((dx + _OFF) << 16) | c)


def decode_frontier(key):
    key = int(key)
    return (key >> 32) - _OFF, ((key >> 16) & 0xFFFF) - _OFF, key & 0xFFFF


def _shift(keys, oy, ox):
    out = keys + np.int64((oy << 32) + (ox << 16))
    return np.where(keys == NO_DEPENDENCY, NO_DEPENDENCY, out)


def conv_taps(kernel, dh, dw, padding):
    """(ky, kx, offset_y, offset_x) of a conv, TF's 'same' placement (offsets relative to the output)."""
    kh, kw = kernel.shape[:2]
    if padding == "SAME":
        pt, pl = ((kh - 1) * dh) // 2, ((kw - 1) * dw) // 2
    else:
        pt = pl = 0
    return [(ky, kx, ky * dh - pt, kx * dw - pl) for ky in range(kh) for kx in range(kw)]


def conv_kernel_4d(step, kernel):
    """A conv step's kernel as (kh, kw, cin, cout); a MatMul (Dense) weight becomes a 1x1 kernel."""
    kernel = np.asarray(kernel)
    if step.attrs.get("matmul"):
        kernel = kernel.T if step.attrs.get("transpose_b") else kernel
        kernel = kernel[None, None]
    return kernel


def frontiers(program, consts):
    """Frontier keys (per channel) of every buffer."""
    keys = [None] * len(program.buffer_channels)
    c_img = program.image_shape[2]
    keys[0] = np.array([encode_frontier(0, 0, c) for c in range(c_img)], np.int64)
    for step in program.steps:
        ins = [keys[b] for b in step.ins]
        if step.kind == "conv":
            kernel = conv_kernel_4d(step, consts[step.consts[0]])
            out = np.full(kernel.shape[3], NO_DEPENDENCY, np.int64)
            for ky, kx, oy, ox in conv_taps(kernel, step.attrs["dh"], step.attrs["dw"],
                                           step.attrs["padding"]):
                live = kernel[ky, kx] != 0  # (cin, cout): the kernel's zeros are the mask
                if not live.any():
                    continue
                cand = np.where(live, ins[0][:, None], NO_DEPENDENCY).max(axis=0)
                out = np.maximum(out, _shift(cand, oy, ox))
        elif step.kind in ("binary", "act"):
            out = ins[0].copy()
            for other in ins[1:]:
                out = np.maximum(out, other)  # broadcasts a one-channel operand
            if step.kind == "binary" and len(ins) == 1:
                out = np.broadcast_to(out, (program.buffer_channels[step.out],)).copy()
        elif step.kind == "concat":
            parts = []
            for kind, i in step.attrs["order"]:
                if kind == "buf":
                    parts.append(ins[i])
                else:
                    parts.append(np.full(consts[step.consts[i]].shape[-1], NO_DEPENDENCY, np.int64))
            out = np.concatenate(parts)
        elif step.kind == "reduce":
            out = ins[0].max(keepdims=True)
        elif step.kind == "gather":
            out = ins[0][np.asarray(step.attrs["channels"])]
        elif step.kind == "softmax":
            g = step.attrs["group"]
            out = np.repeat(ins[0].reshape(-1, g).max(axis=1), g)
        else:  # pragma: no cover - every kind is handled above
            raise AssertionError(step.kind)
        keys[step.out] = out
    return keys


def analyse_causality(program, consts):
    """Raises NotCausalError naming the first layer that breaks causality; returns the frontiers."""
    keys = frontiers(program, consts)
    future = encode_frontier(0, 1, 0)  # anything at or after the next position
    for step in program.steps:
        k = keys[step.out]
        if (k >= future).any():
            dy, dx, c = decode_frontier(k.max())
            raise NotCausalError(
                f"layer '{step.layer}' ({step.layer_class}) reads the pixel at offset "
                f"({dy:+d}, {dx:+d}): the model sees the future (op '{step.op_name}', {step.op_type})")
    # Each head channel for image channel c may depend on image channels < c at its own position.
    c_img = program.image_shape[2]
    head = keys[program.logits_buffer]
    levels = program.output_levels if program.output_levels > 1 else \
        max(1, program.buffer_channels[program.logits_buffer] // c_img)
    bad = [k for k, key in enumerate(head) if key >= encode_frontier(0, 0, k // levels)]
    if not bad:
        return keys
    # Blame: DESIGN.md's channel convention (contiguous blocks, one per image channel): block j of
    # any buffer may depend on image channels < j at its own pixel. The first step, among those that
    # feed the head, whose output breaks that is the layer that lets the prediction see its pixel.
    ancestors = _ancestors(program, program.logits_buffer)
    for step in program.steps:
        channels = program.buffer_channels[step.out]
        if step.out not in ancestors or channels % c_img:
            continue
        block = np.arange(channels) // (channels // c_img)
        limit = np.array([encode_frontier(0, 0, j) for j in block])
        over = np.nonzero(keys[step.out] >= limit)[0]
        if over.size:
            _, _, ch = decode_frontier(keys[step.out][over[0]])
            raise NotCausalError(
                f"layer '{step.layer}' ({step.layer_class}) reads the pixel at offset (+0, +0), image "
                f"channel {ch}, into channels that predict image channel {block[over[0]]}: the model "
                f"sees the pixel it predicts (op '{step.op_name}', {step.op_type})")
    c = bad[0] // levels  # pragma: no cover - the head itself breaks the convention above
    raise NotCausalError(f"the output for image channel {c} depends on that channel at its own pixel")


def _ancestors(program, buffer):
    producers = {s.out: s for s in program.steps}
    seen, todo = set(), [buffer]
    while todo:
        b = todo.pop()
        if b in seen:
            continue
        seen.add(b)
        if b in producers:
            todo.extend(producers[b].ins)
    return seen


# ----------------------------------------------------------------------------------- layers
def _children(layer):
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except AttributeError:  # pragma: no cover - not a Keras layer
        return []


def _layer_of(op_name, model):
    """The deepest Keras layer whose name scope encloses the op: (path of names, class name).

    Keras opens a layer's scope as its name, and TF uniquifies a reused scope with a '_N' suffix, so
    a scope component matches the child named like it without that suffix, else the child named
    exactly like it."""
    parts = op_name.split("/")[:-1]
    current, path = model, []
    for comp in parts[1:]:
        kids = {k.name: k for k in _children(current)}
        stripped = re.sub(r"_\d+$", "", comp)
        child = kids.get(stripped) or kids.get(comp)
        if child is None:
            continue
        current = child
        path.append(child.name)
    # A nested layer is named by its path (res_block/conv2d_1), so the user can find it.
    return ("/".join(path) or model.name), type(current).__name__


# ----------------------------------------------------------------------------------- lowering
class _Lowerer:
    def __init__(self, graph, image, conditions, output, model, image_shape):
        self.model = model
        self.h, self.w, self.c = image_shape
        self.buffer_channels = [self.c]
        self.steps = []
        self.const_tensors = []
        self.const_index = {}
        # tensor -> (view, buffer); an integer image input is ("codes", 0, offset): the level plus offset.
        self.values = {image.ref(): ("codes", 0, 0) if image.dtype.is_integer else ("nhwc", 0)}
        self.image_dep = self._image_dependent(graph, image)
        self.needed = self._ancestors(output)

    @staticmethod
    def _image_dependent(graph, image):
        dep = {image.ref()}
        for op in graph.get_operations():
            if op.type in SHAPE_ONLY:
                continue
            if any(t.ref() in dep for t in op.inputs):
                dep.update(t.ref() for t in op.outputs)
        return dep

    @staticmethod
    def _ancestors(output):
        seen, todo = set(), [output.op]
        while todo:
            op = todo.pop()
            if op.name in seen:
                continue
            seen.add(op.name)
            todo.extend(t.op for t in op.inputs)
        return seen

    def fail(self, op, why):
        layer, cls = _layer_of(op.name, self.model)
        raise LoweringError(
            f"cannot lower op '{op.name}' ({op.type}) of layer '{layer}' ({cls}): {why}. The lowering "
            f"supports {', '.join(SUPPORTED)}; image-independent subgraphs may use any op.")

    def const(self, t):
        if t.ref() not in self.const_index:
            self.const_index[t.ref()] = len(self.const_tensors)
            self.const_tensors.append(t)
        return self.const_index[t.ref()]

    def new_buffer(self, channels):
        self.buffer_channels.append(int(channels))
        return len(self.buffer_channels) - 1

    def add(self, op, kind, ins, consts, attrs, channels, view="nhwc", out_tensor=None, bind=True):
        """Appends a step writing a new buffer; binds the op's output (or out_tensor) to it unless bind=False
        (an intermediate step of a multi-step lowering, such as one_hot_steps)."""
        layer, cls = _layer_of(op.name, self.model)
        out = self.new_buffer(channels)
        self.steps.append(Step(kind, out, list(ins), list(consts), dict(attrs), op.name, op.type,
                               layer, cls))
        if bind:
            self.values[(out_tensor if out_tensor is not None else op.outputs[0]).ref()] = (view, out)
        return out

    def value(self, t):
        return self.values.get(t.ref())

    def is_dep(self, t):
        return t.ref() in self.image_dep

    def run(self, graph):
        for op in graph.get_operations():
            if op.name not in self.needed or not any(self.is_dep(t) for t in op.outputs):
                continue
            if op.type in SHAPE_ONLY or self.value(op.outputs[0]) is not None:
                continue  # the image placeholder itself is buffer 0
            self.lower(op)

    def lower(self, op):
        t = op.type
        ins = [self.value(x) if self.is_dep(x) else None for x in op.inputs]
        if any(v is not None and v[0] == "codes" for v in ins) or (
                op.outputs and op.outputs[0].dtype == tf.bool and t in CODE_OPS):
            self.lower_code_op(op, ins)
            return
        if any(v is not None and v[0] == "known" for v in ins):
            self.fail(op, "it uses a value that the lowering proved constant (a test on the codes) in a way "
                          "it does not support")
        if t in PASS_THROUGH or (t == "Cast" and op.outputs[0].dtype.is_floating):
            if ins[0] is None:
                self.fail(op, "its input does not depend on the image")
            self.values[op.outputs[0].ref()] = ins[0]
        elif t == "Transpose":
            perm = tf.get_static_value(op.inputs[1])
            if perm is None or list(perm) != list(range(len(perm))):
                self.fail(op, f"only the identity permutation keeps pixels in place, got {perm}")
            self.values[op.outputs[0].ref()] = ins[0]
        elif t == "Reshape":
            self.lower_reshape(op, ins[0])
        elif t == "Conv2D":
            self.lower_conv(op, ins)
        elif t == "PixelcnnFastMaskedConv2D":
            self.lower_masked_conv(op, ins)
        elif t == "MatMul":
            self.lower_matmul(op, ins)
        elif t == "SpaceToBatchND":
            self.lower_space_to_batch(op, ins)
        elif t == "BatchToSpaceND":
            self.lower_batch_to_space(op, ins)
        elif t in REDUCE:
            self.lower_reduce(op, ins)
        elif t == "BiasAdd" or t in BINARY:
            self.lower_binary(op, ins)
        elif t in ACTIVATIONS:
            attrs = {"fn": ACTIVATIONS[t]}
            if t == "LeakyRelu":
                attrs["alpha"] = float(op.get_attr("alpha"))
            view, b = ins[0]
            self.add(op, "act", [b], [], attrs, self.buffer_channels[b], view)
        elif t == "ConcatV2":
            self.lower_concat(op, ins)
        elif t in ("Softmax", "LogSoftmax"):
            view, b = ins[0]
            group = view[1] if isinstance(view, tuple) else self.buffer_channels[b]
            self.add(op, "softmax", [b], [], {"group": group, "log": t == "LogSoftmax"},
                     self.buffer_channels[b], view)
        elif t in CHANNEL_SELECT:
            self.lower_channel_select(op, ins)
        elif t in ("Pad", "PadV2", "MirrorPad"):
            self.fail(op, "padding an image-dependent tensor shifts its pixels (a down- or right-shift, a "
                          "'pad + VALID conv' as in PixelCNN++ or a gated PixelCNN's vertical stack), which the "
                          f"cached sampler does not take yet ({SHIFT_HINT})")
        else:
            self.fail(op, "this op type is not supported on image-dependent tensors")

    # -------------------------------------------------------------------- integer code inputs
    def lower_code_op(self, op, ins):
        """Ops on an integer code input (DESIGN.md, "Integer inputs"). The codes are levels in [0, levels):
        casts between integer types and Keras' negative-index fix-up (`where(codes < 0, codes + K, codes)`,
        decided here from codes >= 0) keep them as they are; OneHot and an Embedding's gather turn them into
        vectors (a per-position input step: see one_hot_steps)."""
        t = op.type
        codes = next(v for v in ins if v is not None and v[0] == "codes") if any(
            v is not None and v[0] == "codes" for v in ins) else None
        out = op.outputs[0]
        if t in PASS_THROUGH or (t == "Cast" and out.dtype.is_integer):
            self.values[out.ref()] = ins[0]
        elif t in ("AddV2", "Add", "Sub") and ins[0] is codes and ins[1] is None and op.inputs[1].shape.rank == 0:
            # codes + k: Keras' take() adds the table size to negative indices. k may not be known while
            # tracing (a table's size read at run time): then the sum may only be discarded by a selection.
            k = tf.get_static_value(op.inputs[1])
            offset = None if k is None or codes[2] is None else codes[2] + (int(k) if t != "Sub" else -int(k))
            self.values[out.ref()] = ("codes", codes[1], offset)
        elif t in ("Less", "LessEqual", "Greater", "GreaterEqual") and ins[0] is not None and ins[1] is None:
            bound = tf.get_static_value(op.inputs[1])
            if bound is None or np.ndim(bound) != 0:
                self.fail(op, "only a comparison of the codes with a constant number is supported")
            if codes[2] is None:
                self.fail(op, "it compares codes shifted by an amount unknown while tracing")
            lo, bound = codes[2], int(bound)  # the value is a level plus offset: >= offset, unbounded above
            result = {"Less": False if lo >= bound else None, "LessEqual": False if lo > bound else None,
                      "Greater": True if lo > bound else None, "GreaterEqual": True if lo >= bound else None}[t]
            if result is None:
                self.fail(op, f"the comparison of the codes ({op.type} {bound}) depends on the code's value")
            self.values[out.ref()] = ("known", result)
        elif t in ("SelectV2", "Select"):
            cond = ins[0]
            if cond is None or cond[0] != "known":
                self.fail(op, "only a selection whose condition is decided by the codes' range is supported")
            chosen = ins[1] if cond[1] else ins[2]
            if chosen is None:
                self.fail(op, "the selection picks a tensor that does not depend on the image")
            self.values[out.ref()] = chosen
        elif t == "OneHot" and ins[0] is codes:
            self._require_plain_codes(op, codes)
            if int(op.get_attr("axis")) not in (-1, op.inputs[0].shape.rank):
                self.fail(op, f"only a one-hot along a new last axis is supported, got axis {op.get_attr('axis')}")
            depth = tf.get_static_value(op.inputs[1])
            on, off = tf.get_static_value(op.inputs[2]), tf.get_static_value(op.inputs[3])
            if depth is None or on is None or off is None:
                self.fail(op, "its depth, on_value and off_value must be constants")
            self._check_code_rank(op)
            self.one_hot_steps(op, codes[1], int(depth), float(on), float(off), out)
        elif t in ("GatherV2", "ResourceGather") and ins[-1 if t == "ResourceGather" else 1] is codes:
            self._require_plain_codes(op, codes)
            if t == "GatherV2":
                axis = tf.get_static_value(op.inputs[2])
                if axis is None or int(axis) != 0 or op.get_attr("batch_dims") != 0 or ins[0] is not None:
                    self.fail(op, "only a lookup of the codes in an image-independent table (an Embedding) "
                                  "is supported")
                table = op.inputs[0]
            else:
                if op.get_attr("batch_dims") != 0:
                    self.fail(op, "only a lookup of the codes in an image-independent table (an Embedding) "
                                  "is supported")
                with tf.name_scope(op.name + "_table"):
                    table = tf.raw_ops.ReadVariableOp(resource=op.inputs[0], dtype=op.get_attr("dtype"))
            if table.shape.rank != 2 or table.shape[0] is None:
                self.fail(op, f"the table must be (codes, features), got {table.shape}")
            self._check_code_rank(op)
            onehot = self.one_hot_steps(op, codes[1], int(table.shape[0]), 1.0, 0.0, None)
            with tf.name_scope(op.name + "_as_conv"):
                kernel = tf.reshape(tf.cast(table, tf.float32), (1, 1, int(table.shape[0]), int(table.shape[1])))
            self.add(op, "conv", [onehot], [self.const(kernel)], {"dh": 1, "dw": 1, "padding": "SAME"},
                     int(table.shape[1]))
        else:
            self.fail(op, "integer code inputs may only be cast, one-hot encoded (OneHot) or looked up in a "
                          "table (Embedding, GatherV2 / ResourceGather)")

    def _require_plain_codes(self, op, codes):
        if codes[2] != 0:
            self.fail(op, "it reads the codes shifted by " + ("an amount unknown while tracing" if codes[2] is None
                                                            else f"{codes[2]:+d}"))

    def _check_code_rank(self, op):
        rank = op.outputs[0].shape.rank
        if rank != 4:
            self.fail(op, f"the codes must be (batch, H, W) before it (a (batch, H, W, features) result), "
                          f"got a rank-{rank} result")

    def one_hot_steps(self, op, codes_buffer, depth, on, off, out_tensor):
        """one_hot(level)[k] = relu(1 - |level - k|), exact in float32 for integer levels: five per-position
        elementwise steps over `depth` channels from the code buffer (no new step kind in the executor);
        then off + (on - off) * that. Returns the buffer; out_tensor (if given) is bound to it."""
        with tf.name_scope(op.name + "_one_hot"):
            ones = tf.ones((1, 1, 1, depth), tf.float32)
            minus_k = tf.constant(-np.arange(depth, dtype=np.float32))
            one = tf.constant(1.0, tf.float32)
            scale = tf.constant(np.float32(on - off))
            offset = tf.constant(np.float32(off))
        b = self.add(op, "conv", [codes_buffer], [self.const(ones)], {"dh": 1, "dw": 1, "padding": "SAME"},
                     depth, bind=False)
        b = self.add(op, "binary", [b], [self.const(minus_k)], {"fn": "add", "const_first": False}, depth, bind=False)
        b = self.add(op, "act", [b], [], {"fn": "abs"}, depth, bind=False)
        b = self.add(op, "binary", [b], [self.const(one)], {"fn": "sub", "const_first": True}, depth, bind=False)
        b = self.add(op, "act", [b], [], {"fn": "relu"}, depth, bind=False)
        if (on, off) != (1.0, 0.0):
            b = self.add(op, "binary", [b], [self.const(scale)], {"fn": "mul", "const_first": False}, depth,
                         bind=False)
            b = self.add(op, "binary", [b], [self.const(offset)], {"fn": "add", "const_first": False}, depth,
                         bind=False)
        if out_tensor is not None:
            self.values[out_tensor.ref()] = ("nhwc", b)
        return b

    def lower_reshape(self, op, src):
        if src is None:
            self.fail(op, "its input does not depend on the image")
        view, b = src
        shape = op.outputs[0].shape
        ch = self.buffer_channels[b]
        if shape.rank == 2 and shape[-1] in (ch, None) and view in ("nhwc", "flat"):
            # pixels x channels (Dense on 4-D input via Tensordot, whose shape is computed at run
            # time, so the width may be unknown here: lower_matmul checks it against the weight).
            self.values[op.outputs[0].ref()] = ("flat", b)
        elif shape.rank == 4 and tuple(shape[1:]) == (self.h, self.w, ch):
            self.values[op.outputs[0].ref()] = ("nhwc", b)
        elif shape.rank == 5 and tuple(shape[1:3]) == (self.h, self.w) and shape[3] * shape[4] == ch:
            self.values[op.outputs[0].ref()] = ((int(shape[3]), int(shape[4])), b)  # output head
        else:
            self.fail(op, f"a reshape from {ch} channels per pixel to {shape} moves values between "
                          "pixels")

    def lower_space_to_batch(self, op, ins):
        """TF runs a dilated conv as SpaceToBatchND -> Conv2D (VALID) -> BatchToSpaceND; the three
        together are one dilated conv, recognised here and finished at BatchToSpaceND."""
        block = tf.get_static_value(op.inputs[1])
        if ins[0] is None or ins[0][0] != "nhwc" or block is None or len(block) != 2:
            self.fail(op, "only the space-to-batch of a dilated convolution is supported")
        self.values[op.outputs[0].ref()] = (("s2b", int(block[0]), int(block[1])), ins[0][1])

    def lower_batch_to_space(self, op, ins):
        view, b = ins[0] if ins[0] is not None else (None, None)
        if not (isinstance(view, tuple) and view[0] == "b2s"):
            self.fail(op, "only the batch-to-space of a dilated convolution is supported")
        step = self.steps[view[1]]
        shape = tuple(op.outputs[0].shape[1:3])
        kh, kw = self.const_tensors[step.consts[0]].shape[:2]
        if shape == (self.h, self.w):
            step.attrs["padding"] = "SAME"
        elif (kh, kw) == (1, 1):
            step.attrs["padding"] = "VALID"
        else:
            self.fail(op, f"a dilated {kh}x{kw} convolution that changes the image size to {shape}; "
                          "use padding='same'")
        self.values[op.outputs[0].ref()] = ("nhwc", b)

    def lower_conv(self, op, ins):
        if ins[0] is None or ins[1] is not None:
            self.fail(op, "the lowering needs an image-dependent input and an image-independent kernel")
        if isinstance(ins[0][0], tuple) and ins[0][0][0] == "s2b":
            _, dh, dw = ins[0][0]
            kshape = op.inputs[1].shape
            self.add(op, "conv", [ins[0][1]], [self.const(op.inputs[1])],
                     {"dh": dh, "dw": dw, "padding": "PENDING"}, kshape[3], ("b2s", len(self.steps)))
            return
        if list(op.get_attr("strides")) != [1, 1, 1, 1]:
            self.fail(op, f"strides must be 1, got {op.get_attr('strides')}")
        if op.get_attr("data_format") != b"NHWC":
            self.fail(op, f"data_format must be NHWC, got {op.get_attr('data_format').decode()}")
        padding = op.get_attr("padding").decode()
        kshape = op.inputs[1].shape
        dil = op.get_attr("dilations")
        if padding not in ("SAME", "VALID") or (padding == "VALID" and tuple(kshape[:2]) != (1, 1)):
            self.fail(op, f"padding {padding} with a {kshape[0]}x{kshape[1]} kernel changes the image "
                          "size; use padding='same'")
        self.add(op, "conv", [ins[0][1]], [self.const(op.inputs[1])],
                 {"dh": int(dil[1]), "dw": int(dil[2]), "padding": padding}, kshape[3])

    def lower_masked_conv(self, op, ins):
        """Our own op reads only the live taps of a dense kernel: its effective kernel is kernel*mask,
        made here as a new tensor of the trace (still open), so it is evaluated with the others."""
        from pixelcnn_fast.masks import make_mask

        if ins[0] is None or ins[1] is not None:
            self.fail(op, "the lowering needs an image-dependent input and an image-independent kernel")
        kernel = op.inputs[1]
        kh, kw, cin, cout = (int(d) for d in kernel.shape)
        mask = make_mask(kh, kw, cin, cout, op.get_attr("mask_type").decode(), op.get_attr("color_groups"))
        with tf.name_scope(op.name + "_effective_kernel"):
            effective = kernel * tf.constant(mask, kernel.dtype)
        dil = op.get_attr("dilations")
        padding = op.get_attr("padding").decode().upper()
        if padding == "VALID" and (kh, kw) != (1, 1):
            self.fail(op, f"padding VALID with a {kh}x{kw} kernel changes the image size; use 'same'")
        self.add(op, "conv", [ins[0][1]], [self.const(effective)],
                 {"dh": int(dil[0]), "dw": int(dil[1]), "padding": padding}, cout)

    def lower_matmul(self, op, ins):
        if ins[0] is None or ins[0][0] != "flat" or ins[1] is not None:
            self.fail(op, "only a pixels x channels matrix times an image-independent weight (a Dense "
                          "layer on 4-D input) is supported")
        if op.get_attr("transpose_a"):
            self.fail(op, "transpose_a mixes pixels")
        wshape = op.inputs[1].shape
        rows = wshape[1] if op.get_attr("transpose_b") else wshape[0]
        if rows != self.buffer_channels[ins[0][1]]:
            self.fail(op, f"the weight has {rows} rows for {self.buffer_channels[ins[0][1]]} channels "
                          "per pixel: the reshape before it moved values between pixels")
        kernel = self.const(op.inputs[1])
        cout = op.outputs[0].shape[-1]
        self.add(op, "conv", [ins[0][1]], [kernel],
                 {"dh": 1, "dw": 1, "padding": "SAME", "matmul": True,
                  "transpose_b": bool(op.get_attr("transpose_b"))}, cout, "flat")

    def lower_binary(self, op, ins):
        fn = "add" if op.type == "BiasAdd" else BINARY[op.type]
        a, b = ins[0], ins[1]
        out_ch = op.outputs[0].shape[-1]
        if a is not None and b is not None:
            ca, cb = self.buffer_channels[a[1]], self.buffer_channels[b[1]]
            if ca != cb and 1 not in (ca, cb):
                self.fail(op, f"both operands depend on the image but have {ca} and {cb} channels")
            self.add(op, "binary", [a[1], b[1]], [], {"fn": fn}, max(ca, cb), a[0])
            return
        dep, other = (a, op.inputs[1]) if a is not None else (b, op.inputs[0])
        cshape = other.shape
        if cshape.rank is None:
            self.fail(op, "the image-independent operand has an unknown rank")
        # The constant broadcasts against (batch, H, W, C): per image, per position or per channel.
        self.add(op, "binary", [dep[1]], [self.const(other)],
                 {"fn": fn, "const_first": a is None}, out_ch if out_ch is not None else
                 self.buffer_channels[dep[1]], dep[0])

    def lower_reduce(self, op, ins):
        axes = tf.get_static_value(op.inputs[1])
        rank = op.inputs[0].shape.rank
        axes = np.atleast_1d(axes) if axes is not None else None
        if ins[0] is None or ins[0][0] != "nhwc" or axes is None or \
                [int(a) % rank for a in axes] != [rank - 1] or not op.get_attr("keep_dims"):
            self.fail(op, f"only a reduction over the channel axis with keepdims is supported, got "
                          f"axes {axes}")
        self.add(op, "reduce", [ins[0][1]], [], {"fn": REDUCE[op.type]}, 1)

    def lower_concat(self, op, ins):
        axis = tf.get_static_value(op.inputs[-1])
        rank = op.outputs[0].shape.rank
        if axis is None or axis not in (-1, rank - 1):
            self.fail(op, f"only concatenation along channels is supported, got axis {axis}"
                          + (f": a concatenation along H or W shifts pixels (PixelCNN++'s down_shift / "
                             f"right_shift), which the cached sampler does not take yet ({SHIFT_HINT})"
                             if axis is not None and axis in (1, 2, rank - 3, rank - 2) else ""))
        # Image-independent parts (a label map) are constant slots broadcast per image and position.
        order, bufs, consts, channels = [], [], [], 0
        for t, p in zip(op.inputs[:-1], ins[:-1]):
            if p is not None:
                if p[0] != "nhwc":
                    self.fail(op, "concatenation of a reshaped tensor")
                order.append(("buf", len(bufs)))
                bufs.append(p[1])
                channels += self.buffer_channels[p[1]]
            else:
                if t.shape.rank != 4 or t.shape[-1] is None:
                    self.fail(op, f"an image-independent part must be (batch, H, W, C) with known C, "
                                  f"got {t.shape}")
                order.append(("const", len(consts)))
                consts.append(self.const(t))
                channels += int(t.shape[-1])
        self.add(op, "concat", bufs, consts, {"order": order}, channels, "nhwc")

    def lower_channel_select(self, op, ins):
        """Lowered by running the op on a probe whose every value is its channel index: each output
        channel must then be one input channel, the same at every pixel."""
        with tf.init_scope():  # the probe runs eagerly, outside the trace being lowered
            self._lower_channel_select(op, ins)

    def _lower_channel_select(self, op, ins):
        src_pos = 1 if op.type == "Split" else 0
        src = ins[src_pos]
        if src is None or any(x is not None for i, x in enumerate(ins) if i != src_pos):
            self.fail(op, "only selections of channels of an image-dependent tensor are supported")
        view, b = src
        if view != "nhwc":
            self.fail(op, "channel selection on a reshaped tensor")
        ch = self.buffer_channels[b]
        probe = np.broadcast_to(np.arange(ch, dtype=np.float32), (1, self.h, self.w, ch))
        args = []
        for i, x in enumerate(op.inputs):
            if i == src_pos:
                args.append(tf.constant(probe))
            else:
                v = tf.get_static_value(x)
                if v is None:
                    self.fail(op, "its begin/size/axis arguments are not constants")
                args.append(tf.constant(v, dtype=x.dtype))
        attrs = {a.name: op.get_attr(a.name) for a in op.op_def.attr}
        # Keep only attrs the eager op accepts (type attrs are inferred from the inputs).
        for type_attr in ("T", "Index", "Tindices", "Tparams", "Taxis", "Tlen", "Tidx"):
            attrs.pop(type_attr, None)
        fn = getattr(tf.raw_ops, op.type)
        # The op def's input names are the raw op's keywords, except Split's split_dim (raw_ops: axis).
        names = [{"split_dim": "axis"}.get(a.name, a.name) if op.type == "Split" else a.name
                 for a in op.op_def.input_arg]
        result = fn(**dict(zip(names, args)), **attrs)
        results = result if isinstance(result, (list, tuple)) else [result]
        for out_t, r in zip(op.outputs, results):
            r = np.asarray(r)
            if r.ndim != 4 or r.shape[:3] != (1, self.h, self.w) or \
                    not (r == r[:1, :1, :1, :]).all():
                self.fail(op, "it selects pixels, not only channels: a slice or crop along H or W shifts pixels "
                              "(PixelCNN++'s down_shift / right_shift, Cropping2D), which the cached sampler does "
                              f"not take yet ({SHIFT_HINT})")
            channels = [int(v) for v in r[0, 0, 0]]
            self.add(op, "gather", [b], [], {"channels": channels}, len(channels), "nhwc", out_t)


def lower(model, image_shape=None, condition_specs=None):
    """Lowers `model` into a Program (constants evaluated by program.evaluate_consts).

    image_shape: (H, W, C), inferred from the model's first input when it has one.
    condition_specs: tf.TensorSpec of further inputs (class labels ...), inferred likewise.
    """
    inputs = getattr(model, "inputs", None)
    if image_shape is None:
        if not inputs:
            raise ValueError(
                f"model '{model.name}' ({type(model).__name__}) has no declared inputs (a subclassed "
                "model): pass image_shape=(H, W, C)")
        shape = tuple(inputs[0].shape[1:])
        integer = tf.as_dtype(inputs[0].dtype).is_integer
        if integer and len(shape) == 2 and None not in shape:
            shape = shape + (1,)  # (batch, H, W) codes: one image channel
        if len(shape) != 3 or None in shape:
            raise ValueError(f"model '{model.name}': the image input must be (batch, H, W, C) with "
                             f"known H, W, C (or integer codes (batch, H, W)), got {tuple(inputs[0].shape)}")
        image_shape = shape
    image_shape = tuple(int(s) for s in image_shape)
    input_dtype, input_rank = "float32", 4
    if inputs and tf.as_dtype(inputs[0].dtype).is_integer:
        input_dtype, input_rank = tf.as_dtype(inputs[0].dtype).name, len(inputs[0].shape)
        if image_shape[2] != 1 and input_rank == 3:
            raise ValueError(f"model '{model.name}': a (batch, H, W) code input has one channel, got "
                             f"image_shape={image_shape}")
    if condition_specs is None:
        condition_specs = [tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype) for t in
                           (inputs[1:] if inputs else [])]
    condition_specs = tuple(condition_specs)
    found = {}

    def traced(image, *conditions):
        args = [image, *conditions] if conditions else image
        try:
            out = model(args, training=False)
        except TypeError:  # a model that overrides __call__ without a training argument
            out = model(args)
        if isinstance(out, (list, tuple)) or isinstance(out, dict):
            raise ValueError(f"model '{model.name}' returns several outputs; the sampler needs one")
        graph = tf.compat.v1.get_default_graph()
        lowerer = _Lowerer(graph, image, conditions, out, model, image_shape)
        lowerer.run(graph)
        found["lowerer"] = lowerer
        found["output"] = out
        # Only the constants are returned: TF prunes the image-dependent computation from the
        # function, so evaluating them costs no forward pass (stateful ops, such as a layer that
        # assigns kernel*mask to its variable, still run).
        return list(lowerer.const_tensors)

    fn = tf.function(traced, autograph=False)
    spec = tf.TensorSpec((None,) + (image_shape[:2] if input_rank == 3 else image_shape), input_dtype)
    fn.get_concrete_function(spec, *condition_specs)
    lw, out = found["lowerer"], found["output"]
    if lw.value(out) is None:
        raise LoweringError(f"the output of model '{model.name}' does not depend on the image")
    if lw.value(out)[0] in ("codes", "known"):
        raise LoweringError(f"the output of model '{model.name}' is its integer input, not predictions")
    view, out_buf = lw.value(out)
    levels = view[1] if isinstance(view, tuple) else 1
    producer = {s.out: s for s in lw.steps}.get(out_buf)
    final, logits = "", out_buf
    if producer is not None and producer.kind == "act" and producer.attrs["fn"] == "sigmoid":
        final, logits = "sigmoid", producer.ins[0]
    elif producer is not None and producer.kind == "softmax" and not producer.attrs["log"]:
        final, logits = "softmax", producer.ins[0]
    program = Program(image_shape, lw.buffer_channels, lw.steps,
                      [tuple(t.shape) for t in lw.const_tensors], out_buf, levels, final, logits,
                      trace=fn, cond_specs=condition_specs, input_dtype=input_dtype, input_rank=input_rank)
    return program


# ----------------------------------------------------------------------------------- reference
_ACT = {
    "relu": tf.nn.relu, "relu6": tf.nn.relu6, "elu": tf.nn.elu, "selu": tf.nn.selu,
    "tanh": tf.tanh, "sigmoid": tf.sigmoid, "softplus": tf.nn.softplus, "softsign": tf.nn.softsign,
    "neg": tf.negative, "exp": tf.exp, "square": tf.square, "abs": tf.abs, "erf": tf.math.erf,
}
_BIN = {"add": tf.add, "sub": tf.subtract, "mul": tf.multiply, "div": tf.divide,
        "max": tf.maximum, "min": tf.minimum}


def run_program(program, consts, image):
    """The pure-TF reference executor: every step on the full image. Returns every buffer."""
    bufs = [None] * len(program.buffer_channels)
    bufs[0] = tf.convert_to_tensor(image, tf.float32)
    for step in program.steps:
        x = [bufs[b] for b in step.ins]
        c = [tf.convert_to_tensor(consts[i]) for i in step.consts]
        if step.kind == "conv":
            y = tf.nn.conv2d(x[0], conv_kernel_4d(step, consts[step.consts[0]]), 1, step.attrs["padding"],
                             dilations=[1, step.attrs["dh"], step.attrs["dw"], 1])
        elif step.kind == "act":
            if step.attrs["fn"] == "leaky_relu":
                y = tf.nn.leaky_relu(x[0], step.attrs["alpha"])
            else:
                y = _ACT[step.attrs["fn"]](x[0])
        elif step.kind == "binary":
            fn = _BIN[step.attrs["fn"]]
            if len(x) == 2:
                y = fn(x[0], x[1])
            else:
                k = c[0]
                if k.shape.rank == 2:  # (batch or 1, C) from a flattened view: per image or channel
                    k = k[:, None, None, :]
                y = fn(k, x[0]) if step.attrs["const_first"] else fn(x[0], k)
        elif step.kind == "concat":
            n = tf.shape(x[0])[0]
            parts = []
            for kind, i in step.attrs["order"]:
                if kind == "buf":
                    parts.append(x[i])
                else:
                    k = c[i]
                    parts.append(tf.broadcast_to(k, tf.concat([[n], tf.shape(x[0])[1:3], tf.shape(k)[3:]], 0)))
            y = tf.concat(parts, axis=-1)
        elif step.kind == "reduce":
            fn = {"sum": tf.reduce_sum, "mean": tf.reduce_mean, "max": tf.reduce_max,
                  "min": tf.reduce_min}[step.attrs["fn"]]
            y = fn(x[0], axis=-1, keepdims=True)
        elif step.kind == "gather":
            y = tf.gather(x[0], step.attrs["channels"], axis=-1)
        elif step.kind == "softmax":
            g = step.attrs["group"]
            s = tf.reshape(x[0], tf.concat([tf.shape(x[0])[:3], [-1, g]], 0))
            s = tf.nn.log_softmax(s) if step.attrs["log"] else tf.nn.softmax(s)
            y = tf.reshape(s, tf.shape(x[0]))
        else:  # pragma: no cover
            raise AssertionError(step.kind)
        bufs[step.out] = y
    return bufs


# ----------------------------------------------------------------------------------- check
@dataclasses.dataclass
class CheckReport:
    """What `check(model)` found: the lowered program's size, its sparsity and its causality."""
    model: str
    image_shape: tuple
    steps: int
    conv_steps: int
    live_macs_per_pixel: int
    dense_macs_per_pixel: int
    head: str
    causal: bool
    program: Program = dataclasses.field(repr=False, default=None)

    @property
    def live_tap_fraction(self):
        return self.live_macs_per_pixel / max(1, self.dense_macs_per_pixel)

    def __str__(self):
        return (f"model '{self.model}': image {self.image_shape}, {self.steps} steps "
                f"({self.conv_steps} convolutions), live-tap fraction {self.live_tap_fraction:.3f} "
                f"({self.live_macs_per_pixel} of {self.dense_macs_per_pixel} multiply-adds per pixel), "
                f"output {self.head}, causal: {'yes' if self.causal else 'no'}")


def check(model, image_shape=None, condition_specs=None, raise_if_not_causal=True):
    """Lowers `model` and checks its causality (DESIGN.md). Returns a CheckReport; raises
    NotCausalError naming the first layer that sees the future (unless raise_if_not_causal=False),
    LoweringError naming an unsupported op, its layer and class."""
    program = lower(model, image_shape, condition_specs)
    n = 1
    conditions = [tf.zeros([n] + [d or 1 for d in s.shape[1:]], s.dtype) for s in program.cond_specs]
    consts = program.evaluate_consts(n, conditions)
    causal = True
    try:
        analyse_causality(program, consts)
    except NotCausalError:
        if raise_if_not_causal:
            raise
        causal = False
    live = dense = convs = 0
    for step in program.steps:
        if step.kind == "conv":
            k = conv_kernel_4d(step, consts[step.consts[0]])
            convs += 1
            live += int(np.count_nonzero(k))
            dense += int(k.size)
    head = {"sigmoid": "sigmoid (bernoulli)", "softmax": "softmax (categorical)"}.get(
        program.final_activation, "raw values")
    if program.output_levels > 1:
        head += f", {program.buffer_channels[program.output_buffer] // program.output_levels} x " \
                f"{program.output_levels} levels"
    return CheckReport(model.name, program.image_shape, len(program.steps), convs, live, dense,
                       head, causal, program)
