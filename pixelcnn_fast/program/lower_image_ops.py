"""Python front end (program IR): lowering functions for ops on image-dependent float tensors.

Each function is `lower_x(lw, op, ins)`: lw is the Lowerer (pixelcnn_fast/program/lower.py: buffers, steps,
constant slots, `add`, `const`, `fail`), op the TF op, ins[k] the lowered value of its input k -- (view, buffer)
or None when that input does not depend on the image. A view is "nhwc" (a (batch, H, W, C) buffer), "flat"
((pixels, C), a Dense on 4-D input), an output head (groups, levels) or a dilated conv's pending
space-to-batch. The table that maps an op type to its function is LOWERINGS in lower.py: a new op is one
function here and one row there.
"""

import numpy as np
import tensorflow as tf

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
# Channel selections, lowered by probing which input channel each output channel takes.
CHANNEL_SELECT = {"StridedSlice", "Slice", "Split", "SplitV", "GatherV2"}
# Reductions over the channel axis (keepdims): TF op type -> program name.
REDUCE = {"Sum": "sum", "Mean": "mean", "Max": "max", "Min": "min"}

def lower_pass_through(lw, op, ins):
    if ins[0] is None:
        lw.fail(op, "its input does not depend on the image")
    lw.values[op.outputs[0].ref()] = ins[0]


def lower_cast(lw, op, ins):
    """A cast to a float type keeps the values (the model is float32); any other is not a float op."""
    if not op.outputs[0].dtype.is_floating:
        lw.fail(op, "this op type is not supported on image-dependent tensors")
    lower_pass_through(lw, op, ins)


def lower_transpose(lw, op, ins):
    perm = tf.get_static_value(op.inputs[1])
    if perm is None or list(perm) != list(range(len(perm))):
        lw.fail(op, f"only the identity permutation keeps pixels in place, got {perm}")
    lw.values[op.outputs[0].ref()] = ins[0]


def lower_activation(lw, op, ins):
    attrs = {"fn": ACTIVATIONS[op.type]}
    if op.type == "LeakyRelu":
        attrs["alpha"] = float(op.get_attr("alpha"))
    view, b = ins[0]
    lw.add(op, "act", [b], [], attrs, lw.buffer_channels[b], view)


def lower_softmax(lw, op, ins):
    view, b = ins[0]
    group = view[1] if isinstance(view, tuple) else lw.buffer_channels[b]
    lw.add(op, "softmax", [b], [], {"group": group, "log": op.type == "LogSoftmax"}, lw.buffer_channels[b], view)


def lower_reshape(lw, op, ins):
    src = ins[0]
    if src is None:
        lw.fail(op, "its input does not depend on the image")
    view, b = src
    shape = op.outputs[0].shape
    ch = lw.buffer_channels[b]
    if shape.rank == 2 and shape[-1] in (ch, None) and view in ("nhwc", "flat"):
        # pixels x channels (Dense on 4-D input via Tensordot, whose shape is computed at run
        # time, so the width may be unknown here: lower_matmul checks it against the weight).
        lw.values[op.outputs[0].ref()] = ("flat", b)
    elif shape.rank == 4 and tuple(shape[1:]) == lw.grid_hw(b) + (ch,):
        lw.values[op.outputs[0].ref()] = ("nhwc", b)
    elif shape.rank == 5 and tuple(shape[1:3]) == lw.grid_hw(b) and shape[3] * shape[4] == ch:
        lw.values[op.outputs[0].ref()] = ((int(shape[3]), int(shape[4])), b)  # output head
    else:
        lw.fail(op, f"a reshape from {ch} channels per pixel to {shape} moves values between pixels")


def lower_space_to_batch(lw, op, ins):
    """TF runs a dilated conv as SpaceToBatchND -> Conv2D (VALID) -> BatchToSpaceND; the three
    together are one dilated conv, recognised here and finished at BatchToSpaceND."""
    block = tf.get_static_value(op.inputs[1])
    if ins[0] is None or ins[0][0] != "nhwc" or block is None or len(block) != 2:
        lw.fail(op, "only the space-to-batch of a dilated convolution is supported")
    lw.values[op.outputs[0].ref()] = (("s2b", int(block[0]), int(block[1])), ins[0][1])


def lower_batch_to_space(lw, op, ins):
    view, b = ins[0] if ins[0] is not None else (None, None)
    if not (isinstance(view, tuple) and view[0] == "b2s"):
        lw.fail(op, "only the batch-to-space of a dilated convolution is supported")
    step = lw.steps[view[1]]
    shape = tuple(op.outputs[0].shape[1:3])
    kh, kw = lw.const_tensors[step.consts[0]].shape[:2]
    if shape == lw.grid_hw(b):
        step.attrs["padding"] = "SAME"
    elif (kh, kw) == (1, 1):
        step.attrs["padding"] = "VALID"
    else:
        lw.fail(op, f"a dilated {kh}x{kw} convolution that changes the image size to {shape}; use padding='same'")
    lw.values[op.outputs[0].ref()] = ("nhwc", b)


