"""Tests: Python front end -- the MaskedConv2D Keras layer (weights, config, saving, training)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_fast.layers import MaskedConv2D
from pixelcnn_fast.masks import make_mask

IMPLEMENTATIONS = ["fast", "reference"]


@pytest.fixture
def implementation(request):
    # With implementation="fast" the layer imports pixelcnn_fast.ops when it is built, so a
    # missing compiled op makes these tests FAIL (ImportError in the test), never skip.
    return request.param


def _impl_params():
    return pytest.mark.parametrize("implementation", IMPLEMENTATIONS, indirect=True)


@pytest.fixture
def restore_policy():
    old = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(old)


# --------------------------------------------------------------------------- keras.io-style layer

class AssignMaskConv(keras.layers.Layer):
    """Our own small layer with the keras.io PixelConvLayer's masking mechanism: a Conv2D whose
    kernel variable is overwritten with kernel * mask at every call (mask: rows above the
    centre, the centre row left of the centre, plus the centre for "B")."""

    def __init__(self, mask_type, **conv_kwargs):
        super().__init__()
        self.mask_type = mask_type
        self.conv = keras.layers.Conv2D(**conv_kwargs)

    def build(self, input_shape):
        self.conv.build(input_shape)
        kh, kw = self.conv.kernel.shape[:2]
        mask = np.zeros(self.conv.kernel.shape, np.float32)
        mask[:kh // 2] = 1.0
        mask[kh // 2, :kw // 2] = 1.0
        if self.mask_type == "B":
            mask[kh // 2, kw // 2] = 1.0
        self.mask = mask

    def call(self, x):
        self.conv.kernel.assign(self.conv.kernel * self.mask)
        return self.conv(x)


@_impl_params()
@pytest.mark.parametrize("k,mask,padding", [(7, "A", "same"), (3, "B", "same"),
                                            (1, "B", "valid")])
def test_set_weights_from_assign_mask_layer(rng, direct, close_to_f64, implementation, k,
                                            mask, padding):
    x = rng.standard_normal((2, 9, 11, 3)).astype(np.float32)
    src = AssignMaskConv(mask, filters=5, kernel_size=k, padding=padding, activation="relu")
    src.build(x.shape)
    kernel = rng.standard_normal((k, k, 3, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    src.conv.set_weights([kernel, bias])
    expected = src(x).numpy()  # masks its kernel in place, then convolves

    layer = MaskedConv2D(5, k, mask, padding=padding, activation="relu",
                         implementation=implementation)
    layer.build(x.shape)
    layer.set_weights(src.conv.get_weights())   # Conv2D's layout and order
    got = layer(x).numpy()
    if implementation == "reference":
        # The same effective kernel through the same TF convolution: the very same numbers.
        np.testing.assert_array_equal(got, expected)
    else:
        pre = direct.forward(x, kernel, mask, 1, 1, padding) + bias
        scale = np.max(direct.forward(np.abs(x), np.abs(kernel), mask, 1, 1, padding)
                       + np.abs(bias))
        # relu is 1-Lipschitz, so the tolerance rule survives it.
        close_to_f64("MaskedConv2D vs keras.io-style layer", got, expected,
                     np.maximum(pre, 0.0), scale)


# --------------------------------------------------------------------------- config, saving

def _configured_layer(implementation="reference"):
    return MaskedConv2D(
        6, (5, 3), mask_type="a", color_groups=3, dilation_rate=(2, 1), padding="valid",
        activation="tanh", use_bias=True,
        kernel_initializer=keras.initializers.HeNormal(seed=3),
        bias_initializer=keras.initializers.Constant(0.25),
        kernel_regularizer=keras.regularizers.L2(1e-3), bias_regularizer=None,
        activity_regularizer=keras.regularizers.L1(1e-4),
        kernel_constraint=keras.constraints.MaxNorm(2.0), bias_constraint=None,
        implementation=implementation, name="masked")


def test_get_config_from_config_round_trip():
    layer = _configured_layer()
    cfg = layer.get_config()
    assert cfg["filters"] == 6 and tuple(cfg["kernel_size"]) == (5, 3)
    assert cfg["mask_type"] == "A" and cfg["color_groups"] == 3
    assert tuple(cfg["dilation_rate"]) == (2, 1) and cfg["padding"] == "valid"
    assert tuple(cfg["strides"]) == (1, 1) and cfg["implementation"] == "reference"
    clone = MaskedConv2D.from_config(cfg)
    assert clone.get_config() == cfg
    # Through JSON, as a .keras file stores it (tuples become lists).
    clone2 = MaskedConv2D.from_config(json.loads(json.dumps(cfg)))
    assert clone2.get_config() == cfg
    # Registered under the package name, so generic deserialisation finds the class.
    ser = keras.saving.serialize_keras_object(layer)
    assert ser["registered_name"] == "pixelcnn_fast>MaskedConv2D"
    assert isinstance(keras.saving.deserialize_keras_object(ser), MaskedConv2D)


def test_package_exports_layer():
    import pixelcnn_fast
    assert pixelcnn_fast.MaskedConv2D is MaskedConv2D


def test_supports_jit_false_and_auto_jit_off():
    layer = MaskedConv2D(3, 3, implementation="reference")
    assert layer.supports_jit is False
    inp = keras.Input((5, 5, 2))
    model = keras.Model(inp, layer(inp))
    model.compile(optimizer="sgd", loss="mse")  # jit_compile="auto"
    assert model.jit_compile is False


@_impl_params()
def test_keras_save_load_round_trip(rng, tmp_path, implementation):
    inp = keras.Input((9, 11, 3))
    h = MaskedConv2D(6, 7, "A", color_groups=3, activation="relu",
                     implementation=implementation)(inp)
    h = MaskedConv2D(6, 3, "B", color_groups=3, dilation_rate=2,
                     implementation=implementation)(h)
    out = MaskedConv2D(3, 1, "B", color_groups=3, padding="valid",
                       implementation=implementation)(h)
    model = keras.Model(inp, out)
    # Non-trivial biases, so that their save/load is tested too.
    model.set_weights([w if w.ndim > 1 else rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])
    x = rng.standard_normal((2, 9, 11, 3)).astype(np.float32)
    before = model(x).numpy()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: the class is registered
    masked = [l for l in loaded.layers if isinstance(l, MaskedConv2D)]
    assert len(masked) == 3
    assert [l.get_config() for l in masked] == \
        [l.get_config() for l in model.layers if isinstance(l, MaskedConv2D)]
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Same weights, same code, same input: identical outputs.
    np.testing.assert_array_equal(loaded(x).numpy(), before)


# --------------------------------------------------------------------------- precision, init

@_impl_params()
def test_mixed_float16(rng, restore_policy, implementation):
    x = rng.standard_normal((2, 7, 9, 3)).astype(np.float32)
    ref_layer = MaskedConv2D(6, 5, "A", color_groups=3, implementation=implementation)
    y32 = ref_layer(x)
    keras.config.set_dtype_policy("mixed_float16")
    layer = MaskedConv2D(6, 5, "A", color_groups=3, implementation=implementation)
    layer.build(x.shape)
    assert layer.kernel.dtype == "float32"  # variables stay float32 under mixed precision
    layer.set_weights(ref_layer.get_weights())
    y16 = layer(x)
    assert y16.dtype == tf.float16
    # float16 rounding of inputs, weights and (reference path) accumulation: ~1e-2 of scale.
    scale = float(np.max(np.abs(y32)))
    np.testing.assert_allclose(tf.cast(y16, tf.float32).numpy(), y32.numpy(), rtol=0,
                               atol=2e-2 * scale)

    # And the gradients flow in float16: a short fit under the policy (Keras wraps the
    # optimizer in a LossScaleOptimizer) gives finite losses and moves the weights.
    inp = keras.Input((7, 9, 3))
    h = MaskedConv2D(6, 3, "A", color_groups=3, activation="relu",
                     implementation=implementation)(inp)
    out = MaskedConv2D(3, 1, "B", color_groups=3, implementation=implementation)(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    w0 = [w.copy() for w in model.get_weights()]
    hist = model.fit(x, x, batch_size=2, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert any(np.any(a != b) for a, b in zip(w0, model.get_weights()))


@pytest.mark.parametrize("k,mask,groups,cin,filters", [
    ((7, 7), "A", 1, 1, 8), ((3, 3), "B", 1, 4, 5), ((5, 3), "A", 3, 3, 6),
    ((1, 1), "A", 3, 6, 3), ((1, 1), "A", 1, 2, 2)])
def test_dead_taps_zero_after_init(direct, k, mask, groups, cin, filters):
    # implementation does not matter for initialisation; "reference" keeps this test
    # independent of the compiled op.
    dead = direct.dense_mask(*k, cin, filters, mask, groups) == 0
    layer = MaskedConv2D(filters, k, mask, color_groups=groups,
                         kernel_initializer=keras.initializers.RandomNormal(seed=1),
                         implementation="reference")
    layer.build((None, 9, 9, cin))
    kernel = layer.kernel.numpy()
    assert np.all(kernel[dead] == 0.0)
    assert np.all(kernel[~dead] != 0.0)  # the live taps keep the base initializer's values
    ones = MaskedConv2D(filters, k, mask, color_groups=groups, kernel_initializer="ones",
                        implementation="reference")
    ones.build((None, 9, 9, cin))
    np.testing.assert_array_equal(ones.kernel.numpy(), (~dead).astype(np.float32))


# --------------------------------------------------------------------------- training

class ResidualBlock(keras.layers.Layer):
    """keras.io-shaped residual block (1x1 conv, 3x3 mask-B conv, 1x1 conv, add), subclassed."""

    def __init__(self, filters, implementation, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(filters, 1, activation="relu")
        self.pixel_conv = MaskedConv2D(filters // 2, 3, "B", activation="relu",
                                       padding="same", implementation=implementation)
        self.conv2 = keras.layers.Conv2D(filters, 1, activation="relu")

    def call(self, x):
        return x + self.conv2(self.pixel_conv(self.conv1(x)))


def _pixelcnn(implementation, filters=32):
    inp = keras.Input((28, 28, 1))
    x = MaskedConv2D(filters, 7, "A", activation="relu", padding="same",
                     implementation=implementation)(inp)
    for _ in range(2):
        x = ResidualBlock(filters, implementation)(x)
    for _ in range(2):
        x = MaskedConv2D(filters, 1, "B", activation="relu", padding="valid",
                         implementation=implementation)(x)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", padding="valid")(x)
    return keras.Model(inp, out)


def test_training_fast_equals_reference(rng, fast_ops):
    assert callable(fast_ops.masked_conv2d)  # fail clearly if the op is not built
    data = (rng.random((40, 28, 28, 1)) < 0.3).astype(np.float32)
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    fast = _pixelcnn("fast")
    ref = _pixelcnn("reference")
    ref.set_weights(fast.get_weights())   # identical initial weights
    w0 = [w.copy() for w in fast.get_weights()]
    hists = []
    for model in (fast, ref):
        # Plain SGD: a weight difference stays proportional to the gradient difference (Adam
        # would turn a near-zero gradient's rounding noise into a full-size step).
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05),
                      loss="binary_crossentropy")
        hists.append(model.fit(data, data, batch_size=8, epochs=1, shuffle=False,
                               verbose=0).history["loss"])
    # 40 images / batch 8 = 5 steps.  Tolerance: the two paths differ only in float32
    # summation order (relative ~1e-7 per step); after 5 steps the weights (size ~0.1) usually agree
    # to ~1e-8, but with oneDNN on, seed 226044122 gives 1.9e-6 (a near-tie in a sigmoid/BCE
    # gradient amplifies the rounding), so 1e-5: still 100x below how far training moves them
    # (checked below), while a wrong gradient differs by about the movement itself.
    atol = 1e-5
    max_diff = max(float(np.max(np.abs(a - b))) for a, b in
                   zip(fast.get_weights(), ref.get_weights()))
    print(f"fast vs reference after 5 steps: max weight diff {max_diff:.3e}")
    assert max_diff <= atol, f"weights differ by {max_diff:.3e} after 5 steps"
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(fast.get_weights(), w0))
    assert moved > 100 * atol, f"training barely moved the weights ({moved:.3e})"
    np.testing.assert_allclose(hists[0], hists[1], rtol=1e-5)
    # Dead taps have zero gradient: they are still exactly zero after training.
    for layer in fast._flatten_layers():
        if isinstance(layer, MaskedConv2D):
            kh, kw = layer.kernel_size
            mask = make_mask(kh, kw, layer.kernel.shape[2], layer.filters, layer.mask_type,
                             layer.color_groups)
            assert np.all(layer.kernel.numpy()[mask == 0] == 0.0)
