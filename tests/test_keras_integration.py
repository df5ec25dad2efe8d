"""Tests: Python front end Keras integration — SampleCallback in `fit` and convert(model)."""

# "Identical outputs" for convert: the converted model runs the same kernels and biases, but the fast
# op sums a conv's products in another order than TF's Conv2D (blocked GEMM over live taps vs
# oneDNN), so float32 results may differ by rounding: max |diff| <= 1e-6 on these small models
# (outputs of order 1), far below what a misread mask or a dropped bias changes (>= 1e-3). With
# implementation="reference" the converted layer runs TF's own Conv2D on the very same (already
# masked) kernel, so the outputs are bit-identical, which pins the weights and config exactly.

import types

import keras
import numpy as np
import pytest

from fixtures import seed_models
from pixelcnn_fast import MaskedConv2D
from pixelcnn_fast.conversion import convert, find_mask
from pixelcnn_fast.masks import make_mask
from pixelcnn_fast.models import keras_io_pixelcnn
from pixelcnn_fast.png import grid_shape, read_png
from pixelcnn_fast.sampler import Sampler

IDENTICAL = 1e-6


def _max_diff(a, b, x):
    return float(np.max(np.abs(np.asarray(a(x), np.float64) - np.asarray(b(x), np.float64))))


# ----------------------------------------------------------------------------- imports

def test_module_named_keras_imports_the_real_keras():
    from pixelcnn_fast import keras as pk
    import pixelcnn_fast.keras

    assert pk is pixelcnn_fast.keras
    assert pk.keras is keras and keras.__name__ == "keras"  # absolute import inside the package
    assert issubclass(pk.SampleCallback, keras.callbacks.Callback)


# ----------------------------------------------------------------------------- SampleCallback

def test_sample_callback_writes_a_grid_per_epoch_in_fit(tmp_path):
    from pixelcnn_fast.keras import SampleCallback

    h, w, n = 8, 8, 5
    model = keras_io_pixelcnn(height=h, width=w, filters=8, blocks=1)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = (np.random.default_rng(0).random((16, h, w, 1)) > 0.5).astype("float32")
    every_epoch = SampleCallback(n=n, out_dir=str(tmp_path / "a"), seed=7)
    every_second = SampleCallback(n=n, every=2, out_dir=str(tmp_path / "b"), filename="s{epoch}.png")
    model.fit(x, x, epochs=2, batch_size=8, verbose=0, callbacks=[every_epoch, every_second])

    assert [p.split("/")[-1] for p in every_epoch.paths] == ["samples_epoch_001.png",
                                                             "samples_epoch_002.png"]
    assert [p.split("/")[-1] for p in every_second.paths] == ["s2.png"]
    rows, cols = grid_shape(n)
    for path in every_epoch.paths + every_second.paths:
        png = read_png(path)
        assert png.shape == (2 + rows * (h + 2), 2 + cols * (w + 2))  # pad 2 between and around
    # The grid holds the sampled levels (bernoulli: 0 -> black, 1 -> white) in raster order.
    grid = read_png(every_epoch.paths[-1])
    assert np.array_equal(grid[2:2 + h, 2:2 + w], every_epoch.images[0, :, :, 0] * 255)
    # The cached sampler follows training: the last grid is what a fresh Sampler of the trained
    # weights draws with the same seed.
    fresh = Sampler(model).sample(n, seed=7)
    assert np.array_equal(every_epoch.images, fresh)


def test_sample_callback_checks_arguments():
    from pixelcnn_fast.keras import SampleCallback

    with pytest.raises(ValueError, match="every must be an int >= 1"):
        SampleCallback(every=0)
    with pytest.raises(ValueError, match=r"SampleCallback: n must be an integer in \[1, 2\*\*32\), got 0"):
        SampleCallback(n=0)
    with pytest.raises(ValueError, match="filename must be a format string"):
        SampleCallback(filename="x_{step}.png")


# ----------------------------------------------------------------------------- convert

