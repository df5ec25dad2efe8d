"""Python front end: naive repredict sampling loops (predict / tf.function / row-cropped), the cached sampler's oracle."""

# What users do today (shared/seeds/000, 002): re-run the whole network on the whole image once per pixel and
# per image channel, O((H*W)^2) work.  The cached sampler is checked against these loops (same seed -> same
# images, up to float rounding at a CDF boundary) and benchmarked against them (docs/SEMANTICS.md, "How speed is
# shown").  Every uniform and every level comes from pixelcnn_fast.rng, the numba twin of the C++ core's
# Philox4x32-10 and inverse-CDF draws, never from numpy: numpy's vectorised float32 exp/pow differ from libm's
# in the last ulp for a large share of inputs, which would turn the oracle into a source of disagreements.
#
# Output probabilities vs logits (argument `output`): output="auto" reads the model's last op from one trace
# (pixelcnn_fast.naive_forward.classify_output says how); when that op does not say, ValueError asks for
# output="probs" or output="logits".
#
# Bernoulli heads that output probabilities: the contract draws level 1 iff u < sigmoid(logit / T), and the
# cached sampler takes the logit before the model's sigmoid.  Here the logit is recovered as
# log(p) - log1p(-p) (float64, rounded to float32; p = 0 / 1 give -inf / +inf, which draw 0 / 1), then drawn
# with rng.draw_bernoulli.  sigmoid(logit(p)) equals p up to a few float32 ulp, so both samplers pick the same
# level except when u lies within rounding of p; the margin reported for that draw says so.

import dataclasses
import sys
import time

import numpy as np
import tensorflow as tf

from pixelcnn_fast import rng as _rng
from pixelcnn_fast.checks import check_count, check_image_offset, check_seed, check_temperature
from pixelcnn_fast.naive_forward import (WHERE as _WHERE, PixelTracer, RowsPaddingError, check_output_shape,
                                         check_padded_rows, classify_output, pad_rows, trace_first_rows, trace_rows)

__all__ = ["sample", "complete", "NaiveResult", "RowsPaddingError"]

MODES = ("predict", "graph", "rows")
HEADS = ("bernoulli", "categorical", "logistic_mixture")
OUTPUTS = ("auto", "probs", "logits")
VALUE_MAPS = ("identity", "level/N", "level/(N-1)", "level/255", "level/127.5-1")


@dataclasses.dataclass
class NaiveResult:
    """What a naive sampling loop produced.

    levels:        int32 (n, H, W, C) sampled levels; positions not reached (max_steps) stay -1.
    margins:       float32 (n, H, W, C) distance of each draw's uniform to the nearest CDF boundary
                   (rng's *_with_margin); NaN where not reached.  Two correct implementations may disagree
                   on a draw only where this is below rng.boundary_tolerance(levels).
    images:        float32 (n, H, W, C) the model input at the end: value_map(level), 0 where not reached.
    steps_run:     model evaluations done (one per pixel per image channel, covering all n images).
    steps_total:   H * W * C, the evaluations of a complete run.
    seconds:       wall time of the sampling loop (evaluations, transfers, draws), EXCLUDING trace_seconds.
    trace_seconds: time spent creating tf.function traces and running each new trace once on the current
                   input before its first timed use (graph optimisation happens there).  For mode="predict"
                   Keras builds its predict function inside the first predict call, which is in `seconds`:
                   benchmarks should make one max_steps=1 call first (Keras keeps that function on the model).
    mode, output:  the loop used and how the model's output was read ("probs" or "logits", auto resolved).
    """
    levels: np.ndarray
    margins: np.ndarray
    images: np.ndarray
    steps_run: int
    steps_total: int
    seconds: float
    trace_seconds: float
    mode: str
    output: str

    @property
    def complete(self):
        return self.steps_run == self.steps_total

    @property
    def estimated_full_seconds(self):
        """seconds extrapolated linearly to steps_total (the loop's cost per step is the same at every step
        for "predict" and "graph"; for "rows" it grows with the row, so extrapolating from the first rows
        underestimates: time a full row count, or report the rows actually timed)."""
        return self.seconds * self.steps_total / max(self.steps_run, 1)


# --------------------------------------------------------------------------- argument checks

