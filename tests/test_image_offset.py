"""Python front end + core executor + TF op: the global image index (docs/SEMANTICS.md). Image k of a call with
image_offset=o is image o + k of the stream its seed defines, so one call and any split of the same job
into calls with offsets draw identical images, on the CPU executor (Sampler.sample) and the TF op
(tf_sampler.sample_op, eager and in a tf.function with a tensor offset). The CUDA executor's twin (host
emulation, and the GPU when there is one) is in tests/test_cuda_sampler.py."""

import numpy as np
import pytest
import tensorflow as tf

from fixtures import seed_models
from pixelcnn_fast.sampler import Sampler
from pixelcnn_fast.tf_sampler import sample_op

MODELS = {
    "keras_io": lambda: seed_models.keras_io(height=9, width=11, filters=8, blocks=1),
    "categorical4": lambda: seed_models.categorical4(height=6, width=7),
    "rgb_3x256": seed_models.rgb_3x256,
    "conditional": seed_models.conditional,
}


def make_sampler(sm):
    declared = getattr(sm.model, "inputs", None)
    return Sampler(sm.model, head=sm.head, value_map=None if sm.head == "bernoulli" else sm.value_map,
                   image_shape=None if declared else sm.image_shape)


def random_split(rng, n):
    """Call sizes summing to n: a random composition (batch-1 calls, uneven sizes)."""
    cuts = sorted(rng.choice(np.arange(1, n), size=int(rng.integers(1, n)), replace=False).tolist())
    return [b - a for a, b in zip([0] + cuts, cuts + [n])]


def labels_for(sm, n, rng):
    if not sm.num_classes:
        return None
    return np.eye(sm.num_classes, dtype=np.float32)[rng.integers(0, sm.num_classes, n)]


@pytest.fixture(scope="module")
def samplers():
    return {name: _build(make) for name, make in MODELS.items()}


def _build(make):
    sm = make()
    return sm, make_sampler(sm)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_any_split_into_calls_draws_the_one_call_images(name, samplers, rng):
    sm, sampler = samplers[name]
    n = 7
    seed = int(rng.integers(0, 2 ** 32)) << 32 | int(rng.integers(0, 2 ** 32))  # any uint64
    temperature = float(rng.choice([1.0, 0.6]))
    start = int(rng.integers(0, 1000))  # the whole job itself starts anywhere in the stream
    labels = labels_for(sm, n, rng)
    cond = lambda a, b: None if labels is None else [labels[a:b]]  # noqa: E731
    whole = sampler.sample(n, seed, temperature, conditions=cond(0, n), image_offset=start)
    for sizes in ([1] * n, [n - 1, 1], random_split(rng, n), random_split(rng, n)):
        parts, at = [], 0
        for k in sizes:
            parts.append(sampler.sample(k, seed, temperature, conditions=cond(at, at + k), image_offset=start + at))
            at += k
        np.testing.assert_array_equal(np.concatenate(parts), whole, err_msg=f"{name}: split {sizes}")
    # The offset means something: the same call at another offset draws other images.
    assert not np.array_equal(sampler.sample(n, seed, temperature, conditions=cond(0, n), image_offset=start + n),
                              whole)
    if start == 0:
        np.testing.assert_array_equal(sampler.sample(n, seed, temperature, conditions=cond(0, n)), whole)


@pytest.mark.parametrize("name", ["keras_io", "rgb_3x256"])
def test_tf_op_draws_the_samplers_images_at_an_offset(name, samplers, rng):
    sm, sampler = samplers[name]
    seed = int(rng.integers(0, 2 ** 63))
    offset = int(rng.integers(1, 10_000))
    want = sampler.sample(5, seed, image_offset=offset)
    np.testing.assert_array_equal(sample_op(sampler, 5, seed, image_offset=offset).numpy(), want)
    # Split across op calls, and inside a tf.function with the offset a tensor (one trace for every offset).
    fn = tf.function(lambda o: sample_op(sampler, 2, seed, image_offset=o))
    got = np.concatenate([fn(tf.constant(offset, tf.int64)).numpy(), fn(tf.constant(offset + 2, tf.int64)).numpy(),
                          sample_op(sampler, 1, seed, image_offset=offset + 4).numpy()])
    np.testing.assert_array_equal(got, want)


def test_bad_offsets_are_refused_naming_the_argument(samplers):
    _, sampler = samplers["keras_io"]
    # One rule, one message (pixelcnn_fast.checks / csrc/core/checks.h): TypeError for a non-integer.
    with pytest.raises(ValueError, match=r"Sampler.sample: image_offset must be an integer in \[0, 2\*\*32\), got -1"):
        sampler.sample(1, image_offset=-1)
    for bad in (1.5, True, "3"):
        with pytest.raises(TypeError, match=r"Sampler.sample: image_offset must be an integer in \[0, 2\*\*32\)"):
            sampler.sample(1, image_offset=bad)
    with pytest.raises(ValueError, match=r"image_offset \+ n must be <= 2\*\*32 \(image indices are 32-bit\), "
                                         r"got 4294967295 \+ 2"):
        sampler.sample(2, image_offset=2 ** 32 - 1)
    last = sampler.sample(1, image_offset=2 ** 32 - 1)  # the stream's last image is reachable
    assert last.shape[0] == 1
    with pytest.raises(ValueError, match=r"sample_op: image_offset must be an integer in \[0, 2\*\*32\), got -3"):
        sample_op(sampler, 1, 0, image_offset=-3)
    # A tensor offset is checked by the op itself (the core's message).
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"pixelcnn_fast sample: image_offset \+ n must be <= 2\*\*32"):
        sample_op(sampler, 2, 0, image_offset=tf.constant(2 ** 32 - 1, tf.int64))
    # The C++ executor refuses it too (a direct binding call, no Python check in between).
    exe = sampler.executor(1, [])
    h, w, c = sampler.program.image_shape
    with pytest.raises(ValueError, match=r"sample: image_offset must be an integer in \[0, 2\*\*32\), got -1"):
        exe.sample(1, 0, 1.0, -1, h, w, c)
