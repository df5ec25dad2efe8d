# Benchmarks: the cached sampler (Sampler.sample) vs the naive repredict loops (rows / graph / predict), keras.io 28x28 and RGB 3x256 32x32 models.
"""Sampling speed, measured as ratios in one run (docs/SEMANTICS.md, "How speed is shown").

Run alone (from the repository root, ~8 minutes on 2 cores), or with the other suites through
benchmarks/run.py (README, "Benchmarks"):

    .venv/bin/python -m pytest benchmarks/bench_sampler.py --benchmark-json=/tmp/sampler.json && .venv/bin/python benchmarks/report.py /tmp/sampler.json /tmp/SAMPLER.md

Models (env PIXELCNN_BENCH_SAMPLER_MODELS, default "keras_io,rgb,vqvae"; "mixture", "pixelcnn_pp", "pixelcnn_pp_unet" (the full
PixelCNN++ on grids: its `rows` loop pads the crop to a multiple of 4 rows), "gated_shifted", "gated_masked" on request: the gated PixelCNNs of tests/fixtures/zoo_models.py at 28x28, 64 filters, 7 layers), random weights:
  * keras_io: the keras.io PixelCNN at its real size (tests/fixtures/seed_models.keras_io(full=True):
    28x28x1, 128 filters, 5 residual blocks, sigmoid head, keras seed 0): 784 draws per image.
  * rgb: the CIFAR blog's RGB PixelCNN as its author wrote it (seed_models.rgb_3x256: a subclassed
    keras.Model, colour-group masks, (H, W, 3, 256) logits, inputs level/255) on 32x32x3 images at
    reduced width (hidden 3x32, head 3x128, 5 layers) -- the blog's config (3x128 / 3x1024 / 15
    layers) makes one naive step at batch 64 take ~40 s here. 3072 draws per image (R, G, B of
    every pixel, each a 256-way categorical).
  * vqvae: the keras.io VQ-VAE example's PixelCNN prior at its real size (tests/fixtures/zoo_models.
    vqvae_prior(full=True): int32 7x7 codes one-hot encoded inside the model, 128 filters, 2 residual
    blocks, 128 logits): 49 draws per image; the example samples batch 10 with model.predict per pixel.
  * mixture: keras.io's network at its real width on 32x32x3 [-1, 1] images with PixelCNN++'s logistic-mixture
    head (K = 10, 100 values per pixel; tests/fixtures/mixture_models.py): 3072 draws per image.
Batches 1, 4, 16, 64 (env PIXELCNN_BENCH_SAMPLER_BATCHES). Each (model, batch) is one
``benchmark.group``; its four variants run back to back:

  * ``cached``   Sampler(model).sample(n, seed), the full image, timed by pytest-benchmark (every
                 call re-evaluates the constants and rebuilds the C++ program, as a user's call does).
                 Then one Sampler.profile call records where the time goes, step by step (per-layer
                 share; the profile's clock reads are not in the timed calls).
  * ``rows``     naive.sample(mode="rows"): per draw a tf.function forward of rows 0..i only.
  * ``graph``    naive.sample(mode="graph"): per draw a tf.function forward of the whole image.
  * ``predict``  naive.sample(mode="predict"): per draw model.predict on the whole image (the seeds'
                 loop). One max_steps=1 call first: Keras builds its predict function on the first call.

The naive loops are far too slow to run in full (minutes to hours per image batch), so they are
timed over a counted number of steps and extrapolated; extra_info and the report say how many:

  * graph / predict: every step runs the same full-image forward, so the cost per step is constant:
    naive.sample(max_steps=K) for K steps (K from a probe call so one round takes ~NAIVE_SECONDS),
    full-image time = NaiveResult.seconds * H*W*C / K ("extrapolated from K of H*W*C steps").
    NaiveResult.seconds is the loop's own clock: tf.function tracing (and the first run of a new
    trace) is excluded, as it is a one-off per sampling run, not a per-step cost.
  * rows: step (i, j) runs the model on the first i+1 rows, so its cost grows with the row (the
    conv work is proportional to i+1, plus a fixed per-call overhead; measured, c(r) is concave in r
    at small batches, where TF's two threads are not yet saturated). Reaching deep rows through the
    full loop would take minutes; instead, ROWS_POINTS rows r spread over the image (0, 9, 18, 27 at H=28)
    are each timed over k of the loop's own steps (naive.rows_seconds_estimate: naive.sample with
    positions at that row, starting from realistic image content, tracing excluded). The cost per step c(r) is interpolated linearly between the timed rows and
    summed over all rows x columns x channels: full-image time = W*C * sum_{r<H} c_interp(r)
    ("extrapolated from ROWS_POINTS*k of H*W*C steps, integrated over the rows"). For a concave
    c(r) the chords lie below the curve, so the estimate errs low: the naive loop looks faster than
    it is and the cached sampler's ratio against it is, if anything, understated.
    rows_affine_dev_pct records how far the middle rows are from the line through the end rows. As a check of
    that per-step model, the real loop naive.sample(mode="rows", max_steps=28) runs row 0 once
    before timing; its time per step and c(0) are both recorded (rows_check_*).

Correctness before any timing (a wrong fast path must never post a number), in the module fixture:
  * teacher forcing: Sampler.teacher_forced on random images (of the model's levels) equals one
    forward pass of the lowered program (pixelcnn_fast.program.tf_executor.run_program), max relative error < 1e-5, on the
    benchmarked model (batch 2);
  * same images: the cached sampler and naive.sample(mode="rows") draw the same images for the same
    seed on a small case (the same architecture on a 6x7 / 5x6 image, n=2),
    checked with tests/sampling_checks.assert_same_images (a divergence is only allowed at a draw
    within float rounding of a CDF boundary);
  * and on the real model: every timed naive run's reached positions (and the rows check's row 0)
    must agree with the cached sample of the same seed, the same way.

Recorded (extra_info): full-image seconds per sample call (est_full_s: measured for cached,
extrapolated for naive), pixels/s (n*H*W / that time), for cached the achieved GFLOP/s in the live
convention -- 2 * exe.macs_per_position() * H*W * n / time, exe = sampler.executor(n, []); live
multiply-adds of every conv at one position (dead masked taps not counted, border taps in the
"same" padding counted), 2 FLOPs per MAC, softmax/activations/draws not counted -- its % of the
float32 GEMM peak measured in the same run (conftest.py); the same with every executed multiply-add
(exe.executed_macs_per_position(): an RGB model's steps run once per colour channel drawn, up to 3x
per position), the peak cache memory
exe.cache_floats_per_image() * 4 * n bytes, and what each sample call spends outside the C++ loop
(constants + causality + program build, setup_s); with fewer images than threads, how the timed calls ran
(split_calls: split, fell_back, skipped, timed_alone; exe.split_calls()) and a two-thread meeting's cost before
and after the rounds (meeting_ns, testing.barrier_ns). The report computes cached-vs-each-naive ratios.
"""

