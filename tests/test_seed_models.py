"""Test fixtures: the seed models build, run, are masked as their authors mask, and leak or not."""

# The causality check is structural (docs/SEMANTICS.md, "How correctness is shown"): the derivative of
# the output for image element o (raster order, channels within a pixel) with respect to the
# image element i is exactly 0 for every i >= o.  All rows of that Jacobian come from ONE
# gradient call: the image is repeated once per output element, copy n's loss reads only
# element n (with random positive weights over its levels/features), so the gradient w.r.t.
# copy n is row n.  Copies are independent (no layer mixes the batch).

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from fixtures import seed_models as sm_lib

CAUSAL = ["keras_io", "book", "categorical4", "categorical256_logits", "rgb_3x256",
          "rgb_3x256_fast", "conditional", "fast_keras_io"]
NON_CAUSAL = ["notebook_plain_residual", "notebook_dilated", "notebook_attention",
              "notebook_conditional"]
ALL = CAUSAL + NON_CAUSAL

# Masked convs in each default-size model (catches a layer silently left out or unmasked).
MASKED_LAYER_COUNT = {"keras_io": 4, "book": 4, "categorical4": 4, "categorical256_logits": 5,
                      "rgb_3x256": 7, "rgb_3x256_fast": 7, "conditional": 4,
                      "fast_keras_io": 4, "notebook_plain_residual": 1, "notebook_dilated": 0,
                      "notebook_attention": 0, "notebook_conditional": 0}

_CACHE = {}


def built(name):
    """One default-size build per name per session (builds are the slow part)."""
    if name not in _CACHE:
        _CACHE[name] = sm_lib.build(name)
    return _CACHE[name]


def run(sm, inputs):
    return np.asarray(sm.model(inputs))


def image_fn(sm, label):
    """The model as a function of the image alone (a conditional model gets a fixed label)."""
    if not sm.conditional:
        return lambda images: sm.model(images)
    return lambda images: sm.model([images, tf.repeat(label[None], tf.shape(images)[0], 0)])


def dependency_matrix(fn, image, groups, seed=0):
    """D[o, i] = (d out_o / d image_i != 0), o over H*W*groups output elements, i over H*W*C.

    fn's output is read as (N, H, W, groups, -1): groups = image channels for a head, 1 for a
    feature tensor (then o is a pixel).
    """
    h, w, _ = image.shape
    n_out = h * w * groups
    x = tf.constant(np.repeat(image[None], n_out, axis=0))
    select = np.eye(n_out, dtype=np.float32).reshape(n_out, h, w, groups, 1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = fn(x)
        out = tf.reshape(out, (n_out, h, w, groups, -1))
        weights = np.random.default_rng(seed).uniform(0.5, 1.5, out.shape[-1]).astype("float32")
        loss = tf.reduce_sum(out * select * weights)
    grad = tape.gradient(loss, x)
    return np.asarray(grad).reshape(n_out, -1) != 0


def random_image(sm, rng):
    return sm_lib.value_map_fn(sm.value_map, sm.levels)(
        rng.integers(0, sm.levels, size=sm.image_shape)).astype(np.float32) \
        + rng.uniform(0.0, 0.5, size=sm.image_shape).astype(np.float32)  # off the grid


def head_dependencies(sm, rng):
    label = None
    if sm.conditional:
        label = tf.constant(np.eye(sm.num_classes, dtype=np.float32)[1])
    return dependency_matrix(image_fn(sm, label), random_image(sm, rng), sm.image_shape[-1])


def expected_live(kh, kw, cin, cout, mask_type, groups):
    """Live taps written from the paper's definition (independent of any fixture's mask code)."""
    live = np.zeros((kh, kw, cin, cout), bool)
    cy, cx = kh // 2, kw // 2
    live[:cy] = True
    live[cy, :cx] = True
    block_in = np.arange(cin) * groups // cin
    block_out = np.arange(cout) * groups // cout
    before = block_in[:, None] < block_out[None, :]
    same = block_in[:, None] == block_out[None, :]
    if groups == 1:
        before = np.zeros_like(before)
    live[cy, cx] = before | (same if mask_type == "B" else False)
    return live


# ------------------------------------------------------------------------------- metadata

@pytest.mark.parametrize("name", ALL)
def test_metadata_is_consistent(name):
    sm = built(name)
    assert sm.name == name
    assert sm.head in ("bernoulli", "categorical")
    assert (sm.levels == 2) if sm.head == "bernoulli" else (sm.levels in (4, 256))
    assert sm.value_map in ("identity", "level/N", "level/(N-1)", "level/255")
    assert sm.causal == (sm.bad_layer is None)
    assert sm.conditional == (sm.num_classes > 0)


# ------------------------------------------------------------------------ forward pass

@pytest.mark.parametrize("name", ALL)
def test_forward_shape_and_finite(name):
    sm = built(name)
    rng = np.random.default_rng(1)
    out = run(sm, sm_lib.example_inputs(sm, 2, rng))
    assert out.shape == (2,) + tuple(sm.output_shape)
    assert np.all(np.isfinite(out))
    if sm.head == "bernoulli":
        assert np.all((out >= 0) & (out <= 1))
    if name == "categorical4":
        np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["keras_io", "book", "categorical256_logits", "rgb_3x256",
                                  "conditional", "notebook_attention"])
def test_builds_are_reproducible(name):
    first, again, other = (sm_lib.build(name, seed=s).model for s in (3, 3, 4))
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first.get_weights(), other.get_weights()))


