"""Tests: naive sampling loops — modes agree, seeds, global image index, temperature, heads, max_steps, errors."""

# The naive loops are the oracle the cached sampler is compared with, so they are checked here against things
# that do not share their code: each other (three different forwards of one model must draw the same images),
# constant-output models whose draw frequencies are known in closed form, and tiny hand-made models whose
# levels are forced (layout of the output, re-running the model per image channel).
#
# Agreement between two runs is exact except where a draw's uniform lay within float rounding of a CDF
# boundary (margin < rng.boundary_tolerance): there two correct forwards may legitimately pick different levels,
# and the rest of that image then diverges (it is conditioned on a different pixel).  Such cases are reported
# as warnings, not failures; a disagreement whose first differing draw had a comfortable margin is a bug.

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from fixtures import seed_models as sm_lib
from pixelcnn_fast import naive
from pixelcnn_fast import rng as prng
from sampling_checks import assert_same_images, first_disagreements  # noqa: F401

_CACHE = {}


def built(name, **kwargs):
    """One build per (name, size) per session: building is the slow part."""
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = sm_lib.build(name, **kwargs)
    return _CACHE[key]


def labels_for(sm, n, offset=0):
    """One-hot labels 0, 1, 2, ... (mod classes) for a conditional model, else None."""
    if not sm.conditional:
        return None
    return np.eye(sm.num_classes, dtype=np.float32)[(np.arange(n) + offset) % sm.num_classes]


def run(sm, n=2, mode="graph", **kwargs):
    kwargs.setdefault("conditions", labels_for(sm, n))
    return naive.sample(sm.model, n, mode=mode, head=sm.head, levels=sm.levels, value_map=sm.value_map,
                        image_shape=sm.image_shape, **kwargs)


# --------------------------------------------------------------------------- the three modes agree

# Single-channel fixtures at 5x6 (30 steps per mode); the RGB one at 3x4x3 (36 steps): model.predict costs
# ~60 ms per call whatever the model, so the predict mode dominates this file's runtime.
MODE_CASES = [("keras_io", dict(height=5, width=6)), ("book", dict(height=5, width=6)),
              ("categorical4", dict(height=5, width=6)), ("categorical256_logits", dict(height=5, width=6)),
              ("rgb_3x256", dict(height=3, width=4)), ("conditional", dict(height=5, width=6))]


@pytest.mark.parametrize("name,size", MODE_CASES, ids=[c[0] for c in MODE_CASES])
def test_modes_draw_identical_images(name, size):
    sm = built(name, **size)
    results = {mode: run(sm, 2, mode, seed=11) for mode in naive.MODES}
    for mode, r in results.items():
        h, w, c = sm.image_shape
        assert r.complete and r.steps_run == r.steps_total == h * w * c, mode
        assert r.levels.dtype == np.int32 and r.levels.shape == (2, h, w, c)
        assert r.levels.min() >= 0 and r.levels.max() < sm.levels
        assert r.margins.dtype == np.float32 and np.all(r.margins >= 0)
        # The image fed to the model is the value map of the levels.
        np.testing.assert_array_equal(r.images, sm_lib.value_map_fn(sm.value_map, sm.levels)(r.levels))
    assert_same_images(results["predict"], results["graph"], sm.levels)
    assert_same_images(results["graph"], results["rows"], sm.levels)


def test_auto_output_reads_the_last_op():
    assert run(built("keras_io", height=5, width=6), max_steps=1).output == "probs"       # Sigmoid
    assert run(built("categorical4", height=5, width=6), max_steps=1).output == "probs"   # Softmax
    assert run(built("categorical256_logits", height=5, width=6), max_steps=1).output == "logits"  # BiasAdd
    assert run(built("rgb_3x256", height=3, width=4), max_steps=1).output == "logits"      # Reshape(BiasAdd)
    soft = built("categorical256_logits", height=5, width=6, softmax=True)
    assert run(soft, max_steps=1).output == "probs"


