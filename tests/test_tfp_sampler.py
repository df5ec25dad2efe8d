"""Tests: pixelcnn_fast.Sampler(dist) on tfp.distributions.PixelCNN itself (pixelcnn_fast/tfp_adapter.py).

The distribution is TFP's own, built by tests/fixtures/zoo_unet.py's tfp_pixelcnn (weight norm initialised by a
first log_prob, kernel constraints applied as the first optimizer step would), at one hierarchy (no stride-2
layers) and at two and three (TFP's U-net: stride-2 convs down, transposed convs up, on coarse grids).

The mixture semantics are tied to TFP's own numbers, not to our reading of them: a float64 oracle of TFP's layout
(written from TFP's documented likelihood) must give dist.log_prob of the sampled images, and the draws must be
calibrated under that oracle's conditionals.
"""

import numpy as np
import pytest

from fixtures import zoo_unet

SKIP = zoo_unet.tfp_available()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

import pixelcnn_fast as pf  # noqa: E402
from pixelcnn_fast import naive, tf_sampler  # noqa: E402
from pixelcnn_fast._core import testing  # noqa: E402
from pixelcnn_fast.program.ir import NotCausalError  # noqa: E402
from sampling_checks import assert_calibrated, mixture_cdf_bounds, randomised_pit  # noqa: E402
from test_mixture_sampler import MIXTURE_TOL, assert_same_draws  # noqa: E402

LEVELS = 256


def _dist(channels=1, conditional=False, size=(8, 8), constrained=True, seed=0, hierarchies=1):
    return zoo_unet.tfp_pixelcnn(height=size[0], width=size[1], channels=channels, conditional=conditional,
                                 hierarchies=hierarchies, nr_mix=3, filters=8, seed=seed, constrained=constrained)


def _conditions(z, n, rng):
    if not z.conditional_shape:
        return None
    return [np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]]


def _inputs(levels, conds):
    x = (2.0 * levels / (LEVELS - 1) - 1.0).astype(np.float32)
    return [x] + conds if conds else x


# ------------------------------------------------------------------- TFP's mixture in float64, from its docs
def _tfp_cdfs(params, levels, channels, temperature=1.0):
    """float64 F(x - 1), F(x) of every drawn level x under TFP's conditionals, and each pixel's log P: params
    (n, H, W, K * (1 + 2C + C(C-1)/2)) is the network's last Dense on the drawn images. TFP's layout: component j's
    block [logit, locs(C), raw scales(C), coefficients]; scale softplus(raw) + exp(-7); loc_G += c_0 x_R,
    loc_B += c_1 x_R + c_2 x_G with x = 2 level / 255 - 1; QuantizedDistribution over [0, 255] of the logistic
    shifted by -1/2 (bins of half-width 1/255 around x in [-1, 1] units, the outer bins open). One component per
    pixel: channel c's conditional weighs j by its posterior given the channels before."""
    p = params.astype(np.float64)
    n_per = 1 + 2 * channels + channels * (channels - 1) // 2
    k = p.shape[-1] // n_per
    p = p.reshape(p.shape[:-1] + (k, n_per))

    def mean_scale(c, x):
        mu = p[..., 1 + c].copy()
        s = (np.logaddexp(0.0, p[..., 1 + channels + c]) + np.exp(-7.0)) * temperature
        coef = p[..., 1 + 2 * channels:]
        if c == 1:
            mu += coef[..., 0] * x[..., :1]
        elif c == 2:
            mu += coef[..., 1] * x[..., :1] + coef[..., 2] * x[..., 1:2]
        return mu, s

    return mixture_cdf_bounds(p[..., 0], mean_scale, levels, LEVELS, temperature)


# ------------------------------------------------------------------- the adapter
@pytest.mark.parametrize("channels,conditional,hierarchies,size", [
    (1, False, 1, (7, 9)), (3, True, 1, (7, 9)), (3, False, 1, (7, 9)),
    (1, False, 2, (6, 10)), (3, True, 2, (8, 8)), (3, False, 3, (16, 16)), (1, True, 3, (8, 12)),
    (3, True, 3, (32, 32))])
def test_teacher_forced_equals_the_tfp_network(channels, conditional, hierarchies, size, rng):
    z = _dist(channels, conditional, size=size, hierarchies=hierarchies)
    sampler = pf.Sampler(z.dist)
    assert (sampler.head, sampler.levels, sampler.components, sampler.mixture_layout) == \
        ("logistic_mixture", LEVELS, 3, "tfp")
    for n in (1, 3):
        levels = rng.integers(0, LEVELS, (n,) + size + (channels,))
        conds = _conditions(z, n, rng)
        ref = sampler.model(_inputs(levels, conds), training=False).numpy()
        got = sampler.teacher_forced(_inputs(levels, None), conditions=conds)
        err = np.abs(got - ref).max() / np.abs(ref).max()
        print(f"C={channels} conditional={conditional} hierarchies={hierarchies} {size} n={n}: max relative "
              f"error {err:.2e}")
        assert err < 1e-5