import math
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)  # appended, not prepended: tests/conftest.py must not shadow ours

from fixtures import mixture_models, seed_models, zoo_models, zoo_unet  # noqa: E402
from sampling_checks import assert_same_images  # noqa: E402

from pixelcnn_fast import _core, naive  # noqa: E402
from pixelcnn_fast._core import testing  # noqa: E402
from pixelcnn_fast.program.tf_executor import run_program  # noqa: E402
from pixelcnn_fast.sampler import Sampler  # noqa: E402

SEED = 7
BATCHES = tuple(int(b) for b in os.environ.get("PIXELCNN_BENCH_SAMPLER_BATCHES", "1,16,4,64").split(","))
IMPLS = ("cached", "rows", "graph", "predict", "dist_sample")  # dist_sample: tfd.PixelCNN models only

BENCH_SECONDS = float(os.environ.get("PIXELCNN_BENCH_SECONDS", "3.0"))  # cached: time per benchmark
CACHED_MIN_ROUNDS, CACHED_MAX_ROUNDS = 3, 20
NAIVE_SECONDS = float(os.environ.get("PIXELCNN_BENCH_NAIVE_SECONDS", "1.5"))  # naive: time per round
NAIVE_ROUNDS = 3
NAIVE_MIN_STEPS, NAIVE_MAX_STEPS = 4, 64
ROWS_POINTS = 4  # rows timed for the rows loop, spread over the image (0, 9, 18, 27 at H=28)
ROWS_MIN_K = 3

