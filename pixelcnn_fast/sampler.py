"""Python front end: `Sampler`, the cached incremental sampler (lowering -> C++ column program).

The model is lowered once (pixelcnn_fast.program.lower); each `sample()` call evaluates the program's
constants (kernels, biases, condition embeddings) once, checks causality, hands the program to the
C++ executor (csrc/core/column_program.*) and runs every position there, with no Python per pixel.
The head and value map are resolved in sampler_head.py, the builds cached in sampler_cache.py, the
program written by pixelcnn_fast.program.spec.
"""

import dataclasses
import functools
import types

import numpy as np
import tensorflow as tf

from pixelcnn_fast.checks import (check_count, check_image_offset, check_sample_memory, check_seed,
                                  check_temperature)
from pixelcnn_fast import tfp_adapter
from pixelcnn_fast.program.ir import NotCausalError
from pixelcnn_fast.program.lower import lower
from pixelcnn_fast.program.spec import program_spec
from pixelcnn_fast.progress import ProgressBar
from pixelcnn_fast.sampler_cache import ProgramCache
from pixelcnn_fast.sampler_head import HEADS, VALUE_MAPS, resolve_head

# program_spec: the spec writer's documented name here (README; scripts/export_program.py).
__all__ = ["Sampler", "VALUE_MAPS", "HEADS", "known_levels", "program_spec"]


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
      head: "bernoulli", "categorical" or "logistic_mixture"; inferred from a final sigmoid / softmax, else
        required (a mixture is never inferred: docs/SEMANTICS.md, "Logistic-mixture heads"; K comes from the
        output's channels, 3K for grey images and 10K for RGB; levels default to 256, the value map to
        level / 127.5 - 1).
      levels: levels per image channel (categorical); inferred from the output shape.
      value_map: how a sampled level goes back into the model input: a name in VALUE_MAPS or a
        (scale, offset) pair (input = level * scale + offset). Bernoulli defaults to "identity";
        categorical has no safe default (a wrong one silently ruins every image), so it is required.
      output: for a model without a final sigmoid/softmax: "logits" (default) or "probs".
      image_shape: (H, W, C), needed for models without declared inputs.
      backend: "cpu" (the C++ executor on this machine's cores) or "cuda" (one kernel per sample call on
        the current GPU, csrc/cuda/column_program.cu; needs a CUDA build and CuPy). Both return NumPy arrays
        and draw the same images for a seed up to draws within float rounding of a CDF boundary.

    What a sampler holds, for tools built on it (tf_sampler, serving, the benchmarks): program (the lowered
    pixelcnn_fast.program.ir.Program); head, kind, levels, head_levels, value_scale, value_offset (the resolved
    head, sampler_head.py); cache_floats_per_image (the executor's cache per image, for the memory rule);
    executor(n, conditions) (the C++ program a call runs, cached), check_conditions(n, conditions),
    zero_conditions(n), and build_count / last_spec (C++ builds so far; the (spec, arrays) of the last one).
    """

    def __init__(self, model, head=None, levels=None, value_map=None, backend="cpu", image_shape=None,
                 output="logits", mixture_layout="pixelcnn_pp"):
        if backend not in ("cpu", "cuda"):
            raise ValueError(f"Sampler: backend must be 'cpu' or 'cuda', got {backend!r}")
        if backend == "cuda":
            from pixelcnn_fast import cuda

            why = cuda.unavailable_reason()
            if why is not None:
                raise RuntimeError(f"Sampler: backend='cuda' cannot run here: {why}")
        self.backend = backend
        self.tfp = None  # the tfd.PixelCNN's adapter (tfp_adapter.py) when model is one
        if tfp_adapter.is_tfp_pixelcnn(model):
            self.tfp = tfp_adapter.TfpNetwork(model)
            given = dict(head=head, levels=levels, value_map=value_map, image_shape=image_shape)
            for name, value in given.items():
                if value is not None:
                    raise ValueError(f"Sampler: a tfd.PixelCNN's {name} comes from the distribution; do not pass "
                                     f"{name}= (got {value!r})")
            model, args = self.tfp.model, self.tfp.sampler_args
            head, levels, value_map, mixture_layout = (args["head"], args["levels"], args["value_map"],
                                                       args["mixture_layout"])
            self.program = self.tfp.lower()
        else:
            self.program = lower(model, image_shape)
        self.model = model
        head = resolve_head(self.program, model.name, head, levels, value_map, output, mixture_layout)
        self.head, self.kind, self.levels, self.head_levels = head.head, head.kind, head.levels, head.head_levels
        self.value_scale, self.value_offset = head.value_scale, head.value_offset
        self.components = head.components  # a logistic mixture's K (0 for the other heads)
        self.mixture_layout = head.mixture_layout
        # The spec writer reads the program and the head from a record of its own, not from self: the cache
        # holding a reference back to the sampler would make a cycle that keeps its C++ builds alive until
        # the garbage collector runs.
        spec_source = types.SimpleNamespace(program=self.program, **dataclasses.asdict(head))
        self._programs = ProgramCache(self.program, functools.partial(program_spec, spec_source))
        # Refuse a non-causal model now, not at the first sample (constants at zero conditions).
        # The cache size per image does not depend on n: the memory rule reads it before any call allocates.
        try:
            self.cache_floats_per_image = self.executor(1, self.zero_conditions(1)).cache_floats_per_image()
        except NotCausalError as e:
            if self.tfp is None:
                raise
            raise NotCausalError(f"{e}. A tfd.PixelCNN is masked by Keras kernel constraints, which tf-keras applies "
                                 f"after each optimizer step, not at build: train it first, or apply them yourself "
                                 f"(v.assign(v.constraint(v)) for each v in dist.network.variables with a "
                                 f"constraint); the sampler does not apply them behind dist.log_prob's back") from e

    # ------------------------------------------------------------------------------------------
    # The program behind the calls: public for tf_sampler, serving, the benchmarks and the tests.
    def zero_conditions(self, n):
        """Conditions of n images that are all zeros (the program's structure does not depend on them)."""
        return [tf.zeros([n] + [d or 1 for d in s.shape[1:]], s.dtype) for s in self.program.cond_specs]

    def check_conditions(self, n, conditions):
        """The model's condition inputs (None, one tensor or a list) as tensors of its dtypes, checked to have
        one row per image (n None: any batch); a ValueError naming conditions[k] otherwise."""
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

    def executor(self, n, conditions):
        """The C++ ColumnProgram (pixelcnn_fast._core) a call with n images and these checked conditions runs
        on: built once and reused while the model's variables, the conditions and (for a batch-dependent
        constant) n are unchanged (pixelcnn_fast/sampler_cache.py)."""
        return self._programs.executor(n, conditions)

    @property
    def build_count(self):
        """How many C++ programs this sampler has built (a reused build does not count)."""
        return self._programs.build_count

    @property
    def last_spec(self):
        """(spec text, arrays) of the program the last `executor` call returned (pixelcnn_fast.program.spec)."""
        return self._programs.last_spec

    def _cuda_program(self, n, conditions):
        """The GPU program for the same build as executor's (uploaded once per build)."""
        self.executor(n, conditions)
        return self._programs.cuda_program(n)

    # ------------------------------------------------------------------------------------------
    def _check_call(self, where, n, seed, temperature, image_offset=0):
        """(n, seed, temperature as a Python float of its float32, image_offset) after the rules of
        pixelcnn_fast.checks, and the memory the call would need, before the constants for n images are
        evaluated."""
        n = check_count(n, where)
        seed = check_seed(seed, where)
        t = float(check_temperature(temperature, where))
        image_offset = check_image_offset(image_offset, n, where)
        check_sample_memory(n, self.program.image_shape, self.cache_floats_per_image, where)
        return n, seed, t, image_offset

    def sample(self, n, seed=0, temperature=1.0, conditions=None, progress=False, return_margins=False,
               image_offset=0):
        """Draws n images: integer levels (n, H, W, C). The same seed gives the same images as the
        naive loops (pixelcnn_fast.naive) up to float rounding at a CDF boundary (return_margins=True
        also returns each draw's distance to the nearest boundary).

        image_offset: the call draws images image_offset .. image_offset + n - 1 of the stream `seed`
        defines (docs/SEMANTICS.md, global image index), so any split of a job into calls, processes or machines
        draws the images one call would. Conditions are still one row per image of this call."""
        n, seed, t, image_offset = self._check_call("Sampler.sample", n, seed, temperature, image_offset)
        conds = self.check_conditions(n, conditions)
        if self.backend == "cuda":
            if progress:
                raise ValueError("Sampler.sample: progress=True needs backend='cpu' (the GPU draws every row "
                                 "in one kernel, with no host step per row to report)")
            levels, margins = self._cuda_program(n, conds).sample(n, seed, t, image_offset)
            levels, margins = self._input_shaped(levels.get()), self._input_shaped(margins.get())
            return (levels, margins) if return_margins else levels
        exe = self.executor(n, conds)
        h, w, c = self.program.image_shape
        on_row = ProgressBar(h, w, n) if progress else None
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
        cached executor (a known position writes its level instead of drawing; docs/SEMANTICS.md).

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
        conds = self.check_conditions(n, conditions)
        if self.backend == "cuda":
            import cupy

            levels, margins = self._cuda_program(n, conds).sample(n, seed, t, image_offset,
                                                                  known=cupy.asarray(given))
            levels, margins = levels.get(), margins.get()
        else:
            h, w, c = self.program.image_shape
            levels, margins = self.executor(n, conds).sample(n, seed, t, image_offset, known=given)
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
        exe = self.executor(n, self.check_conditions(n, conditions))
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
        conds = self.check_conditions(image.shape[0], conditions)
        if self.backend == "cuda":
            import cupy

            return self._cuda_program(image.shape[0], conds).teacher_forced(cupy.asarray(image)).get()
        return self.executor(image.shape[0], conds).teacher_forced(image)