def test_the_oracle_gives_tfps_own_log_prob(rng):
    # Ties the layout, scale, coupling and discretisation to TFP's implementation: the float64 oracle's
    # log-likelihood of sampled and of random images equals dist.log_prob (float32: 1e-4 relative).
    for channels, conditional, hierarchies, size in ((1, False, 1, (5, 6)), (3, True, 1, (5, 6)),
                                                     (3, False, 2, (4, 6))):
        z = _dist(channels, conditional, size=size, hierarchies=hierarchies)
        sampler = pf.Sampler(z.dist)
        conds = _conditions(z, 4, rng)
        drawn = sampler.sample(4, seed=5, conditions=conds)
        for levels in (drawn, rng.integers(0, LEVELS, drawn.shape)):
            params = sampler.model(_inputs(levels, conds), training=False).numpy()
            ours = _tfp_cdfs(params, levels, channels)[2].sum(axis=(1, 2))
            theirs = z.dist.log_prob(levels.astype(np.float32), conditional_input=None if conds is None else
                                     conds[0]).numpy()
            np.testing.assert_allclose(ours, theirs, rtol=1e-4)


@pytest.mark.parametrize("channels,conditional,n,temperature,hierarchies,size", [
    (1, False, 3, 1.0, 1, (5, 7)), (3, True, 2, 0.8, 1, (5, 7)), (3, False, 1, 1.0, 1, (5, 7)),
    (1, True, 2, 1.0, 2, (4, 6)), (3, False, 1, 0.9, 3, (4, 4)), (1, True, 1, 1.0, 2, (8, 8)),
    (3, False, 1, 1.0, 3, (16, 16))])
def test_cached_draws_the_naive_loops_images(channels, conditional, n, temperature, hierarchies, size, rng):
    z = _dist(channels, conditional, size=size, hierarchies=hierarchies)
    sampler = pf.Sampler(z.dist)
    conds = _conditions(z, n, rng)
    seed = 1130 + channels
    # mode="graph": tf-keras WeightNorm layers declare a fixed input shape, so the rows loop cannot crop.
    ref = naive.sample(sampler.model, n, mode="graph", head="logistic_mixture", levels=LEVELS,
                       value_map=lambda k: 2.0 * k / (LEVELS - 1) - 1.0, seed=seed, temperature=temperature,
                       conditions=conds, components=3, mixture_layout="tfp")
    levels, margins = sampler.sample(n, seed=seed, temperature=temperature, conditions=conds, return_margins=True)
    diverged = assert_same_draws(ref.levels, ref.margins, levels, margins, "naive graph vs cached")
    print(f"C={channels} n={n}: {(ref.levels == levels).mean():.1%} of draws equal, {diverged} diverged")
    assert (ref.levels == levels).mean() > 0.5
    # The TF op takes the layout through the same spec; the GPU flat program refuses TFP's network by name (its
    # vertical stack is computed with a delay, and its U-net has grids: the flat program takes neither yet).
    np.testing.assert_array_equal(tf_sampler.sample_op(sampler, n, seed=seed, temperature=temperature,
                                                       conditions=conds).numpy(), levels)
    spec, arrays = sampler.last_spec
    assert " layout=1" in spec
    with pytest.raises(ValueError, match=r"flatten: step '.*' is (a delayed step|a strided conv|a transposed conv|a step on a coarse grid)"):
        testing.EmulatedGpuProgram.from_spec(spec, arrays, 0)


def test_cached_draws_the_naive_loops_last_row_at_32x32(rng):
    """The issue's largest size, conditional, 3 hierarchies: the naive graph loop over all 1,024 pixels would take
    minutes, so it is given the cached images and draws, with the same seed, the pixels of the last row and a few
    others (each conditional reads only the pixels before it, which both samplers then share): the same levels, but
    where a draw is rounding-decided (its margin below the boundary tolerance)."""
    z = _dist(3, True, size=(32, 32), hierarchies=3)
    sampler = pf.Sampler(z.dist)
    n, seed = 2, 321
    conds = _conditions(z, n, rng)
    levels, margins = sampler.sample(n, seed=seed, conditions=conds, return_margins=True)
    positions = [(0, 0), (5, 17), (16, 31), (30, 2)] + [(31, j) for j in range(32)]
    ref = naive.sample(sampler.model, n, mode="graph", head="logistic_mixture", levels=LEVELS,
                       value_map=lambda k: 2.0 * k / (LEVELS - 1) - 1.0, seed=seed, conditions=conds, components=3,
                       mixture_layout="tfp", image=_inputs(levels, None), positions=positions)
    rows, cols = np.array(positions).T
    ours, theirs = levels[:, rows, cols], ref.levels[:, rows, cols]
    differ = ours != theirs
    assert np.all(np.minimum(margins[:, rows, cols], ref.margins[:, rows, cols])[differ] < MIXTURE_TOL), \
        "a draw that is not rounding-decided differs"
    print(f"32x32x3: {(~differ).mean():.1%} of {differ.size} draws equal")
    assert (~differ).mean() > 0.9