def test_categorical256_softmax_option_restores_the_notebook_head():
    sm = sm_lib.build("categorical256_logits", softmax=True)
    out = run(sm, sm_lib.example_inputs(sm, 2, np.random.default_rng(0)))
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


# -------------------------------------------------------------------- masked kernels

@pytest.mark.parametrize("name", ALL)
def test_masked_kernels_have_the_mask_zero_structure(name):
    sm = built(name)
    # keras.io-style layers write kernel * mask into their variable when called.
    run(sm, sm_lib.example_inputs(sm, 1, np.random.default_rng(0)))
    found = sm_lib.masked_layers(sm.model)
    assert len(found) == MASKED_LAYER_COUNT[name]
    for layer, kernel, mask_type, groups in found:
        live = expected_live(*kernel.shape, mask_type, groups)
        nonzero = kernel != 0
        assert not np.any(nonzero & ~live), f"{layer.name}: a dead tap is non-zero"
        assert np.all(nonzero[live]), f"{layer.name}: a live tap is zero"


def test_keras_io_kernel_variable_is_masked_only_after_a_call():
    sm = sm_lib.build("keras_io", seed=5)
    layer = sm_lib.masked_layers(sm.model)[0][0]
    dead = ~expected_live(*layer.conv.kernel.shape, "A", 1)
    assert np.any(layer.conv.kernel.numpy()[dead] != 0)  # as in the example: raw until called
    run(sm, np.zeros((1,) + sm.image_shape, np.float32))
    assert np.all(layer.conv.kernel.numpy()[dead] == 0)


# ----------------------------------------------------------------------------- causality

@pytest.mark.parametrize("name", CAUSAL)
def test_causal_models_never_read_the_current_or_later_elements(name):
    sm = built(name)
    deps = head_dependencies(sm, np.random.default_rng(2))
    upper = np.triu(np.ones_like(deps), k=0)  # input element i >= output element o
    leaks = np.argwhere(deps & upper)
    assert leaks.size == 0, f"{name}: output element reads input element(s) {leaks[:5]}"
    # not vacuous: (nearly) every element after the first reads some earlier element; a few
    # may read nothing where every path runs through a relu that is off for this input
    assert deps[1:].any(axis=1).mean() > 0.9, f"{name}: most outputs read no input at all"
    assert not deps[0].any()


@pytest.mark.parametrize("name", NON_CAUSAL)
def test_non_causal_models_fail_the_causality_check(name):
    sm = built(name)
    deps = head_dependencies(sm, np.random.default_rng(2))
    assert np.any(deps & np.triu(np.ones_like(deps), k=0)), f"{name} does not leak"


def pixel_sees_future(deps, channels):
    """deps from a feature tensor (one row per pixel): some pixel reads a later pixel."""
    n_pix = deps.shape[0]
    later = np.arange(n_pix)[None, :] > np.arange(n_pix)[:, None]
    return bool(np.any(deps.reshape(n_pix, n_pix, channels).any(-1) & later))


@pytest.mark.parametrize("name", NON_CAUSAL)
def test_bad_layer_is_the_first_to_read_the_future(name):
    sm = built(name)
    layer = sm.model.get_layer(sm.bad_layer)
    assert isinstance(layer, keras.layers.Conv2D) and max(layer.kernel_size) > 1
    rng = np.random.default_rng(3)
    image = random_image(sm, rng)
    label = np.eye(sm.num_classes, dtype=np.float32)[1] if sm.conditional else None

    def sub(tensor):
        m = keras.Model(sm.model.inputs, tensor)
        return image_fn(dataclasses.replace(sm, model=m),
                        None if label is None else tf.constant(label))

    channels = sm.image_shape[-1]
    assert pixel_sees_future(dependency_matrix(sub(layer.output), image, 1), channels)
    if layer.input is not sm.model.inputs[0]:
        assert not pixel_sees_future(dependency_matrix(sub(layer.input), image, 1), channels)


# ------------------------------------------------------ the fast-layer variants are the same

def test_fast_keras_io_reproduces_keras_io_with_its_weights():
    io, fast = sm_lib.build("keras_io", seed=7), sm_lib.build("fast_keras_io", seed=8)
    x = sm_lib.example_inputs(io, 2, np.random.default_rng(4))
    expected = run(io, x)  # the first call also masks keras_io's kernel variables
    fast.model.set_weights(io.model.get_weights())
    np.testing.assert_allclose(run(fast, x), expected, rtol=1e-5, atol=1e-6)


def test_rgb_fast_reproduces_the_blog_model_with_its_weights():
    blog, fast = sm_lib.build("rgb_3x256", seed=7), sm_lib.build("rgb_3x256_fast", seed=8)
    x = sm_lib.example_inputs(blog, 2, np.random.default_rng(4))
    fast.model.set_weights(blog.model.get_weights())
    np.testing.assert_allclose(run(fast, x), run(blog, x), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------- authors' real sizes

@pytest.mark.parametrize("name, params", [
    ("keras_io", 532_673),                # stated in the keras.io example's summary
    ("fast_keras_io", 532_673),           # same architecture on our layer
    ("categorical256_logits", 393_280),   # stated in the notebook's summary
    ("book", 389_249),                    # the book's companion notebook summary
])
def test_full_size_parameter_count(name, params):
    assert sm_lib.build(name, full=True).model.count_params() == params
