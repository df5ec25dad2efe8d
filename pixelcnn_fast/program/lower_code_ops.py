"""Python front end (program IR): lowering the ops on an integer code input (a VQ-VAE prior's indices).

docs/SEMANTICS.md, "Integer inputs". The codes are levels in [0, levels): casts between integer types and Keras'
negative-index fix-up (`where(codes < 0, codes + K, codes)`, decided here from codes >= 0) keep them as they
are; OneHot and an Embedding's gather turn them into vectors (a per-position input step: see one_hot_steps).
A lowered code value is ("codes", buffer, offset) -- the level plus offset, offset None when unknown while
tracing -- or ("known", bool) for a test on the codes that their range decides.
"""

import numpy as np
import tensorflow as tf

from pixelcnn_fast.program.lower_image_ops import PASS_THROUGH

__all__ = ["CODE_OPS", "lower_code_op", "one_hot_steps"]

# Integer code inputs: ops on the codes themselves, before they become vectors.
CODE_OPS = {"OneHot", "GatherV2", "ResourceGather", "Less", "LessEqual", "Greater", "GreaterEqual", "SelectV2",
            "Select"}


def lower_code_op(lw, op, ins):
    """Lowers one op that reads the codes (or a test on them); lw is the Lowerer, ins as in lower_image_ops."""
    t = op.type
    codes = next(v for v in ins if v is not None and v[0] == "codes") if any(
        v is not None and v[0] == "codes" for v in ins) else None
    out = op.outputs[0]
    if t in PASS_THROUGH or (t == "Cast" and out.dtype.is_integer):
        lw.values[out.ref()] = ins[0]
    elif t in ("AddV2", "Add", "Sub") and ins[0] is codes and ins[1] is None and op.inputs[1].shape.rank == 0:
        # codes + k: Keras' take() adds the table size to negative indices. k may not be known while
        # tracing (a table's size read at run time): then the sum may only be discarded by a selection.
        k = tf.get_static_value(op.inputs[1])
        offset = None if k is None or codes[2] is None else codes[2] + (int(k) if t != "Sub" else -int(k))
        lw.values[out.ref()] = ("codes", codes[1], offset)
    elif t in ("Less", "LessEqual", "Greater", "GreaterEqual") and ins[0] is not None and ins[1] is None:
        bound = tf.get_static_value(op.inputs[1])
        if bound is None or np.ndim(bound) != 0:
            lw.fail(op, "only a comparison of the codes with a constant number is supported")
        if codes[2] is None:
            lw.fail(op, "it compares codes shifted by an amount unknown while tracing")
        lo, bound = codes[2], int(bound)  # the value is a level plus offset: >= offset, unbounded above
        result = {"Less": False if lo >= bound else None, "LessEqual": False if lo > bound else None,
                  "Greater": True if lo > bound else None, "GreaterEqual": True if lo >= bound else None}[t]
        if result is None:
            lw.fail(op, f"the comparison of the codes ({op.type} {bound}) depends on the code's value")
        lw.values[out.ref()] = ("known", result)
    elif t in ("SelectV2", "Select"):
        cond = ins[0]
        if cond is None or cond[0] != "known":
            lw.fail(op, "only a selection whose condition is decided by the codes' range is supported")
        chosen = ins[1] if cond[1] else ins[2]
        if chosen is None:
            lw.fail(op, "the selection picks a tensor that does not depend on the image")
        lw.values[out.ref()] = chosen
    elif t == "OneHot" and ins[0] is codes:
        _require_plain_codes(lw, op, codes)
        if int(op.get_attr("axis")) not in (-1, op.inputs[0].shape.rank):
            lw.fail(op, f"only a one-hot along a new last axis is supported, got axis {op.get_attr('axis')}")
        depth = tf.get_static_value(op.inputs[1])
        on, off = tf.get_static_value(op.inputs[2]), tf.get_static_value(op.inputs[3])
        if depth is None or on is None or off is None:
            lw.fail(op, "its depth, on_value and off_value must be constants")
        _check_code_rank(lw, op)
        one_hot_steps(lw, op, codes[1], int(depth), float(on), float(off), out)
    elif t in ("GatherV2", "ResourceGather") and ins[-1 if t == "ResourceGather" else 1] is codes:
        _require_plain_codes(lw, op, codes)
        if t == "GatherV2":
            axis = tf.get_static_value(op.inputs[2])
            if axis is None or int(axis) != 0 or op.get_attr("batch_dims") != 0 or ins[0] is not None:
                lw.fail(op, "only a lookup of the codes in an image-independent table (an Embedding) is supported")
            table = op.inputs[0]
        else:
            if op.get_attr("batch_dims") != 0:
                lw.fail(op, "only a lookup of the codes in an image-independent table (an Embedding) is supported")
            with tf.name_scope(op.name + "_table"):
                table = tf.raw_ops.ReadVariableOp(resource=op.inputs[0], dtype=op.get_attr("dtype"))
        if table.shape.rank != 2 or table.shape[0] is None:
            lw.fail(op, f"the table must be (codes, features), got {table.shape}")
        _check_code_rank(lw, op)
        onehot = one_hot_steps(lw, op, codes[1], int(table.shape[0]), 1.0, 0.0, None)
        with tf.name_scope(op.name + "_as_conv"):
            kernel = tf.reshape(tf.cast(table, tf.float32), (1, 1, int(table.shape[0]), int(table.shape[1])))
        lw.add(op, "conv", [onehot], [lw.const(kernel)], {"dh": 1, "dw": 1, "padding": "SAME"},
               int(table.shape[1]))
    else:
        lw.fail(op, "integer code inputs may only be cast, one-hot encoded (OneHot) or looked up in a "
                    "table (Embedding, GatherV2 / ResourceGather)")


