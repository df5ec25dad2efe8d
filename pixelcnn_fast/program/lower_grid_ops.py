"""Python front end (program IR): strided and transposed convolutions as steps between grids (docs/SEMANTICS.md,
"Grids").

A buffer lives on a grid (fy, fx, ny, nx): its position (I, J) sits at image position (fy I, fx J), its anchor. A
stride-(sy, sx) conv makes a buffer on a grid (fy sy, fx sx) times coarser: its position (I, J) reads input
(sy I + oy + ky dh, sx J + ox + kx dw) -- attrs padding="OFFSET", oy, ox (TensorFlow's SAME / VALID placement
after the pads and shifts before it, as for a stride-1 conv on a window), sy, sx. A transposed conv
(Conv2DBackpropInput: Conv2DTranspose, tf.nn.conv2d_transpose) makes a buffer on a grid (sy, sx) times finer: its
position (i, j) reads coarse ((i + oy - ky) / sy, (j + ox - kx) / sx) for the taps where that divides and lands in
the coarse grid -- a conv whose live taps depend on (i mod sy, j mod sx), computed per fine position with no
scatter. (oy, ox) is TensorFlow's SAME padding plus the crop that follows (PixelCNN++ crops a VALID transposed
conv's larger output to the image, which is a shift): until that crop the output is a window whose origin
floats, and the crop fixes it (crop_transposed).
"""

from pixelcnn_fast.program.lower_shift_ops import align, bind_window, is_window, window_of

__all__ = ["lower_strided_conv", "lower_conv_transpose", "crop_transposed", "same_padding"]


