"""TF adapter + Python front end: the cached sampler as the TF op PixelcnnFastSample. The op draws exactly
Sampler.sample's levels for the same seed, eagerly, inside tf.function (its constants following the
model's variables) and in a Keras callback during fit; the spec text round-trips through the C++
parser; bad input is refused with errors that say what was wrong."""

import re

import numpy as np
import pytest
import tensorflow as tf
import keras

from fixtures import seed_models
from pixelcnn_fast._ext import tf_ops
from pixelcnn_fast.sampler import Sampler
from pixelcnn_fast.tf_sampler import canonical_spec, program_spec, sample_op

FIXTURES = ["keras_io", "categorical4", "rgb_3x256", "conditional"]


def make_sampler(sm):
    declared = getattr(sm.model, "inputs", None)
    return Sampler(sm.model, head=sm.head, value_map=None if sm.head == "bernoulli" else sm.value_map,
                   image_shape=None if declared else sm.image_shape)


def labels(sm, n, rng):
    if not sm.conditional:
        return None
    return np.eye(sm.num_classes, dtype=np.float32)[rng.integers(0, sm.num_classes, n)]


@pytest.fixture(scope="module")
def built():
    """Each fixture's model and sampler, built once for the module (lowering is the slow part)."""
    out = {}
    for name in FIXTURES:
        sm = getattr(seed_models, name)()
        out[name] = (sm, make_sampler(sm))
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_op_equals_sampler_eager_and_in_tf_function(name, built, rng):
    sm, sampler = built[name]
    n, seed = 3, 1234567
    cond = labels(sm, n, rng)
    want = sampler.sample(n, seed=seed, conditions=cond)
    got = sample_op(sampler, n, seed=seed, conditions=cond)
    assert got.dtype == tf.int32 and got.shape == want.shape
    np.testing.assert_array_equal(got.numpy(), want)

    if cond is None:
        fn = tf.function(lambda s: sample_op(sampler, n, seed=s))
        got_fn = fn(tf.constant(seed, tf.int64))
    else:
        fn = tf.function(lambda s, c: sample_op(sampler, n, seed=s, conditions=c))
        got_fn = fn(tf.constant(seed, tf.int64), tf.constant(cond))
    assert got_fn.shape == want.shape  # static shape from the spec and the constant n
    np.testing.assert_array_equal(got_fn.numpy(), want)


def test_tf_function_symbolic_n_temperature_and_big_seed(built):
    sm, sampler = built["categorical4"]
    seed = 2 ** 64 - 3  # above int64: passed to the op as the uint64's bits
    want = sampler.sample(2, seed=seed, temperature=0.7)
    fn = tf.function(lambda n, t: sample_op(sampler, n, seed=seed, temperature=t))
    got = fn(tf.constant(2, tf.int64), tf.constant(0.7))
    np.testing.assert_array_equal(got.numpy(), want)
    concrete = fn.get_concrete_function(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.float32))
    assert concrete.structured_outputs.shape.as_list() == [None] + list(sm.image_shape)


def test_tf_function_constants_follow_the_variables():
    sm = seed_models.keras_io(height=6, width=7, filters=8)
    sampler = make_sampler(sm)
    fn = tf.function(lambda: sample_op(sampler, 4, seed=9))
    before = fn().numpy()
    np.testing.assert_array_equal(before, sampler.sample(4, seed=9))
    # Scaling the weights keeps every zero (mask) where it is: the traced structure stays valid.
    for v in sm.model.trainable_variables:
        v.assign(v * 3.0 + tf.cast(tf.not_equal(v, 0), v.dtype) * 0.1)
    after = fn().numpy()  # same trace, new variable values
    assert len(fn._list_all_concrete_functions()) == 1
    np.testing.assert_array_equal(after, sampler.sample(4, seed=9))
    assert not np.array_equal(before, after)


def test_keras_callback_samples_at_epoch_end(rng):
    sm = seed_models.keras_io(height=6, width=6, filters=8)
    model = sm.model
    sampler = make_sampler(sm)
    drawn = []

    class SampleCallback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            drawn.append(sample_op(sampler, 2, seed=epoch + 11).numpy())

    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    x = (rng.random((16, 6, 6, 1)) < 0.5).astype(np.float32)
    model.fit(x, x, epochs=1, batch_size=8, verbose=0, callbacks=[SampleCallback()])
    assert len(drawn) == 1 and drawn[0].shape == (2, 6, 6, 1)
    np.testing.assert_array_equal(drawn[0], sampler.sample(2, seed=11))  # the trained weights


