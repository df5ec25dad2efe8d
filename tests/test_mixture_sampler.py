"""Python front end + core executor + GPU flat program (host emulation): logistic-mixture heads end to end
(docs/SEMANTICS.md, "Logistic-mixture heads").

`Sampler(model, head="logistic_mixture")` on keras.io-style PixelCNNs ending in a 1x1 conv to 3K (grey) or 10K (RGB)
values (tests/fixtures/mixture_models.py): the C++ draw equals its numba twin, the spec carries the head, teacher
forcing equals one forward pass, the cached sampler draws the naive rows loop's images for a seed (and the TF op
and the emulated GPU program draw the CPU executor's), the draws are calibrated under the model's own conditionals
by a test that does not trust our RNG nor our draw code (float64 discretised-mixture CDF from one forward pass of
the drawn images, randomised PIT, KS), temperature does what SEMANTICS.md says, and what a mixture head cannot take
is refused naming the argument, the layout or the layer."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from fixtures.mixture_models import LEVELS, colour_groups_mixture, head_values, mixture_pixelcnn
from fixtures.seed_models import _keras_io_body
from pixelcnn_fast import naive, rng as prng, tf_sampler
from pixelcnn_fast._core import testing
from pixelcnn_fast.program.ir import NotCausalError
from pixelcnn_fast.program.spec import SpecError, parse_spec
from pixelcnn_fast.sampler import Sampler
from sampling_checks import mixture_cdf_bounds

MIXTURE = "logistic_mixture"


def _image(levels):
    """The model input of drawn levels: level / 127.5 - 1 in float32, as the executors feed it back."""
    return (np.asarray(levels, np.float32) * np.float32(1.0 / 127.5) + np.float32(-1.0)).astype(np.float32)


# ------------------------------------------------------------------- the draw: C++ == numba twin
@pytest.mark.parametrize("channels", [1, 3])
def test_core_draw_equals_the_numba_twin(channels):
    # Same process, same libm: expect identical levels. Where the two could differ (products feeding sums that a
    # compiler may contract into FMAs, which this build does not do for philox.h) the margin would be within
    # rounding; the test reports how many draws differ and requires each of them to be such a draw.
    rs = np.random.default_rng(20261130 + channels)
    total = differ = 0
    for components in (1, 2, 5):
        for temperature in (0.05, 0.7, 1.0, 2.5):
            m = 4000
            v = rs.normal(0.0, 1.5, (m, head_values(components, channels))).astype(np.float32)
            v[rs.random(v.shape) < 0.02] = rs.choice([-9.0, 12.0])  # some clipped log-scales, extreme values
            u = rs.random(m).astype(np.float32)
            uc = rs.random(m).astype(np.float32)
            drawn = rs.integers(0, LEVELS, (m, 2)).astype(np.int32)
            for channel in range(channels):
                got, margins = testing.draw_logistic_mixture(v, components, channel, drawn, LEVELS, temperature, uc,
                                                             u, return_margin=True)
                want = np.empty(m, np.int32)
                want_margins = np.empty(m, np.float32)
                for r in range(m):
                    want[r], want_margins[r] = prng.draw_logistic_mixture_with_margin(
                        v[r], components, channels, channel, drawn[r].astype(np.int64), LEVELS,
                        np.float32(temperature), uc[r], u[r])
                bad = got != want
                total += m
                differ += int(bad.sum())
                assert np.all(np.minimum(margins, want_margins)[bad] < 1e-5), "a draw differs away from a boundary"
                np.testing.assert_array_equal(margins[~bad], want_margins[~bad])
    print(f"{channels} channel(s): {differ} of {total} draws differ between C++ and numba")
    assert differ == 0


def test_core_component_uniform_equals_the_twin():
    for seed, image, position in [(0, 0, 0), (2 ** 64 - 1, 7, 123), (12345678901, 2 ** 32 - 1, 2 ** 32 - 1)]:
        assert testing.mixture_component_uniform(seed, image, position) == prng.mixture_component_uniform(
            np.uint64(seed), np.uint64(image), np.uint64(position))


def test_draw_arguments_are_checked():
    v = np.zeros((2, 30), np.float32)
    ok = dict(components=3, channel=0, drawn=np.zeros((2, 2), np.int32), levels=256, temperature=1.0,
              u_component=np.zeros(2, np.float32), u=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"values must have shape \(M, 3K\) \(grey\) or \(M, 10K\) \(RGB\) for K = "
                                         r"components = 4"):
        testing.draw_logistic_mixture(v, **{**ok, "components": 4})
    with pytest.raises(ValueError, match=r"channel must lie in \[0, 3\), got 3"):
        testing.draw_logistic_mixture(v, **{**ok, "channel": 3})
    with pytest.raises(ValueError, match=r"drawn levels must lie in \[0, 256\), got 256"):
        testing.draw_logistic_mixture(v, **{**ok, "drawn": np.full((2, 2), 256, np.int32)})
    with pytest.raises(ValueError, match=r"u and u_component must lie in \[0, 1\)"):
        testing.draw_logistic_mixture(v, **{**ok, "u": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match=r"head 'logistic_mixture' draws from a whole pixel's head"):
        testing.draw_levels(v, "logistic_mixture", 1.0, np.zeros(2, np.float32))


# ------------------------------------------------------------------- the head: resolution, spec, refusals
@pytest.mark.parametrize("channels,components", [(1, 1), (1, 4), (3, 1), (3, 3)])
def test_sampler_takes_the_mixture_head(channels, components):
    model = mixture_pixelcnn(height=4, width=5, channels=channels, components=components)
    sampler = Sampler(model, head=MIXTURE)
    assert (sampler.head, sampler.kind, sampler.levels, sampler.components) == (MIXTURE, MIXTURE, LEVELS, components)
    assert (sampler.value_scale, sampler.value_offset) == (2.0 / 255.0, -1.0)
    spec, arrays = sampler.last_spec
    head = next(ln for ln in spec.splitlines() if ln.startswith("head "))
    assert head.startswith("head kind=logistic_mixture ") and head.endswith(f" components={components}")
    assert "levels=256 scale=0.00784313772 offset=-1" in head
    # The reader reads it, and the C++ writer's canonical text is the Python writer's, byte for byte.
    sp = parse_spec(spec)
    assert sp.head["kind"] == MIXTURE and sp.head["components"] == components and sp.head["levels"] == LEVELS
    assert tf_sampler.canonical_spec(spec) == spec
    # The user's value map wins over the default.
    other = Sampler(model, head=MIXTURE, value_map=(0.5, -2.0))
    assert (other.value_scale, other.value_offset) == (0.5, -2.0)
    assert "scale=0.5 offset=-2" in other.last_spec[0]


def test_mixture_head_is_never_guessed_and_its_layout_is_checked():
    grey = mixture_pixelcnn(height=4, width=4, channels=1, components=2)
    with pytest.raises(ValueError, match=r"cannot infer the head"):
        Sampler(grey)  # 6 raw outputs per pixel: nothing says mixture
    import keras

    def with_head(channels, values):
        inputs = keras.Input((4, 4, channels))
        x = _keras_io_body(inputs, 8, 0)
        return keras.Model(inputs, keras.layers.Conv2D(values, 1)(x))

    with pytest.raises(ValueError, match=r"over 3 image channel\(s\) needs 10K values per pixel \(PixelCNN\+\+'s "
                                         r"layout, RGB: \[logits\(K\), then per channel means\(K\), log_scales\(K\), "
                                         r"coeffs\(K\)\]\); model '.*' outputs 12"):
        Sampler(with_head(3, 12), head=MIXTURE)
    with pytest.raises(ValueError, match=r"over 1 image channel\(s\) needs 3K values.*outputs 7"):
        Sampler(with_head(1, 7), head=MIXTURE)
    with pytest.raises(ValueError, match=r"draws grey \(1 image channel\) or RGB \(3\) images; model '.*' has 2"):
        Sampler(with_head(2, 6), head=MIXTURE)
    with pytest.raises(ValueError, match=r"levels must be an integer in \[2, 65536\].*got 1"):
        Sampler(grey, head=MIXTURE, levels=1)
    with pytest.raises(ValueError, match=r"value_map must be one of"):
        Sampler(grey, head=MIXTURE, value_map="level/128")


def test_core_refuses_malformed_mixture_heads():
    from pixelcnn_fast._ext import core

    sampler = Sampler(mixture_pixelcnn(height=3, width=4, channels=3, components=2), head=MIXTURE)
    spec, arrays = sampler.last_spec
    core().ColumnProgram.from_spec(spec, arrays, 0)  # the written spec builds
    head = next(ln for ln in spec.splitlines() if ln.startswith("head "))
    cases = {
        head.replace(" components=2", ""): r"'head' needs components=",
        head.replace("components=2", "components=3"): r"head buffer has 20 channels, expected 30 for a logistic "
                                                      r"mixture of 3 components \(RGB",
        head.replace("levels=256", "levels=1"): r"components >= 1 and levels >= 2",
        head.replace("kind=logistic_mixture", "kind=logits"): r"unknown key for 'head'",
    }
    for bad_head, message in cases.items():
        with pytest.raises(ValueError, match=message):
            core().ColumnProgram.from_spec(spec.replace(head, bad_head), arrays, 0)
    # The NumPy reader reads the head line as strictly as the C++ parser.
    for bad_head in list(cases)[::3]:
        with pytest.raises(SpecError, match=r"'head' needs components=|unknown key for 'head'"):
            parse_spec(spec.replace(head, bad_head))
    # A hand-written spec whose head step is computed after a draw at its pixel (phase 1) is refused.
    buffer = parse_spec(spec).head["buffer"]
    last = next(ln for ln in spec.splitlines() if f" out={buffer} " in ln)
    with pytest.raises(ValueError, match=r"writes the logistic-mixture head at phase 1: a mixture head may not "
                                         r"depend on any image channel of its own pixel"):
        core().ColumnProgram.from_spec(spec.replace(last, last.replace(" phase=0", " phase=1")), arrays, 0)


def test_a_head_that_sees_its_own_pixel_is_refused_naming_the_layer():
    # RGB colour-group masks: G and B read R at their own pixel. Fine for a categorical head, not for a mixture.
    model = colour_groups_mixture()
    with pytest.raises(NotCausalError, match=r"layer 'rgb_mask_a' \(MaskedConv2D\) reads the pixel at offset "
                                             r"\(\+0, \+0\), image channel 0, and feeds the logistic-mixture head"):
        Sampler(model, head=MIXTURE)


def test_check_reports_the_mixture_rule():
    from pixelcnn_fast import check

    model = colour_groups_mixture()
    with pytest.raises(NotCausalError, match=r"layer 'rgb_mask_a' \(MaskedConv2D\).*logistic-mixture head"):
        check(model, head=MIXTURE)
    report = check(mixture_pixelcnn(height=4, width=4, channels=3, components=2), head=MIXTURE)
    assert report.causal and "logistic mixture (20 values per pixel)" in str(report)


def test_exported_sampler_serves_the_mixture_draws(tmp_path):
    from pixelcnn_fast import serving

    sampler = Sampler(mixture_pixelcnn(height=4, width=5, channels=3, components=2), head=MIXTURE)
    sampler.export(str(tmp_path / "pp"))
    loaded = serving.load(str(tmp_path / "pp"))  # kept: its functions reference its variables
    served = loaded.sample(tf.constant(2, tf.int64), tf.constant(5, tf.int64), tf.constant(0.9),
                           tf.constant(1, tf.int64))["levels"]
    np.testing.assert_array_equal(served.numpy(), sampler.sample(2, seed=5, temperature=0.9, image_offset=1))


# ------------------------------------------------------------------- teacher forcing
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size,batch", [((7, 9), 3), ((5, 3), 1), ((1, 6), 2), ((6, 1), 1)])
def test_teacher_forced_equals_one_forward_pass(channels, size, batch, rng):
    model = mixture_pixelcnn(height=size[0], width=size[1], channels=channels, components=3)
    sampler = Sampler(model, head=MIXTURE)
    image = _image(rng.integers(0, LEVELS, (batch,) + size + (channels,)))
    want = model(image, training=False).numpy()
    got = sampler.teacher_forced(image)
    err = np.abs(got - want).max() / np.abs(want).max()
    # The GPU flat program's loops on the host compute the same head values.
    spec, arrays = sampler.last_spec
    emulated = testing.EmulatedGpuProgram.from_spec(spec, arrays, 0).teacher_forced_emulated(image, 2)
    err_gpu = np.abs(emulated - want).max() / np.abs(want).max()
    print(f"{channels} channel(s) {size} batch {batch}: max relative error {err:.2e} (emulated GPU {err_gpu:.2e})")
    assert err < 1e-5 and err_gpu < 1e-5


# ------------------------------------------------------------------- same seed, same images
# The margin below which two executors' draws for one seed may differ (then the image legitimately diverges):
# boundary_tolerance(256) covers the draw's own rounding; the head values themselves differ by float rounding
# between a TF forward and the cached path (~1e-6 relative), which moves a logistic CDF boundary in u by up to
# |dmu| / (4 s), s >= ~0.01 for these models: 1e-4 covers it.
MIXTURE_TOL = max(prng.boundary_tolerance(LEVELS), 1e-4)


def assert_same_draws(levels_a, margins_a, levels_b, margins_b, what):
    """Per image, the first draw where a and b differ must be rounding-decided (margin < MIXTURE_TOL)."""
    diverged = 0
    for k in range(levels_a.shape[0]):
        diff = np.flatnonzero(levels_a[k].ravel() != levels_b[k].ravel())
        if diff.size:
            idx = diff[0]
            margin = min(margins_a[k].ravel()[idx], margins_b[k].ravel()[idx])
            assert margin < MIXTURE_TOL, f"{what}: image {k} differs at draw {idx} with margin {margin:.2e}"
            diverged += 1
    return diverged


@pytest.mark.parametrize("channels,size,n,temperature", [(1, (5, 7), 3, 1.0), (3, (5, 7), 2, 0.8),
                                                          (3, (3, 1), 1, 1.3), (1, (1, 5), 1, 1.0)])
def test_cached_draws_the_naive_loops_images(channels, size, n, temperature):
    model = mixture_pixelcnn(height=size[0], width=size[1], channels=channels, components=3)
    sampler = Sampler(model, head=MIXTURE)
    seed = 20261130 + channels
    ref = naive.sample(model, n, mode="rows", head=MIXTURE, levels=LEVELS, value_map="level/127.5-1", seed=seed,
                       temperature=temperature, image_offset=2)
    levels, margins = sampler.sample(n, seed=seed, temperature=temperature, return_margins=True, image_offset=2)
    assert levels.shape == (n,) + size + (channels,) and levels.dtype == np.int32
    assert levels.min() >= 0 and levels.max() < LEVELS
    diverged = assert_same_draws(ref.levels, ref.margins, levels, margins, "naive rows vs cached")
    same = (ref.levels == levels).mean()
    print(f"{channels} channel(s) {size} n={n} T={temperature}: {same:.1%} of draws equal, {diverged} image(s) "
          f"diverged at a rounding-decided draw")
    assert same > 0.5
    # The TF op draws the same images (the same C++ executor through the same spec) ...
    np.testing.assert_array_equal(
        tf_sampler.sample_op(sampler, n, seed=seed, temperature=temperature, image_offset=2).numpy(), levels)
    # ... and so do the GPU flat program's loops, up to rounding-decided draws.
    spec, arrays = sampler.last_spec
    gpu = testing.EmulatedGpuProgram.from_spec(spec, arrays, 0)
    for per_block in (1, 2):
        glevels, gmargins = gpu.sample_emulated(n, seed, temperature, 2, per_block)
        assert_same_draws(glevels, gmargins, levels, margins, f"emulated GPU ({per_block} per block) vs CPU")


def test_completion_keeps_known_levels_and_draws_the_rest(rng):
    model = mixture_pixelcnn(height=5, width=4, channels=3, components=2)
    sampler = Sampler(model, head=MIXTURE)
    images = rng.integers(0, LEVELS, (2, 5, 4, 3)).astype(np.int32)
    known = np.zeros((5, 4), bool)
    known[:2] = True
    got = sampler.complete(images, known, seed=3)
    np.testing.assert_array_equal(got[:, :2], images[:, :2])
    # Nothing known: exactly sample(); all known: the images themselves.
    np.testing.assert_array_equal(sampler.complete(images, np.zeros((5, 4), bool), seed=3), sampler.sample(2, 3))
    np.testing.assert_array_equal(sampler.complete(images, np.ones((5, 4), bool), seed=3), images)
    ref = naive.complete(model, images, known, head=MIXTURE, levels=LEVELS, value_map="level/127.5-1", seed=3)
    assert (ref.levels == got).mean() > 0.5


# ------------------------------------------------------------------- calibration, independent of our RNG and draw
def _mixture_cdfs(out, levels, channels, temperature):
    """float64 F(x - 1) and F(x) of every drawn level x under the model's own conditional: out (n, H, W, values) is
    one forward pass of the drawn images; written from docs/SEMANTICS.md's definition (PixelCNN++'s layout and
    likelihood: one component j per pixel with prior softmax(logits / T); channel c logistic with scale
    exp(max(log_scale, -7)) T, G and B coupled to the drawn R, G through x = 2 level / 255 - 1). One component
    for the whole pixel means that channel c's conditional given the channels drawn before weighs component j by
    its posterior, prior_j * P(those channels | j), not by the prior."""
    out = out.astype(np.float64)
    k = out.shape[-1] // (3 if channels == 1 else 10)

    def mean_scale(c, x):
        block = k if channels == 1 else k + 3 * k * c
        mu = out[..., block:block + k].copy()
        s = np.exp(np.maximum(out[..., block + k:block + 2 * k], -7.0)) * temperature
        if c == 1:
            mu += np.tanh(out[..., k + 2 * k:k + 3 * k]) * x[..., :1]
        elif c == 2:
            mu += np.tanh(out[..., k + 3 * k + 2 * k:k + 3 * k + 3 * k]) * x[..., :1]
            mu += np.tanh(out[..., k + 6 * k + 2 * k:k + 6 * k + 3 * k]) * x[..., 1:2]
        return mu, s

    lower, upper, _ = mixture_cdf_bounds(out[..., :k], mean_scale, levels, LEVELS, temperature)
    return lower, upper


def _randomised_pit(model, levels, channels, rng, temperature=1.0):
    out = model(_image(levels), training=False).numpy()
    lower, upper = _mixture_cdfs(out, levels, channels, temperature)
    return (lower + rng.random(lower.shape) * (upper - lower)).ravel()


@pytest.mark.parametrize("channels", [1, 3])
def test_draws_are_calibrated_under_the_models_conditionals(channels, rng):
    # Grey: 24 images x 7 x 9 = 1512 draws; RGB: 12 x 7 x 9 x 3 = 2268. KS threshold 1e-4: a correct sampler fails
    # with that probability (the PIT values are i.i.d. uniform, each conditionally on the draws before it).
    model = mixture_pixelcnn(height=7, width=9, channels=channels, components=3)
    sampler = Sampler(model, head=MIXTURE)
    n = 24 if channels == 1 else 12
    seed = int(rng.integers(2 ** 63))
    levels = sampler.sample(n, seed=seed)
    u = _randomised_pit(model, levels, channels, rng)
    res = stats.kstest(u, "uniform")
    print(f"{channels} channel(s): {u.size} draws, KS statistic {res.statistic:.4f}, p = {res.pvalue:.3g} "
          f"(seed {seed})")
    assert u.size >= 500 and res.pvalue > 1e-4
    # Negative control: draws at T = 0.6 judged against the T = 1 conditionals must fail ...
    cold = sampler.sample(n, seed=seed, temperature=0.6)
    res_cold = stats.kstest(_randomised_pit(model, cold, channels, rng), "uniform")
    print(f"{channels} channel(s): T=0.6 draws against T=1 conditionals: KS {res_cold.statistic:.4f}, "
          f"p = {res_cold.pvalue:.3g}")
    assert res_cold.pvalue < 1e-4
    # ... and pass against their own (T = 0.6: logits / T, scales * T) conditionals: temperature is SEMANTICS.md's.
    res_own = stats.kstest(_randomised_pit(model, cold, channels, rng, temperature=0.6), "uniform")
    print(f"{channels} channel(s): T=0.6 draws against T=0.6 conditionals: p = {res_own.pvalue:.3g}")
    assert res_own.pvalue > 1e-4


def test_coupling_is_with_the_drawn_levels(rng):
    # Negative control for the colour coupling: the G and B draws judged as if R had been drawn at 127 (x_R ~ 0,
    # so G and B lose their coupling to R) fail the calibration that the true coupling passes above.
    model = mixture_pixelcnn(height=7, width=9, channels=3, components=3)
    levels = Sampler(model, head=MIXTURE).sample(12, seed=int(rng.integers(2 ** 63)))
    out = model(_image(levels), training=False).numpy()
    wrong_r = levels.copy()
    wrong_r[..., 0] = 127
    lower, upper = _mixture_cdfs(out, wrong_r, 3, 1.0)
    u = (lower[..., 1:] + rng.random(lower[..., 1:].shape) * (upper[..., 1:] - lower[..., 1:])).ravel()
    res = stats.kstest(u, "uniform")
    print(f"G, B judged without their coupling to R: KS {res.statistic:.4f}, p = {res.pvalue:.3g}")
    assert res.pvalue < 1e-4


def test_temperature_to_zero_takes_the_likeliest_component_and_the_bin_of_its_mean():
    model = mixture_pixelcnn(height=4, width=5, channels=3, components=3)
    levels = Sampler(model, head=MIXTURE).sample(3, seed=9, temperature=1e-4)
    out = model(_image(levels), training=False).numpy().astype(np.float64)
    k = 3
    j = out[..., :k].argmax(-1)[..., None]
    x = 2.0 * levels / 255.0 - 1.0
    mismatch = 0
    for c in range(3):
        block = k + 3 * k * c
        mu = np.take_along_axis(out[..., block:block + k], j, -1)[..., 0]
        def coeff(b):  # tanh of block b's coefficient of component j
            return np.tanh(np.take_along_axis(out[..., k + 3 * k * b + 2 * k:k + 3 * k * b + 3 * k], j, -1)[..., 0])

        if c == 1:
            mu += coeff(0) * x[..., 0]
        if c == 2:
            mu += coeff(1) * x[..., 0] + coeff(2) * x[..., 1]
        y = (mu + 1.0) * 127.5
        want = np.clip(np.floor(y - 0.5) + 1, 0, 255)
        near = np.abs(y - 0.5 - np.round(y - 0.5)) < 1e-3  # mu within rounding of a bin edge
        mismatch += int(((want != levels[..., c]) & ~near).sum())
    assert mismatch == 0
