"""Python front end: the cached sampler as a TF op (`sample_op`), usable eagerly, inside `tf.function`
and in Keras callbacks; `program_spec` writes a Sampler's lowered program in the text format of
csrc/core/program_spec.h (the op's `spec` attr) and lists the arrays the op takes.

The program's structure (steps, phases from the causality analysis, head) goes into the spec string;
its numbers (effective kernels, biases, label embeddings) are op inputs. Inside a `tf.function` those
inputs are the outputs of `sampler.program.trace` called in the graph, so they follow the model's
variables; the structure is fixed when the function is traced (see `sample_op`).
"""

import numpy as np
import tensorflow as tf

from pixelcnn_fast._ext import tf_ops
from pixelcnn_fast.checks import check_count, check_image_offset, check_sample_memory, check_seed, check_temperature
from pixelcnn_fast.program.spec import program_spec, spec_with_recipes  # program_spec: re-exported (public here)

__all__ = ["program_spec", "sample_op", "canonical_spec"]
_WHERE = "sample_op"


def _array_tf(recipe, consts):
    # The graph-side twin of pixelcnn_fast.program.spec.recipe_array (conv_kernel_4d / const_4d on tensors).
    kind, slot, step = recipe
    v = tf.cast(consts[slot], tf.float32)
    if kind == "const":
        rank = v.shape.rank
        return tf.reshape(v, tf.concat([tf.ones([4 - rank], tf.int32), tf.shape(v)], 0)) if rank < 4 else v
    if step.attrs.get("matmul"):
        v = tf.transpose(v) if step.attrs.get("transpose_b") else v
        v = v[None, None]
    return v


def canonical_spec(spec):
    """The C++ parser's canonical text of `spec` (raises InvalidArgumentError naming line and token)."""
    return tf_ops().pixelcnn_fast_program_spec_canonical(spec).numpy().decode()


def _seed_bits(seed):
    if isinstance(seed, (tf.Tensor, tf.Variable)):
        if seed.dtype == tf.uint64:
            return tf.bitcast(seed, tf.int64)
        return tf.cast(seed, tf.int64)
    seed = check_seed(seed, _WHERE)
    return np.int64(seed - 2 ** 64 if seed >= 2 ** 63 else seed)  # the uint64's bits as int64


def sample_op(sampler, n, seed=0, temperature=1.0, conditions=None, name=None, image_offset=0):
    """Draws n images with the TF op: int32 levels (n, H, W, C) (or (n, H, W) codes), the same images as
    `sampler.sample(n, seed, temperature, conditions, image_offset=image_offset)`.

    n, seed, temperature, image_offset may be Python numbers (checked here) or scalar tensors (checked
    by the op).
    Eagerly, the constants are evaluated and the causality analysed on every call, exactly as
    Sampler.sample does. Inside a tf.function the constants are computed in the graph (they follow the
    model's variables on every call), while the program's structure -- the steps' phases and the
    causality check, which read the kernels' zero pattern -- is taken from the variables' values when
    the function is traced. Masks keep that pattern fixed through training; a model whose zero pattern
    changes (e.g. a layer initialised to zeros) needs a retrace to pick the change up.
    """
    p = sampler.program
    h, w, c = p.image_shape
    static_n = None
    if not isinstance(n, (tf.Tensor, tf.Variable)):
        static_n = check_count(n, _WHERE)
        check_sample_memory(static_n, p.image_shape, sampler.cache_floats_per_image, _WHERE)
    if not isinstance(temperature, (tf.Tensor, tf.Variable)):
        temperature = float(check_temperature(temperature, _WHERE))
    seed = _seed_bits(seed)
    if not isinstance(image_offset, (tf.Tensor, tf.Variable)):
        # A tensor n is checked by the op, with the offset; a Python n here, with the same rule.
        image_offset = check_image_offset(image_offset, static_n if static_n is not None else 1, _WHERE)
    # n=None: a tensor n is checked by the op; the conditions' batch dimension then is not checked here.
    conds = sampler.check_conditions(static_n, conditions)
    with tf.name_scope(name or "pixelcnn_fast_sample"):
        if tf.executing_eagerly():
            n_val = static_n if static_n is not None else int(n)
            if static_n is None:
                conds = sampler.check_conditions(n_val, conditions)
            spec, arrays = program_spec(sampler, p.evaluate_consts(n_val, conds))
            inputs = [tf.constant(a) for a in arrays]
        else:
            # Structure from the variables' current values, evaluated eagerly outside the graph being built.
            with tf.init_scope():
                spec, recipes = spec_with_recipes(sampler, p.evaluate_consts(1, sampler.zero_conditions(1)))
            n_t = tf.cast(n, tf.int64)
            dims = [tf.cast(n_t, tf.int32), h, w] + ([c] if p.input_rank == 4 else [])
            image = tf.zeros(tf.stack(dims), p.input_dtype)
            consts = p.trace(image, *conds)  # the constant slots as graph tensors (Program.evaluate_consts)
            inputs = [_array_tf(r, consts) for r in recipes]
        levels = tf_ops().pixelcnn_fast_sample(
            consts=inputs, n=tf.cast(n, tf.int64), seed=seed, temperature=tf.cast(temperature, tf.float32),
            image_offset=tf.cast(image_offset, tf.int64), spec=spec)
        # A (batch, H, W) code input gets its codes back in that shape, as Sampler.sample returns them.
        return levels[..., 0] if p.input_rank == 3 else levels