def test_probs_and_logits_heads_of_one_model_draw_the_same_images():
    # The notebook's model with and without its final Softmax layer (same weights: same seed): drawing from the
    # probabilities and from the logits must give the same images up to boundary rounding.
    logits = run(built("categorical256_logits", height=5, width=6), seed=3)
    probs = run(built("categorical256_logits", height=5, width=6, softmax=True), seed=3)
    assert (logits.output, probs.output) == ("logits", "probs")
    assert_same_images(logits, probs, 256)


def test_rgb_3x256_fast_runs_graph_and_is_refused_by_rows_naming_the_fix():
    # Its head is Reshape((H, W, 3, 256)) with a fixed H: a row crop cannot go through.
    sm = built("rgb_3x256_fast", height=3, width=4)
    r = run(sm, seed=1)
    assert r.complete and r.output == "logits"
    ref = built("rgb_3x256", height=3, width=4)
    sm.model.set_weights(ref.model.get_weights())
    assert_same_images(run(ref, seed=1), run(sm, seed=1), 256)
    with pytest.raises(ValueError, match=r"mode='rows'.*\(n, 1, 4, 3\).*mode='graph'"):
        run(sm, mode="rows")


# --------------------------------------------------------------------------- seeds, images, temperature

def test_different_seeds_differ_and_one_seed_repeats():
    sm = built("categorical4", height=5, width=6)
    a, b, a2 = run(sm, seed=0), run(sm, seed=1), run(sm, seed=0)
    np.testing.assert_array_equal(a.levels, a2.levels)
    assert (a.levels != b.levels).mean() > 0.2
    big = run(sm, seed=2 ** 64 - 1)  # the full seed range is accepted
    assert (big.levels != a.levels).any()


@pytest.mark.parametrize("mode", ["graph", "rows"])
def test_image_index_is_global(mode):
    sm = built("conditional", height=5, width=6)
    three = run(sm, 3, mode, seed=9, conditions=labels_for(sm, 3))
    two = run(sm, 2, mode, seed=9, conditions=labels_for(sm, 2))
    np.testing.assert_array_equal(three.levels[:2], two.levels)
    assert (three.levels[2] != three.levels[0]).any()  # not one image repeated


def test_conditions_change_the_images():
    sm = built("conditional", height=5, width=6)
    a = run(sm, 2, seed=4, conditions=labels_for(sm, 2, offset=0))
    b = run(sm, 2, seed=4, conditions=labels_for(sm, 2, offset=5))
    assert (a.levels != b.levels).any()


def teacher_forced_draws(sm, r, temperature, seed, conditions=None):
    """Every draw recomputed from ONE forward of the final image: for a causal model the output at a position
    (and image channel c) sees only earlier positions (and channels < c), which the final image holds as the
    loop had written them.  Returns (levels, margins) from rng directly, independent of the loop's indexing."""
    n, h, w, c = r.levels.shape
    images = sm_lib.value_map_fn(sm.value_map, sm.levels)(r.levels)  # from the levels, not the loop's image
    args = [images, conditions] if conditions is not None else images
    out = np.asarray(sm.model(args), np.float32).reshape(n, h, w, c, -1)
    if sm.head == "bernoulli":  # sigmoid heads: back to the logit, as the loop does
        p = out.astype(np.float64)
        with np.errstate(divide="ignore"):
            out = (np.log(p) - np.log1p(-p)).astype(np.float32)
    head = "bernoulli" if sm.head == "bernoulli" else r.output
    u = prng.uniform_grid(seed, n, h, w, c)
    lv, mg = prng.draw_levels(out.reshape(n * h * w * c, -1), head, temperature, u.ravel(), return_margin=True)
    return lv.reshape(r.levels.shape), mg.reshape(r.levels.shape)


