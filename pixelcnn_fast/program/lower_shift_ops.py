"""Python front end (program IR): shifts as read offsets -- Pad, Slice / StridedSlice / Cropping2D along H or W,
zeros + ConcatV2 along H or W (openai's down_shift / right_shift) and `pad + VALID conv` (docs/SEMANTICS.md,
"Shifts are read offsets").

A tensor that a shift made is not a new buffer but a *window* on one: the view ("win", ay, ax, hh, ww, exact)
says that the tensor's element (i', j') is the buffer's element (i' + ay, j' + ax), and zero where that lies
outside the image ([0, H) x [0, W)); the tensor is hh x ww. `exact` is False when the tensor's values outside
the image are not zero (a VALID conv's output one column wider than the image, before its crop): such a window
may only be cropped or go through elementwise ops until the crop. No data moves: a conv reading a window
takes its offset into its taps (attrs padding="OFFSET", oy, ox: the top-left tap's offset); any other reader
of a shifted window gets a `shift` step (out[i, j] = in[i + dy, j + dx], zero outside the image).
"""

import numpy as np
import tensorflow as tf

__all__ = ["WINDOW_OPS", "is_window", "window_of", "align", "lower_pad", "lower_slice", "lower_concat_spatial",
           "conv_on_window", "elementwise_view", "bind_window"]

# Op types whose lowering takes a window input itself; every other op's window inputs are aligned first.
WINDOW_OPS = {"Pad", "PadV2", "Slice", "StridedSlice", "ConcatV2", "Conv2D", "BiasAdd", "AddV2", "Add", "Sub",
              "Mul", "RealDiv", "Maximum", "Minimum", "Identity", "StopGradient", "PreventGradient",
              "Snapshot", "EnsureShape", "Relu", "Relu6", "Elu", "Selu", "Tanh", "Sigmoid", "Softplus",
              "Softsign", "LeakyRelu", "Neg", "Exp", "Square", "Abs", "Erf"}


def is_window(value):
    return value is not None and isinstance(value[0], tuple) and value[0][0] == "win"


def window_of(lw, value):
    """(ay, ax, hh, ww, exact) of a lowered image-dependent value: an nhwc buffer is its grid's own window (the
    image's, or a coarse grid's: docs/SEMANTICS.md, "Grids"; "the image" below is the buffer's grid)."""
    if value[0] == "nhwc":
        return (0, 0) + lw.grid_hw(value[1]) + (True,)
    if is_window(value):
        return value[0][1:]
    return None


_window = window_of


def _inside(lw, b, ay, ax, hh, ww):
    h, w = lw.grid_hw(b)
    return ay >= 0 and ax >= 0 and ay + hh <= h and ax + ww <= w


def bind_window(lw, tensor, buffer, ay, ax, hh, ww, exact):
    """Binds a tensor to a window of a buffer; the grid's own window is a plain nhwc buffer."""
    exact = bool(exact or _inside(lw, buffer, ay, ax, hh, ww))
    view = "nhwc" if (ay, ax, hh, ww) == (0, 0) + lw.grid_hw(buffer) else ("win", ay, ax, hh, ww, exact)
    lw.values[tensor.ref()] = (view, buffer)


def align(lw, op, value):
    """The value as a plain nhwc buffer for a reader that does not take windows: a shift step when the
    window is the image's size and offset, refused when it is another size or its outside is not zero."""
    if not is_window(value):
        return value
    ay, ax, hh, ww, exact = value[0][1:]
    gh, gw = lw.grid_hw(value[1])
    if (hh, ww) != (gh, gw):
        lw.fail(op, f"it reads a {hh}x{ww} crop or padding of an image-dependent tensor, not the {gh}x{gw} "
                    "image: a shift must keep the image's size (pad then crop, or pad then a VALID conv)")
    if not exact:
        lw.fail(op, "it reads values that a VALID convolution computed outside the image (crop them first)")
    return "nhwc", lw.add(op, "shift", [value[1]], [], {"dy": int(ay), "dx": int(ax)},
                          lw.buffer_channels[value[1]], bind=False)