TF_REL_TOL = 1e-5  # as tests/test_sampler.py: float32 sums in another order


class ModelSpec(types.SimpleNamespace):
    """A benchmarked model: how to build it (full and a small same-architecture case) and read it."""


MODEL_SPECS = {
    "keras_io": ModelSpec(
        label="keras.io 28x28", description="keras_io(full=True): 128 filters, 5 blocks, sigmoid head",
        make=lambda: seed_models.keras_io(full=True, seed=0),
        make_small=lambda: seed_models.keras_io(height=6, width=7, filters=128, blocks=5, seed=0)),
    "rgb": ModelSpec(
        label="RGB 3x256 32x32",
        description="rgb_3x256 (CIFAR blog PixelRNN, subclassed): 32x32x3, hidden 3x32, head 3x128, "
                    "5 layers, 3x256 logits",
        make=lambda: seed_models.rgb_3x256(height=32, width=32, hidden_dim=32, out_dim=128, n_layers=5, seed=0),
        make_small=lambda: seed_models.rgb_3x256(height=5, width=6, hidden_dim=32, out_dim=128, n_layers=5,
                                                 seed=0)),
    "vqvae": ModelSpec(
        label="VQ-VAE prior 7x7 codes",
        description="zoo_models.vqvae_prior(full=True): the keras.io VQ-VAE example's PixelCNN prior, int32 "
                    "7x7 codes one-hot encoded in the model, 128 embeddings, 128 filters, 2 residual blocks, "
                    "128 logits",
        make=lambda: zoo_models.vqvae_prior(full=True, seed=0),
        make_small=lambda: zoo_models.vqvae_prior(height=5, width=6, num_embeddings=128, filters=128, seed=0)),
}


def _gated_spec(style, how):
    """The gated PixelCNN of zoo_models in one style at MNIST size (64 filters, 7 layers, 256 logits); its small
    same-architecture case is 6x11 (the same-images check)."""
    build = getattr(zoo_models, "gated_" + style)
    return ModelSpec(
        label=f"gated PixelCNN {style} 28x28",
        description=f"zoo_models.gated_{style}: 28x28x1, 64 filters, 7 gated layers (5x5 then 3x3), {how}, 256 logits",
        make=lambda: build(height=28, width=28, filters=64, layers=7, levels=256, seed=0),
        make_small=lambda: build(height=6, width=11, filters=64, layers=7, levels=256, seed=0))


# Opt-in (PIXELCNN_BENCH_SAMPLER_MODELS=gated_shifted,gated_masked): the gated PixelCNNs (shifts as read offsets,
# the vertical stack computed with a delay).
MODEL_SPECS["gated_shifted"] = _gated_spec("shifted", "ZeroPadding2D + VALID convs and pad+crop down-shifts")
MODEL_SPECS["gated_masked"] = _gated_spec("masked", "vertical stack masked to the rows above")
# Not in the default run: PIXELCNN_BENCH_SAMPLER_MODELS=mixture.
MODEL_SPECS["mixture"] = ModelSpec(
    label="keras.io + logistic mixture 32x32x3",
    description="mixture_models.mixture_pixelcnn: keras.io's network (128 filters, 5 blocks) on 32x32x3 [-1, 1] "
                "images ending in PixelCNN++'s logistic-mixture head, K = 10 (100 values per pixel), 256 levels",
    make=lambda: mixture_models.as_seed_model(mixture_models.mixture_pixelcnn(
        height=32, width=32, channels=3, filters=128, blocks=5, components=10)),
    make_small=lambda: mixture_models.as_seed_model(mixture_models.mixture_pixelcnn(
        height=5, width=6, channels=3, filters=128, blocks=5, components=10)))
# Not in the default run: PIXELCNN_BENCH_SAMPLER_MODELS=pixelcnn_pp. PixelCNN++ at one resolution as openai writes
# it (tf.pad + VALID weight-normalised convs, down/right shifts by slice + concat, concat_elu gated resnets, nin,
# logistic-mixture head), at CIFAR size and reduced width.
MODEL_SPECS["pixelcnn_pp"] = ModelSpec(
    label="PixelCNN++ blocks 32x32x3",
    description="zoo_models.pixelcnn_pp: 32x32x3 [-1, 1] images, 64 filters, 3 gated resnets per stream, "
                "one resolution, K = 10 logistic-mixture head (100 values per pixel), 256 levels",
    make=lambda: mixture_models.as_seed_model(zoo_models.pixelcnn_pp(
        height=32, width=32, channels=3, filters=64, resnets=3, nr_mix=10, seed=0).model),
    make_small=lambda: mixture_models.as_seed_model(zoo_models.pixelcnn_pp(
        height=5, width=6, channels=3, filters=64, resnets=3, nr_mix=10, seed=0).model))