@pytest.mark.parametrize("channels,conditional,hierarchies,size", [
    (1, False, 1, (6, 7)), (3, False, 1, (6, 7)), (1, False, 2, (6, 8)), (3, False, 2, (6, 8)),
    (1, True, 2, (8, 8)), (3, False, 3, (16, 16)), (3, True, 3, (32, 32))])
def test_draws_are_calibrated_under_tfps_conditionals(channels, conditional, hierarchies, size, rng):
    # At least 500 draws per model (grey 6x7: 16 images x 42; RGB 32x32: 1 image x 3,072); KS threshold 1e-4, as the
    # zoo's. A conditional model samples every image under one label.
    z = _dist(channels, conditional, size=size, hierarchies=hierarchies)
    sampler = pf.Sampler(z.dist)
    n = max(1, -(-600 // (size[0] * size[1] * channels)))
    label = _conditions(z, 1, rng)

    def conds(images):  # the one label for every image (the calibration's negative control may draw 4n)
        return None if label is None else [np.repeat(label[0], images, axis=0)]

    def pit(levels, temperature):
        params = sampler.model(_inputs(levels, conds(len(levels))), training=False).numpy()
        lower, upper, _ = _tfp_cdfs(params, levels, channels, temperature)
        return randomised_pit(lower, upper, rng)

    assert_calibrated(f"tfd.PixelCNN C={channels} conditional={conditional} hierarchies={hierarchies} {size}",
                      lambda n, seed, t: sampler.sample(n, seed=seed, temperature=t, conditions=conds(n)), pit, n,
                      int(rng.integers(2 ** 63)), cold_temperature=0.3)


def test_core_tfp_layout_equals_the_numba_twin(rng):
    from pixelcnn_fast import rng as prng

    for channels in (1, 3):
        k, m = 4, 4000
        values = (rng.standard_normal((m, k * (1 + 2 * channels + channels * (channels - 1) // 2))) * 2).astype(
            np.float32)
        values[::97] = np.nan
        drawn = rng.integers(0, LEVELS, (m, 2)).astype(np.int32)
        uc, u = rng.random(m).astype(np.float32), rng.random(m).astype(np.float32)
        for channel in range(channels):
            lv, mg = testing.draw_logistic_mixture(values, k, channel, drawn, LEVELS, 0.9, uc, u, True, layout="tfp")
            for r in range(0, m, 7):
                level, margin = prng.draw_logistic_mixture_with_margin(values[r], k, channels, channel, drawn[r],
                                                                       LEVELS, 0.9, uc[r], u[r], 1)
                assert level == lv[r] or min(margin, mg[r]) < 1e-5, (channels, channel, r)


# ------------------------------------------------------------------- refusals
def test_untrained_network_is_refused_with_how_to_mask_it():
    z = _dist(1, False, constrained=False)
    with pytest.raises(NotCausalError, match=r"kernel constraints.*v\.assign\(v\.constraint\(v\)\)"):
        pf.Sampler(z.dist)


def test_uninitialised_weight_norm_is_refused():
    import tensorflow_probability as tfp

    dist = tfp.distributions.PixelCNN(image_shape=(4, 4, 1), num_resnet=1, num_hierarchies=1, num_filters=4,
                                      num_logistic_mix=2, dropout_p=0.0)
    with pytest.raises(ValueError, match=r"weight norm layer '.*' .* not initialised .*log_prob"):
        pf.Sampler(dist)


def test_arguments_the_distribution_defines_are_refused():
    z = _dist(1, False, size=(4, 4))
    for kw in (dict(head="categorical"), dict(levels=16), dict(value_map="identity"), dict(image_shape=(4, 4, 1))):
        with pytest.raises(ValueError, match=f"{next(iter(kw))}= "):
            pf.Sampler(z.dist, **kw)


def test_lower_and_check_point_a_distribution_to_the_sampler():
    from pixelcnn_fast.program.lower import lower

    z = _dist(1, False, size=(4, 4))
    with pytest.raises(TypeError, match=r"pixelcnn_fast\.Sampler\(dist\)"):
        lower(z.dist)