@pytest.mark.parametrize("name,size,temperature", [
    ("keras_io", dict(height=5, width=6), 1.0), ("categorical4", dict(height=5, width=6), 0.7),
    ("categorical256_logits", dict(height=5, width=6), 1.0), ("categorical256_logits", dict(height=5, width=6), 0.05),
    ("rgb_3x256", dict(height=3, width=4), 1.5), ("conditional", dict(height=5, width=6), 2.0)])
def test_teacher_forcing_reproduces_every_draw(name, size, temperature):
    sm = built(name, **size)
    cond = labels_for(sm, 3)
    r = run(sm, 3, "rows", seed=17, temperature=temperature, conditions=cond)
    levels, margins = teacher_forced_draws(sm, r, temperature, 17, cond)
    tol = prng.boundary_tolerance(sm.levels)
    bad = (levels != r.levels) & (np.minimum(margins, r.margins) >= tol)
    assert not bad.any(), f"{int(bad.sum())} draws differ from the teacher-forced ones, first at " \
                          f"{np.argwhere(bad)[0]}"


def test_temperature_changes_the_result():
    sm = built("categorical256_logits", height=5, width=6)
    hot, cold = run(sm, seed=5), run(sm, seed=5, temperature=0.01)
    assert (hot.levels != cold.levels).mean() > 0.3
    # T -> 0 sharpens towards the argmax: the cold draws are the argmax of the (teacher-forced) logits at almost
    # every position, the T = 1 draws at few (256 levels, a small untrained model: a broad distribution).
    out = np.asarray(sm.model(cold.images)).reshape(cold.levels.shape + (256,))
    assert (out.argmax(-1) == cold.levels).mean() > 0.9
    out = np.asarray(sm.model(hot.images)).reshape(hot.levels.shape + (256,))
    assert (out.argmax(-1) == hot.levels).mean() < 0.5


def test_max_steps_stops_early_and_reports_counts():
    sm = built("rgb_3x256", height=3, width=4)
    full = run(sm, seed=8)
    part = run(sm, seed=8, max_steps=7, mode="rows")
    assert (part.steps_run, part.steps_total, part.complete) == (7, 36, False)
    assert full.steps_total == 36 and full.complete
    reached = np.zeros(36, bool)
    reached[:7] = True  # raster order with channels innermost: the first 7 (pixel, channel) draws
    reached = np.broadcast_to(reached.reshape(3, 4, 3), part.levels.shape)
    assert np.all(part.levels[~reached] == -1) and np.all(np.isnan(part.margins[~reached]))
    assert np.all(part.levels[reached] >= 0)
    np.testing.assert_array_equal(part.levels[reached], full.levels[reached])
    assert part.seconds >= 0 and part.trace_seconds > 0
    assert part.estimated_full_seconds == pytest.approx(part.seconds * 36 / 7)
    assert run(sm, seed=8, max_steps=10 ** 6).complete  # more than needed: just runs to the end


def test_progress_prints_rows_and_rate(capsys):
    run(built("keras_io", height=5, width=6), max_steps=13, progress=True)
    err = capsys.readouterr().err
    assert "2/5 rows done" in err and "pixels/s" in err


# --------------------------------------------------------------------------- hand-made models

def constant_model(h, w, c, bias, activation=None, reshape_levels=None):
    """Conv2D 1x1 with a zero kernel: every pixel outputs activation(bias), whatever the image."""
    inputs = keras.Input((h, w, c))
    conv = keras.layers.Conv2D(len(bias), 1, activation=activation, kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(np.asarray(bias, np.float32)))
    out = conv(inputs)
    if reshape_levels:
        out = keras.layers.Reshape((-1, w, c, reshape_levels))(out)
    return keras.Model(inputs, out)