# Not in the default run: PIXELCNN_BENCH_SAMPLER_MODELS=pixelcnn_pp_unet. The full PixelCNN++ (3 resolutions:
# stride-2 shifted convs, cropped transposed convs, skip connections; docs/SEMANTICS.md "Grids") at CIFAR size and
# reduced width. Its skips need every resolution to halve, so the model takes only heights divisible by 4: its
# `rows` loop runs rows 0..i padded with zeros to the next multiple of 4 (naive.sample finds 4 by tracing and
# checks each padded crop against one full forward pass), so c(r) is a staircase of 4-row steps that the
# interpolation between the timed rows follows only on average. Its small case checks against that loop.
MODEL_SPECS["pixelcnn_pp_unet"] = ModelSpec(
    label="PixelCNN++ U-net 32x32x3",
    description="zoo_unet.pixelcnn_pp_unet: 32x32x3 [-1, 1] images, 3 resolutions (32, 16, 8), 64 filters, "
                "2 gated resnets per stream and resolution, K = 10 logistic-mixture head, 256 levels",
    make=lambda: mixture_models.as_seed_model(zoo_unet.pixelcnn_pp_unet(
        height=32, width=32, channels=3, filters=64, resnets=2, nr_mix=10, seed=0).model),
    make_small=lambda: mixture_models.as_seed_model(zoo_unet.pixelcnn_pp_unet(
        height=8, width=8, channels=3, filters=64, resnets=2, nr_mix=10, seed=0).model))


def _tfp_spec(size):
    """tfd.PixelCNN itself (Sampler(dist): pixelcnn_fast/tfp_adapter.py) with TFP's default 3 hierarchies (a
    U-net: size -> /2 -> /4 and back) at small width; its naive loop is the graph loop on the adapted network
    (tf-keras WeightNorm fixes the input height, so no rows loop), and it is also timed against dist.sample(),
    TFP's own while-loop sampler."""
    kw = dict(channels=3, hierarchies=3, filters=32, resnets=2, nr_mix=5, seed=0)
    return ModelSpec(
        label=f"tfd.PixelCNN {size}x{size}x3", tfp=True, naive_modes=("graph", "dist_sample"),
        description=f"tests/fixtures/zoo_unet.tfp_pixelcnn: tfp.distributions.PixelCNN {size}x{size}x3, 32 filters, "
                    "2 resnets per hierarchy, 3 hierarchies, K = 5, weight norm, kernel constraints applied",
        make=lambda: zoo_unet.tfp_pixelcnn(height=size, width=size, **kw),
        make_small=lambda: zoo_unet.tfp_pixelcnn(height=8, width=8, **kw))


# Not in the default run: PIXELCNN_BENCH_SAMPLER_MODELS=tfp16,tfp32 (needs the tfp extra).
MODEL_SPECS["tfp16"] = _tfp_spec(16)
MODEL_SPECS["tfp32"] = _tfp_spec(32)
MODELS = tuple(m for m in os.environ.get("PIXELCNN_BENCH_SAMPLER_MODELS", "keras_io,rgb,vqvae").split(",") if m)


# --------------------------------------------------------------------------- model, checks

def _same_images(ref, levels, margins, what, n_levels=2):
    """assert_same_images on the positions ``ref`` (a NaiveResult, maybe partial) reached."""
    # A code input's sampler returns (n, H, W); the naive loop's result is (n, H, W, 1).
    levels, margins = levels.reshape(ref.levels.shape), margins.reshape(ref.levels.shape)
    reached = ref.levels >= 0
    cached = types.SimpleNamespace(levels=np.where(reached, levels, -1),
                                   margins=np.where(reached, margins, np.nan), mode="cached")
    assert_same_images(ref, cached, n_levels)
    agree = (ref.levels[reached] == levels[reached]).mean()
    assert agree > 0.5, "%s: only %.0f%% of the draws agree with the cached sampler" % (what, 100 * agree)
    return float(agree)