def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_int(value, name, lo, hi=None):
    if not _is_int(value) or value < lo or (hi is not None and value >= hi):
        bound = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi})"
        got = repr(value) if _is_int(value) or isinstance(value, (float, bool, str)) else type(value).__name__
        raise ValueError(f"{_WHERE}: {name} must be {bound}, got {got}")
    return int(value)


def _value_table(value_map, levels):
    """float32 (levels,) model-input value of each level: the sampled level is written back through it."""
    if callable(value_map):
        # Evaluated once per level (levels <= a few hundred), so a scalar-only callable works and the loop
        # does a table lookup per step.
        try:
            table = np.asarray([value_map(k) for k in range(levels)], np.float64)
        except Exception as exc:
            raise ValueError(f"{_WHERE}: value_map (callable) must map each level 0..{levels - 1} to a float; "
                             f"calling it failed: {type(exc).__name__}: {exc}") from exc
        if table.shape != (levels,) or not np.all(np.isfinite(table)):
            raise ValueError(f"{_WHERE}: value_map (callable) must map each level 0..{levels - 1} to a finite "
                             f"float, got {table.tolist() if table.size <= 8 else table.shape}")
        return table.astype(np.float32)
    if not isinstance(value_map, str) or value_map not in VALUE_MAPS:
        raise ValueError(f"{_WHERE}: value_map must be one of {', '.join(map(repr, VALUE_MAPS))} or a callable "
                         f"level -> float, got {value_map!r}")
    # Same float32 division as the fixtures' value_map_fn, so the model sees the values it was trained on.
    if value_map == "level/127.5-1":  # PixelCNN++'s [-1, 1]: level * scale + offset, as the Sampler's value map
        return np.arange(levels, dtype=np.float32) * np.float32(1.0 / 127.5) + np.float32(-1.0)
    scale = {"identity": 1.0, "level/N": float(levels), "level/(N-1)": float(levels - 1),
             "level/255": 255.0}[value_map]
    return np.arange(levels, dtype=np.float32) / np.float32(scale)


def _declared_inputs(model):
    try:
        inputs = getattr(model, "inputs", None)
    except Exception:  # a subclassed model may raise instead of returning nothing
        inputs = None
    return list(inputs) if inputs else []


def _code_input(model):
    """(dtype name, rank) of an integer image input (codes: docs/SEMANTICS.md, "Integer inputs"), else None."""
    inputs = _declared_inputs(model)
    if inputs and tf.as_dtype(inputs[0].dtype).is_integer:
        return tf.as_dtype(inputs[0].dtype).name, len(inputs[0].shape)
    return None


def _model_image(image, code_input):
    """The model's image input for the loop's float32 (n, H, W, C) image: itself, or its integer codes."""
    if code_input is None:
        return image
    codes = np.rint(image).astype(code_input[0])
    return codes[..., 0] if code_input[1] == 3 else codes


def _resolve_image_shape(model, image_shape):
    inputs = _declared_inputs(model)
    declared = tuple(inputs[0].shape[1:]) if inputs else None
    if declared is not None and len(declared) == 2 and _code_input(model) is not None:
        declared = declared + (1,)  # (batch, H, W) codes: one image channel
    if image_shape is None:
        if declared is None:
            raise ValueError(f"{_WHERE}: image_shape=(H, W, C) is required: model '{model.name}' "
                             f"({type(model).__name__}) declares no inputs (a subclassed model), got None")
        if len(declared) != 3 or any(d is None for d in declared):
            raise ValueError(f"{_WHERE}: image_shape=(H, W, C) is required: model '{model.name}' declares an "
                             f"image input of shape {tuple(inputs[0].shape)}, not (batch, H, W, C) with known "
                             f"H, W, C")
        image_shape = declared
    if not (isinstance(image_shape, (tuple, list)) and len(image_shape) == 3
            and all(_is_int(d) and d >= 1 for d in image_shape)):
        raise ValueError(f"{_WHERE}: image_shape must be (H, W, C), three positive integers, got {image_shape!r}")
    image_shape = tuple(int(d) for d in image_shape)
    if declared is not None and len(declared) == 3 and any(
            d is not None and int(d) != s for d, s in zip(declared, image_shape)):
        raise ValueError(f"{_WHERE}: image_shape must agree with model '{model.name}''s image input "
                         f"{tuple(declared)}, got {image_shape}")
    return image_shape


