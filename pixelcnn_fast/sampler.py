"""Python front end: `Sampler`, the cached incremental sampler (lowering -> C++ column program).

The model is lowered once (pixelcnn_fast.lowering); each `sample()` call evaluates the program's
constants (kernels, biases, condition embeddings) once, checks causality, hands the program to the
C++ executor (csrc/core/column_program.*) and runs every position there, with no Python per pixel.
"""

import numpy as np
import tensorflow as tf

from pixelcnn_fast._ext import core
from pixelcnn_fast.checks import (check_count, check_image_offset, check_sample_memory, check_seed,
                                  check_temperature)
from pixelcnn_fast.lowering import (NO_DEPENDENCY, LoweringError, analyse_causality, conv_kernel_4d, conv_taps,
                                    decode_frontier, encode_frontier, lower)

__all__ = ["Sampler", "VALUE_MAPS"]

# Named value maps: sampled level -> model input, as (scale(levels), offset).
VALUE_MAPS = {
    "identity": lambda n: (1.0, 0.0),
    "level/N": lambda n: (1.0 / n, 0.0),
    "level/(N-1)": lambda n: (1.0 / max(1, n - 1), 0.0),
    "level/255": lambda n: (1.0 / 255.0, 0.0),
}
HEADS = ("bernoulli", "categorical")


class _ProgressBar:
    """Rows done and pixels/s on stderr, called by the executor once per row (no Python per pixel)."""

    def __init__(self, height, width, n):
        import sys
        import time

        self.h, self.w, self.n, self.out, self.clock = height, width, n, sys.stderr, time.perf_counter
        self.start = self.clock()

    def __call__(self, rows):
        elapsed = max(self.clock() - self.start, 1e-9)
        done = int(round(20 * rows / self.h))
        self.out.write(f"\r[{'#' * done}{'.' * (20 - done)}] row {rows}/{self.h}, "
                       f"{rows * self.w * self.n / elapsed:,.0f} pixels/s")
        self.out.flush()

    def close(self):
        self.out.write("\n")
        self.out.flush()


def _phase(keys):
    """Image channels at a step's own pixel its output depends on (0: none)."""
    top = keys.max() if keys.size else NO_DEPENDENCY
    if top < encode_frontier(0, 0, 0):
        return 0
    return decode_frontier(top)[2] + 1


def _phase_runs(keys, phase):
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


def _const_4d(value):
    """A constant operand as (n or 1, H or 1, W or 1, C or 1) float32, C-contiguous."""
    v = np.asarray(value, np.float32)
    if v.ndim < 4:
        v = v.reshape((1,) * (4 - v.ndim) + v.shape)
    return np.ascontiguousarray(v)


def known_levels(images, known, image_shape, levels, fn):
    """Image completion's input as the executor takes it: int32 (n, H, W, C), the level of `images` where
    `known` is True and -1 elsewhere; a ValueError naming the argument for a wrong shape, dtype or level."""
    h, w, c = image_shape
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[1:] != (h, w, c) or a.shape[0] < 1:
        raise ValueError(f"{fn}: images must be integer levels of shape (n >= 1, {h}, {w}, {c}), got shape "
                         f"{a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{fn}: images must hold integer levels (0 .. {levels - 1}), got dtype {a.dtype}")
    m = np.asarray(known)
    if m.dtype != np.bool_:
        raise ValueError(f"{fn}: known must be a boolean mask, got dtype {m.dtype}")
    if m.shape == (h, w):
        m = m[None, :, :, None]
    elif m.shape != a.shape:
        raise ValueError(f"{fn}: known must have shape ({h}, {w}) (every image and channel) or {a.shape}, got "
                         f"{m.shape}")
    m = np.broadcast_to(m, a.shape)
    given = a[m]
    if given.size and (given.min() < 0 or given.max() >= levels):
        raise ValueError(f"{fn}: the known levels of images must lie in [0, {levels - 1}], got values in "
                         f"[{given.min()}, {given.max()}]")
    return np.ascontiguousarray(np.where(m, a, -1), np.int32)