def z_score(count, total, p):
    return (count - total * p) / math.sqrt(total * p * (1 - p))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_bernoulli_frequency_matches_p(temperature):
    p = 0.3
    logit = math.log(p / (1 - p))
    model = constant_model(4, 4, 1, [logit], activation="sigmoid")
    r = naive.sample(model, 500, mode="graph", head="bernoulli", seed=21, temperature=temperature)
    assert r.output == "probs"
    p_t = 1 / (1 + math.exp(-logit / temperature))  # the contract: temperature divides the logit
    assert abs(z_score(int(r.levels.sum()), r.levels.size, p_t)) < 5


@pytest.mark.parametrize("activation,output", [("softmax", "probs"), (None, "logits")])
def test_categorical_frequencies_match_the_distribution(activation, output):
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    model = constant_model(4, 4, 1, np.log(probs), activation=activation)
    r = naive.sample(model, 500, mode="rows", head="categorical", levels=4, seed=22)
    assert r.output == output
    counts = np.bincount(r.levels.ravel(), minlength=4)
    total = counts.sum()
    chi2 = float(((counts - total * probs) ** 2 / (total * probs)).sum())
    assert chi2 < 3 + 8 * math.sqrt(6), (counts, chi2)  # dof 3: mean + 8 standard deviations


@pytest.mark.parametrize("reshape", [False, True], ids=["flat", "split"])
def test_categorical_output_layout_per_channel(reshape):
    # Channel c's levels live at [c*L, (c+1)*L) (flat) or [..., c, :] (split): force level 2, 0, 3 for R, G, B.
    levels, forced = 4, [2, 0, 3]
    bias = np.full((3, levels), -30.0)
    bias[np.arange(3), forced] = 30.0
    model = constant_model(3, 4, 3, bias.ravel(), reshape_levels=levels if reshape else None)
    for mode in naive.MODES:
        r = naive.sample(model, 2, mode=mode, head="categorical", levels=levels, value_map="level/(N-1)",
                         output="logits", max_steps=None if mode != "predict" else 9)
        reached = r.levels[r.levels >= 0].reshape(-1, 3)
        np.testing.assert_array_equal(reached, np.broadcast_to(forced, reached.shape), err_msg=mode)
        assert np.allclose(r.images[r.levels >= 0], (r.levels[r.levels >= 0] / 3.0).astype(np.float32))


def test_model_is_rerun_for_each_image_channel():
    # R is always 1 (logit +30); G's logit is 60*R - 30 at the same pixel, B's is 30 - 60*G: G = 1 and B = 0 only
    # if the model is re-run after R (then G) is written.  With a stale image G and B would be coin flips.
    inputs = keras.Input((3, 4, 3))
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    kernel[0, 0, 0, 1] = 60.0
    kernel[0, 0, 1, 2] = -60.0
    conv = keras.layers.Conv2D(3, 1, kernel_initializer=keras.initializers.Constant(kernel),
                               bias_initializer=keras.initializers.Constant([30.0, -30.0, 30.0]))
    model = keras.Model(inputs, conv(inputs))
    for mode in naive.MODES:
        r = naive.sample(model, 3, mode=mode, head="bernoulli", output="logits", seed=1,
                         max_steps=None if mode != "predict" else 12)
        reached = r.levels[r.levels >= 0].reshape(-1, 3)
        np.testing.assert_array_equal(reached, np.broadcast_to([1, 1, 0], reached.shape), err_msg=mode)


def test_callable_value_map_and_first_draw_matches_rng():
    sm = built("categorical4", height=5, width=6)
    table = np.array([0.0, 0.5, 0.25, 1.0], np.float32)
    r = naive.sample(sm.model, 2, mode="graph", head="categorical", levels=4, value_map=lambda k: table[k],
                     seed=13, max_steps=1)
    np.testing.assert_array_equal(r.images[:, 0, 0, 0], table[r.levels[:, 0, 0, 0]])
    # The first draw, by hand from rng: model output on the zero image at (0, 0), u of (seed, image, 0, 0).
    probs = np.asarray(sm.model(np.zeros((2, 5, 6, 1), np.float32)))[:, 0, 0, :]
    u = prng.uniform_grid(13, 2, 5, 6, 1)[:, 0, 0, 0]
    expected, margin = prng.draw_levels(probs.astype(np.float32), "probs", 1.0, u, return_margin=True)
    tol = prng.boundary_tolerance(4)
    ok = (expected == r.levels[:, 0, 0, 0]) | (margin < tol)
    assert ok.all(), (expected, r.levels[:, 0, 0, 0], margin)


