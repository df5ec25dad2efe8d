"""Tests: fuzzing, reproducible from the printed seed (tests/fuzz_core.py; PIXELCNN_FAST_FUZZ_SEED=<s> replays,
PIXELCNN_FAST_FUZZ_CASES=<n> runs n conv and n spec cases instead of the CI size,
PIXELCNN_FAST_FUZZ_KERAS_CASES=<n> n Keras graphs).

- masked conv forward and both gradients (blocked and per-element paths) on random shapes, kernels,
  dilations, colour groups, padding and batch, into NaN-poisoned outputs, against the float64 oracle;
- program-spec mutations of every fixture program through _core.ColumnProgram.from_spec, every executor path
  (CPU, the host emulation of the CUDA program) and the TF op PixelcnnFastSample: each builds and samples or
  raises a typed error;
- random small Keras graphs from a menu of layers and ops, some unsupported: each lowers, teacher-forces
  equal to its forward pass and is accepted exactly when it is causal (checked by gradients), or raises a
  typed LoweringError naming the op and the layer.
"""

import contextlib
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import keras
from keras import layers

import fuzz_core
from pixelcnn_fast import MaskedConv2D, _core
from pixelcnn_fast._ext import tf_ops
from pixelcnn_fast.program.ir import LoweringError, NotCausalError
from pixelcnn_fast.sampler import Sampler

SEED = fuzz_core.fuzz_seed()


def test_print_the_fuzz_seed():
    print(f"fuzz seed: {SEED} (replay with PIXELCNN_FAST_FUZZ_SEED={SEED})")


def test_masked_conv_fuzz_against_the_float64_oracle(capsys):
    cases = fuzz_core.fuzz_cases(fuzz_core.CI_CONV_CASES)
    with capsys.disabled():
        assert fuzz_core.run_conv_fuzz(_core, SEED, cases) == cases


def test_the_conv_fuzzer_catches_a_wrong_tap():
    """The oracle check can fail: a core that drops the centre tap's live block (mask A for B) is caught."""
    class WrongMask:
        def __getattr__(self, name):
            fn = getattr(_core, name)

            def call(*args, **kwargs):
                args = list(args)
                if len(args) > 3 and args[3] == "B":
                    args[3] = "A"
                elif len(args) > 2 and args[2] == "B" and name.startswith("masked_conv2d_forward"):
                    args[2] = "A"
                return fn(*args, **kwargs)
            return call

    caught = 0
    for case in range(40):
        try:
            fuzz_core.check_conv_case(WrongMask(), SEED, case)
        except AssertionError:
            caught += 1
    assert caught > 0, "the conv fuzzer never noticed a wrong mask"


@contextlib.contextmanager
def _quiet_stderr():
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _tf_op_check(what, spec, arrays, n, core_built):
    """The same mutant through the TF op: it samples, or raises a typed error (never a crash)."""
    m = re.search(r"^image height=(\d+) width=(\d+) channels=(\d+)", spec, re.M)
    if m and int(m.group(1)) * int(m.group(2)) * int(m.group(3)) > 4096:
        return  # big mutant: parse errors are what matter, sampling it would only take long
    calls = max(1, n) if abs(n) < 2 ** 31 else n
    try:
        with _quiet_stderr():  # TF logs every refused call ("OP_REQUIRES failed ...") on fd 2
            out = tf_ops().pixelcnn_fast_sample(consts=[tf.constant(a) for a in arrays],
                                                n=tf.constant(calls, tf.int64), seed=tf.constant(3, tf.int64),
                                                temperature=tf.constant(1.0), image_offset=tf.constant(0, tf.int64), spec=spec)
    except (tf.errors.InvalidArgumentError, ValueError):
        return
    except Exception as e:
        # TypeError included: a mutant is refused by the op's checks (InvalidArgument) or its shape function
        # (ValueError); a TypeError would be a wrong call of the op (it once hid a missing input).
        raise AssertionError(f"{what}: the TF op raised {type(e).__name__}: {e}") from e
    assert out.shape[0] == calls and out.dtype == tf.int32, f"{what}: TF op output {out.shape} {out.dtype}"


def test_program_spec_mutations(capsys):
    cases = fuzz_core.fuzz_cases(fuzz_core.CI_SPEC_CASES)
    with capsys.disabled():
        total, built = fuzz_core.run_spec_fuzz(_core, SEED, cases, tf_op=_tf_op_check)
    assert total == cases and built > 0  # some mutants must survive, or the fuzzer only tests the parser


# ----------------------------------------------------------------------------- random Keras graphs

H = W = 6