def test_find_mask_reads_the_most_restrictive_mask():
    rng = np.random.default_rng(0)
    for mask_type, groups in (("A", 1), ("B", 1), ("A", 3), ("B", 3)):
        k = rng.standard_normal((5, 5, 6, 9)) * make_mask(5, 5, 6, 9, mask_type, groups)
        assert find_mask(k)[:2] == (mask_type, groups)
    assert find_mask(rng.standard_normal((3, 3, 2, 2))) is None        # unmasked
    assert find_mask(rng.standard_normal((1, 1, 4, 4)))[2] is False     # 1x1 "B" zeroes nothing
    assert find_mask(np.zeros((3, 3, 2, 2))) is None                    # ambiguous


def test_convert_keras_io_functional_form_identical_outputs():
    # keras.io's PixelConvLayer (assigns kernel * mask to a wrapped Conv2D in call), without the
    # subclassed ResidualBlock: the functional form convert rebuilds.
    sm = seed_models.keras_io(filters=8, blocks=0)
    x = seed_models.example_inputs(sm, 4, np.random.default_rng(1))
    converted = convert(sm.model)
    old = [l for l in sm.model.layers if isinstance(l, seed_models.PixelConvLayer)]
    new = [l for l in converted.layers if isinstance(l, MaskedConv2D)]
    assert [l.name for l in new] == [l.name for l in old]
    assert [(l.mask_type, l.kernel_size) for l in new] == [("A", (7, 7)), ("B", (1, 1)), ("B", (1, 1))]
    for o, l in zip(old, new):
        assert l.activation is keras.activations.relu
        np.testing.assert_array_equal(l.kernel.numpy(), o.conv.kernel.numpy())  # effective kernel
        np.testing.assert_array_equal(l.bias.numpy(), o.conv.bias.numpy())
    assert _max_diff(sm.model, converted, x) <= IDENTICAL
    assert _max_diff(sm.model, convert(sm.model, implementation="reference"), x) == 0.0


def test_convert_multiply_in_call_and_color_groups():
    # Kernel-variable layers (no inner Conv2D): the notebook's bool-mask layer, and the CIFAR blog's
    # RGB layer whose colour-group mask is read from the kernel's zeros at the centre tap.
    sm = seed_models.categorical256_logits(filters=6, blocks=1)
    x = seed_models.example_inputs(sm, 2, np.random.default_rng(2))
    converted = convert(sm.model)
    assert [l.mask_type for l in converted.layers if isinstance(l, MaskedConv2D)] == ["A", "B", "B", "B", "B"]
    assert _max_diff(sm.model, converted, x) <= IDENTICAL * 10  # 256 logits of order 1-10

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    y = seed_models.BlogMaskedConv2D(5, 3, 6, act="relu", mode="A")(inputs)
    y = seed_models.BlogMaskedConv2D(3, 6, 6, act="relu", mode="B")(y)
    out = keras.layers.Conv2D(3, 1)(y)
    rgb = keras.Model(inputs, out)
    converted = convert(rgb)
    masked = [l for l in converted.layers if isinstance(l, MaskedConv2D)]
    assert [(l.mask_type, l.color_groups) for l in masked] == [("A", 3), ("B", 3)]
    x = np.random.default_rng(3).random((2, 6, 6, 3)).astype("float32")
    assert _max_diff(rgb, converted, x) <= IDENTICAL