# --------------------------------------------------------------------------- output kind

def ambiguous_model():
    """Output = conv(x) * conv(x): neither a probability op nor an affine head."""
    inputs = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(1, 1)(inputs)
    b = keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs)
    return keras.Model(inputs, keras.layers.Multiply()([a, b]))


def test_auto_output_refuses_an_ambiguous_head_and_explicit_output_runs():
    model = ambiguous_model()
    with pytest.raises(ValueError, match=r"output='auto' cannot tell.*\(Mul\).*output='probs'.*output='logits'"):
        naive.sample(model, 1, mode="graph", head="bernoulli")
    r = naive.sample(model, 1, mode="graph", head="bernoulli", output="logits")
    assert r.complete and r.output == "logits"


def test_declared_probs_outside_unit_interval_is_refused():
    sm = built("categorical256_logits", height=5, width=6)
    with pytest.raises(ValueError, match=r"output='probs' but the model output .* outside \[0, 1\]"):
        run(sm, output="probs")


# --------------------------------------------------------------------------- argument errors

@pytest.mark.parametrize("kwargs,pattern", [
    (dict(n=0), r"n must be an integer in \[1, 2\*\*32\), got 0"),
    (dict(n=1.5), r"n must be an integer.*got float 1.5"),
    (dict(n=True), r"n must be an integer.*got bool True"),
    (dict(temperature=0.0), r"temperature must be a positive finite float32, got 0.0"),
    (dict(temperature=-1), r"temperature must be a positive finite float32, got -1.0"),
    (dict(temperature=float("inf")), r"temperature must be a positive finite float32, got inf"),
    (dict(temperature=1e300), r"temperature must be a positive finite float32, got 1e\+300"),
    (dict(temperature="1"), r"temperature must be a positive finite float32, got str"),
    (dict(mode="eager"), r"mode must be one of 'predict', 'graph', 'rows', got 'eager'"),
    (dict(head="gaussian"), r"head must be one of 'bernoulli', 'categorical', 'logistic_mixture', got 'gaussian'"),
    (dict(value_map="level/256"), r"value_map must be one of .*'level/255', 'level/127.5-1' or a callable.*got 'level/256'"),
    (dict(value_map=lambda k: 1 / 0), r"value_map \(callable\).*ZeroDivisionError"),
    (dict(output="logprobs"), r"output must be one of 'auto', 'probs', 'logits', got 'logprobs'"),
    (dict(levels=3), r"levels must be 2 for head='bernoulli'.*got 3"),
    (dict(levels=1, head="categorical"), r"levels must be an integer >= 2, got 1"),
    (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*64\), got -1"),
    (dict(seed=2 ** 64), r"seed must be an integer in \[0, 2\*\*64\), got 18446744073709551616"),
    (dict(max_steps=0), r"max_steps must be an integer >= 1, got 0"),
    (dict(image_shape=(5, 6)), r"image_shape must be \(H, W, C\), three positive integers, got \(5, 6\)"),
    (dict(image_shape=(6, 6, 1)), r"image_shape must agree with model .*\(5, 6, 1\), got \(6, 6, 1\)"),
    (dict(conditions=np.zeros((2, 10), np.float32)), r"conditions must give the model's 0 input\(s\).*got 1"),
])
def test_bad_arguments_are_named(kwargs, pattern):
    sm = built("keras_io", height=5, width=6)
    args = dict(n=2, mode="graph", head="bernoulli")
    args.update(kwargs)
    n = args.pop("n")
    # A value of the wrong type (1.5 images, a str temperature) is a TypeError, as at every front door.
    wrong_type = any(f"got {t} " in pattern or pattern.endswith(f"got {t}") for t in ("float", "bool", "str"))
    with pytest.raises(TypeError if wrong_type else ValueError, match=pattern):
        naive.sample(sm.model, n, **args)


