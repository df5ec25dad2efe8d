"""Python front end (program IR): causality of a lowered program, computed from its kernels' zeros.

docs/SEMANTICS.md, "Causality is computed, not assumed". A frontier is the latest image element (dy, dx, image
channel) a buffer channel depends on, relative to its own position (a coarse grid's: its anchor, in image
coordinates; docs/SEMANTICS.md "Grids"), in raster order; every step maps its
inputs' frontiers to its output's. From the frontiers come the refusal of a model that sees the future
(naming the layer) and each step's phase (which colour pass computes it) that the spec writer records.
NumPy only: no TensorFlow needed.
"""

import numpy as np

from pixelcnn_fast.program.ir import LoweringError, NotCausalError, conv_kernel_4d, image_tap_offsets, step_conv_taps

__all__ = ["NO_DEPENDENCY", "encode_frontier", "decode_frontier", "frontiers", "analyse_causality",
           "step_phase", "channel_phase_runs", "step_delays", "bounds"]

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


def _reads_inside(program, step, dy, dx):
    """Whether a conv tap, transposed-conv tap or shift at image offset (dy, dx) reads inside its input's grid from
    some output position. One that only ever reads past the border (the zeros of a one-row image's SAME stride-2
    conv, its tap one row below) carries no dependency: the frontiers are clipped at the border, as the executor's
    per-position schedule is (column_program_grids.cc reads only positions inside the grid)."""
    fo, fi = program.grid(step.out), program.grid(step.ins[0])
    if step.kind == "conv_transpose":  # fine i reads coarse (i + o) / s where s divides i + o
        axes = zip((dy // fo[0], dx // fo[1]), (step.attrs["sy"], step.attrs["sx"]), fo[2:], fi[2:])
        return all(any((i + o) % s == 0 and 0 <= (i + o) // s < n_in for i in range(n_out))
                   for o, s, n_out, n_in in axes)
    s = (step.attrs.get("sy", 1), step.attrs.get("sx", 1)) if step.kind == "conv" else (1, 1)
    axes = zip((dy // fi[0], dx // fi[1]), s, fo[2:], fi[2:])  # output I reads input s I + o
    return all(any(0 <= s_ * i + o < n_in for i in range(n_out)) for o, s_, n_out, n_in in axes)


def frontiers(program, consts):
    """Frontier keys (per channel) of every buffer."""
    keys = [None] * len(program.buffer_channels)
    c_img = program.image_shape[2]
    keys[0] = np.array([encode_frontier(0, 0, c) for c in range(c_img)], np.int64)
    for step in program.steps:
        ins = [keys[b] for b in step.ins]
        if step.kind in ("conv", "conv_transpose"):
            kernel = conv_kernel_4d(step, consts[step.consts[0]])
            out = np.full(kernel.shape[3], NO_DEPENDENCY, np.int64)
            for ky, kx, oy, ox in image_tap_offsets(program, step, kernel):
                live = kernel[ky, kx] != 0  # (cin, cout): the kernel's zeros are the mask
                if not live.any() or not _reads_inside(program, step, oy, ox):
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
        elif step.kind == "shift":  # reads its input at (dy, dx): the frontier moves with the data
            fy, fx = program.grid(step.out)[:2]
            dy, dx = fy * step.attrs["dy"], fx * step.attrs["dx"]
            out = _shift(ins[0], dy, dx) if _reads_inside(program, step, dy, dx) else \
                np.full_like(ins[0], NO_DEPENDENCY)
        else:  # pragma: no cover - every kind is handled above
            raise AssertionError(step.kind)
        keys[step.out] = out
    return keys


_NO_BOUND = np.int64(1 << 62)


def bounds(program, consts, heads):
    """Per buffer channel, the frontier it must stay strictly below for the head to be causal (docs/SEMANTICS.md,
    "Delays"): the head channel predicting image channel c must stay below (0, 0, c); a step that reads its input
    at offset o passes its own bound, moved by -o, to that input. A buffer that no head channel reads has no
    bound: a vertical stack may see its whole row as long as its readers see it through a down-shift."""
    out = [np.full(ch, _NO_BOUND, np.int64) for ch in program.buffer_channels]
    out[program.logits_buffer] = np.minimum(out[program.logits_buffer], heads)
    for step in reversed(program.steps):
        b = out[step.out]
        if (b == _NO_BOUND).all():
            continue
        if step.kind in ("conv", "conv_transpose"):
            kernel = conv_kernel_4d(step, consts[step.consts[0]])
            target = out[step.ins[0]]
            for ky, kx, oy, ox in image_tap_offsets(program, step, kernel):
                live = kernel[ky, kx] != 0
                if live.any() and _reads_inside(program, step, oy, ox):
                    moved = np.where(b == _NO_BOUND, _NO_BOUND, _shift(b, -oy, -ox))
                    target[:] = np.minimum(target, np.where(live, moved[None, :], _NO_BOUND).min(axis=1))
        elif step.kind == "shift":
            fy, fx = program.grid(step.out)[:2]
            dy, dx = fy * step.attrs["dy"], fx * step.attrs["dx"]
            target = out[step.ins[0]]
            target[:] = np.minimum(target, np.where(b == _NO_BOUND, _NO_BOUND, _shift(b, -dy, -dx)))
        elif step.kind in ("binary", "act", "reduce"):
            for i in step.ins:
                t = out[i]
                t[:] = np.minimum(t, b if t.size == b.size else b.min())
        elif step.kind == "concat":
            at = 0
            for kind, i in step.attrs["order"]:
                n = program.buffer_channels[step.ins[i]] if kind == "buf" else consts[step.consts[i]].shape[-1]
                if kind == "buf":
                    t = out[step.ins[i]]
                    t[:] = np.minimum(t, b[at:at + n])
                at += n
        elif step.kind == "gather":
            t = out[step.ins[0]]
            np.minimum.at(t, np.asarray(step.attrs["channels"], np.int64), b)
        elif step.kind == "softmax":
            g = step.attrs["group"]
            t = out[step.ins[0]]
            t[:] = np.minimum(t, np.repeat(b.reshape(-1, g).min(axis=1), g))
        else:  # pragma: no cover
            raise AssertionError(step.kind)
    return out


def analyse_causality(program, consts, mixture=False):
    """Raises NotCausalError naming the first layer that breaks causality; returns the frontiers.

    mixture: the head is a logistic mixture (docs/SEMANTICS.md), which draws every channel of a pixel from one
    prediction, coupling the colours inside the draw: no head channel may see any image channel of its own
    pixel. The first step (in program order) whose output reaches its bound (see `bounds`) is the layer to blame: the
    one that lets a pixel the prediction may not see through. Offsets up to the head's and its readers' taps are
    allowed, so a buffer computed with a delay (a frontier after its own position) is not blamed."""
    keys = frontiers(program, consts)
    c_img = program.image_shape[2]
    head = keys[program.logits_buffer]
    levels = program.output_levels if program.output_levels > 1 else \
        max(1, program.buffer_channels[program.logits_buffer] // c_img)
    limit = np.array([encode_frontier(0, 0, 0 if mixture else min(k // levels, c_img - 1))
                      for k in range(head.size)], np.int64)
    bad = [k for k, key in enumerate(head) if key >= limit[k]]
    if not bad:
        return keys
    bound = bounds(program, consts, limit)
    future = encode_frontier(0, 1, 0)  # anything at or after the next position
    _refuse_upsampling_ahead(program, keys, bound, future)
    first_over = None
    for step in program.steps:  # the first layer that sees a later pixel than its readers allow
        k = keys[step.out]
        over = k >= bound[step.out]
        if first_over is None and over.any():
            first_over = (step, int(np.nonzero(over)[0][0]))
        if (over & (k >= future)).any():
            dy, dx, c = decode_frontier(k[over & (k >= future)].max())
            raise NotCausalError(
                f"layer '{step.layer}' ({step.layer_class}) reads the pixel at offset "
                f"({dy:+d}, {dx:+d}): the model sees the future (op '{step.op_name}', {step.op_type})")
    if mixture:
        _refuse_mixture_seeing_its_pixel(program, keys, bound)
    # The prediction sees its own pixel. Blame: docs/SEMANTICS.md's channel convention (contiguous blocks, one
    # per image channel): block j of any buffer may depend on image channels < j at its own pixel. The first
    # step, among those that feed the head, whose output breaks that is the layer that lets the prediction see
    # its pixel; without such a step (no buffer in blocks), the first step over its bound.
    ancestors = _ancestors(program, program.logits_buffer)
    for step in program.steps:
        channels = program.buffer_channels[step.out]
        if step.out not in ancestors or channels % c_img:
            continue
        block = np.arange(channels) // (channels // c_img)
        block_limit = np.array([encode_frontier(0, 0, j) for j in block])
        over = np.nonzero(keys[step.out] >= block_limit)[0]
        if over.size:
            first_over = (step, int(over[0]))
            _, _, predicts = decode_frontier(block_limit[over[0]])
            break
    else:
        if first_over is None:  # pragma: no cover - the head itself is over its bound
            raise NotCausalError(f"the output for image channel {bad[0] // levels} depends on that channel at "
                                 "its own pixel")
        step, k = first_over
        _, _, predicts = decode_frontier(bound[step.out][k])
    step, k = first_over
    dy, dx, ch = decode_frontier(keys[step.out][k])
    raise NotCausalError(
        f"layer '{step.layer}' ({step.layer_class}) reads the pixel at offset ({dy:+d}, {dx:+d}), image "
        f"channel {ch}, into channels that predict image channel {predicts}: the model "
        f"sees the pixel it predicts (op '{step.op_name}', {step.op_type})")


def _refuse_upsampling_ahead(program, keys, bound, future):
    """A transposed conv whose output sees the future (over the bound its readers allow) although its coarse input
    does not is the layer to blame (docs/SEMANTICS.md, "Grids"): it hands a fine position the coarse position whose
    anchor lies after it (a crop taken from the wrong side). Blaming the first step over its bound would name the
    first layer of the stream instead, since the bound reaches back through the up-sampling to everything before."""
    for step in program.steps:
        k = keys[step.out]
        ahead = (k >= bound[step.out]) & (k >= future)
        if step.kind == "conv_transpose" and ahead.any() and (keys[step.ins[0]] < future).all():
            dy, dx, _ = decode_frontier(k[ahead].max())
            raise NotCausalError(
                f"layer '{step.layer}' ({step.layer_class}) up-samples a coarse grid so that a position reads the "
                f"pixel at offset ({dy:+d}, {dx:+d}): the model sees the future (op '{step.op_name}', {step.op_type}: "
                "a transposed conv's crop must keep the coarse positions at or before each fine one)")


def _refuse_mixture_seeing_its_pixel(program, keys, bound):
    """A mixture head's every channel must have its frontier strictly before (0, 0, 0); otherwise the first step
    feeding the head that reads its own pixel is named: the first over the bound its readers allow (`bounds`; a
    delayed buffer that sees its own row through a down-shift is not)."""
    own = encode_frontier(0, 0, 0)
    if not (keys[program.logits_buffer] >= own).any():
        return
    ancestors = _ancestors(program, program.logits_buffer)
    for step in program.steps:
        over = np.nonzero(keys[step.out] >= bound[step.out])[0]
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


def _reads(program, consts, step):
    """(buffer, oy, ox) of every read of a step: a conv's live taps, a shift's offset, (0, 0) otherwise. Offsets
    that never land in the image (|oy| >= H or |ox| >= W) are left out, as the C++ executor does."""
    h, w, _ = program.image_shape
    if step.kind == "conv":
        kernel = conv_kernel_4d(step, consts[step.consts[0]])
        taps = [(step.ins[0], oy, ox) for ky, kx, oy, ox in step_conv_taps(step, kernel)
                if np.any(kernel[ky, kx] != 0)]
    elif step.kind == "shift":
        taps = [(step.ins[0], step.attrs["dy"], step.attrs["dx"])]
    else:
        taps = [(b, 0, 0) for b in step.ins]
    return [(b, oy, ox) for b, oy, ox in taps if -h < oy < h and -w < ox < w]


def ready_step(delay, i, j, w):
    """The raster step at which a step of delay (dy, dx) computes position (i, j): (i + dy) W + min(j + dx, W).
    (0, 0): its own position's step, in the colour passes; any other: before them (docs/SEMANTICS.md, "Delays")."""
    dy, dx = delay
    return (i + dy) * w + min(j + dx, w)


def _min_dx(src, reader_dy, oy, ox, w):
    """The smallest dx with which a reader of delay (reader_dy, dx) finds a source of delay `src` computed at
    offset (oy, ox) in every column: for each column j, (oy + src_dy - reader_dy) W + min(j + ox + src_dx, W)
    <= min(j + dx, W), i.e. dx >= that left side - j while it is <= W. None when no dx does (a later row)."""
    cols = np.arange(max(0, -ox), min(w, w - ox))
    if cols.size == 0:
        return -(1 << 30)
    need = (oy + src[0] - reader_dy) * w + np.minimum(cols + ox + src[1], w)
    if (need > w).any():
        return None
    return int((need - cols).max())


def read_is_ready(src, reader, oy, ox, w):
    """Whether a reader of delay `reader` finds buffer values of delay `src` computed at offset (oy, ox), for every
    column (rows cancel out). A colour-pass source (0, 0) read by a delayed reader counts as (0, 1): the colour
    passes of a step run after its delayed steps; a colour-pass reader of a colour-pass source is ordered by the
    phases (o at or before (0, 0)). csrc/core/column_program.cc check_schedule is the same rule."""
    if reader == (0, 0) and src == (0, 0):
        return (oy, ox) <= (0, 0)
    if reader != (0, 0) and src == (0, 0):
        src = (0, 1)
    dx = _min_dx(src, reader[0], oy, ox, w)
    return dx is not None and dx <= reader[1]


def step_delays(program, consts):
    """Each step's delay (dy, dx) (docs/SEMANTICS.md, "Delays"): it computes position (i, j) at the raster step
    (i + dy) W + min(j + dx, W) -- before the colour passes, or in them for (0, 0). All (0, 0) when no step reads
    ahead of its position (every seed model); otherwise each step as early as its reads allow (the smallest dy,
    then the smallest dx that read_is_ready accepts), or in the colour passes when that is no later. Raises
    LoweringError naming the layers when the prediction would be computed late (never for the zoo's models:
    the clamp at the row's end means a read one row up is ready whatever its horizontal reach)."""
    h, w, _ = program.image_shape
    reads = [_reads(program, consts, st) for st in program.steps]
    if all((oy, ox) <= (0, 0) for r in reads for _, oy, ox in r):
        return [(0, 0)] * len(program.steps)
    delay = {0: (0, 0)}
    out = []
    for st, rs in zip(program.steps, reads):
        srcs = [((0, 1) if delay.get(b, (0, 0)) == (0, 0) else delay[b], oy, ox) for b, oy, ox in rs]
        normal_ok = all(read_is_ready(delay.get(b, (0, 0)), (0, 0), oy, ox, w) for b, oy, ox in rs)
        best = None
        # A step that reads nothing inside the image (a one-row image's vertical stack) may run a row ahead.
        dy = max((oy + src[0] for src, oy, ox in srcs), default=-1)
        for dy_try in (dy, dy + 1):
            dxs = [_min_dx(src, dy_try, oy, ox, w) for src, oy, ox in srcs]
            if None not in dxs:
                best = (dy_try, max(dxs, default=0))
                break
        earlier = best is not None and (best[0] < 0 or (best[0] == 0 and best[1] < 0))
        d = best if (earlier or not normal_ok) else (0, 0)
        if d is None or (d == (0, 0) and not normal_ok):  # pragma: no cover - a pre-pass schedule always exists
            raise LoweringError(f"layer '{st.layer}' ({st.layer_class}): no schedule computes its reads in time")
        delay[st.out] = d
        out.append(d)
    late = delay.get(program.logits_buffer, (0, 0))
    if late != (0, 0):
        producers = {s.out: s for s in program.steps}
        ancestors = _ancestors(program, program.logits_buffer)
        worst = max((s for s in program.steps if s.out in ancestors), key=lambda s: delay[s.out])
        head = producers[program.logits_buffer]
        raise LoweringError(
            f"layer '{head.layer}' ({head.layer_class}) would be computed with delay {late} (rows, columns) after "
            f"its own position (op '{head.op_name}'): it reads layer '{worst.layer}' ({worst.layer_class}), "
            f"computed with delay {delay[worst.out]}: the prediction sees a buffer that is not complete yet (a "
            "buffer that sees later rows read without a down-shift)")
    return out
