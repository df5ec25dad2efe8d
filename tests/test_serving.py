"""Python front end + TF op: serving. `Sampler.export(path)` writes a SavedModel whose `sample(n, seed,
temperature, image_offset[, conditions])` draws the sampler's images in a fresh process that loads it with
pixelcnn_fast.serving.load, the model's Python code absent; a fresh process that has not registered our ops
gets TensorFlow's "Op type not registered" from a raw tf.saved_model.load, and serving.load turns it into a
message saying to import pixelcnn_fast; a Keras model with MaskedConv2D saved by `model.export()` reloads and
serves identical outputs. One fresh process (tests/serving_child.py) does every load, in that order."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from fixtures import seed_models
from pixelcnn_fast import MaskedConv2D
from pixelcnn_fast.sampler import Sampler

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("served")
    seed = int(os.environ.get("PIXELCNN_FAST_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    print(f"served: seed={seed} (rerun with PIXELCNN_FAST_TEST_SEED={seed})")
    rng = np.random.default_rng(seed)
    cases = []
    sm = seed_models.keras_io(height=7, width=9, filters=8, blocks=1)
    rgb = seed_models.rgb_3x256()
    cond = seed_models.conditional()
    for name, sampler, n in [("keras_io", Sampler(sm.model), 3),
                             ("rgb_3x256", Sampler(rgb.model, head=rgb.head, value_map=rgb.value_map,
                                                              image_shape=rgb.image_shape), 2),
                             ("conditional", Sampler(cond.model), 4)]:
        path = d / name
        sampler.export(str(path))
        seed = int(rng.integers(0, 2 ** 63))
        offset = int(rng.integers(0, 1000))
        conditions = ([np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]] if name == "conditional" else [])
        want = sampler.sample(n, seed, 0.8, conditions=conditions or None, image_offset=offset)
        np.save(d / f"{name}_want.npy", want)
        for k, c in enumerate(conditions):
            np.save(d / f"{name}_cond{k}.npy", c)
        cases.append(dict(name=name, path=str(path), n=n, seed=seed, offset=offset, conditions=len(conditions)))
    # A Keras model with MaskedConv2D, exported by Keras 3's model.export (an inference SavedModel).
    keras.utils.set_random_seed(int(rng.integers(0, 2 ** 31)))
    inp = keras.Input((6, 5, 3))
    x = MaskedConv2D(9, 5, mask_type="A", color_groups=3, activation="relu")(inp)
    x = MaskedConv2D(9, 3, mask_type="B", color_groups=3, dilation_rate=2)(x)
    model = keras.Model(inp, x)
    image = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    np.save(d / "keras_image.npy", image)
    np.save(d / "keras_want.npy", np.asarray(model(image)))
    model.export(str(d / "keras_export"), verbose=False)
    (d / "cases.json").write_text(json.dumps(dict(cases=cases, keras=str(d / "keras_export"))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "serving_child.py"), str(d)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d, json.loads((d / "child.json").read_text())


def test_raw_load_without_our_ops_says_op_type_not_registered(served):
    _, child = served
    assert child["raw_error"]["type"] == "RuntimeError"
    assert "Op type not registered 'PixelcnnFast" in child["raw_error"]["message"]


def test_load_says_to_import_pixelcnn_fast_when_the_ops_cannot_be_registered(served):
    _, child = served
    message = child["helper_error"]
    assert "uses pixelcnn_fast's TF op 'PixelcnnFast" in message
    assert "import pixelcnn_fast" in message
    assert "pixelcnn_fast's TF op library could not be loaded here: simulated: built without TF ops" in message


@pytest.mark.parametrize("name", ["keras_io", "rgb_3x256", "conditional"])
def test_exported_sampler_draws_the_samplers_images_in_a_fresh_process(served, name):
    d, child = served
    want = np.load(d / f"{name}_want.npy")
    for how in ("function", "signature"):
        got = np.load(d / f"{name}_{how}.npy")
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want, err_msg=f"{name} via the {how}")


def test_keras_export_of_masked_conv_serves_identical_outputs(served):
    d, child = served
    got, want = np.load(d / "keras_got.npy"), np.load(d / "keras_want.npy")
    np.testing.assert_array_equal(got, want)