def _kwargs(sm):
    """How naive.sample and Sampler read a seed model (head, levels, value map, image shape)."""
    subclassed = not getattr(sm.model, "inputs", None)
    return dict(head=sm.head, levels=sm.levels, value_map=sm.value_map,
                image_shape=tuple(sm.image_shape) if subclassed else None)


_CHECKED = {}


def _tfp_sampler(z):
    """Sampler(dist) and the naive loop's arguments for its adapted network."""
    sampler = Sampler(z.dist)
    kw = dict(head="logistic_mixture", levels=sampler.levels, components=sampler.components,
              mixture_layout="tfp", value_map=lambda k: 2.0 * k / 255.0 - 1.0, image_shape=None)
    return sampler, kw


def checked_tfp(model_id, spec):
    """checked() for a tfd.PixelCNN: the same checks through Sampler(dist) and the graph loop."""
    small = spec.make_small()
    sampler, kw = _tfp_sampler(small)
    ref = naive.sample(sampler.model, 2, mode="graph", seed=3, **kw)
    levels, margins = sampler.sample(2, seed=3, return_margins=True)
    small_agree = _same_images(ref, levels, margins, "%s small case" % model_id, kw["levels"])
    z = spec.make()
    sampler, kw = _tfp_sampler(z)
    h, w, c = sampler.program.image_shape
    image = np.random.default_rng(0).uniform(-1, 1, (2, h, w, c)).astype(np.float32)
    got = sampler.teacher_forced(image)
    want = sampler.model(image, training=False).numpy()
    err = float(np.abs(got - want).max() / (np.abs(want).max() + 1e-30))
    assert err < TF_REL_TOL, "teacher forcing != the tfd.PixelCNN network: max relative error %.2e" % err
    dense_macs = sum(int(np.prod(v.shape)) for v in sampler.model.weights if len(v.shape) == 4)
    _CHECKED[model_id] = types.SimpleNamespace(
        id=model_id, spec=spec, model=sampler.model, dist=z.dist, sampler=sampler, naive_kwargs=kw, h=h, w=w, c=c,
        steps_total=h * w * c, rows_spread=(), teacher_forced_rel_err=err, small_case_agree=small_agree,
        dense_macs_per_position=dense_macs, reference={})
    return _CHECKED[model_id]


def checked(model_id):
    """The model and its Sampler, after the correctness checks (module docstring); built once."""
    if model_id in _CHECKED:
        return _CHECKED[model_id]
    spec = MODEL_SPECS[model_id]
    if getattr(spec, "tfp", False):
        return checked_tfp(model_id, spec)
    rng = np.random.default_rng(0)
    # Small case first: cached == naive rows loop, same seed (the same layers on a small image).
    small = spec.make_small()
    kw = _kwargs(small)
    ref = naive.sample(small.model, 2, mode=getattr(spec, "naive_modes", ("rows",))[0], seed=3, **kw)
    sampler = Sampler(small.model, head=kw["head"], levels=kw["levels"], value_map=kw["value_map"],
                      image_shape=kw["image_shape"])
    levels, margins = sampler.sample(2, seed=3, return_margins=True)
    small_agree = _same_images(ref, levels, margins, "%s small case" % model_id, small.levels)

    sm = spec.make()
    kw = _kwargs(sm)
    sampler = Sampler(sm.model, head=kw["head"], levels=kw["levels"], value_map=kw["value_map"],
                      image_shape=kw["image_shape"])
    h, w, c = sampler.program.image_shape
    image = seed_models.value_map_fn(sm.value_map, sm.levels)(rng.integers(0, sm.levels, (2, h, w, c)))
    image = np.asarray(image, np.float32)
    got = sampler.teacher_forced(image)
    p = sampler.program
    want = run_program(p, p.evaluate_consts(2, []), image)[p.logits_buffer].numpy()
    err = float(np.abs(got - want).max() / (np.abs(want).max() + 1e-30))
    assert err < TF_REL_TOL, "teacher forcing != one forward pass: max relative error %.2e" % err
    dense_macs = sum(int(np.prod(v.shape)) for v in sm.model.weights if len(v.shape) == 4)
    if sampler.program.grid_steps:  # on grids: the model's MACs per image summed over each grid's positions
        dense_macs = sampler.executor(1, []).model_macs_per_image() / (h * w)
    rows_spread = tuple(int(r) for r in np.linspace(0, h - 1, ROWS_POINTS).round())
    _CHECKED[model_id] = types.SimpleNamespace(
        id=model_id, spec=spec, model=sm.model, sampler=sampler, naive_kwargs=kw, h=h, w=w, c=c,
        steps_total=h * w * c, rows_spread=rows_spread, teacher_forced_rel_err=err,
        small_case_agree=small_agree, dense_macs_per_position=dense_macs, reference={})
    return _CHECKED[model_id]