class Sampler:
    """Samples images from a causal PixelCNN-style Keras model with the cached C++ executor.

    Args:
      model: a Keras model (functional or subclassed) mapping images (and optional conditions) to
        per-pixel predictions.
      head: "bernoulli" or "categorical"; inferred from a final sigmoid / softmax, else required.
      levels: levels per image channel (categorical); inferred from the output shape.
      value_map: how a sampled level goes back into the model input: a name in VALUE_MAPS or a
        (scale, offset) pair (input = level * scale + offset). Bernoulli defaults to "identity";
        categorical has no safe default (a wrong one silently ruins every image), so it is required.
      output: for a model without a final sigmoid/softmax: "logits" (default) or "probs".
      image_shape: (H, W, C), needed for models without declared inputs.
      backend: "cpu" (the C++ executor on this machine's cores) or "cuda" (one kernel per sample call on
        the current GPU, csrc/cuda/column_program.cu; needs a CUDA build and CuPy). Both return NumPy arrays
        and draw the same images for a seed up to draws within float rounding of a CDF boundary.
    """

    def __init__(self, model, head=None, levels=None, value_map=None, backend="cpu", image_shape=None,
                 output="logits"):
        if backend not in ("cpu", "cuda"):
            raise ValueError(f"Sampler: backend must be 'cpu' or 'cuda', got {backend!r}")
        if backend == "cuda":
            from pixelcnn_fast import cuda

            why = cuda.unavailable_reason()
            if why is not None:
                raise RuntimeError(f"Sampler: backend='cuda' cannot run here: {why}")
        self.backend = backend
        self.model = model
        self.program = lower(model, image_shape)
        p = self.program
        h, w, c = p.image_shape
        head_channels = p.buffer_channels[p.logits_buffer]
        if head is None:
            if p.final_activation == "sigmoid":
                head = "bernoulli"
            elif p.final_activation == "softmax":
                head = "categorical"
            else:
                raise ValueError(
                    f"Sampler: cannot infer the head of model '{model.name}': its output is not a sigmoid "
                    f"or a softmax; pass head='bernoulli' or head='categorical' (and output='logits' or "
                    f"'probs' for what the model's values are)")
        if head not in HEADS:
            raise ValueError(f"Sampler: head must be 'bernoulli' or 'categorical', got {head!r}")
        if output not in ("logits", "probs"):
            raise ValueError(f"Sampler: output must be 'logits' or 'probs', got {output!r}")
        if head == "bernoulli":
            inferred = 1
            kind = "bernoulli"
            if p.final_activation == "" and output == "probs":
                raise ValueError("Sampler: a bernoulli head needs the model's logits or a final sigmoid; "
                                 "got output='probs' without a sigmoid")
        else:
            inferred = head_channels // c
            kind = "logits" if p.final_activation == "softmax" or output == "logits" else "probs"
        if levels is not None and int(levels) != (2 if head == "bernoulli" else inferred):
            raise ValueError(f"Sampler: levels={levels} does not match the model's output: "
                             f"{head_channels} values per pixel for {c} image channel(s)")
        if head_channels != c * inferred:
            raise ValueError(f"Sampler: the model's output has {head_channels} values per pixel, not a "
                             f"multiple of its {c} image channel(s)")
        self.head, self.kind = head, kind
        self.levels = 2 if head == "bernoulli" else inferred
        if p.codes:
            # DESIGN.md, "Integer inputs": the model takes the codes themselves, so a drawn level goes back as
            # it is; any other map would feed the model codes it never saw.
            if value_map not in (None, "identity", (1, 0), (1.0, 0.0)):
                raise ValueError(f"Sampler: model '{model.name}' takes integer codes ({p.input_dtype}): a drawn "
                                 f"level is fed back as the code itself, so value_map must be 'identity' or "
                                 f"left out, got {value_map!r}")
            value_map = "identity"
        if value_map is None:
            if head == "categorical":
                raise ValueError(
                    "Sampler: value_map= is required for a categorical head: say how level k goes back "
                    f"into the model input, one of {sorted(VALUE_MAPS)} or a (scale, offset) pair")
            value_map = "identity"
        if isinstance(value_map, str):
            if value_map not in VALUE_MAPS:
                raise ValueError(f"Sampler: value_map must be one of {sorted(VALUE_MAPS)} or a (scale, "
                                 f"offset) pair, got {value_map!r}")
            self.value_scale, self.value_offset = VALUE_MAPS[value_map](self.levels)
        else:
            self.value_scale, self.value_offset = (float(v) for v in value_map)
        self.head_levels = 1 if head == "bernoulli" else inferred
        # Refuse a non-causal model now, not at the first sample (constants at zero conditions).
        # The cache size per image does not depend on n: the memory rule reads it before any call allocates.
        self._cache_floats_per_image = self._executor(1, self._zero_conditions(1)).cache_floats_per_image()

    # ------------------------------------------------------------------------------------------
    def _zero_conditions(self, n):
        return [tf.zeros([n] + [d or 1 for d in s.shape[1:]], s.dtype) for s in self.program.cond_specs]

    def _check_conditions(self, n, conditions):
        specs = self.program.cond_specs
        if conditions is None:
            conditions = []
        elif not isinstance(conditions, (list, tuple)):
            conditions = [conditions]
        if len(conditions) != len(specs):
            raise ValueError(f"Sampler.sample: the model takes {len(specs)} condition input(s) besides the "
                             f"image, got {len(conditions)}")
        out = []
        for k, (cond, spec) in enumerate(zip(conditions, specs)):
            t = tf.convert_to_tensor(cond)
            if t.dtype != spec.dtype:
                try:
                    t = tf.cast(t, spec.dtype) if t.dtype.is_integer == spec.dtype.is_integer else None
                except (TypeError, ValueError):
                    t = None
                if t is None:
                    raise ValueError(f"Sampler.sample: conditions[{k}] must have dtype {spec.dtype.name}, "
                                     f"got {tf.convert_to_tensor(cond).dtype.name}")
            want = (n,) + tuple(spec.shape[1:])
            if t.shape.rank != len(want) or any(a is not None and a != b for a, b in zip(want, t.shape)):
                raise ValueError(f"Sampler.sample: conditions[{k}] must have shape {want} (one row per "
                                 f"image), got {tuple(t.shape)}")
            out.append(t)
        return out

    def _executor(self, n, conditions):
        """The C++ program for one call, built once and kept while nothing it was built from changed.

        What a build depends on: the values of the variables the traced function reads (kernels,
        biases, embeddings; training and set_weights change them in place), the condition values and,
        only when some constant has a batch dimension (a label embedding per image), n. So the cache is
        keyed by (n if batch-dependent, condition values) and revalidated by comparing each variable's
        current value (read in one tf.function call) with the copy taken after the build, bit for bit (so a
        NaN weight compares equal to itself): ~0.35 ms for keras.io's 2 MB, where evaluating the constants
        alone costs ~0.7 ms, and checking causality, writing the spec and packing the weights ~5-9 ms.
        When a variable did change the constants are evaluated again, and the build is still reused if
        they came out identical."""
        cond_values = [np.asarray(t) for t in conditions]
        for key in (int(n), None):  # a build for this n, or one that serves any n
            hit = self.__dict__.get("_builds", {}).get(key)
            if hit is not None and self._same_inputs(hit, cond_values):
                self._last_spec = hit["spec"]
                self._last_cuda_key = hit["key"]
                return hit["exe"]
        consts = self.program.evaluate_consts(n, conditions)
        # Variable values after the evaluation: a layer that assigns kernel * mask to its variable in
        # call() has just done so, and the next call's comparison must see that value, not the old one.
        snapshot = [np.array(v, copy=True) for v in self._read_variables()]
        # A constant traced with an unknown dimension has the batch in it (the trace's image batch is None).
        batch_free = all(d is not None for shape in self.program.const_shapes for d in shape)
        key = None if batch_free else int(n)
        builds = self.__dict__.setdefault("_builds", {})
        old = builds.get(key)
        if old is not None and len(old["consts"]) == len(consts) and all(
                a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
                for a, b in zip(old["consts"], consts)):
            old.update(snapshot=snapshot, conds=cond_values)
            self._last_spec, self._last_cuda_key = old["spec"], old["key"]
            return old["exe"]
        spec, arrays = program_spec(self, consts)
        exe = core().ColumnProgram.from_spec(spec, arrays, 0 if batch_free else int(n))
        self._build_count = getattr(self, "_build_count", 0) + 1
        if len(builds) >= 4:  # a few batch sizes of a conditional model; the oldest goes first
            builds.pop(next(iter(builds)))
        builds[key] = dict(exe=exe, consts=consts, snapshot=snapshot, conds=cond_values, spec=(spec, arrays),
                           key=(key, self._build_count))
        self._last_spec, self._last_cuda_key = (spec, arrays), (key, self._build_count)
        return exe

    def _read_variables(self):
        """The current values of the variables the traced constants read (the concrete function's
        captures), as NumPy arrays, read by one tf.function call (~0.25 ms for keras.io's 38 variables,
        against ~0.7 ms for 38 eager reads)."""
        if getattr(self, "_read_vars_fn", None) is None:
            p = self.program
            fn = p.trace.get_concrete_function(p.image_spec, *p.cond_specs)
            variables = list(fn.variables)
            self._read_vars_fn = tf.function(lambda: [tf.convert_to_tensor(v) for v in variables],
                                             autograph=False)
        return [t.numpy() for t in self._read_vars_fn()]

    def _same_inputs(self, build, cond_values):
        """True when the conditions and every variable still hold what `build` was made from."""
        if len(build["conds"]) != len(cond_values) or not all(
                a.shape == b.shape and np.array_equal(a, b) for a, b in zip(build["conds"], cond_values)):
            return False
        now = self._read_variables()
        bits = lambda a: a.reshape(-1).view(np.uint8)  # noqa: E731
        return len(now) == len(build["snapshot"]) and all(
            a.dtype == b.dtype and a.shape == b.shape and np.array_equal(bits(a), bits(b))
            for a, b in zip(now, build["snapshot"]))

    def _cuda_program(self, n, conditions):
        """The GPU program for the same build as _executor's (uploaded once per build)."""
        self._executor(n, conditions)
        cached = getattr(self, "_last_cuda", None)
        if cached is None or cached[0] != (self._last_cuda_key, int(n)):
            from pixelcnn_fast import cuda

            spec, arrays = self._last_spec
            cached = self._last_cuda = ((self._last_cuda_key, int(n)), cuda.ColumnProgram(spec, arrays, n))
        return cached[1]

    # ------------------------------------------------------------------------------------------
    def _check_call(self, where, n, seed, temperature, image_offset=0):
        """(n, seed, temperature as a Python float of its float32, image_offset) after the rules of
        pixelcnn_fast.checks, and the memory the call would need, before the constants for n images are
        evaluated."""
        n = check_count(n, where)
        seed = check_seed(seed, where)
        t = float(check_temperature(temperature, where))
        image_offset = check_image_offset(image_offset, n, where)
        check_sample_memory(n, self.program.image_shape, self._cache_floats_per_image, where)
        return n, seed, t, image_offset

    def sample(self, n, seed=0, temperature=1.0, conditions=None, progress=False, return_margins=False,
               image_offset=0):
        """Draws n images: integer levels (n, H, W, C). The same seed gives the same images as the
        naive loops (pixelcnn_fast.naive) up to float rounding at a CDF boundary (return_margins=True
        also returns each draw's distance to the nearest boundary).

        image_offset: the call draws images image_offset .. image_offset + n - 1 of the stream `seed`
        defines (DESIGN.md, global image index), so any split of a job into calls, processes or machines
        draws the images one call would. Conditions are still one row per image of this call."""
        n, seed, t, image_offset = self._check_call("Sampler.sample", n, seed, temperature, image_offset)
        conds = self._check_conditions(n, conditions)
        if self.backend == "cuda":
            if progress:
                raise ValueError("Sampler.sample: progress=True needs backend='cpu' (the GPU draws every row "
                                 "in one kernel, with no host step per row to report)")
            levels, margins = self._cuda_program(n, conds).sample(n, seed, t, image_offset)
            levels, margins = self._input_shaped(levels.get()), self._input_shaped(margins.get())
            return (levels, margins) if return_margins else levels
        exe = self._executor(n, conds)
        h, w, c = self.program.image_shape
        on_row = _ProgressBar(h, w, n) if progress else None
        try:
            # The output's shape comes from the program; Ctrl-C stops the call within one row.
            levels, margins = exe.sample(n, seed, t, image_offset, on_row=on_row)
        finally:
            if on_row is not None:
                on_row.close()
        levels, margins = self._input_shaped(levels), self._input_shaped(margins)
        return (levels, margins) if return_margins else levels

    def _input_shaped(self, levels):
        """Levels in the image input's own shape: (n, H, W) for a (batch, H, W) code input."""
        return levels[..., 0] if self.program.input_rank == 3 else levels

    def complete(self, images, known, seed=0, temperature=1.0, conditions=None, image_offset=0,
                 return_margins=False):
        """Image completion: keeps the known pixels of `images` and samples the rest, through the same
        cached executor (a known position writes its level instead of drawing; DESIGN.md).

        images: integer levels (n, H, W, C) (the values at unknown positions are ignored).
        known: bool, (H, W) (the same pixels of every image, all channels: e.g. the top rows) or
        (n, H, W, C). Returns levels (n, H, W, C) int32 with every known level kept bit for bit; a drawn
        element uses the uniform `sample` would use for it (seed, image_offset + k, position, channel), so
        known=False everywhere draws exactly `sample(n, seed, ..., image_offset)`. Margins of known
        elements are +inf (nothing was drawn)."""
        fn = "Sampler.complete"
        if self.program.input_rank == 3 and np.ndim(images) == 3:
            images = np.asarray(images)[..., None]  # (n, H, W) codes
            known = np.asarray(known)[..., None] if np.ndim(known) == 3 else known
        given = known_levels(images, known, self.program.image_shape, self.levels, fn)
        n, seed, t, image_offset = self._check_call(fn, given.shape[0], seed, temperature, image_offset)
        conds = self._check_conditions(n, conditions)
        if self.backend == "cuda":
            import cupy

            levels, margins = self._cuda_program(n, conds).sample(n, seed, t, image_offset,
                                                                  known=cupy.asarray(given))
            levels, margins = levels.get(), margins.get()
        else:
            h, w, c = self.program.image_shape
            levels, margins = self._executor(n, conds).sample(n, seed, t, image_offset, known=given)
        levels, margins = self._input_shaped(levels), self._input_shaped(margins)
        return (levels, margins) if return_margins else levels

    def export(self, path):
        """Writes a SavedModel at `path` with a `sample(n, seed, temperature, image_offset[, conditions])`
        function and serving signature (output "levels"): the sampler op over the model's saved variables.
        Load it with pixelcnn_fast.serving.load(path) (pixelcnn_fast/serving.py); seed is int64 there (a
        uint64 seed >= 2**63 as its bits)."""
        from pixelcnn_fast import serving

        return serving.export(self, path)

    def profile(self, n, seed=0, temperature=1.0, conditions=None):
        """Where one sample call's time goes: [(step name, kind, seconds)] for each program step (its
        layer's name), plus "(draws)"; seconds are summed over threads. For reports, not for speed:
        it reads the clock twice per step and position."""
        n, seed, t, _ = self._check_call("Sampler.profile", n, seed, temperature)
        if self.backend != "cpu":
            raise ValueError("Sampler.profile: per-step times come from the CPU executor; use backend='cpu'")
        exe = self._executor(n, self._check_conditions(n, conditions))
        return exe.sample_profile(n, seed, t)

    def teacher_forced(self, image, conditions=None):
        """The head's values (logits, or probabilities for output='probs') at every position computed
        through the cached path with `image` fed in: equals one full forward pass of the model."""
        image = np.asarray(image)
        if self.program.input_rank == 3 and image.ndim == 3:
            image = image[..., None]  # (n, H, W) codes
        image = np.ascontiguousarray(image, np.float32)
        if image.ndim != 4:
            raise ValueError(f"Sampler.teacher_forced: image must be (n, H, W, C){' or codes (n, H, W)' if self.program.input_rank == 3 else ''}, got shape {image.shape}")
        conds = self._check_conditions(image.shape[0], conditions)
        if self.backend == "cuda":
            import cupy

            return self._cuda_program(image.shape[0], conds).teacher_forced(cupy.asarray(image)).get()
        return self._executor(image.shape[0], conds).teacher_forced(image)


