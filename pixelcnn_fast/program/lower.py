"""Python front end (program IR): lowering a Keras model's traced TF graph into a program.

docs/SEMANTICS.md, "Lowering from the traced graph". The model is traced once with `tf.function`; while the trace is
open we walk the graph's ops (not the Keras layer list, so subclassed layers and models are as visible as
functional ones) and turn every op that depends on the image's values into a step of a small program over
named buffers (batch, H, W, C) -- pixelcnn_fast/program/ir.py. Tensors that do not depend on the image
(effective kernels after any masking mechanism, biases, a class-label embedding) become constant slots that
the same traced function returns, so one call of it evaluates them exactly as the model computes them: once
per sampling call.

LOWERINGS maps a TF op type to its lowering function (lower_image_ops.py); ops on an integer code input go
to lower_code_ops.py first.
"""

import re

import tensorflow as tf

from pixelcnn_fast.program import lower_grid_ops as grid_ops
from pixelcnn_fast.program import lower_image_ops as image_ops
from pixelcnn_fast.program import lower_shift_ops as shift_ops
from pixelcnn_fast.program.ir import LoweringError, Program, Step, image_grid
from pixelcnn_fast.program.lower_code_ops import CODE_OPS, lower_code_op

__all__ = ["lower", "Lowerer", "LOWERINGS", "REFUSALS", "SUPPORTED", "SHAPE_ONLY", "layer_of"]

# TF op type -> lowering function (lw, op, ins) for an op on image-dependent float tensors.
LOWERINGS = {
    **{t: image_ops.lower_pass_through for t in image_ops.PASS_THROUGH},
    "Cast": image_ops.lower_cast,
    "Transpose": image_ops.lower_transpose,
    "Reshape": image_ops.lower_reshape,
    "Conv2D": image_ops.lower_conv,
    "Conv2DBackpropInput": grid_ops.lower_conv_transpose,
    "PixelcnnFastMaskedConv2D": image_ops.lower_masked_conv,
    "MatMul": image_ops.lower_matmul,
    "SpaceToBatchND": image_ops.lower_space_to_batch,
    "BatchToSpaceND": image_ops.lower_batch_to_space,
    **{t: image_ops.lower_reduce for t in image_ops.REDUCE},
    "BiasAdd": image_ops.lower_binary,
    **{t: image_ops.lower_binary for t in image_ops.BINARY},
    **{t: image_ops.lower_activation for t in image_ops.ACTIVATIONS},
    "ConcatV2": lambda lw, op, ins: _lower_concat(lw, op, ins),
    "Pad": shift_ops.lower_pad,
    "PadV2": shift_ops.lower_pad,
    "Softmax": image_ops.lower_softmax,
    "LogSoftmax": image_ops.lower_softmax,
    **{t: image_ops.lower_channel_select for t in image_ops.CHANNEL_SELECT},
    "Slice": lambda lw, op, ins: _lower_slice(lw, op, ins),
    "StridedSlice": lambda lw, op, ins: _lower_slice(lw, op, ins),
}
# Op types refused with a message saying what to change instead (not counted as supported).
REFUSALS = {"MirrorPad": shift_ops.lower_pad}
SUPPORTED = sorted(set(LOWERINGS) | CODE_OPS)
# Elementwise ops, which keep a window that is not the image's size (lower_shift_ops.elementwise_view).
ELEMENTWISE = {"BiasAdd", *image_ops.BINARY, *image_ops.ACTIVATIONS}
# Ops whose output depends on a tensor's shape, never on its values (ones_like / zeros_like: a constant
# channel concatenated to the image, PixelCNN++'s zero rows of a shift).
SHAPE_ONLY = {"Shape", "ShapeN", "Size", "Rank", "OnesLike", "ZerosLike"}


def _lower_slice(lw, op, ins):
    """A crop along H / W is a shift (a window); a selection of channels at every pixel is a gather."""
    shift_ops.lower_slice(lw, op, ins, lambda channels: image_ops.lower_channel_select(lw, op, ins))


def _lower_concat(lw, op, ins):
    """Along H or W with zeros: a shift (openai's down_shift / right_shift); along channels: a concat step."""
    axis = tf.get_static_value(op.inputs[-1])
    rank = op.outputs[0].shape.rank
    if axis is not None and rank == 4 and int(axis) % 4 in (1, 2):
        shift_ops.lower_concat_spatial(lw, op, ins, int(axis) % 4)
        return
    image_ops.lower_concat(lw, op, [shift_ops.align(lw, op, v) for v in ins])


def _children(layer):
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except AttributeError:  # pragma: no cover - not a Keras layer
        return []


def layer_of(op_name, model):
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