def cached_reference(ck, n):
    """(levels, margins) of the cached sampler for (n, SEED): the oracle for the naive runs' draws."""
    if n not in ck.reference:
        ck.reference[n] = ck.sampler.sample(n, seed=SEED, return_margins=True)
    return ck.reference[n]


def layer_of(step_name):
    """A profile step's layer: its name up to the op ("residual_block_2/conv2d_7 (Conv2D ...)"). Inside
    a subclassed model the lowering names only the model ("pixel_rnn (Conv2D blog_masked_conv2d_1_2/
    Conv2D)"): then the op's outermost name scope (one per layer call) tells the layers apart."""
    layer, _, op = step_name.partition(" (")
    scope = op.rstrip(")").split(" ", 1)[-1].split("/")
    if "/" not in layer and len(scope) > 1:
        return "%s/%s" % (layer, scope[0])
    return layer


# --------------------------------------------------------------------------- variants

def bench_cached(benchmark, record_flops, ck, n):
    sampler = ck.sampler
    t0 = time.perf_counter()
    exe = sampler.executor(n, [])
    setup_s = time.perf_counter() - t0
    levels, _ = cached_reference(ck, n)
    assert np.array_equal(sampler.sample(n, SEED), levels), "cached sampler is not deterministic"
    t0 = time.perf_counter()
    sampler.sample(n, SEED)
    dt = time.perf_counter() - t0
    rounds = max(CACHED_MIN_ROUNDS, min(CACHED_MAX_ROUNDS, int(math.ceil(BENCH_SECONDS / max(dt, 1e-6)))))
    record_flops.quiet()
    # With fewer images than threads the executor splits each position among them, which pays only while a
    # two-thread meeting is cheap (this VM flips between ~65 and ~350-600 ns within seconds) and falls back to one
    # thread when it does not: record what a meeting cost around the rounds and how the rounds' calls ran.
    split_ok = n < _core.get_num_threads()
    meeting_before = testing.barrier_ns(2, 20000) if split_ok else None
    calls_before = exe.split_calls()
    benchmark.pedantic(sampler.sample, args=(n, SEED), rounds=rounds, warmup_rounds=1, iterations=1)
    calls = {k: v - calls_before[k] for k, v in exe.split_calls().items()}
    meeting_after = testing.barrier_ns(2, 20000) if split_ok else None
    # Where the time goes (one more call, with a clock read around every step; not timed above).
    profile = sampler.profile(n, SEED)
    by_layer = {}
    for name, kind, sec in profile:
        key = layer_of(name)
        by_layer[key] = by_layer.get(key, 0.0) + sec
    by_kind = {}
    for name, kind, sec in profile:
        by_kind[kind] = by_kind.get(kind, 0.0) + sec
    macs = exe.macs_per_position()
    hw = ck.h * ck.w
    flops_live = 2 * macs * hw * n
    if sampler.program.grid_steps:  # on grids each conv runs once per position of its own grid
        flops_live = 2 * exe.executed_macs_per_image() * n
    flops_dense = 2 * ck.dense_macs_per_position * hw * n
    info = record_flops(flops_dense, flops_live, "live",
                        timed="full image, %d rounds" % rounds, steps_timed=ck.steps_total,
                        profile_by_layer_s=by_layer, profile_by_kind_s=by_kind,
                        macs_per_position=int(macs),
                        macs_executed_per_position=int(exe.executed_macs_per_position()), cache_bytes=int(exe.cache_floats_per_image()) * 4 * n,
                        macs_executed_per_image=int(exe.executed_macs_per_image()),
                        macs_model_per_image=int(exe.model_macs_per_image()),
                        cache_floats_per_image=int(exe.cache_floats_per_image()),
                        setup_s=round(setup_s, 5),
                        teacher_forced_rel_err=ck.teacher_forced_rel_err,
                        small_case_agree=ck.small_case_agree)
    if split_ok:
        info.update(split_calls=calls, meeting_ns=[round(meeting_before, 1), round(meeting_after, 1)])
    st = benchmark.stats
    if st is not None:
        info["est_full_s"] = st.stats.mean
        info["est_full_s_median"] = st.stats.median
        info["est_full_s_rounds"] = list(st.stats.data)