def test_convert_plain_conv2d_holding_a_mask_and_keeps_other_layers():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    first = keras.layers.Conv2D(4, 5, padding="same", activation="relu", name="masked_by_hand")
    y = first(inputs)
    y = keras.layers.Conv2D(4, 1, activation="relu", name="head_1x1")(y)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", name="head")(y)
    model = keras.Model(inputs, out)
    k, b = first.get_weights()
    first.set_weights([k * make_mask(5, 5, 1, 4, "A"), b])  # as a masking constraint leaves it
    converted = convert(model)
    kinds = {l.name: type(l).__name__ for l in converted.layers[1:]}
    # The 5x5 kernel's zeros are mask A's; the 1x1 convs' "mask B" zeroes nothing: kept as Conv2D.
    assert kinds == {"masked_by_hand": "MaskedConv2D", "head_1x1": "Conv2D", "head": "Conv2D"}
    assert converted.get_layer("masked_by_hand").mask_type == "A"
    # Kept layers are copies, not shared: training the converted model leaves the original alone.
    assert converted.get_layer("head") is not model.get_layer("head")
    x = np.random.default_rng(4).random((2, 6, 6, 1)).astype("float32")
    assert _max_diff(model, converted, x) <= IDENTICAL


@pytest.mark.parametrize("fixture", ["keras_io", "categorical4"])
def test_convert_keras_io_with_subclassed_residual_block_identical_outputs(fixture):
    # keras.io's own form (seed 002) and the book's (seed 000): the subclassed ResidualBlock keeps
    # its class and call(); its `pixel_conv` attribute becomes a MaskedConv2D with the effective
    # kernel, its 1x1 Conv2Ds are copies with the same weights.
    sm = getattr(seed_models, fixture)(filters=8, blocks=2)
    x = seed_models.example_inputs(sm, 3, np.random.default_rng(7))
    with pytest.warns(UserWarning, match=r"keeps its class and calls MaskedConv2D as pixel_conv"):
        converted = convert(sm.model)
    old_blocks = [l for l in sm.model.layers if isinstance(l, seed_models.ResidualBlock)]
    new_blocks = [l for l in converted.layers if isinstance(l, seed_models.ResidualBlock)]
    assert len(new_blocks) == len(old_blocks) == 2
    for o, n in zip(old_blocks, new_blocks):
        assert n is not o and isinstance(n.pixel_conv, MaskedConv2D)
        assert (n.pixel_conv.mask_type, n.pixel_conv.kernel_size) == ("B", (3, 3))
        assert n.pixel_conv.activation is keras.activations.relu
        np.testing.assert_array_equal(n.pixel_conv.kernel.numpy(), o.pixel_conv.conv.kernel.numpy())
        for name in ("conv1", "conv2"):
            a, b = getattr(o, name), getattr(n, name)
            assert type(b) is keras.layers.Conv2D and b is not a
            for va, vb in zip(a.weights, b.weights):
                np.testing.assert_array_equal(va.numpy(), vb.numpy())
        # Tracking follows the swap: the block's weights are its three convs' (no stale layer).
        assert len(n.weights) == 6 and not any(isinstance(l, seed_models.PixelConvLayer)
                                               for l in n._flatten_layers(recursive=True))
    assert _max_diff(sm.model, converted, x) <= IDENTICAL
    with pytest.warns(UserWarning):
        assert _max_diff(sm.model, convert(sm.model, implementation="reference"), x) == 0.0
    # Training the converted model leaves the original's variables alone.
    converted.layers[2].conv1.kernel.assign(converted.layers[2].conv1.kernel * 0)
    assert np.abs(old_blocks[0].conv1.kernel.numpy()).max() > 0


class _InlineMaskedBlock(keras.layers.Layer):
    """A residual block computing its masked conv inline (a kernel variable, no sub-layer)."""

    def build(self, input_shape):
        c = input_shape[-1]
        self.kernel = self.add_weight(shape=(3, 3, c, c), initializer="glorot_uniform")
        self.mask = make_mask(3, 3, c, c, "B")

    def call(self, x):
        import tensorflow as tf
        return x + tf.nn.relu(tf.nn.conv2d(x, self.kernel * self.mask, 1, "SAME"))


def test_convert_refuses_inline_masked_conv_naming_what_to_change():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    y = seed_models.NotebookMaskedConv2D(4, 5, "A")(inputs)
    y = _InlineMaskedBlock(name="inline_block")(y)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(y))
    with pytest.raises(ValueError) as err:
        convert(model)
    msg = str(err.value)
    assert "layer 'inline_block' (_InlineMaskedBlock) computes a masked convolution inline" in msg
    assert "pixelcnn_fast.MaskedConv2D in its __init__" in msg and "mask_type='B'" in msg
    assert "set_weights" in msg