def lower_pad(lw, op, ins):
    """Zero padding along H and W moves the window's origin; a pad whose zeros would land inside the image
    (after a crop into it) is not a shift."""
    if op.type == "MirrorPad":
        lw.fail(op, "mirror padding copies pixels; only zero padding is a shift")
    pads = tf.get_static_value(op.inputs[1])
    if op.type == "PadV2":
        fill = tf.get_static_value(op.inputs[2])
        if fill is None or float(fill) != 0.0:
            lw.fail(op, f"padding with {fill} is not a shift (only zeros are)")
    win = _window(lw, ins[0]) if ins[0] is not None else None
    if pads is None or win is None or np.shape(pads) != (4, 2) or np.any(pads[[0, 3]] != 0):
        lw.fail(op, f"only constant zero padding along H and W of an image tensor is supported, got {pads}")
    ay, ax, hh, ww, exact = win
    (pt, pb), (pl, pr) = (int(v) for v in pads[1]), (int(v) for v in pads[2])
    if not exact:
        lw.fail(op, "it pads values that a VALID convolution computed outside the image (crop them first)")
    # The new zeros are the buffer's elements just outside the window: they must be outside the image too.
    gh, gw = lw.grid_hw(ins[0][1])
    if (pt and ay > 0) or (pl and ax > 0) or (pb and ay + hh < gh) or (pr and ax + ww < gw):
        lw.fail(op, f"it pads zeros into the image (the tensor is a {hh}x{ww} crop at ({ay:+d}, {ax:+d})): "
                    "that is not a shift of whole rows or columns")
    bind_window(lw, op.outputs[0], ins[0][1], ay - pt, ax - pl, hh + pt + pb, ww + pl + pr, True)


