"""Python front end (program IR): the pure-TF reference executor of a lowered program.

Every step on the full image with ordinary TF ops: what the cached C++ and CUDA executors are tested against
(teacher forcing through them equals this), and what the lowering is tested against (this equals the model).
"""

import tensorflow as tf

from pixelcnn_fast.program.ir import conv_kernel_4d

__all__ = ["run_program"]

_ACT = {
    "relu": tf.nn.relu, "relu6": tf.nn.relu6, "elu": tf.nn.elu, "selu": tf.nn.selu,
    "tanh": tf.tanh, "sigmoid": tf.sigmoid, "softplus": tf.nn.softplus, "softsign": tf.nn.softsign,
    "neg": tf.negative, "exp": tf.exp, "square": tf.square, "abs": tf.abs, "erf": tf.math.erf,
}
_BIN = {"add": tf.add, "sub": tf.subtract, "mul": tf.multiply, "div": tf.divide,
        "max": tf.maximum, "min": tf.minimum}
_REDUCE = {"sum": tf.reduce_sum, "mean": tf.reduce_mean, "max": tf.reduce_max, "min": tf.reduce_min}


def _shift(x, dy, dx):
    """out[i, j] = x[i + dy, j + dx], zero outside the image (docs/SEMANTICS.md, "Shifts are read offsets")."""
    h, w = x.shape[1], x.shape[2]
    x = tf.pad(x, [[0, 0], [max(0, -dy), max(0, dy)], [max(0, -dx), max(0, dx)], [0, 0]])
    return x[:, max(0, dy):max(0, dy) + h, max(0, dx):max(0, dx) + w]


def _offset_conv(step, kernel, x, out_hw):
    """A conv whose top-left tap reads offset (oy, ox), with strides (sy, sx) (1 unless it makes a coarser grid):
    out[I, J] = sum K[ky, kx] x[sy I + oy + ky dh, sx J + ox + kx dw], out_hw the output grid's size."""
    a = step.attrs
    kh, kw = kernel.shape[:2]
    sy, sx = a.get("sy", 1), a.get("sx", 1)
    ey, ex = (kh - 1) * a["dh"], (kw - 1) * a["dw"]
    # Input rows oy .. oy + sy (h - 1) + ey (zero outside), then a VALID conv.
    rows, cols = sy * (out_hw[0] - 1) + ey + 1, sx * (out_hw[1] - 1) + ex + 1
    x = _window(x, a["oy"], a["ox"], rows, cols)
    return tf.nn.conv2d(x, kernel, [1, sy, sx, 1], "VALID", dilations=[1, a["dh"], a["dw"], 1])


def _window(x, oy, ox, rows, cols):
    """x[oy:oy + rows, ox:ox + cols], zero outside x."""
    h, w = x.shape[1], x.shape[2]
    x = tf.pad(x, [[0, 0], [max(0, -oy), max(0, oy + rows - h)], [max(0, -ox), max(0, ox + cols - w)], [0, 0]])
    return x[:, max(0, oy):max(0, oy) + rows, max(0, ox):max(0, ox) + cols]


def _conv_transpose(step, kernel, x, out_hw):
    """out[i, j] = sum K[ky, kx] x[(i + oy - ky) / sy, (j + ox - kx) / sx] over the taps where that divides (docs/
    SEMANTICS.md, "Grids"): TF's VALID transposed conv (y[sy I + ky] += K[ky] x[I]), from row oy on."""
    a = step.attrs
    kh, kw = kernel.shape[:2]
    n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    full = ((h - 1) * a["sy"] + kh, (w - 1) * a["sx"] + kw)
    y = tf.nn.conv2d_transpose(x, kernel, tf.stack([n, full[0], full[1], kernel.shape[2]]), [1, a["sy"], a["sx"], 1],
                               "VALID")
    return _window(y, a["oy"], a["ox"], out_hw[0], out_hw[1])


def run_program(program, consts, image):
    """The pure-TF reference executor: every step on the full image. Returns every buffer."""
    bufs = [None] * len(program.buffer_channels)
    bufs[0] = tf.convert_to_tensor(image, tf.float32)
    for step in program.steps:
        x = [bufs[b] for b in step.ins]
        c = [tf.convert_to_tensor(consts[i]) for i in step.consts]
        if step.kind == "conv" and step.attrs["padding"] == "OFFSET":
            y = _offset_conv(step, conv_kernel_4d(step, consts[step.consts[0]]), x[0], program.grid(step.out)[2:])
        elif step.kind == "conv_transpose":
            y = _conv_transpose(step, tf.convert_to_tensor(consts[step.consts[0]]), x[0], program.grid(step.out)[2:])
        elif step.kind == "shift":
            y = _shift(x[0], step.attrs["dy"], step.attrs["dx"])
        elif step.kind == "conv":
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
            y = _REDUCE[step.attrs["fn"]](x[0], axis=-1, keepdims=True)
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