def _naive_kwargs(ck, n, mode, max_steps):
    return dict(n=n, mode=mode, seed=SEED, max_steps=max_steps, **ck.naive_kwargs)


def bench_naive_full_image(benchmark, record_contention, ck, n, mode):
    """graph / predict: constant cost per step, K steps timed, x 784 / K."""
    model = ck.model
    if mode == "predict":
        naive.sample(model, **_naive_kwargs(ck, n, mode, 1))  # Keras builds its predict function here
    probe = naive.sample(model, **_naive_kwargs(ck, n, mode, 2))
    per_step = probe.seconds / probe.steps_run
    k = max(NAIVE_MIN_STEPS, min(NAIVE_MAX_STEPS, int(math.ceil(NAIVE_SECONDS / max(per_step, 1e-6)))))
    k = min(k, ck.steps_total)  # a small image (the 7x7 VQ-VAE prior's 49 draws) runs whole
    results = []

    def run():
        results.append(naive.sample(model, **_naive_kwargs(ck, n, mode, k)))

    record_contention.quiet()
    benchmark.pedantic(run, rounds=NAIVE_ROUNDS, warmup_rounds=0, iterations=1)
    levels, margins = cached_reference(ck, n)
    agree = _same_images(results[-1], levels, margins, "naive %s (batch %d)" % (mode, n), ck.naive_kwargs["levels"])
    assert all(r.steps_run == k for r in results)
    total = ck.steps_total
    est = [r.seconds * total / r.steps_run for r in results]
    record_contention(
        timed="extrapolated from %d of %d steps" % (k, total),
        extrapolation="NaiveResult.seconds (loop clock, tracing excluded) x %d / %d per round; "
                      "the cost per step is the same at every step in this mode" % (total, k),
        steps_timed=k, est_full_s=float(np.mean(est)), est_full_s_median=float(np.median(est)),
        est_full_s_rounds=est, trace_s=[r.trace_seconds for r in results],
        per_step_s=[r.seconds / r.steps_run for r in results], draws_agree_with_cached=agree)