class Lowerer:
    """The state of one lowering: buffers, steps, constant slots and each tensor's lowered value.

    values maps a tensor to (view, buffer) (lower_image_ops.py says what a view is); an integer image input
    is ("codes", 0, offset): the level plus offset."""

    def __init__(self, graph, image, conditions, output, model, image_shape):
        self.model = model
        self.h, self.w, self.c = image_shape
        self.buffer_channels = [self.c]
        self.buffer_grids = [image_grid(image_shape)]  # (fy, fx, ny, nx) per buffer (ir.Program.grid)
        self.floating = {}  # buffer -> the transposed conv whose crop is still to come (lower_grid_ops.py)
        self.steps = []
        self.const_tensors = []
        self.const_index = {}
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
        layer, cls = layer_of(op.name, self.model)
        raise LoweringError(
            f"cannot lower op '{op.name}' ({op.type}) of layer '{layer}' ({cls}): {why}. The lowering "
            f"supports {', '.join(SUPPORTED)}; image-independent subgraphs may use any op.")

    def const(self, t):
        if t.ref() not in self.const_index:
            self.const_index[t.ref()] = len(self.const_tensors)
            self.const_tensors.append(t)
        return self.const_index[t.ref()]

    def new_buffer(self, channels, grid):
        self.buffer_channels.append(int(channels))
        self.buffer_grids.append(tuple(int(g) for g in grid))
        return len(self.buffer_channels) - 1

    def grid_hw(self, buffer):
        """(ny, nx): the size of a buffer's grid (the image's H, W unless it is a coarse grid)."""
        return self.buffer_grids[buffer][2:]

    def add(self, op, kind, ins, consts, attrs, channels, view="nhwc", out_tensor=None, bind=True, grid=None):
        """Appends a step writing a new buffer; binds the op's output (or out_tensor) to it unless bind=False
        (an intermediate step of a multi-step lowering, such as one_hot_steps). The buffer is on `grid`, else on
        its inputs' grid, which must be one (docs/SEMANTICS.md, "Grids")."""
        layer, cls = layer_of(op.name, self.model)
        if grid is None:
            grids = {self.buffer_grids[b] for b in ins} or {self.buffer_grids[0]}
            if len(grids) != 1:
                self.fail(op, "it combines tensors on different grids " + ", ".join(
                    f"{g[2]}x{g[3]} (1/{g[0]}, 1/{g[1]})" for g in sorted(grids)))
            grid = grids.pop()
        out = self.new_buffer(channels, grid)
        floating = {id(self.floating.get(b)): self.floating.get(b) for b in ins}
        if kind in ("binary", "act") and len(floating) == 1 and None not in floating.values():
            self.floating[out] = floating.popitem()[1]  # still uncropped: moves with its transposed conv
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
            lower_code_op(self, op, ins)
            return
        if any(v is not None and v[0] == "known" for v in ins):
            self.fail(op, "it uses a value that the lowering proved constant (a test on the codes) in a way "
                          "it does not support")
        lowering = LOWERINGS.get(t) or REFUSALS.get(t)
        if lowering is None:
            self.fail(op, "this op type is not supported on image-dependent tensors")
        if any(shift_ops.is_window(v) for v in ins):  # a shifted tensor (lower_shift_ops.py)
            view = shift_ops.elementwise_view(self, op, ins) if t in ELEMENTWISE else None
            if view is not None:
                ins = [(view, v[1]) if v is not None else None for v in ins]
            elif t not in shift_ops.WINDOW_OPS or t in ELEMENTWISE:
                ins = [shift_ops.align(self, op, v) for v in ins]
        lowering(self, op, ins)


def _check_is_keras(model, accept_tf_keras=False):
    """A typed refusal for what is not a Keras 3 model or layer, naming what came (a TFP distribution, a
    tf-keras model), before anything tries to trace it. accept_tf_keras: a tf-keras model the TFP adapter
    (pixelcnn_fast/tfp_adapter.py) prepared."""
    import keras

    if isinstance(model, keras.layers.Layer):
        return
    if accept_tf_keras and type(model).__module__.startswith("tf_keras"):
        return
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    if type(model).__module__.startswith("tensorflow_probability"):
        hint = ("a tfp.distributions.PixelCNN is a distribution: pass it to pixelcnn_fast.Sampler(dist), which "
                "adapts its network and mixture head (pixelcnn_fast/tfp_adapter.py)")
    elif type(model).__module__.startswith("tf_keras"):
        hint = "it is a tf-keras (Keras 2) model: rebuild it with Keras 3 layers (import keras)"
    else:
        hint = "pass the keras.Model that maps images (and conditions) to per-pixel predictions"
    raise TypeError(f"model must be a Keras 3 model (keras.Model), got {kind}: {hint}")


def lower(model, image_shape=None, condition_specs=None, accept_tf_keras=False):
    """Lowers `model` into a Program (constants evaluated by program.evaluate_consts).

    image_shape: (H, W, C), inferred from the model's first input when it has one.
    condition_specs: tf.TensorSpec of further inputs (class labels ...), inferred likewise.
    accept_tf_keras: take a tf-keras model (the TFP adapter's network); else only Keras 3.
    """
    _check_is_keras(model, accept_tf_keras)
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
        lowerer = Lowerer(graph, image, conditions, out, model, image_shape)
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
    if lw.buffer_grids[out_buf] != lw.buffer_grids[0]:
        g = lw.buffer_grids[out_buf]
        raise LoweringError(f"the output of model '{model.name}' is on a {g[2]}x{g[3]} grid (1/{g[0]} x 1/{g[1]} "
                            "of the image), not one prediction per pixel")
    levels = view[1] if isinstance(view, tuple) else 1
    producer = {s.out: s for s in lw.steps}.get(out_buf)
    final, logits = "", out_buf
    if producer is not None and producer.kind == "act" and producer.attrs["fn"] == "sigmoid":
        final, logits = "sigmoid", producer.ins[0]
    elif producer is not None and producer.kind == "softmax" and not producer.attrs["log"]:
        final, logits = "softmax", producer.ins[0]
    program = Program(image_shape, lw.buffer_channels, lw.steps,
                      [tuple(t.shape) for t in lw.const_tensors], out_buf, levels, final, logits,
                      trace=fn, cond_specs=condition_specs, input_dtype=input_dtype, input_rank=input_rank,
                      buffer_grids=lw.buffer_grids)
    return program
