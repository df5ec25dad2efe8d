"""Tests: comparing two samplers' images draw by draw (naive loops, cached sampler).

Two samplers given the same seed draw the same images except where a draw's uniform lies within float
rounding of a CDF boundary (docs/SEMANTICS.md, "Randomness"). After such a draw the images legitimately
diverge, so only each image's first differing draw is examined: its margin must be below the boundary
tolerance, else it is a real bug.
"""

import warnings

import numpy as np

from pixelcnn_fast import rng as prng


def first_disagreements(a, b, levels):
    """Per image, the first raster-order draw where runs a and b differ: [(image, index, margin)].

    Raises AssertionError when such a draw had a margin at or above rng.boundary_tolerance (a real bug).
    """
    tol = prng.boundary_tolerance(levels)
    found = []
    for k in range(a.levels.shape[0]):
        la, lb = a.levels[k].ravel(), b.levels[k].ravel()
        diff = np.flatnonzero(la != lb)
        if diff.size == 0:
            continue
        idx = int(diff[0])
        margin = float(min(a.margins[k].ravel()[idx], b.margins[k].ravel()[idx]))
        where = np.unravel_index(idx, a.levels.shape[1:])
        assert margin < tol, (
            f"{a.mode} and {b.mode} disagree at image {k}, (row, col, channel) {tuple(map(int, where))}: "
            f"levels {la[idx]} vs {lb[idx]} with margin {margin:.3e} >= boundary tolerance {tol:.3e}")
        found.append((k, where, margin))
    return found


def assert_same_images(a, b, levels):
    near = first_disagreements(a, b, levels)
    if near:
        warnings.warn(f"{a.mode} vs {b.mode}: {len(near)} image(s) diverged at a draw within float rounding "
                      f"of a CDF boundary (image, position, margin): {near}")


# ------------------------------------------------------------------- logistic mixtures, calibration
def mixture_cdf_bounds(logits, channel_mean_scale, levels, n_levels, temperature):
    """float64 F(x - 1), F(x) of every drawn level x of a logistic-mixture pixel under its own conditionals, and
    each pixel's log P (docs/SEMANTICS.md, "Logistic-mixture heads"): one component j per pixel with prior
    softmax(logits / T) (logits (..., K)); channel c logistic with (mu, s) = channel_mean_scale(c, x) (each
    (..., K), s already times T; x (..., C) = 2 level / (L - 1) - 1 of the drawn levels, for the colour coupling),
    discretised to L levels (bins of half-width 1 / (L - 1), the outer bins open). One component for the whole
    pixel: channel c's conditional given the channels drawn before weighs j by its posterior, not its prior."""
    # Posterior weights and the joint are kept as logs, and each bin's probability is computed as a log from the
    # edges' standardised distances: a random image's pixel can be improbable under every component (bins far in
    # a logistic's tail), where F(x) - F(x - 1) in linear space rounds to 0 and the log-likelihood to -inf.
    log_weight = np.asarray(logits, np.float64) / temperature
    log_weight = log_weight - np.logaddexp.reduce(log_weight, axis=-1, keepdims=True)
    x = 2.0 * levels / (n_levels - 1) - 1.0
    lower, upper = np.zeros(levels.shape), np.zeros(levels.shape)
    log_joint = log_weight.copy()
    for c in range(levels.shape[-1]):
        mu, s = channel_mean_scale(c, x)
        lv = levels[..., c:c + 1].astype(np.float64)

        def standardised_edge(level):  # the bin's upper edge in units of s: P(X <= level | j) = sigmoid(it)
            return ((2.0 * level + 1.0) / (n_levels - 1) - 1.0 - mu) / s

        def component_cdf(level):  # P(X <= level | j), level in [-1, L - 1], per component
            f = 0.5 * (1.0 + np.tanh(0.5 * standardised_edge(level)))
            return np.where(level < 0, 0.0, np.where(level >= n_levels - 1, 1.0, f))

        hi, lo = standardised_edge(lv), standardised_edge(lv - 1.0)
        log_sig = lambda t: -np.logaddexp(0.0, -t)  # noqa: E731
        with np.errstate(divide="ignore", invalid="ignore"):  # the outer bins' unused branch
            interior = log_sig(hi) + log_sig(-lo) + np.log(-np.expm1(lo - hi))
        log_bin = np.where(lv <= 0, log_sig(hi), np.where(lv >= n_levels - 1, log_sig(-lo), interior))
        w = np.exp(log_weight)
        lower[..., c], upper[..., c] = (w * component_cdf(lv - 1.0)).sum(-1), (w * component_cdf(lv)).sum(-1)
        log_weight = log_weight + log_bin  # the posterior of j after this channel's drawn level
        log_weight = log_weight - np.logaddexp.reduce(log_weight, axis=-1, keepdims=True)
        log_joint = log_joint + log_bin
    return lower, upper, np.logaddexp.reduce(log_joint, axis=-1)


def randomised_pit(lower, upper, rng):
    """The randomised probability-integral transform of discrete draws with CDF bounds F(x - 1), F(x)."""
    return (lower + rng.random(lower.shape) * (upper - lower)).ravel()


def assert_calibrated(name, sample, pit, n, seed, cold_temperature, threshold=1e-4):
    """The calibration test: the randomised PIT of sample(n, seed) under the model's own conditionals is uniform
    (KS over >= 500 draws, p > threshold); negative control: draws at cold_temperature judged at T = 1 fail, and
    pass judged at their own temperature. sample(n, seed, temperature) -> levels; pit(levels, temperature) ->
    PIT values."""
    from scipy import stats

    levels = sample(n, seed, 1.0)
    u = pit(levels, 1.0)
    res = stats.kstest(u, "uniform")
    print(f"{name}: {u.size} draws, KS {res.statistic:.4f}, p = {res.pvalue:.3g} (seed {seed})")
    assert u.size >= 500 and res.pvalue > threshold
    # The control needs power: a small random model's conditionals can change little at cold_temperature (a wide
    # logistic mixture's), so that n images' draws judged at T = 1 miss the threshold on some seeds (tfd.PixelCNN
    # grey 6x7: p = 2.9e-4 at 630 draws). Then a second control with 4x the images must fail; a sampler that ignored
    # the temperature passes both by chance with probability ~2 threshold.
    for images in (n, 4 * n):
        cold = sample(images, seed, cold_temperature)
        res_cold = stats.kstest(pit(cold, 1.0), "uniform")
        print(f"{name}: {images} images at T={cold_temperature} judged at T=1: KS {res_cold.statistic:.4f}, "
              f"p = {res_cold.pvalue:.3g}")
        if res_cold.pvalue < threshold:
            break
    assert res_cold.pvalue < threshold
    assert stats.kstest(pit(cold, cold_temperature), "uniform").pvalue > threshold