def _resolve_conditions(model, conditions, n):
    if conditions is None:
        conditions = []
    elif not isinstance(conditions, (list, tuple)):
        conditions = [conditions]
    out = []
    for k, cond in enumerate(conditions):
        a = np.asarray(cond)
        if a.ndim < 1 or a.shape[0] != n:
            raise ValueError(f"{_WHERE}: conditions[{k}] must have shape (n, ...) with n = {n} (one row per "
                             f"image), got shape {a.shape}")
        if a.dtype.kind == "f" and a.dtype != np.float32:
            a = a.astype(np.float32)  # Keras inputs are float32; float64 labels would retrace/cast anyway
        out.append(np.ascontiguousarray(a))
    inputs = _declared_inputs(model)
    if inputs and len(inputs) != 1 + len(out):
        raise ValueError(f"{_WHERE}: conditions must give the model's {len(inputs) - 1} input(s) after the "
                         f"image (model '{model.name}' has {len(inputs)} inputs), got {len(out)}")
    return out


# --------------------------------------------------------------------------- the loop

def sample(model, n, *, mode="rows", head, levels=2, value_map="identity", seed=0, temperature=1.0,
           conditions=None, image_shape=None, output="auto", max_steps=None, progress=False,
           positions=None, image=None, image_offset=0, known_levels=None, components=None,
           mixture_layout="pixelcnn_pp"):
    """Samples n images by re-running the model on the whole (or row-cropped) image once per pixel and channel.

    mode:        "predict": model.predict(image, verbose=0) on the full image each step (the seeds' loop);
                 "graph": a tf.function forward of the full image each step;
                 "rows": a tf.function forward of rows 0..i only (for a causal model the outputs in row i
                 depend only on rows <= i).  One trace per row count, created lazily when the loop reaches
                 that row (H traces in all, each with static shapes).  A functional model's declared input
                 shape is bypassed through Model.call.  A model that takes only some heights (a U-net: a
                 multiple m of its total stride, the smallest height below H it accepts) runs on rows 0..i
                 padded with zeros to the next multiple of m; each padded crop is first checked against one
                 full forward pass on random images (its outputs at rows <= i must not change: else
                 RowsPaddingError, a ValueError).  A model that takes no crop (a fixed-height Reshape) is
                 refused with a ValueError pointing to mode="graph".
    head:        "bernoulli" (output (n, H, W, C), levels must be 2) or "categorical" (output
                 (n, H, W, C*levels), channel c's levels at [c*levels, (c+1)*levels), or (n, H, W, C, levels)),
                 or "logistic_mixture" (output (n, H, W, 3K) grey or (n, H, W, 10K) RGB, PixelCNN++'s layout;
                 levels: the levels drawn, 256 for PixelCNN++; docs/SEMANTICS.md, "Logistic-mixture heads").
    components:  a mixture's K; inferred from the model's declared output when None.
    mixture_layout: the mixture's parameter layout, "pixelcnn_pp" or "tfp" (tfd.PixelCNN's; philox.h).
    value_map:   level -> model input: "identity", "level/N" (level/levels), "level/(N-1)", "level/255", or a
                 callable called once per level 0..levels-1 with a Python int, returning a float.
    seed:        integer in [0, 2**64); image k of this call uses Philox counter image = image_offset + k
                 (global: the first images of n=3 equal those of n=2; docs/SEMANTICS.md's global image index).
    image_offset: integer >= 0 with image_offset + n <= 2**32: the first image's index in the seed's stream.
    known_levels: image completion (see `complete`): int32 (n, H, W, C), a level >= 0 is written instead of
                 drawn (its margin is +inf), -1 is drawn; the model is still run at every step.
    temperature: > 0; divides the logits (probabilities: p ** (1/T), renormalised), as the contract says.
    conditions:  further model inputs (one array or a list), each (n, ...): model([image, *conditions]).
    image_shape: (H, W, C); inferred from model.inputs[0] when the model declares inputs.
    output:      "probs" (after sigmoid / softmax), "logits", or "auto": read from the model's last op (see
                 the module comment); raises ValueError when that op does not say.
    max_steps:   stop after this many model evaluations (levels not reached stay -1).
    progress:    print rows done and pixels/s to stderr.

    Raster order; within a pixel, image channels in order, the model re-run for each channel.  The image starts
    as zeros.  Returns a NaiveResult.
    """
    # -- arguments (each error names the argument, what was expected and what came)
    if mode not in MODES:
        raise ValueError(f"{_WHERE}: mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if head not in HEADS:
        raise ValueError(f"{_WHERE}: head must be one of {', '.join(map(repr, HEADS))}, got {head!r}")
    if output not in OUTPUTS:
        raise ValueError(f"{_WHERE}: output must be one of {', '.join(map(repr, OUTPUTS))}, got {output!r}")
    # The rules every sampler front door shares (pixelcnn_fast.checks), in their words.
    n = check_count(n, _WHERE)
    seed = check_seed(seed, _WHERE)
    t32 = check_temperature(temperature, _WHERE)
    levels = _check_int(levels, "levels", 2)
    if head == "bernoulli" and levels != 2:
        raise ValueError(f"{_WHERE}: levels must be 2 for head='bernoulli' (one output per image channel), "
                         f"got {levels}")
    image_offset = check_image_offset(image_offset, n, _WHERE)
    if max_steps is not None:
        max_steps = _check_int(max_steps, "max_steps", 1)
    code_input = _code_input(model)
    if head == "logistic_mixture" and code_input is not None:
        raise ValueError(f"{_WHERE}: head='logistic_mixture' draws image levels, but model '{model.name}' takes "
                         f"integer codes ({code_input[0]})")
    if code_input is not None and value_map != "identity":
        raise ValueError(f"{_WHERE}: model '{model.name}' takes integer codes ({code_input[0]}): a drawn level is "
                         f"fed back as the code itself, so value_map must be 'identity', got {value_map!r}")
    table = _value_table(value_map, levels)
    h, w, c = _resolve_image_shape(model, image_shape)
    conds = _resolve_conditions(model, conditions, n)

    steps_total = h * w * c
    limit = steps_total if max_steps is None else min(max_steps, steps_total)
    head_values = levels
    if mixture_layout not in _rng.MIXTURE_LAYOUTS:
        raise ValueError(f"{_WHERE}: mixture_layout must be one of {_rng.MIXTURE_LAYOUTS}, got {mixture_layout!r}")
    if head == "logistic_mixture":
        components, head_values = _mixture_components(model, components, c)
        if output == "probs":
            raise ValueError(f"{_WHERE}: head='logistic_mixture' reads the mixture's raw parameters; output must be "
                             f"'logits' or 'auto', got 'probs'")
        output = "logits"
    tracer = PixelTracer(model, n, (h, w, c), conds, head, head_values, code_input)
    cond_tensors = [tf.constant(a) for a in conds]

    # -- the forward of the chosen mode; the first trace also tells "auto" what the output is
    full_fn, row_fns, use_call, row_multiple = None, {}, None, 1
    if mode == "rows":
        fn, use_call, row_multiple = trace_first_rows(tracer)
        row_fns[row_multiple] = fn
    elif mode == "graph" or output == "auto":
        full_fn = tracer.concrete(h)  # predict mode: only traced (never run) to read the last op
    if output == "auto":
        kind, op = classify_output(tracer.out_tensor, tracer.image_tensor)
        if kind is None:
            raise ValueError(
                f"{_WHERE}: output='auto' cannot tell whether model '{model.name}' outputs probabilities or "
                f"logits: its output comes from TF op '{op.name}' ({op.type}), neither a Sigmoid/Softmax nor "
                f"a linear layer; pass output='probs' (values after sigmoid/softmax) or output='logits'")
        output = kind
    draw_head = "bernoulli" if head == "bernoulli" else output

    # One per (image, position, channel), counter-based, keyed by the global image index.
    uniforms = _rng.uniform_grid(seed, n, h, w, c, image_offset)
    if known_levels is not None:
        known_levels = np.asarray(known_levels)
        if known_levels.shape != (n, h, w, c) or known_levels.dtype != np.int32:
            raise ValueError(f"{_WHERE}: known_levels must be int32 of shape {(n, h, w, c)}, got "
                             f"{known_levels.dtype} {known_levels.shape}")
        if known_levels.min() < -1 or known_levels.max() >= levels:
            raise ValueError(f"{_WHERE}: known_levels must be -1 (draw) or in [0, {levels}), got values in "
                             f"[{known_levels.min()}, {known_levels.max()}]")
    if image is None:
        image = np.zeros((n, h, w, c), np.float32)
    else:
        image = np.array(image, np.float32)  # a copy: the loop writes its draws into it
        if image.shape != (n, h, w, c):
            raise ValueError(f"{_WHERE}: image must have shape {(n, h, w, c)}, got {image.shape}")
    if positions is None:
        positions = [(i, j) for i in range(h) for j in range(w)]
    else:
        positions = [(int(i), int(j)) for i, j in positions]
        bad = [(i, j) for i, j in positions if not (0 <= i < h and 0 <= j < w)]
        if bad:
            raise ValueError(f"{_WHERE}: positions must lie in the {h}x{w} image, got {bad[0]}")
        steps_total = len(positions) * c
        limit = steps_total if max_steps is None else min(max_steps, steps_total)
    out_levels = np.full((n, h, w, c), -1, np.int32)
    out_margins = np.full((n, h, w, c), np.nan, np.float32)

    def warm(fn, crop):
        # The first run of a trace optimises its graph: done outside the timed loop (NaiveResult.trace_seconds).
        start = time.perf_counter()
        fn(tf.constant(_model_image(crop, code_input)), *cond_tensors, tf.constant(0), tf.constant(0))
        tracer.trace_seconds += time.perf_counter() - start

    def evaluate(i, j):
        """(n, C, L) float32 model outputs at pixel (i, j) for the current image."""
        nonlocal use_call
        if mode == "predict":
            model_image = _model_image(image, code_input)
            out = model.predict([model_image, *conds] if conds else model_image, verbose=0)
            if isinstance(out, (list, tuple, dict)):
                raise ValueError(f"{_WHERE}: the model must return one output tensor, got {type(out).__name__}")
            out = np.asarray(out)
            check_output_shape(out.shape, n, h, w, c, head, head_values)
            return np.asarray(out[:, i, j], np.float32).reshape(n, tracer.pixel_rows, tracer.per_channel)
        ij = (tf.constant(i, tf.int32), tf.constant(j, tf.int32))
        if mode == "graph":
            return full_fn(tf.constant(_model_image(image, code_input)), *cond_tensors, *ij).numpy()
        height = pad_rows(i + 1, row_multiple, h)
        crop = image[:, :height]
        if height > i + 1:  # zeros below row i (the slots hold no draws yet: image starts as zeros or `image`)
            crop = crop.copy()
            crop[:, i + 1:] = 0
            if i + 1 not in padding_checked:
                check_padding(i + 1, height)
        fn = row_fns.get(height)
        if fn is None:
            fn, use_call = trace_rows(tracer, height, use_call)
            row_fns[height] = fn
            warm(fn, crop)
        return fn(tf.constant(_model_image(crop, code_input)), *cond_tensors, *ij).numpy()

    padding_checked, check_images, check_outputs = set(), [], []

    def check_padding(rows, height):
        # One-off per row count, like a trace (counted in trace_seconds): at least 3 random images of the model's
        # levels, their full forward once for every row count.
        start = time.perf_counter()
        if not check_images:
            count = n * -(-3 // n)
            drawn = np.random.default_rng(0).integers(0, levels, (count, h, w, c))
            check_images.append(table[drawn].astype(np.float32))
        check_padded_rows(tracer, use_call, rows, height, check_images[0], cond_tensors,
                          lambda x: _model_image(x, code_input), check_outputs)
        padding_checked.add(rows)
        tracer.trace_seconds += time.perf_counter() - start

    if mode == "graph":
        warm(full_fn, image)
    elif mode == "rows":
        first = image[:, :row_multiple].copy()
        first[:, 1:] = 0
        warm(row_fns[row_multiple], first)
    traced_before = tracer.trace_seconds

    def loop_seconds():
        return time.perf_counter() - start - (tracer.trace_seconds - traced_before)

    steps = 0
    start = time.perf_counter()
    for i, j in positions:  # one pixel at a time, its channels in order
        for ch in range(c):
            if steps >= limit:
                break
            if head == "logistic_mixture":  # the pixel's whole head and the channels drawn before it
                values = np.ascontiguousarray(evaluate(i, j)[:, 0, :])
                lv, margin = np.empty(n, np.int32), np.empty(n, np.float32)
                _rng.draw_mixture_rows(values, components, c, ch, out_levels[:, i, j], levels, t32, seed,
                                       image_offset, i * w + j, lv, margin,
                                       _rng.MIXTURE_LAYOUTS.index(mixture_layout))
            else:
                values = evaluate(i, j)[:, ch, :]
                if output == "probs" and (np.any(values < 0) or np.any(values > 1)):
                    bad = values[(values < 0) | (values > 1)][0]
                    raise ValueError(f"{_WHERE}: output='probs' but the model output at row {i}, column {j}, "
                                     f"channel {ch} holds {float(bad)!r}, outside [0, 1]; pass "
                                     f"output='logits' if the model emits logits")
                if head == "bernoulli" and output == "probs":
                    values = _probs_to_logits(values)
                lv, margin = _rng.draw_levels(np.ascontiguousarray(values, np.float32), draw_head, t32,
                                              np.ascontiguousarray(uniforms[:, i, j, ch]), return_margin=True)
            if known_levels is not None:  # completion: a known level is written, not drawn
                given = known_levels[:, i, j, ch]
                lv = np.where(given >= 0, given, lv)
                margin = np.where(given >= 0, np.float32(np.inf), margin)
            out_levels[:, i, j, ch] = lv
            out_margins[:, i, j, ch] = margin
            image[:, i, j, ch] = table[lv]
            steps += 1
        if progress and j == w - 1:
            pixels = n * (steps // c)
            print(f"naive sample ({mode}): {i + 1}/{h} rows done, {pixels} pixels "
                  f"({n} images), {pixels / max(loop_seconds(), 1e-9):.1f} pixels/s", file=sys.stderr,
                  flush=True)
        if steps >= limit:
            break
    return NaiveResult(levels=out_levels, margins=out_margins, images=image, steps_run=steps,
                       steps_total=steps_total, seconds=loop_seconds(), trace_seconds=tracer.trace_seconds,
                       mode=mode, output=output)


def _mixture_components(model, components, c):
    """(K, head values per pixel) of a logistic-mixture head: 3K values for grey images, 10K for RGB."""
    per = {1: 3, 3: 10}.get(c)
    if per is None:
        raise ValueError(f"{_WHERE}: head='logistic_mixture' draws grey (1 image channel) or RGB (3) images, got "
                         f"{c} image channels")
    if components is None:
        outputs = getattr(model, "outputs", None) or []
        last = outputs[0].shape[-1] if len(outputs) == 1 else None
        if last is None or last % per:
            raise ValueError(f"{_WHERE}: components=K is required for head='logistic_mixture': model "
                             f"'{model.name}' declares no output of {per}K channels")
        components = int(last) // per
    components = _check_int(components, "components", 1)
    return components, per * components


def _probs_to_logits(p):
    """float32 logits log(p) - log1p(-p) of bernoulli probabilities (float64 math; 0 -> -inf, 1 -> +inf)."""
    p64 = p.astype(np.float64)
    with np.errstate(divide="ignore"):
        return (np.log(p64) - np.log1p(-p64)).astype(np.float32)


def rows_seconds_estimate(model, n, *, rows, steps_per_row, image=None, **kwargs):
    """Estimated seconds of a full `rows` loop: its cost per step grows with the row (the crop), so the
    loop's own steps are timed at a few `rows` (steps_per_row columns each, from `image`, default
    zeros), the cost interpolated linearly between them and summed over every row and channel.
    Returns (estimate, [seconds per step at each row]). kwargs go to sample() (head, levels, ...).
    Running the loop down to a deep row would take minutes; the benchmarks and the CLI use this."""
    shape = kwargs.pop("image_shape", None)
    h, w, c = _resolve_image_shape(model, shape)
    columns = [int(j) for j in np.linspace(0, w - 1, min(steps_per_row, w)).round()]
    costs = []
    for r in rows:
        res = sample(model, n, mode="rows", image_shape=shape, positions=[(r, j) for j in columns],
                     image=image, **kwargs)
        costs.append(res.seconds / res.steps_run)
    estimate = float(w * c * np.interp(np.arange(h), list(rows), costs).sum())
    return estimate, costs


def complete(model, images, known, *, head, levels=2, image_shape=None, **kwargs):
    """Image completion by the naive loop, the twin of Sampler.complete: keeps the levels of `images` where
    `known` ((H, W) or (n, H, W, C) bool) is True and draws the rest by `sample` (same keyword arguments),
    re-running the whole model at every step. Returns a NaiveResult."""
    from pixelcnn_fast.sampler import known_levels as _known_levels

    shape = _resolve_image_shape(model, image_shape)
    given = _known_levels(images, known, shape, levels, _WHERE.replace("sample", "complete"))
    return sample(model, given.shape[0], head=head, levels=levels, image_shape=image_shape, known_levels=given,
                  **kwargs)