def _require_plain_codes(lw, op, codes):
    if codes[2] != 0:
        lw.fail(op, "it reads the codes shifted by " + ("an amount unknown while tracing" if codes[2] is None
                                                        else f"{codes[2]:+d}"))


def _check_code_rank(lw, op):
    rank = op.outputs[0].shape.rank
    if rank != 4:
        lw.fail(op, f"the codes must be (batch, H, W) before it (a (batch, H, W, features) result), "
                    f"got a rank-{rank} result")


def one_hot_steps(lw, op, codes_buffer, depth, on, off, out_tensor):
    """one_hot(level)[k] = relu(1 - |level - k|), exact in float32 for integer levels: five per-position
    elementwise steps over `depth` channels from the code buffer (no new step kind in the executor);
    then off + (on - off) * that. Returns the buffer; out_tensor (if given) is bound to it."""
    with tf.name_scope(op.name + "_one_hot"):
        ones = tf.ones((1, 1, 1, depth), tf.float32)
        minus_k = tf.constant(-np.arange(depth, dtype=np.float32))
        one = tf.constant(1.0, tf.float32)
        scale = tf.constant(np.float32(on - off))
        offset = tf.constant(np.float32(off))
    b = lw.add(op, "conv", [codes_buffer], [lw.const(ones)], {"dh": 1, "dw": 1, "padding": "SAME"}, depth, bind=False)
    b = lw.add(op, "binary", [b], [lw.const(minus_k)], {"fn": "add", "const_first": False}, depth, bind=False)
    b = lw.add(op, "act", [b], [], {"fn": "abs"}, depth, bind=False)
    b = lw.add(op, "binary", [b], [lw.const(one)], {"fn": "sub", "const_first": True}, depth, bind=False)
    b = lw.add(op, "act", [b], [], {"fn": "relu"}, depth, bind=False)
    if (on, off) != (1.0, 0.0):
        b = lw.add(op, "binary", [b], [lw.const(scale)], {"fn": "mul", "const_first": False}, depth, bind=False)
        b = lw.add(op, "binary", [b], [lw.const(offset)], {"fn": "add", "const_first": False}, depth, bind=False)
    if out_tensor is not None:
        lw.values[out_tensor.ref()] = ("nhwc", b)
    return b
