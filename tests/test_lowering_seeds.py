"""Python front end: every seed model (tests/fixtures) lowers to a program that reproduces it, causal
ones pass the causality analysis, and the notebook's non-causal variants are refused naming the layer
that first sees the future (docs/SEMANTICS.md, "How correctness is shown")."""

import numpy as np
import pytest
import tensorflow as tf

from fixtures import seed_models
from pixelcnn_fast.program.causality import analyse_causality, encode_frontier
from pixelcnn_fast.program.ir import NotCausalError
from pixelcnn_fast.program.lower import lower
from pixelcnn_fast.program.tf_executor import run_program

SEEDS = ["keras_io", "book", "categorical4", "categorical256_logits", "rgb_3x256", "rgb_3x256_fast",
         "conditional", "fast_keras_io", "notebook_plain_residual", "notebook_dilated",
         "notebook_attention", "notebook_conditional"]


@pytest.mark.parametrize("name", SEEDS)
def test_seed_model_lowers_exactly_and_causality_is_decided(name, rng):
    sm = getattr(seed_models, name)()
    declared = getattr(sm.model, "inputs", None)
    program = lower(sm.model, image_shape=None if declared else sm.image_shape)
    inputs = seed_models.example_inputs(sm, 2, rng)
    inputs = [tf.convert_to_tensor(t) for t in (inputs if isinstance(inputs, list) else [inputs])]
    consts = program.evaluate_consts(2, inputs[1:])
    got = run_program(program, consts, inputs[0])[program.output_buffer]
    want = sm.model(inputs if len(inputs) > 1 else inputs[0])
    scale = float(tf.reduce_max(tf.abs(want))) + 1.0
    assert float(tf.reduce_max(tf.abs(tf.reshape(got, want.shape) - want))) <= 1e-6 * scale
    if sm.causal:
        keys = analyse_causality(program, consts)
        assert (keys[program.logits_buffer] < encode_frontier(0, 0, 0) +
                sm.image_shape[2]).all()
    else:
        with pytest.raises(NotCausalError, match=rf"layer '{sm.bad_layer}' \(\w+\) reads the pixel "
                                                 r"at offset \(\+\d+, [+-]\d+\)"):
            analyse_causality(program, consts)


def test_heads_are_read_from_the_output_op():
    assert lower(seed_models.keras_io().model).final_activation == "sigmoid"
    assert lower(seed_models.categorical4().model).final_activation == "softmax"
    sm = seed_models.rgb_3x256()  # subclassed: no declared inputs, so the image shape is given
    program = lower(sm.model, image_shape=sm.image_shape)
    assert program.final_activation == "" and program.output_levels == 256
    assert program.buffer_channels[program.output_buffer] == 3 * 256
