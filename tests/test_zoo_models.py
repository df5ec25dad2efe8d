"""Test fixtures: the zoo of the field's architectures (tests/fixtures/zoo_models.py) is written right before
the sampler is asked to take it. Each model runs, and its causality is checked structurally, without our
lowering: changing the input pixel at position q (every channel, or the code) must leave every output at
positions p <= q in raster order unchanged (up to float32 rounding: a masked tap multiplies by zero, a
shift never reads the pixel), and must change some output after q (so the check is not vacuous). The
non-causal twins must fail it at a position their missing shift lets through."""

import numpy as np
import pytest
import tensorflow as tf

from fixtures import zoo_models


def _perturbed_batch(zm, base, rng):
    """One image per position q: the base image with pixel q changed (all channels, or the code)."""
    h, w = zm.image_shape[:2]
    batch = np.repeat(base, h * w, axis=0)
    for q in range(h * w):
        i, j = divmod(q, w)
        if zm.input_dtype == "int32":
            batch[q, i, j] = (batch[q, i, j] + 1 + rng.integers(zm.levels - 1)) % zm.levels
        else:
            old = batch[q, i, j].copy()
            new = zoo_models.example_inputs(zm, 1, rng)
            new = (new[0] if isinstance(new, list) else new)[0, i, j]
            batch[q, i, j] = np.where(new == old, -old - 0.5, new)
    return batch


def _outputs(zm, images, label):
    inputs = [tf.constant(images), tf.constant(np.repeat(label, len(images), axis=0))] if zm.num_classes \
        else tf.constant(images)
    return zm.model(inputs, training=False).numpy()


def _raster_violations(zm, rng):
    """[(q, first p <= q whose outputs changed)] and whether every q changed something after it."""
    base_inputs = zoo_models.example_inputs(zm, 1, rng)
    base, label = (base_inputs[0], base_inputs[1]) if zm.num_classes else (base_inputs, None)
    # The base image rides in the same batch as its perturbed copies (TF may pick another conv algorithm
    # for another batch size), and "changed" means beyond float32 rounding: TF's conv algorithms (oneDNN's
    # Winograd, say) mix input values before the multiply, so a pixel behind a zero tap can move an
    # output by rounding. A real dependence moves it by orders of magnitude more.
    out = _outputs(zm, np.concatenate([base, _perturbed_batch(zm, base, rng)]), label)
    want, got = out[0], out[1:]
    tol = 1e-5 * (1.0 + np.abs(want).max())
    h, w = zm.image_shape[:2]
    changed = np.any(np.abs(got - want[None]) > tol, axis=-1).reshape(h * w, h * w)  # [q, p]
    violations = [(q, int(np.argmax(changed[q, : q + 1]))) for q in range(h * w) if changed[q, : q + 1].any()]
    reaches_later = all(changed[q, q + 1:].any() for q in range(h * w - 1))
    return violations, reaches_later


@pytest.mark.parametrize("name", zoo_models.CAUSAL)
def test_zoo_model_runs_and_is_causal(name, rng):
    zm = zoo_models.build(name, height=6, width=7)
    inputs = zoo_models.example_inputs(zm, 2, rng)
    out = zm.model(inputs if not isinstance(inputs, list) else [tf.constant(x) for x in inputs],
                   training=False).numpy()
    h, w = zm.image_shape[:2]
    channels = {"categorical": zm.levels, "logistic_mixture": (10 if zm.image_shape[-1] == 3 and
                                                               len(zm.image_shape) == 3 else 3) * zm.nr_mix}
    assert out.shape == (2, h, w, channels[zm.head]), out.shape
    assert np.all(np.isfinite(out))
    violations, reaches_later = _raster_violations(zm, rng)
    assert not violations, f"{name}: outputs at p <= q change with the pixel at q: (q, p) = {violations[:5]}"
    assert reaches_later, f"{name}: some pixel influences no later output (the check would be vacuous)"


@pytest.mark.parametrize("name", zoo_models.NON_CAUSAL)
def test_non_causal_twin_sees_the_future(name, rng):
    zm = zoo_models.build(name, height=6, width=7)
    assert not zm.causal and zm.bad_layer
    violations, _ = _raster_violations(zm, rng)
    assert violations, f"{name} should read the pixel it predicts or a later one"
    # Both twins leak the pixel itself: the missing shift is by one row or one column.
    assert any(q == p for q, p in violations), violations[:5]


def test_full_size_vqvae_prior_matches_the_example():
    # keras.io's prior at its real size: 7x7 codes, 128 embeddings and filters, int32 input, 128 logits.
    zm = zoo_models.vqvae_prior(full=True)
    assert zm.model.inputs[0].dtype == "int32" and tuple(zm.model.inputs[0].shape) == (None, 7, 7)
    assert tuple(zm.model.outputs[0].shape) == (None, 7, 7, 128)
    ops = {op.type for op in tf.function(zm.model).get_concrete_function(
        tf.TensorSpec((None, 7, 7), tf.int32)).graph.get_operations()}
    assert "OneHot" in ops, sorted(ops)