def bench_naive_rows(benchmark, record_contention, ck, n):
    """rows: per-step cost timed at ck.rows_spread, interpolated over the rows (module docstring)."""
    model = ck.model
    # The real loop over row 0: its draws must match the cached sampler; its time per step checks c(0).
    check = naive.sample(model, **_naive_kwargs(ck, n, "rows", ck.w * ck.c))
    levels, margins = cached_reference(ck, n)
    agree = _same_images(check, levels, margins, "naive rows, row 0 (batch %d)" % n, ck.naive_kwargs["levels"])

    # The loop's own steps at rows spread over the image (naive.rows_seconds_estimate: positions at
    # each row, from realistic content), the cost interpolated over the rows. k columns per row,
    # sized by one probe of the deepest row so a round takes about NAIVE_SECONDS.
    kw = dict(ck.naive_kwargs)
    vmap = seed_models.value_map_fn(kw["value_map"], kw["levels"])
    image = np.asarray(vmap(levels), np.float32).reshape(n, ck.h, ck.w, ck.c).copy()
    spread = ck.rows_spread
    probe = naive.sample(model, n, mode="rows", seed=SEED, positions=[(spread[-1], 0)], image=image, **kw)
    c_deep = probe.seconds / probe.steps_run
    k = max(ROWS_MIN_K, min(ck.w, int(math.ceil(NAIVE_SECONDS / len(spread) / max(c_deep, 1e-6)))))
    per_round, est = [], []

    def run():
        e, cost = naive.rows_seconds_estimate(model, n, rows=spread, steps_per_row=k, image=image,
                                              seed=SEED, **kw)
        per_round.append(cost)
        est.append(e)

    record_contention.quiet()
    benchmark.pedantic(run, rounds=NAIVE_ROUNDS, warmup_rounds=0, iterations=1)
    c_rows = np.mean(per_round, axis=0)
    # Affinity of c(r) in r: the middle rows against the line through the end rows.
    line = np.interp(spread, [spread[0], spread[-1]], [c_rows[0], c_rows[-1]])
    steps = len(spread) * min(k, ck.w)
    record_contention(
        timed="extrapolated from %d of %d steps (%d at each of rows %s), integrated over the rows"
              % (steps, ck.steps_total, min(k, ck.w), ", ".join(map(str, spread))),
        extrapolation="cost per step c(r) timed at rows %s with the loop's own per-step work, interpolated "
                      "linearly in r and summed: %d x sum_{r=0..%d} c(r) per round"
                      % (list(spread), ck.w * ck.c, ck.h - 1),
        steps_timed=steps, rows_spread=list(spread), steps_per_row=min(k, ck.w),
        est_full_s=float(np.mean(est)), est_full_s_median=float(np.median(est)), est_full_s_rounds=est,
        per_step_s_by_row={str(r): float(c) for r, c in zip(spread, c_rows)},
        rows_affine_dev_pct=float(100 * np.max(np.abs(c_rows - line) / line)),
        rows_check_real_loop_row0_per_step_s=check.seconds / check.steps_run,
        rows_check_timed_row0_per_step_s=float(c_rows[0]),
        trace_s=check.trace_seconds, draws_agree_with_cached=agree)


def bench_dist_sample(benchmark, record_contention, ck, n):
    """TFP's own sampler, dist.sample(n): a tf.while_loop over the pixels, the whole network per pixel, run in
    full (its draws come from TFP's RNG, so only their shape is checked)."""
    t0 = time.perf_counter()
    out = ck.dist.sample(n, seed=SEED)
    first = time.perf_counter() - t0  # includes building the loop's graph
    assert tuple(out.shape) == (n, ck.h, ck.w, ck.c)
    rounds = 1 if first > 20 else 2
    record_contention.quiet()
    benchmark.pedantic(lambda: ck.dist.sample(n, seed=SEED), rounds=rounds, warmup_rounds=0, iterations=1)
    st = benchmark.stats
    record_contention(timed="dist.sample(n) in full, %d round(s) after a first call of %.1f s" % (rounds, first),
                      steps_timed=ck.steps_total, est_full_s=st.stats.mean, est_full_s_median=st.stats.median,
                      est_full_s_rounds=list(st.stats.data))


# --------------------------------------------------------------------------- the benchmarks

# Variants innermost so a group's rows are measured back to back.
CASES = [pytest.param(m, n, impl, id="%s-b%d-%s" % (m, n, impl)) for m in MODELS for n in BATCHES for impl in IMPLS
         if impl == "cached" or impl in getattr(MODEL_SPECS[m], "naive_modes", ("rows", "graph", "predict"))]


@pytest.mark.parametrize("model_id,n,impl", CASES)
def test_sampler(request, benchmark, model_id, n, impl):
    ck = checked(model_id)
    benchmark.group = "%s sample | batch %d" % (ck.spec.label, n)
    benchmark.extra_info.update(suite="sampler", model_id=model_id, impl=impl, batch=n, hw=[ck.h, ck.w],
                                channels=ck.c, steps_total=ck.steps_total, model=ck.spec.description,
                                model_label=ck.spec.label, seed=SEED)
    if impl == "cached":
        bench_cached(benchmark, request.getfixturevalue("record_flops"), ck, n)
    else:
        rec = request.getfixturevalue("record_contention")
        rec(gemm_peak_gflops=round(request.getfixturevalue("gemm_peak_gflops"), 2))
        if impl == "rows":
            bench_naive_rows(benchmark, rec, ck, n)
        elif impl == "dist_sample":
            bench_dist_sample(benchmark, rec, ck, n)
        else:
            bench_naive_full_image(benchmark, rec, ck, n, impl)
    info = benchmark.extra_info
    if "est_full_s" in info:
        info["pixels_per_s"] = n * ck.h * ck.w / info["est_full_s"]
