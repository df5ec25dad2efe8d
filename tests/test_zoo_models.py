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
from fixtures.perturbation import raster_violations


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
    violations, reaches_later = raster_violations(zm, rng)
    assert not violations, f"{name}: outputs at p <= q change with the pixel at q: (q, p) = {violations[:5]}"
    assert reaches_later, f"{name}: some pixel influences no later output (the check would be vacuous)"


@pytest.mark.parametrize("name", zoo_models.NON_CAUSAL)
def test_non_causal_twin_sees_the_future(name, rng):
    zm = zoo_models.build(name, height=6, width=7)
    assert not zm.causal and zm.bad_layer
    violations, _ = raster_violations(zm, rng)
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