def test_convert_refuses_subclassed_model_naming_what_to_change():
    sm = seed_models.book(hidden=4, output_features=4)
    with pytest.raises(ValueError) as err:
        convert(sm.model)
    msg = str(err.value)
    assert "'PixelCnn' (SimplePixelCnn) is a subclassed keras.Model" in msg
    assert "functional model" in msg and "pixelcnn_fast.MaskedConv2D" in msg and "set_weights" in msg


def test_convert_model_of_masked_conv2d_is_equivalent():
    # Our own layers (including MaskedConv2D inside the registered ResidualBlock) are re-created
    # from their configs with their weights: same outputs, independent variables.
    model = keras_io_pixelcnn(height=8, width=8, filters=8, blocks=1)
    converted = convert(model)
    assert [type(l).__name__ for l in converted.layers] == [type(l).__name__ for l in model.layers]
    assert [l.name for l in converted.layers] == [l.name for l in model.layers]
    for a, b in zip(model.weights, converted.weights):
        assert a is not b
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = (np.random.default_rng(5).random((2, 8, 8, 1)) > 0.5).astype("float32")
    assert _max_diff(model, converted, x) <= IDENTICAL


def test_converted_model_samples_the_same_images():
    from sampling_checks import assert_same_images

    sm = seed_models.keras_io(filters=8, blocks=0)
    sm.model(np.zeros((1, 8, 8, 1), np.float32))  # keras.io's layer masks its kernel on first call
    converted = convert(sm.model)
    runs = []
    for mode, m in (("original", sm.model), ("converted", converted)):
        levels, margins = Sampler(m).sample(6, seed=11, return_margins=True)
        runs.append(types.SimpleNamespace(mode=mode, levels=levels, margins=margins))
    assert_same_images(runs[0], runs[1], 2)


def test_convert_sequential_nested_and_shared_layers():
    keras.utils.set_random_seed(0)
    seq = keras.Sequential([keras.Input((6, 6, 1)), seed_models.NotebookMaskedConv2D(4, 5, "A"),
                            keras.layers.ReLU(), keras.layers.Conv2D(1, 1, activation="sigmoid")])
    converted = convert(seq)
    assert isinstance(converted, keras.Sequential)
    assert [type(l).__name__ for l in converted.layers] == ["MaskedConv2D", "ReLU", "Conv2D"]
    x = np.random.default_rng(6).random((2, 6, 6, 1)).astype("float32")
    assert _max_diff(seq, converted, x) <= IDENTICAL

    # A layer shared between a nested functional model and the outer one stays one layer.
    shared = seed_models.NotebookMaskedConv2D(4, 3, "B")
    inner_in = keras.Input((6, 6, 4))
    inner = keras.Model(inner_in, keras.layers.ReLU()(shared(inner_in)), name="inner")
    inputs = keras.Input((6, 6, 1))
    y = shared(inner(seed_models.NotebookMaskedConv2D(4, 5, "A")(inputs)))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(y))
    converted = convert(model)
    new_inner = converted.get_layer("inner")
    assert isinstance(converted.layers[3], MaskedConv2D) and new_inner.layers[1] is converted.layers[3]
    assert _max_diff(model, converted, x) <= IDENTICAL


def test_convert_verifies_its_result(monkeypatch):
    # The safety net: a misread layer (here: relu carried over as tanh) is caught, not returned.
    from pixelcnn_fast import conversion_plan

    monkeypatch.setitem(conversion_plan.ACTIVATIONS, "relu", "tanh")
    sm = seed_models.keras_io(filters=8, blocks=0)
    with pytest.raises(RuntimeError, match="outputs differ"):
        convert(sm.model)