def test_spec_round_trips_through_the_cpp_parser(built):
    for name in FIXTURES:
        sm, sampler = built[name]
        cond = None if not sm.conditional else [np.zeros((1, sm.num_classes), np.float32)]
        spec, arrays = program_spec(sampler, sampler.program.evaluate_consts(1, cond or []))
        assert canonical_spec(spec) == spec, name
        assert all(a.dtype == np.float32 and a.ndim == 4 for a in arrays)
    # Comments, blank lines, extra blanks and any key order parse to the same program.
    lines = spec.splitlines()
    shuffled = [" ".join([ln.split()[0]] + ln.split()[1:][::-1]) for ln in lines[1:]]
    messy = "# written by hand\n\n" + lines[0] + "\n" + "\n   ".join(shuffled) + "\n\n# the end\n"
    assert canonical_spec(messy) == spec
    # Layer paths with blanks, '%' and non-ASCII stay one token (percent-encoded) and survive the parser.
    assert re.search(r"name=\S*%20", spec)
    odd = re.sub(r"name=\S+", "name=caf%C3%A9%25%20x", spec, count=1)
    assert canonical_spec(odd) == odd
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"bad %XX escape '%G1'"):
        canonical_spec(re.sub(r"name=\S+", "name=a%G1", spec, count=1))


def test_spec_and_arrays_drive_the_raw_op(built):
    sm, sampler = built["rgb_3x256"]
    spec, arrays = program_spec(sampler, sampler.program.evaluate_consts(2))
    got = tf_ops().pixelcnn_fast_sample(consts=arrays, n=2, seed=7, temperature=1.0, image_offset=0, spec=spec)
    np.testing.assert_array_equal(got.numpy(), sampler.sample(2, seed=7))


def _op(spec, arrays, n=2, seed=0, temperature=1.0):
    return tf_ops().pixelcnn_fast_sample(consts=arrays, n=n, seed=seed, temperature=temperature, image_offset=0,
                                         spec=spec)


def test_bad_inputs_give_clear_errors(built):
    sm, sampler = built["keras_io"]
    spec, arrays = program_spec(sampler, sampler.program.evaluate_consts(1))
    with pytest.raises(ValueError, match=r"sample_op: n must be an integer in \[1, 2\*\*32\), got 0"):
        sample_op(sampler, 0)
    with pytest.raises(ValueError, match="sample_op: temperature must be a positive finite float32, got 0.0"):
        sample_op(sampler, 1, temperature=0.0)
    with pytest.raises(ValueError, match=r"sample_op: seed must be an integer in \[0, 2\*\*64\), got -1"):
        sample_op(sampler, 1, seed=-1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"pixelcnn_fast sample: n must be an integer in \[1, 2\*\*32\), got 0"):
        _op(spec, arrays, n=tf.constant(0, tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixelcnn_fast sample: temperature must be a positive finite float32, got -1.0"):
        _op(spec, arrays, temperature=tf.constant(-1.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="declares 14 const arrays, got 13"):
        _op(spec, arrays[:-1])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input 0 \(a conv kernel\): expected shape "
                                                             r"\(7, 7, 1, 32\), got \(5, 5, 1, 32\)"):
        _op(spec, [np.zeros((5, 5, 1, 32), np.float32)] + arrays[1:])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have rank 4"):
        _op(spec, [arrays[0][0]] + arrays[1:])
    with pytest.raises(tf.errors.InvalidArgumentError, match="first dimension must be 1 or the batch 2"):
        _op(spec, arrays[:1] + [np.zeros((3, 1, 1, 32), np.float32)] + arrays[2:])
    lines = spec.splitlines()
    bad = {  # regex of the message -> malformed spec
        r"line 1, token '7': unsupported version \(this build reads 1\)": spec.replace(" 1\n", " 7\n", 1),
        r"line \d+, token 'head': the spec does not end with 'end' \(truncated\?\)": "\n".join(lines[:-1]),
        r"line \d+, token 'fn=gelu': unknown fn 'gelu' \(expected one of relu": spec.replace("fn=relu", "fn=gelu", 1),
        r"line 2, token 'colour=1': unknown key for 'image'": spec.replace("channels=1\n", "channels=1 colour=1\n", 1),
        r"line \d+, token 'i99': input 99 is not declared": spec.replace("b=i1 ", "b=i99 ", 1),
        r"line \d+, token 'out=99': 99 is out of range": spec.replace("conv out=1 ", "conv out=99 ", 1),
        r"line \d+, token 'dh=x': expected an integer": spec.replace("dh=1", "dh=x", 1),
    }
    for want, text in bad.items():
        assert text != spec
        with pytest.raises(tf.errors.InvalidArgumentError, match="bad spec attr: program spec " + want):
            _op(text, arrays)
    with pytest.raises(tf.errors.InvalidArgumentError, match="program spec is empty"):
        canonical_spec("")