def same_padding(n, k, s):
    """TensorFlow's SAME rule along one axis: (output size, padding before) for input size n, kernel extent k,
    stride s. The output is ceil(n / s); the padding total max((out - 1) s + k - n, 0), the smaller half first."""
    out = -(-n // s)
    return out, max((out - 1) * s + k - n, 0) // 2


def _placement(lw, value, kh, kw, dh, dw, sy, sx, padding):
    """(oy, ox, ho, wo) of a strided conv on a window, or None when SAME's zeros would fall inside the grid (the
    caller aligns the window first)."""
    ay, ax, hh, ww, _ = window_of(lw, value)
    gh, gw = lw.grid_hw(value[1])
    out = []
    for a, n, g, k, s in ((ay, hh, gh, (kh - 1) * dh + 1, sy), (ax, ww, gw, (kw - 1) * dw + 1, sx)):
        if padding == "SAME":
            size, before = same_padding(n, k, s)
            after = max((size - 1) * s + k - n, 0) - before
            if (before and a > 0) or (after and a + n < g):  # the zeros must be the grid's outside
                return None
            out.append((a - before, size))
        else:
            out.append((a, (n - k) // s + 1))
    (oy, ho), (ox, wo) = out
    return oy, ox, ho, wo


def lower_strided_conv(lw, op, ins, padding):
    """A Conv2D with strides (1, sy, sx, 1): a conv step whose output is on a grid (sy, sx) times coarser."""
    strides = [int(v) for v in op.get_attr("strides")]
    if strides[0] != 1 or strides[3] != 1:
        lw.fail(op, f"strides along batch or channels must be 1, got {strides}")
    sy, sx = strides[1], strides[2]
    value = ins[0]
    if value[0] != "nhwc" and not is_window(value):
        lw.fail(op, "a strided convolution of a reshaped tensor")
    if not window_of(lw, value)[4]:
        lw.fail(op, "it convolves values that a VALID convolution computed outside the image (crop them first)")
    kh, kw = (int(d) for d in op.inputs[1].shape[:2])
    dil = op.get_attr("dilations")
    dh, dw = int(dil[1]), int(dil[2])
    placed = _placement(lw, value, kh, kw, dh, dw, sy, sx, padding)
    if placed is None:
        value = align(lw, op, value)
        placed = _placement(lw, value, kh, kw, dh, dw, sy, sx, padding)
    oy, ox, ho, wo = placed
    if ho < 1 or wo < 1:
        hh, ww = window_of(lw, value)[2:4]
        lw.fail(op, f"its {kh}x{kw} kernel with strides {sy}x{sx} is larger than its {hh}x{ww} input")
    static = tuple(op.outputs[0].shape[1:3])
    if None not in static and static != (ho, wo):  # pragma: no cover - TensorFlow's rule is the one above
        lw.fail(op, f"its output is {static[0]}x{static[1]}, the lowering's SAME/VALID rule says {ho}x{wo}")
    b = value[1]
    fy, fx, _, _ = lw.buffer_grids[b]
    lw.add(op, "conv", [b], [lw.const(op.inputs[1])],
           {"dh": dh, "dw": dw, "padding": "OFFSET", "oy": int(oy), "ox": int(ox), "sy": sy, "sx": sx},
           op.inputs[1].shape[3], grid=(fy * sy, fx * sx, ho, wo))


def _finer_grid(lw, op, factor, size):
    """The grid of the given factor that a transposed conv's output lands on: the image's for factor 1, else the
    one grid of that factor some buffer lives on (the one of the output's size when there are several)."""
    if factor == (1, 1):
        return lw.buffer_grids[0]
    grids = {g for g in lw.buffer_grids if g[:2] == factor}
    if len(grids) > 1:
        grids = {g for g in grids if g[2:] == size}
    if len(grids) != 1:
        lw.fail(op, f"its output, 1/{factor[0]} x 1/{factor[1]} of the image, is not on one grid that a strided "
                    f"convolution made before it (found {sorted(grids) or 'none'})")
    return grids.pop()


def lower_conv_transpose(lw, op, ins):
    """Conv2DBackpropInput (a transposed conv): a conv_transpose step whose output is on a grid (sy, sx) times
    finer, bound as a window of the whole TF output; a crop to the grid's size (crop_transposed) fixes its origin."""
    if len(ins) != 3 or ins[2] is None or ins[1] is not None:
        lw.fail(op, "the lowering needs an image-dependent input and an image-independent kernel")
    value = ins[2]
    if value[0] != "nhwc":
        lw.fail(op, "a transposed convolution of a reshaped tensor")
    if op.get_attr("data_format") != b"NHWC":
        lw.fail(op, f"data_format must be NHWC, got {op.get_attr('data_format').decode()}")
    padding = op.get_attr("padding").decode()
    if padding not in ("SAME", "VALID"):
        lw.fail(op, f"padding {padding} is not supported; use 'same' or 'valid'")
    if list(op.get_attr("dilations")) != [1, 1, 1, 1]:
        lw.fail(op, f"dilations must be 1, got {op.get_attr('dilations')}")
    strides = [int(v) for v in op.get_attr("strides")]
    if strides[0] != 1 or strides[3] != 1:
        lw.fail(op, f"strides along batch or channels must be 1, got {strides}")
    sy, sx = strides[1], strides[2]
    b = value[1]
    fy, fx, ny, nx = lw.buffer_grids[b]
    if fy % sy or fx % sx:
        lw.fail(op, f"it up-samples a {ny}x{nx} grid (1/{fy} x 1/{fx} of the image) by {sy}x{sx}: finer than "
                    "the image")
    oh, ow = op.outputs[0].shape[1:3]
    if oh is None or ow is None:
        lw.fail(op, "its output size is not known when the model is traced")
    kh, kw, cout, _ = (int(d) for d in op.inputs[1].shape)
    # SAME: the forward conv's padding before (its input is this op's output); VALID: none.
    pt = same_padding(oh, kh, sy)[1] if padding == "SAME" else 0
    pl = same_padding(ow, kw, sx)[1] if padding == "SAME" else 0
    grid = _finer_grid(lw, op, (fy // sy, fx // sx), (oh, ow))
    out = lw.add(op, "conv_transpose", [b], [lw.const(op.inputs[1])], {"sy": sy, "sx": sx, "oy": pt, "ox": pl},
                 cout, bind=False, grid=grid)
    lw.floating[out] = lw.steps[-1]
    bind_window(lw, op.outputs[0], out, 0, 0, int(oh), int(ow), False)
    if lw.values[op.outputs[0].ref()][0] == "nhwc":  # already the grid's size: nothing to crop
        del lw.floating[out]


def crop_transposed(lw, buffer, ay, ax, hh, ww):
    """A crop to the grid's size of a transposed conv's output (or of elementwise steps on it, before any crop):
    the conv computes the cropped window instead, (oy, ox) += (ay, ax), and every window on those buffers moves
    with it. Returns the crop's new offset, (0, 0); other crops are left as they are."""
    step = lw.floating.get(buffer)
    if step is None or (hh, ww) != lw.grid_hw(buffer):
        return ay, ax
    step.attrs["oy"] += int(ay)
    step.attrs["ox"] += int(ax)
    chain = {b for b, s in lw.floating.items() if s is step}
    for b in chain:
        del lw.floating[b]
    for key, value in list(lw.values.items()):
        if is_window(value) and value[1] in chain:
            _, wy, wx, h2, w2, exact = value[0]
            lw.values[key] = (("win", wy - ay, wx - ax, h2, w2, exact), value[1])
    return 0, 0