def lower_conv(lw, op, ins):
    if ins[0] is None or ins[1] is not None:
        lw.fail(op, "the lowering needs an image-dependent input and an image-independent kernel")
    if isinstance(ins[0][0], tuple) and ins[0][0][0] == "s2b":
        _, dh, dw = ins[0][0]
        kshape = op.inputs[1].shape
        lw.add(op, "conv", [ins[0][1]], [lw.const(op.inputs[1])],
               {"dh": dh, "dw": dw, "padding": "PENDING"}, kshape[3], ("b2s", len(lw.steps)))
        return
    if op.get_attr("data_format") != b"NHWC":
        lw.fail(op, f"data_format must be NHWC, got {op.get_attr('data_format').decode()}")
    padding = op.get_attr("padding").decode()
    kshape = op.inputs[1].shape
    dil = op.get_attr("dilations")
    if padding not in ("SAME", "VALID"):
        lw.fail(op, f"padding {padding} is not supported; use 'same', or 'valid' after a pad")
    if list(op.get_attr("strides")) != [1, 1, 1, 1]:  # to a coarser grid (lower_grid_ops.py)
        from pixelcnn_fast.program.lower_grid_ops import lower_strided_conv

        lower_strided_conv(lw, op, ins, padding)
        return
    if ins[0][0] != "nhwc" or (padding == "VALID" and tuple(kshape[:2]) != (1, 1)):
        # pad + VALID conv, or a conv on a shifted tensor: a conv with offset taps (lower_shift_ops.py).
        from pixelcnn_fast.program.lower_shift_ops import align, bind_window, conv_on_window

        folded = conv_on_window(lw, op, ins[0], int(kshape[0]), int(kshape[1]), int(dil[1]), int(dil[2]), padding)
        if folded is None:
            lower_conv(lw, op, [align(lw, op, ins[0]), None])
            return
        attrs, (ay, ax, ho, wo) = folded
        out = lw.add(op, "conv", [ins[0][1]], [lw.const(op.inputs[1])], attrs, kshape[3], bind=False)
        bind_window(lw, op.outputs[0], out, ay, ax, ho, wo, False)
        return
    lw.add(op, "conv", [ins[0][1]], [lw.const(op.inputs[1])],
           {"dh": int(dil[1]), "dw": int(dil[2]), "padding": padding}, kshape[3])


def lower_masked_conv(lw, op, ins):
    """Our own op reads only the live taps of a dense kernel: its effective kernel is kernel*mask,
    made here as a new tensor of the trace (still open), so it is evaluated with the others."""
    from pixelcnn_fast.masks import make_mask

    if ins[0] is None or ins[1] is not None:
        lw.fail(op, "the lowering needs an image-dependent input and an image-independent kernel")
    kernel = op.inputs[1]
    kh, kw, cin, cout = (int(d) for d in kernel.shape)
    mask = make_mask(kh, kw, cin, cout, op.get_attr("mask_type").decode(), op.get_attr("color_groups"))
    with tf.name_scope(op.name + "_effective_kernel"):
        effective = kernel * tf.constant(mask, kernel.dtype)
    dil = op.get_attr("dilations")
    padding = op.get_attr("padding").decode().upper()
    if padding == "VALID" and (kh, kw) != (1, 1):
        lw.fail(op, f"padding VALID with a {kh}x{kw} kernel changes the image size; use 'same'")
    lw.add(op, "conv", [ins[0][1]], [lw.const(effective)],
           {"dh": int(dil[0]), "dw": int(dil[1]), "padding": padding}, cout)


def lower_matmul(lw, op, ins):
    if ins[0] is None or ins[0][0] != "flat" or ins[1] is not None:
        lw.fail(op, "only a pixels x channels matrix times an image-independent weight (a Dense "
                    "layer on 4-D input) is supported")
    if op.get_attr("transpose_a"):
        lw.fail(op, "transpose_a mixes pixels")
    wshape = op.inputs[1].shape
    rows = wshape[1] if op.get_attr("transpose_b") else wshape[0]
    if rows != lw.buffer_channels[ins[0][1]]:
        lw.fail(op, f"the weight has {rows} rows for {lw.buffer_channels[ins[0][1]]} channels "
                    "per pixel: the reshape before it moved values between pixels")
    kernel = lw.const(op.inputs[1])
    cout = op.outputs[0].shape[-1]
    lw.add(op, "conv", [ins[0][1]], [kernel],
           {"dh": 1, "dw": 1, "padding": "SAME", "matmul": True,
            "transpose_b": bool(op.get_attr("transpose_b"))}, cout, "flat")


