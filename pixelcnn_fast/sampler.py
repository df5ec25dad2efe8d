"""Python front end: `Sampler`, the cached incremental sampler (lowering -> C++ column program).

The model is lowered once (pixelcnn_fast.lowering); each `sample()` call evaluates the program's
constants (kernels, biases, condition embeddings) once, checks causality, hands the program to the
C++ executor (csrc/core/column_program.*) and runs every position there, with no Python per pixel.
"""

import numpy as np
import tensorflow as tf

from pixelcnn_fast._ext import core
from pixelcnn_fast.checks import check_count, check_sample_memory, check_seed, check_temperature
from pixelcnn_fast.lowering import (NO_DEPENDENCY, analyse_causality, conv_kernel_4d, decode_frontier,
                                    encode_frontier, lower)

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


def _const_4d(value):
    """A constant operand as (n or 1, H or 1, W or 1, C or 1) float32, C-contiguous."""
    v = np.asarray(value, np.float32)
    if v.ndim < 4:
        v = v.reshape((1,) * (4 - v.ndim) + v.shape)
    return np.ascontiguousarray(v)


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
        """The C++ program for one call: constants evaluated now (the weights may have changed since the
        last call: training, set_weights), written as a spec, built in C++. The last build is kept and
        reused when n and every constant are exactly the same: comparing ~2 MB of constants costs far
        less than writing the spec and packing the weights again (~5 ms of a 20 ms batch-1 call)."""
        consts = self.program.evaluate_consts(n, conditions)
        last = getattr(self, "_last_build", None)
        if last is not None and last[0] == n and len(last[1]) == len(consts) and all(
                a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(last[1], consts)):
            return last[2]
        spec, arrays = program_spec(self, consts)
        exe = core().ColumnProgram.from_spec(spec, arrays, n)
        self._last_build = (n, consts, exe)
        self._last_cuda = None
        self._last_spec = (spec, arrays)
        return exe

    def _cuda_program(self, n, conditions):
        """The GPU program for the same build as _executor's (uploaded once per build)."""
        self._executor(n, conditions)
        if getattr(self, "_last_cuda", None) is None:
            from pixelcnn_fast import cuda

            spec, arrays = self._last_spec
            self._last_cuda = cuda.ColumnProgram(spec, arrays, n)
        return self._last_cuda

    # ------------------------------------------------------------------------------------------
    def _check_call(self, where, n, seed, temperature):
        """(n, seed, temperature as a Python float of its float32) after the rules of pixelcnn_fast.checks,
        and the memory the call would need, before the constants for n images are evaluated."""
        n = check_count(n, where)
        seed = check_seed(seed, where)
        t = float(check_temperature(temperature, where))
        check_sample_memory(n, self.program.image_shape, self._cache_floats_per_image, where)
        return n, seed, t

    def sample(self, n, seed=0, temperature=1.0, conditions=None, progress=False, return_margins=False):
        """Draws n images: integer levels (n, H, W, C). The same seed gives the same images as the
        naive loops (pixelcnn_fast.naive) up to float rounding at a CDF boundary (return_margins=True
        also returns each draw's distance to the nearest boundary)."""
        n, seed, t = self._check_call("Sampler.sample", n, seed, temperature)
        conds = self._check_conditions(n, conditions)
        if self.backend == "cuda":
            if progress:
                raise ValueError("Sampler.sample: progress=True needs backend='cpu' (the GPU draws every row "
                                 "in one kernel, with no host step per row to report)")
            levels, margins = self._cuda_program(n, conds).sample(n, seed, t)
            levels, margins = levels.get(), margins.get()
            return (levels, margins) if return_margins else levels
        exe = self._executor(n, conds)
        h, w, c = self.program.image_shape
        on_row = _ProgressBar(h, w, n) if progress else None
        try:
            # The output's shape comes from the program; Ctrl-C stops the call within one row.
            levels, margins = exe.sample(n, seed, t, 0, on_row=on_row)
        finally:
            if on_row is not None:
                on_row.close()
        return (levels, margins) if return_margins else levels

    def profile(self, n, seed=0, temperature=1.0, conditions=None):
        """Where one sample call's time goes: [(step name, kind, seconds)] for each program step (its
        layer's name), plus "(draws)"; seconds are summed over threads. For reports, not for speed:
        it reads the clock twice per step and position."""
        n, seed, t = self._check_call("Sampler.profile", n, seed, temperature)
        if self.backend != "cpu":
            raise ValueError("Sampler.profile: per-step times come from the CPU executor; use backend='cpu'")
        exe = self._executor(n, self._check_conditions(n, conditions))
        return exe.sample_profile(n, seed, t)

    def teacher_forced(self, image, conditions=None):
        """The head's values (logits, or probabilities for output='probs') at every position computed
        through the cached path with `image` fed in: equals one full forward pass of the model."""
        image = np.ascontiguousarray(image, np.float32)
        if image.ndim != 4:
            raise ValueError(f"Sampler.teacher_forced: image must be (n, H, W, C), got shape {image.shape}")
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
        lines.append(f"{st.kind} out={st.out} {args} phase={phase} name={_encode_name(name)}")
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