# ----------------------------------------------------------------------------- program spec
# The one writer of a lowered program for the C++ executor (csrc/core/program_spec.h, version 1):
# the pybind module and the TF op both build from this text plus the arrays it lists.
SPEC_MAGIC = "pixelcnn_fast.column_program 1"


def _f32(x):
    # "%.9g" of the float32 value: exact for float32 and byte-identical to the C++ writer's output.
    return "%.9g" % float(np.float32(x))


def _encode_name(name):
    out = []
    for b in name.encode("utf-8"):
        out.append("%%%02X" % b if b <= 0x20 or b >= 0x7F or b == 0x25 else chr(b))
    return "".join(out)


def _walk(sampler, consts):
    """(spec text, recipes): recipes[k] says how op input k is made from the constant slots:
    ("const", slot) a broadcast constant as rank 4; ("kernel", slot, step) a conv's kernel as
    (kh, kw, cin, cout). Mirrors Sampler._executor step for step (same phases, names, head)."""
    p = sampler.program
    keys = analyse_causality(p, consts)  # raises NotCausalError naming the layer
    _refuse_reads_ahead(p, consts)
    recipes, index = [], {}

    def use(kind, slot, step=None):
        key = (kind, slot) if kind == "const" else (kind, slot, id(step))
        if key not in index:
            index[key] = len(recipes)
            recipes.append((kind, slot, step))
        return index[key]

    lines = []
    for st in p.steps:
        phase, name = _phase(keys[st.out]), f"{st.layer} ({st.op_type} {st.op_name})"
        if st.kind == "conv":
            k = use("kernel", st.consts[0], st)
            args = (f"in={st.ins[0]} kernel={k} dh={st.attrs['dh']} dw={st.attrs['dw']} "
                    f"padding={'same' if st.attrs['padding'] == 'SAME' else 'valid'}")
        elif st.kind == "binary":
            if len(st.ins) == 2:
                a, b = f"b{st.ins[0]}", f"b{st.ins[1]}"
            else:
                c = f"i{use('const', st.consts[0])}"
                a, b = (c, f"b{st.ins[0]}") if st.attrs["const_first"] else (f"b{st.ins[0]}", c)
            args = f"fn={st.attrs['fn']} a={a} b={b}"
        elif st.kind == "act":
            args = f"in={st.ins[0]} fn={st.attrs['fn']} alpha={_f32(st.attrs.get('alpha', 0.2))}"
        elif st.kind == "concat":
            parts = [f"b{st.ins[i]}" if kind == "buf" else f"i{use('const', st.consts[i])}"
                     for kind, i in st.attrs["order"]]
            args = "parts=" + ",".join(parts)
        elif st.kind == "gather":
            args = f"in={st.ins[0]} channels=" + ",".join(str(int(c)) for c in st.attrs["channels"])
        elif st.kind == "softmax":
            args = f"in={st.ins[0]} group={st.attrs['group']} log={int(bool(st.attrs['log']))}"
        elif st.kind == "reduce":
            args = f"in={st.ins[0]} fn={st.attrs['fn']}"
        else:  # pragma: no cover - lowering emits only the kinds above
            raise AssertionError(st.kind)
        runs = _phase_runs(keys[st.out], phase)
        phases = "" if runs is None else " phases=" + ",".join(str(v) for v in runs)
        lines.append(f"{st.kind} out={st.out} {args} phase={phase}{phases} name={_encode_name(name)}")
    h, w, c = p.image_shape
    head = (f"head kind={sampler.kind} buffer={p.logits_buffer} levels={sampler.head_levels} "
            f"scale={_f32(sampler.value_scale)} offset={_f32(sampler.value_offset)}")
    inputs = []
    for k, (kind, slot, step) in enumerate(recipes):
        if kind == "const":
            inputs.append(f"input index={k} kind=const")
        else:
            shape = conv_kernel_4d(step, consts[slot]).shape
            inputs.append(f"input index={k} kind=kernel shape=" + ",".join(str(int(d)) for d in shape))
    text = "\n".join([SPEC_MAGIC, f"image height={h} width={w} channels={c}",
                      "buffers channels=" + ",".join(str(int(b)) for b in p.buffer_channels),
                      *inputs, *lines, head, "end"]) + "\n"
    return text, recipes


def _refuse_reads_ahead(program, consts):
    """A causal model whose conv reads a later position of its input (a gated PixelCNN's vertical stack that
    reads its own row of a buffer that sees only the rows above) needs that buffer computed ahead of the
    raster position (DESIGN.md, "Delays"): not supported yet, refused naming the layer."""
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


def _array_np(recipe, consts):
    kind, slot, step = recipe
    if kind == "const":
        return _const_4d(consts[slot])
    return np.ascontiguousarray(conv_kernel_4d(step, consts[slot]), np.float32)


def program_spec(sampler, consts):
    """(spec text, arrays) for the op: consts are the program's constant slots as numpy arrays
    (`sampler.program.evaluate_consts(n, conditions)`); arrays[k] is op input k, float32 rank 4."""
    text, recipes = _walk(sampler, consts)
    return text, [_array_np(r, consts) for r in recipes]