def _random_model(rng):
    """A random functional model (H, W, 1) -> (H, W, 1) logits from a menu of layers, some non-causal or not
    supported by the lowering; returns (model, the menu items used)."""
    used = []
    x_in = keras.Input((H, W, 1))
    x = MaskedConv2D(int(rng.integers(2, 5)), int(rng.choice([3, 5])), mask_type="A", padding="same")(x_in)
    used.append("masked_A")
    for _ in range(int(rng.integers(1, 4))):
        pick = str(rng.choice(["masked_B", "masked_B_dilated", "conv1x1", "conv3x3", "act", "residual", "concat",
                               "multiply", "dense", "maxpool", "batchnorm", "roll", "valid_conv", "reduce",
                               "softmax"], p=[0.15, 0.08, 0.1, 0.06, 0.12, 0.08, 0.06, 0.05, 0.05, 0.05, 0.04, 0.04,
                                              0.04, 0.04, 0.04]))
        used.append(pick)
        f = int(x.shape[-1])
        if pick == "masked_B":
            x = MaskedConv2D(f, 3, mask_type="B", padding="same")(x)
        elif pick == "masked_B_dilated":
            x = MaskedConv2D(f, 3, mask_type="B", padding="same", dilation_rate=2)(x)
        elif pick == "conv1x1":
            x = layers.Conv2D(int(rng.integers(1, 5)), 1)(x)
        elif pick == "conv3x3":  # sees the future: not causal
            x = layers.Conv2D(f, 3, padding="same")(x)
        elif pick == "act":
            x = layers.Activation(str(rng.choice(["relu", "tanh", "elu", "softplus", "sigmoid", "leaky_relu",
                                                  "softsign"])))(x)
        elif pick == "residual":
            x = layers.Add()([x, MaskedConv2D(f, 3, mask_type="B", padding="same")(x)])
        elif pick == "concat":
            x = layers.Concatenate()([x, layers.Conv2D(2, 1)(x)])
        elif pick == "multiply":
            x = layers.Multiply()([x, layers.Activation("sigmoid")(x)])
        elif pick == "dense":
            x = layers.Dense(3)(x)
        elif pick == "maxpool":  # changes the spatial size and mixes positions: unsupported
            x = layers.UpSampling2D(2)(layers.MaxPooling2D(2, padding="same")(x))[:, :H, :W, :]
        elif pick == "batchnorm":
            x = layers.BatchNormalization()(x)
        elif pick == "roll":  # shifts the image by a row: reads the future
            x = layers.Lambda(lambda t: tf.roll(t, shift=-1, axis=1))(x)
        elif pick == "valid_conv":  # a masked 'valid' conv shrinks the image: padded back
            x = layers.ZeroPadding2D(((2, 0), (1, 1)))(layers.Conv2D(f, (3, 3), padding="valid")(x))
        elif pick == "reduce":
            x = layers.Lambda(lambda t: t - tf.reduce_mean(t, axis=-1, keepdims=True))(x)
        elif pick == "softmax":
            # Over one channel a softmax is the constant 1: the model would no longer depend on the image,
            # and the gradient oracle below could not see the dependency the kernels' structure still has
            # (seed 3648375031, case 7). Softmax over at least two channels.
            x = layers.Softmax()(x if f >= 2 else layers.Conv2D(2, 1)(x))
    out = layers.Conv2D(1, 1)(x)
    return keras.Model(x_in, out), used


def _future_dependency(model, rng):
    """True when some output position's value depends on an input at that position or later in raster order
    (a non-zero gradient there, for either of two random images)."""
    for _ in range(2):
        image = tf.constant(rng.standard_normal((1, H, W, 1)).astype(np.float32))
        for p in range(H * W):
            i, j = divmod(p, W)
            with tf.GradientTape() as tape:
                tape.watch(image)
                y = model(image, training=False)[0, i, j, 0]
            g = tape.gradient(y, image)
            if g is None:
                continue
            g = g.numpy()[0, :, :, 0].ravel()
            if np.any(g[p:] != 0):
                return True
    return False


def test_random_keras_graphs_lower_or_fail_typed():
    cases = fuzz_core.fuzz_cases(12, "PIXELCNN_FAST_FUZZ_KERAS_CASES")  # ~1 s each
    print(f"keras graph fuzz: seed={SEED} cases={cases} (replay: PIXELCNN_FAST_FUZZ_SEED={SEED})")
    outcomes = {"sampled": 0, "not causal": 0, "unsupported": 0}
    for case in range(cases):
        rng = np.random.default_rng([SEED, 10 ** 6 + case])
        keras.utils.set_random_seed(int(rng.integers(0, 2 ** 31)))
        model, used = _random_model(rng)
        what = f"keras fuzz seed={SEED} case={case} layers={used}"
        try:
            sampler = Sampler(model, head="bernoulli", output="logits")
        except NotCausalError as e:
            assert _future_dependency(model, rng), f"{what}: refused as not causal, but no future dependency: {e}"
            assert re.search(r"^layer '[^']+' \(\w+\) reads the pixel|^the output for image channel", str(e)), \
                f"{what}: NotCausalError does not name the layer: {e}"
            outcomes["not causal"] += 1
            continue
        except LoweringError as e:
            # Typed, naming the op type and the layer.
            assert re.search(r"^cannot lower op '[^']+' \(\w+\) of layer '[^']+' \(\w+\): ", str(e)), \
                f"{what}: LoweringError does not name the op and the layer: {e}"
            outcomes["unsupported"] += 1
            continue
        except Exception as e:
            raise AssertionError(f"{what}: {type(e).__name__} escaped the lowering: {e}") from e
        assert not _future_dependency(model, rng), f"{what}: accepted, but an output reads the future"
        image = rng.integers(0, 2, (2, H, W, 1)).astype(np.float32)
        got = sampler.teacher_forced(image)
        want = model(image, training=False).numpy()
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4, err_msg=what)
        levels = sampler.sample(2, seed=case)
        assert levels.shape == (2, H, W, 1) and set(np.unique(levels)) <= {0, 1}, what
        outcomes["sampled"] += 1
    print(f"keras graph fuzz: {outcomes}")
    assert sum(outcomes.values()) == cases