@pytest.mark.parametrize("mode", naive.MODES)
@pytest.mark.parametrize("head,levels,pattern", [
    ("categorical", 3, r"shape \(n, H, W, C\*levels\) or \(n, H, W, C, levels\) = \(2, 5, 6, 3\) or "
                       r"\(2, 5, 6, 1, 3\) for head='categorical' with levels=3 .*got \(2, 5, 6, 4\)"),
    ("bernoulli", 2, r"shape \(n, H, W, C\) = \(2, 5, 6, 1\) for head='bernoulli' .*got \(2, 5, 6, 4\)"),
])
def test_output_shape_not_matching_head_is_refused(mode, head, levels, pattern):
    sm = built("categorical4", height=5, width=6)
    pattern = pattern.replace("(2, 5, 6", "(2, 1, 6") if mode == "rows" else pattern
    with pytest.raises(ValueError, match=pattern):
        naive.sample(sm.model, 2, mode=mode, head=head, levels=levels, output="probs")


def test_subclassed_model_needs_image_shape():
    sm = built("book", height=5, width=6)
    with pytest.raises(ValueError, match=r"image_shape=\(H, W, C\) is required: model .* declares no inputs"):
        naive.sample(sm.model, 1, head="bernoulli")


def test_conditions_are_checked():
    sm = built("conditional", height=5, width=6)
    with pytest.raises(ValueError, match=r"conditions must give the model's 1 input\(s\) .*got 0"):
        naive.sample(sm.model, 2, head="bernoulli")
    with pytest.raises(ValueError, match=r"conditions\[0\] must have shape \(n, \.\.\.\) with n = 2.*\(3, 10\)"):
        naive.sample(sm.model, 2, head="bernoulli", conditions=labels_for(sm, 3))


def test_positions_from_a_given_image_repeat_the_full_loops_draws():
    # Visiting a few pixels from the full loop's own final image must draw exactly what the loop drew
    # there: the same uniforms, the same model inputs before each pixel (causality).
    sm = built("keras_io", height=5, width=6)
    full = run(sm, 2, "rows", seed=4)
    at = [(3, 1), (3, 2), (4, 5)]
    part = naive.sample(sm.model, 2, mode="rows", head=sm.head, levels=sm.levels, value_map=sm.value_map,
                        seed=4, positions=at, image=full.images)
    assert part.steps_run == part.steps_total == len(at)
    for i, j in at:
        np.testing.assert_array_equal(part.levels[:, i, j], full.levels[:, i, j])
    untouched = np.ones(part.levels.shape, bool)
    for i, j in at:
        untouched[:, i, j] = False
    assert (part.levels[untouched] == -1).all()
    with pytest.raises(ValueError, match=r"positions must lie in the 5x6 image, got \(5, 0\)"):
        naive.sample(sm.model, 1, mode="rows", head=sm.head, positions=[(5, 0)])
    with pytest.raises(ValueError, match=r"image must have shape \(1, 5, 6, 1\)"):
        naive.sample(sm.model, 1, mode="rows", head=sm.head, image=np.zeros((1, 5, 5, 1)))


def test_rows_seconds_estimate_times_the_loops_own_steps():
    sm = built("keras_io", height=5, width=6)
    estimate, costs = naive.rows_seconds_estimate(sm.model, 2, rows=(0, 4), steps_per_row=2, head=sm.head,
                                                  levels=sm.levels, seed=1)
    assert len(costs) == 2 and all(c > 0 for c in costs)
    # 6 columns x (5 rows interpolated between the two timed rows).
    assert estimate == pytest.approx(6 * np.interp(np.arange(5), [0, 4], costs).sum())