def lower_slice(lw, op, ins, select_channels):
    """Slice / StridedSlice: probed on a tensor whose every value is its (row, column, channel) index. A
    selection of channels at every pixel goes to select_channels (the channel gather); a crop along H and W
    (Cropping2D, x[:, :-1], x[:, 1:]) moves the window, with a gather when it also selects channels."""
    if ins[0] is None or any(x is not None for x in ins[1:]):
        lw.fail(op, "only slices of an image-dependent tensor with constant bounds are supported")
    win = _window(lw, ins[0])
    if win is None:
        lw.fail(op, "a slice of a reshaped tensor")
    ay, ax, hh, ww, exact = win
    ch = lw.buffer_channels[ins[0][1]]
    with tf.init_scope():
        index = np.arange(hh * ww * ch, dtype=np.float64).reshape(1, hh, ww, ch)
        args = []
        for x in op.inputs[1:]:
            v = tf.get_static_value(x)
            if v is None:
                lw.fail(op, "its bounds are not constants")
            args.append(tf.constant(v, dtype=x.dtype))
        attrs = {a.name: op.get_attr(a.name) for a in op.op_def.attr if a.name not in ("T", "Index")}
        names = [a.name for a in op.op_def.input_arg]
        r = np.asarray(getattr(tf.raw_ops, op.type)(**dict(zip(names, [tf.constant(index)] + args)), **attrs))
    if r.ndim == 4 and r.shape[0] == 1 and r.size == 0 and r.shape[3] == ch:
        # x[:, :-1] of a one-row tensor: nothing (a down_shift's zeros then fill the whole tensor).
        lw.values[op.outputs[0].ref()] = (("win", ay, ax, r.shape[1], r.shape[2], True), ins[0][1])
        return
    if r.ndim != 4 or r.shape[0] != 1 or r.size == 0:
        lw.fail(op, f"a slice to shape {r.shape} of a (batch, H, W, C) tensor: only crops along H and W and "
                    "selections of channels are supported")
    rows, cols, chans = (r // ch) // ww, (r // ch) % ww, r % ch
    by, bx = int(rows[0, 0, 0, 0]), int(cols[0, 0, 0, 0])
    i2, j2 = np.arange(r.shape[1])[:, None, None], np.arange(r.shape[2])[None, :, None]
    if not ((rows[0] == by + i2).all() and (cols[0] == bx + j2).all() and (chans == chans[:, :1, :1]).all()):
        lw.fail(op, "it selects pixels with a stride or reorders them: only a crop along H and W (a shift) is "
                    "supported")
    channels = [int(c) for c in chans[0, 0, 0]]
    if (by, bx, r.shape[1], r.shape[2]) == (0, 0, hh, ww) and ins[0][0] == "nhwc":
        select_channels(channels)  # a channel selection: the gather of lower_image_ops
        return
    b = ins[0][1]
    if channels != list(range(ch)):
        b = lw.add(op, "gather", [b], [], {"channels": channels}, len(channels), bind=False)
    if not exact:  # a crop of a transposed conv's output fixes where its buffer starts (lower_grid_ops.py)
        from pixelcnn_fast.program.lower_grid_ops import crop_transposed

        ay, ax = crop_transposed(lw, b, ay + by, ax + bx, r.shape[1], r.shape[2])
        by = bx = 0
    bind_window(lw, op.outputs[0], b, ay + by, ax + bx, r.shape[1], r.shape[2], exact)


def _is_zeros(t):
    if t.op.type == "ZerosLike":
        return True
    if t.op.type == "Fill":
        v = tf.get_static_value(t.op.inputs[1])
        return v is not None and float(v) == 0.0
    v = tf.get_static_value(t)
    return v is not None and not np.any(v)


def lower_concat_spatial(lw, op, ins, axis):
    """zeros + ConcatV2 along H (axis 1) or W (axis 2): consecutive windows of one buffer, zeros where the
    buffer lies outside the image (openai's down_shift / right_shift): one window."""
    parts = list(zip(op.inputs[:-1], ins[:-1]))
    deps = [(t, v) for t, v in parts if v is not None]
    if not deps or any(not _is_zeros(t) for t, v in parts if v is None):
        lw.fail(op, f"a concatenation along {'HW'[axis - 1]} of an image-dependent tensor with non-zero "
                    "values is not a shift (only zeros may come in at the border)")
    wins = [_window(lw, v) for _, v in deps]
    bufs = {v[1] for _, v in deps}
    if None in wins or len(bufs) != 1 or not all(w[4] for w in wins):
        lw.fail(op, f"only the zeros + crop of one image tensor concatenated along {'HW'[axis - 1]} (a shift) "
                    "is supported")
    # Walk the parts in order: each image part continues the window, each zero part extends it outside.
    lengths = [int(t.shape[axis]) if t.shape[axis] is not None else None for t, _ in parts]
    if None in lengths:
        lw.fail(op, "a part of unknown size")
    nonempty = [k for k, (_, v) in enumerate(parts) if v is not None and lengths[k]]
    w0 = wins[0]
    if nonempty:
        first = nonempty[0]
        w0 = _window(lw, parts[first][1])
        start = (w0[0], w0[1])[axis - 1] - sum(lengths[:first])
    else:  # only zeros: a window wholly outside the image
        start = -sum(lengths)
    pos = start
    other = (w0[1], w0[3]) if axis == 1 else (w0[0], w0[2])
    extent = lw.grid_hw(deps[0][1][1])[axis - 1]
    for (t, v), n in zip(parts, lengths):
        if v is None or not n:
            if n and not (pos + n <= 0 or pos >= extent):
                lw.fail(op, f"its zeros land inside the image along {'HW'[axis - 1]}: not a shift")
        else:
            ay, ax, hh, ww, _ = _window(lw, v)
            here, across = (ay, (ax, ww)) if axis == 1 else (ax, (ay, hh))
            if here != pos or across != other:
                lw.fail(op, f"its parts are not consecutive crops of one tensor along {'HW'[axis - 1]}")
        pos += n
    total = pos - start
    b = bufs.pop()
    if axis == 1:
        bind_window(lw, op.outputs[0], b, start, w0[1], total, w0[3], True)
    else:
        bind_window(lw, op.outputs[0], b, w0[0], start, w0[2], total, True)


def conv_on_window(lw, op, value, kh, kw, dh, dw, padding):
    """A stride-1 conv on a window: its taps start at the window's origin (minus SAME's own padding), and its
    output is a window at offset (0, 0) of a new buffer. Returns (attrs, (ay, ax, hh, ww)) of the output, or
    None when SAME's zero padding would fall inside the image (the caller aligns the input first)."""
    ay, ax, hh, ww, exact = _window(lw, value)
    if not exact:
        lw.fail(op, "it convolves values that a VALID convolution computed outside the image (crop them first)")
    if padding == "SAME":
        pt, pl = ((kh - 1) * dh) // 2, ((kw - 1) * dw) // 2
        pb, pr = (kh - 1) * dh - pt, (kw - 1) * dw - pl
        # SAME's zeros must be the buffer's zeros outside the image, as for a Pad (else: a shift step first).
        gh, gw = lw.grid_hw(value[1])
        if (pt and ay > 0) or (pl and ax > 0) or (pb and ay + hh < gh) or (pr and ax + ww < gw):
            return None
        ay, ax = ay - pt, ax - pl
        ho, wo = hh, ww
    else:
        ho, wo = hh - (kh - 1) * dh, ww - (kw - 1) * dw
    if ho < 1 or wo < 1:
        lw.fail(op, f"its {kh}x{kw} VALID kernel is larger than its {hh}x{ww} input")
    return {"dh": dh, "dw": dw, "padding": "OFFSET", "oy": int(ay), "ox": int(ax)}, (0, 0, ho, wo)


def elementwise_view(lw, op, values):
    """The window an elementwise op's output keeps: operands that are windows of one shape other than the
    image's (a VALID conv's wider output before its crop, Keras' BiasAdd on it) stay windows, exact only where
    they lie inside the image (their outside is computed for no position). None: align the operands."""
    wins = [v for v in values if v is not None]
    shapes = {_window(lw, v)[:4] for v in wins if _window(lw, v) is not None}
    if not any(is_window(v) for v in wins) or len(shapes) != 1:
        return None
    ay, ax, hh, ww = shapes.pop()
    b = next(v[1] for v in wins if _window(lw, v) is not None)
    if (hh, ww) == lw.grid_hw(b):
        return None
    for t, v in zip(op.inputs, values):
        if v is None and t.shape.rank == 4 and (t.shape[1] != 1 or t.shape[2] != 1):
            lw.fail(op, f"an image-independent operand of shape {t.shape} on a {hh}x{ww} crop or padding")
    return "win", ay, ax, hh, ww, _inside(lw, b, ay, ax, hh, ww)