def lower_binary(lw, op, ins):
    fn = "add" if op.type == "BiasAdd" else BINARY[op.type]
    a, b = ins[0], ins[1]
    out_ch = op.outputs[0].shape[-1]
    if a is not None and b is not None:
        ca, cb = lw.buffer_channels[a[1]], lw.buffer_channels[b[1]]
        if ca != cb and 1 not in (ca, cb):
            lw.fail(op, f"both operands depend on the image but have {ca} and {cb} channels")
        lw.add(op, "binary", [a[1], b[1]], [], {"fn": fn}, max(ca, cb), a[0])
        return
    dep, other = (a, op.inputs[1]) if a is not None else (b, op.inputs[0])
    cshape = other.shape
    if cshape.rank is None:
        lw.fail(op, "the image-independent operand has an unknown rank")
    # The constant broadcasts against (batch, H, W, C): per image, per position or per channel.
    lw.add(op, "binary", [dep[1]], [lw.const(other)],
           {"fn": fn, "const_first": a is None}, out_ch if out_ch is not None else
           lw.buffer_channels[dep[1]], dep[0])


def lower_reduce(lw, op, ins):
    axes = tf.get_static_value(op.inputs[1])
    rank = op.inputs[0].shape.rank
    axes = np.atleast_1d(axes) if axes is not None else None
    if ins[0] is None or ins[0][0] != "nhwc" or axes is None or \
            [int(a) % rank for a in axes] != [rank - 1] or not op.get_attr("keep_dims"):
        lw.fail(op, f"only a reduction over the channel axis with keepdims is supported, got axes {axes}")
    lw.add(op, "reduce", [ins[0][1]], [], {"fn": REDUCE[op.type]}, 1)


def lower_concat(lw, op, ins):
    axis = tf.get_static_value(op.inputs[-1])
    rank = op.outputs[0].shape.rank
    if axis is None or axis not in (-1, rank - 1):
        lw.fail(op, f"only concatenation along channels (or zeros along H or W: a shift) is supported, got axis "
                    f"{axis}")
    # Image-independent parts (a label map) are constant slots broadcast per image and position.
    order, bufs, consts, channels = [], [], [], 0
    for t, p in zip(op.inputs[:-1], ins[:-1]):
        if p is not None:
            if p[0] != "nhwc":
                lw.fail(op, "concatenation of a reshaped tensor")
            order.append(("buf", len(bufs)))
            bufs.append(p[1])
            channels += lw.buffer_channels[p[1]]
        else:
            if t.shape.rank != 4 or t.shape[-1] is None:
                lw.fail(op, f"an image-independent part must be (batch, H, W, C) with known C, got {t.shape}")
            order.append(("const", len(consts)))
            consts.append(lw.const(t))
            channels += int(t.shape[-1])
    lw.add(op, "concat", bufs, consts, {"order": order}, channels, "nhwc")


def lower_channel_select(lw, op, ins):
    """Lowered by running the op on a probe whose every value is its channel index: each output
    channel must then be one input channel, the same at every pixel."""
    with tf.init_scope():  # the probe runs eagerly, outside the trace being lowered
        _probe_channel_select(lw, op, ins)


def _probe_channel_select(lw, op, ins):
    src_pos = 1 if op.type == "Split" else 0
    src = ins[src_pos]
    if src is None or any(x is not None for i, x in enumerate(ins) if i != src_pos):
        lw.fail(op, "only selections of channels of an image-dependent tensor are supported")
    view, b = src
    if view != "nhwc":
        lw.fail(op, "channel selection on a reshaped tensor")
    ch = lw.buffer_channels[b]
    gh, gw = lw.grid_hw(b)
    probe = np.broadcast_to(np.arange(ch, dtype=np.float32), (1, gh, gw, ch))
    args = []
    for i, x in enumerate(op.inputs):
        if i == src_pos:
            args.append(tf.constant(probe))
        else:
            v = tf.get_static_value(x)
            if v is None:
                lw.fail(op, "its begin/size/axis arguments are not constants")
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
        if r.ndim != 4 or r.shape[:3] != (1, gh, gw) or not (r == r[:1, :1, :1, :]).all():
            lw.fail(op, "it selects pixels, not only channels: a split or gather along H or W is not a shift "
                        "(Slice / StridedSlice / Cropping2D crops are)")
        channels = [int(v) for v in r[0, 0, 0]]
        lw.add(op, "gather", [b], [], {"channels": channels}, len(channels), "nhwc", out_t)
