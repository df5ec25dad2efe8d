"""Python front end (program IR): causality of a lowered program, computed from its kernels' zeros.

docs/SEMANTICS.md, "Causality is computed, not assumed". A frontier is the latest image element (dy, dx, image
channel) a buffer channel depends on, relative to its own position, in raster order; every step maps its
inputs' frontiers to its output's. From the frontiers come the refusal of a model that sees the future
(naming the layer) and each step's phase (which colour pass computes it) that the spec writer records.
NumPy only: no TensorFlow needed.
"""

import numpy as np

from pixelcnn_fast.program.ir import LoweringError, NotCausalError, conv_kernel_4d, conv_taps

__all__ = ["NO_DEPENDENCY", "encode_frontier", "decode_frontier", "frontiers", "analyse_causality",
           "step_phase", "channel_phase_runs", "refuse_reads_ahead"]

# A frontier is encoded as one int64 so that integer order is raster order and a tap offset is an addition.
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


def analyse_causality(program, consts, mixture=False):
    """Raises NotCausalError naming the first layer that breaks causality; returns the frontiers.

    mixture: the head is a logistic mixture (docs/SEMANTICS.md), which draws every channel of a pixel from one
    prediction, coupling the colours inside the draw: no head channel may see any image channel of its own
    pixel."""
    keys = frontiers(program, consts)
    future = encode_frontier(0, 1, 0)  # anything at or after the next position
    for step in program.steps:
        k = keys[step.out]
        if (k >= future).any():
            dy, dx, c = decode_frontier(k.max())
            raise NotCausalError(
                f"layer '{step.layer}' ({step.layer_class}) reads the pixel at offset "
                f"({dy:+d}, {dx:+d}): the model sees the future (op '{step.op_name}', {step.op_type})")
    if mixture:
        _refuse_mixture_seeing_its_pixel(program, keys)
        return keys
    # Each head channel for image channel c may depend on image channels < c at its own position.
    c_img = program.image_shape[2]
    head = keys[program.logits_buffer]
    levels = program.output_levels if program.output_levels > 1 else \
        max(1, program.buffer_channels[program.logits_buffer] // c_img)
    bad = [k for k, key in enumerate(head) if key >= encode_frontier(0, 0, k // levels)]
    if not bad:
        return keys
    # Blame: docs/SEMANTICS.md's channel convention (contiguous blocks, one per image channel): block j of
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


def _refuse_mixture_seeing_its_pixel(program, keys):
    """A mixture head's every channel must have its frontier strictly before (0, 0, 0); otherwise the first step
    feeding the head that reads its own pixel is named."""
    own = encode_frontier(0, 0, 0)
    if not (keys[program.logits_buffer] >= own).any():
        return
    ancestors = _ancestors(program, program.logits_buffer)
    for step in program.steps:
        over = np.nonzero(keys[step.out] >= own)[0]
        if step.out in ancestors and over.size:
            _, _, ch = decode_frontier(keys[step.out][over[0]])
            raise NotCausalError(
                f"layer '{step.layer}' ({step.layer_class}) reads the pixel at offset (+0, +0), image channel {ch}, "
                f"and feeds the logistic-mixture head: a mixture draws every channel of a pixel from one "
                f"prediction (the colours are coupled inside the draw), so its head may not see any channel of "
                f"its own pixel; use mask A without colour groups up to the head (op '{step.op_name}', "
                f"{step.op_type})")
    raise NotCausalError("the logistic-mixture head depends on its own pixel")  # pragma: no cover


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


def step_phase(keys):
    """Image channels at a step's own pixel its output depends on (0: none)."""
    top = keys.max() if keys.size else NO_DEPENDENCY
    if top < encode_frontier(0, 0, 0):
        return 0
    return decode_frontier(top)[2] + 1


def channel_phase_runs(keys, phase):
    """Each channel's own phase (image channels at its pixel it depends on) as (phase, count) runs, or
    None when every channel has the step's phase. The executor then computes a channel only in the colour
    pass of its phase: an RGB colour-group model's R, G and B blocks once each, not once per channel."""
    keys = np.asarray(keys, np.int64)
    own = keys >= encode_frontier(0, 0, 0)
    phases = np.where(own, (keys & 0xFFFF) + 1, 0)
    if keys.size == 0 or np.all(phases == phase):
        return None
    runs, start = [], 0
    for k in range(1, phases.size + 1):
        if k == phases.size or phases[k] != phases[start]:
            runs += [int(phases[start]), k - start]
            start = k
    return runs


def refuse_reads_ahead(program, consts):
    """A causal model whose conv reads a later position of its input (a gated PixelCNN's vertical stack that
    reads its own row of a buffer that sees only the rows above) needs that buffer computed ahead of the
    raster position (docs/SEMANTICS.md, "Delays"): not supported yet, refused naming the layer."""
    for st in program.steps:
        if st.kind != "conv":
            continue
        kernel = conv_kernel_4d(st, consts[st.consts[0]])
        for ky, kx, oy, ox in conv_taps(kernel, st.attrs["dh"], st.attrs["dw"], st.attrs["padding"]):
            if (oy, ox) > (0, 0) and np.any(kernel[ky, kx] != 0):
                raise LoweringError(
                    f"layer '{st.layer}' ({st.layer_class}) reads offset ({oy:+d}, {ox:+d}) of its input, ahead of "
                    f"the raster position (op '{st.op_name}', {st.op_type}): the model is causal, but the cached "
                    f"sampler cannot yet compute a buffer ahead of the position it samples (delayed execution, "
                    f"e.g. a gated PixelCNN's vertical stack reading its own row). Mask that conv to the rows "
                    f"above (and the left of its own row), or sample with pixelcnn_fast.naive")
