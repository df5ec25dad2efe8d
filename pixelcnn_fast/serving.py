"""Python front end: a Sampler as a SavedModel (`export`) and loading one back (`load`).

`export(sampler, path)` writes a SavedModel whose `sample(n, seed, temperature, image_offset[, conditions])`
function (also its `sample` serving signature, output "levels") is the sampler op PixelcnnFastSample
(csrc/tf/sampler_op.cc) with the program's spec as the op's attr and its constants computed in the graph
from the model's saved variables (as `tf_sampler.sample_op` in a tf.function), so a serving process needs
neither the model's Python code nor Keras, only TensorFlow and pixelcnn_fast's op library.

The ops are custom ops: TensorFlow can load the SavedModel only in a process where they are registered. A
raw `tf.saved_model.load(path)` in a process that has not loaded them fails (TF 2.21) with TensorFlow's own

    RuntimeError: Op type not registered 'PixelcnnFastMaskedConv2D' in binary running on <host>. Make sure
    the Op and Kernel are registered in the binary running in this process. ...

(the first of our ops it meets: PixelcnnFastMaskedConv2D, PixelcnnFastSample; older TFs raise NotFoundError).

`load(path)` registers the ops first (`import pixelcnn_fast` does only when TensorFlow was imported
before it; otherwise the op library is loaded on first use) and turns that error, should it still come (a build without its TF
ops), into one that says to import pixelcnn_fast and why it could not register them.
"""

import tensorflow as tf

from pixelcnn_fast import _ext

__all__ = ["export", "load", "SIGNATURE"]

SIGNATURE = "sample"


class _SamplerModule(tf.Module):
    """What the SavedModel holds: the model's variables and the sample function over them."""

    def __init__(self, sampler):
        from pixelcnn_fast.tf_sampler import sample_op

        super().__init__(name="pixelcnn_fast_sampler")
        self.model_variables = list(sampler.model.variables)  # saved; the graph computes the constants
        h, w, c = sampler.program.image_shape
        self.image_shape = tf.constant([h, w, c], tf.int64)
        self.levels = tf.constant(sampler.levels, tf.int64)
        scalars = [tf.TensorSpec([], tf.int64, name="n"), tf.TensorSpec([], tf.int64, name="seed"),
                   tf.TensorSpec([], tf.float32, name="temperature"),
                   tf.TensorSpec([], tf.int64, name="image_offset")]
        conditions = [tf.TensorSpec((None,) + tuple(s.shape[1:]), s.dtype, name=f"condition_{k}")
                      for k, s in enumerate(sampler.program.cond_specs)]

        def sample(n, seed, temperature, image_offset, *conds):
            levels = sample_op(sampler, n, seed, temperature, conditions=list(conds) or None,
                               image_offset=image_offset)
            return {"levels": levels}

        self.sample = tf.function(sample, input_signature=scalars + conditions, autograph=False)


def export(sampler, path):
    """Writes `sampler` as a SavedModel at `path` (a directory); returns path. See the module comment."""
    # The op runs where TensorFlow places it (its GPU kernel where TF has one) whatever sampler.backend is.
    module = _SamplerModule(sampler)
    concrete = module.sample.get_concrete_function()
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: concrete})
    return path


def load(path):
    """tf.saved_model.load(path) with pixelcnn_fast's TF ops registered first (an exported Sampler, or a
    Keras model with MaskedConv2D saved by `model.export()`); a RuntimeError saying what to do when the
    SavedModel needs an op this process does not have."""
    problem = None
    try:
        _ext.tf_ops()
    except ImportError as exc:  # built without TF ops, another TensorFlow ...: say so if the load fails
        problem = exc
    try:
        return tf.saved_model.load(str(path))
    except (RuntimeError, tf.errors.NotFoundError) as exc:
        text = str(exc)
        if "Op type not registered" not in text or "PixelcnnFast" not in text:
            raise
        op = text.split("Op type not registered '", 1)[1].split("'", 1)[0]
        why = (f"pixelcnn_fast's TF op library could not be loaded here: {problem}" if problem is not None else
               f"this pixelcnn_fast ({_version()}) does not define it: the SavedModel needs another version")
        raise RuntimeError(f"the SavedModel at {path} uses pixelcnn_fast's TF op '{op}', which is not registered "
                           f"in this process: import pixelcnn_fast (and load with pixelcnn_fast.serving.load) "
                           f"before loading it; {why}") from exc


def _version():
    from pixelcnn_fast._version import __version__

    return __version__
