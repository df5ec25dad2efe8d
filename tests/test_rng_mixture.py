# Tests (Python): the logistic-mixture draw of pixelcnn_fast.rng against float64 oracles of its definition
# (csrc/core/philox.h, docs/SEMANTICS.md "Logistic-mixture heads"): the inverse CDF per uniform, the
# distribution over many counter-based uniforms (chi-square against the exact pmf, with a negative control),
# the RGB coupling, temperature and the degenerate inputs.
import math

import numpy as np
import pytest
from numba import njit

from pixelcnn_fast import rng

LEVELS = 256


def _logistic_cdf(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = sigmoid(x), stable for large |x|


def exact_pmf(v, k, channels, channel, drawn, levels=LEVELS, temperature=1.0):
    """float64 pmf over levels of one channel's draw: the definition, not the float32 procedure."""
    v = np.asarray(v, np.float64)
    z = v[:k] / temperature
    pi = np.exp(z - z.max())
    pi /= pi.sum()
    half = (levels - 1) / 2.0
    edges = (2.0 * np.arange(levels - 1) + 1.0) / (levels - 1) - 1.0   # b_0 .. b_{L-2}
    pmf = np.zeros(levels)
    for j in range(k):
        block = k if channels == 1 else k + 3 * k * channel
        mu = v[block + j]
        if channels == 3 and channel >= 1:
            x_r = drawn[0] / half - 1.0
            if channel == 1:
                mu += np.tanh(v[k + 2 * k + j]) * x_r
            else:
                x_g = drawn[1] / half - 1.0
                mu += np.tanh(v[k + 3 * k + 2 * k + j]) * x_r + np.tanh(v[k + 6 * k + 2 * k + j]) * x_g
        s = math.exp(max(v[block + k + j], -7.0)) * temperature
        cdf = np.concatenate([[0.0], _logistic_cdf((edges - mu) / s), [1.0]])
        pmf += pi[j] * np.diff(cdf)
    return pmf


def random_head(rs, k, channels):
    n = rng.mixture_head_values(k, channels)
    v = rs.normal(0.0, 1.0, n).astype(np.float32)
    # means in [-1, 1], log-scales around a few levels wide, some clipped at -7
    for c in range(channels):
        block = k if channels == 1 else k + 3 * k * c
        v[block:block + k] = rs.uniform(-0.9, 0.9, k)
        v[block + k:block + 2 * k] = rs.uniform(-4.5, -1.5, k)
    return v


@njit(cache=False)
def _draw_many(v, k, channels, channel, drawn, levels, temperature, seed, count, out, margins):
    for p in range(count):
        uc = rng.mixture_component_uniform(np.uint64(seed), np.uint64(0), np.uint64(p))
        u = rng.uniform01(np.uint64(seed), np.uint64(0), np.uint64(p), np.uint64(channel))
        level, margin = rng.draw_logistic_mixture_with_margin(v, k, channels, channel, drawn, levels, temperature,
                                                              uc, u)
        out[p] = level
        margins[p] = margin


def draw_many(v, k, channels, channel, drawn=(0, 0), temperature=1.0, seed=7, count=200_000):
    out = np.empty(count, np.int32)
    margins = np.empty(count, np.float32)
    _draw_many(np.asarray(v, np.float32), k, channels, channel, np.asarray(drawn, np.int64), LEVELS,
               np.float32(temperature), seed, count, out, margins)
    return out, margins


def chi2_pvalue(counts, pmf):
    """Chi-square goodness of fit, bins with expected count < 5 pooled; returns the p-value (scipy-free)."""
    n = counts.sum()
    expected = pmf * n
    order = np.argsort(expected)
    obs, exp_, acc_o, acc_e = [], [], 0.0, 0.0
    for i in order:
        acc_o += counts[i]
        acc_e += expected[i]
        if acc_e >= 5.0:
            obs.append(acc_o)
            exp_.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e > 0 and exp_:
        obs[-1] += acc_o
        exp_[-1] += acc_e
    obs, exp_ = np.array(obs), np.array(exp_)
    stat = float(((obs - exp_) ** 2 / exp_).sum())
    dof = len(obs) - 1
    # Wilson-Hilferty normal approximation of the chi-square tail
    zed = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(zed / math.sqrt(2))


@pytest.mark.parametrize("channels,channel", [(1, 0), (3, 0), (3, 1), (3, 2)])
def test_mixture_draws_follow_the_exact_pmf(channels, channel):
    rs = np.random.default_rng(20261130 + 10 * channels + channel)
    k = 5
    v = random_head(rs, k, channels)
    if channels == 3:   # strong couplings so a wrong coefficient slot would show
        for c in range(3):
            v[k + 3 * k * c + 2 * k:k + 3 * k * c + 3 * k] = rs.uniform(-2.0, 2.0, k)
    drawn = (200, 40)
    levels, _ = draw_many(v, k, channels, channel, drawn)
    counts = np.bincount(levels, minlength=LEVELS).astype(np.float64)
    pmf = exact_pmf(v, k, channels, channel, drawn)
    p = chi2_pvalue(counts, pmf)
    assert p > 1e-4, f"chi-square p = {p:.2e}: the draws do not follow the model's discretised mixture"
    # negative controls: the same draws against a pmf with the coupling dropped or the components shuffled
    if channels == 3 and channel > 0:
        wrong = exact_pmf(v, k, channels, channel, (127.5, 127.5))   # x_R = x_G = 0: no coupling
        assert chi2_pvalue(counts, wrong) < 1e-6
    shuffled = v.copy()
    shuffled[:k] = shuffled[:k][::-1]
    assert chi2_pvalue(counts, exact_pmf(shuffled, k, channels, channel, drawn)) < 1e-6


def test_each_draw_is_the_inverse_cdf_of_its_uniform():
    """Per draw: the level is the float64 inverse CDF of (u_component, u) except within its margin."""
    rs = np.random.default_rng(5)
    k = 4
    checked = 0
    for trial in range(40):
        channels = 1 if trial % 2 else 3
        v = random_head(rs, k, channels)
        for c in range(channels):
            drawn = tuple(int(x) for x in rs.integers(0, 256, 2))
            for _ in range(50):
                uc, u = np.float32(rs.random()), np.float32(rs.random())
                level, margin = rng.draw_logistic_mixture_with_margin(v, k, channels, c, np.array(drawn), LEVELS,
                                                                      np.float32(1.0), uc, u)
                # oracle: component by float64 cdf of the logits, level by float64 cdf of that component
                z = v[:k].astype(np.float64)
                pi = np.exp(z - z.max())
                j = int(np.searchsorted(np.cumsum(pi / pi.sum()), float(uc), side="right"))
                one = np.full(k, -np.inf)
                one[min(j, k - 1)] = 0.0
                w = v.astype(np.float64).copy()
                w[:k] = one
                cdf = np.cumsum(exact_pmf(w, k, channels, c, drawn))
                want = int(np.searchsorted(cdf, float(u), side="right"))
                if margin > 1e-5:
                    assert level == min(want, 255), (trial, c, level, want, margin)
                    checked += 1
    assert checked > 3000


def test_temperature_zero_limit_and_degenerate_inputs():
    k = 3
    v = np.array([0.0, 3.0, 1.0,  -0.5, 0.25, 0.75,  -3.0, -3.0, -3.0], np.float32)   # grey: logits, means, log_s
    # tiny T: the most likely component (1) and the bin of its mean (0.25 -> level round(1.25 * 127.5) = 159)
    for u in (0.01, 0.5, 0.99):
        assert rng.draw_logistic_mixture(v, k, 1, 0, np.zeros(2, np.int64), LEVELS, np.float32(1e-6),
                                         np.float32(0.3), np.float32(u)) == 159
    # u = 0: the lower tail, level 0, whatever the mean
    assert rng.draw_logistic_mixture(v, k, 1, 0, np.zeros(2, np.int64), LEVELS, np.float32(1.0), np.float32(0.3),
                                     np.float32(0.0)) == 0
    # NaN mean or log-scale: level 0, margin 0 (decided by no u)
    for i in (4, 7):
        bad = v.copy()
        bad[i] = np.nan
        assert rng.draw_logistic_mixture_with_margin(bad, k, 1, 0, np.zeros(2, np.int64), LEVELS, np.float32(1.0),
                                                     np.float32(0.3), np.float32(0.5)) == (0, 0.0)
    # log-scale clipped at -7: a scale of exp(-20) behaves as exp(-7) (checked through the pmf)
    clipped = v.copy()
    clipped[6:9] = -20.0
    levels, _ = draw_many(clipped, k, 1, 0, count=20_000)
    pmf = exact_pmf(clipped, k, 1, 0, (0, 0))
    assert chi2_pvalue(np.bincount(levels, minlength=LEVELS).astype(float), pmf) > 1e-4


def test_component_uniform_is_independent_word():
    """The component uniform is word 1 of the channel-0 block: not the channel uniform (word 0)."""
    seed = 123
    for p in range(50):
        w = rng.philox4x32_10(0, p, 0, 0, seed & 0xFFFFFFFF, seed >> 32)
        assert rng.mixture_component_uniform(seed, 0, p) == np.float32((int(w[1]) >> 8) * 2.0 ** -24)
        assert rng.uniform01(seed, 0, p, 0) == np.float32((int(w[0]) >> 8) * 2.0 ** -24)


@pytest.mark.parametrize("temperature", [0.6, 1.7])
def test_temperature_divides_logits_and_multiplies_scales(temperature):
    rs = np.random.default_rng(99)
    k = 4
    v = random_head(rs, k, 1)
    levels, _ = draw_many(v, k, 1, 0, temperature=temperature, count=100_000)
    counts = np.bincount(levels, minlength=LEVELS).astype(np.float64)
    assert chi2_pvalue(counts, exact_pmf(v, k, 1, 0, (0, 0), temperature=temperature)) > 1e-4
    assert chi2_pvalue(counts, exact_pmf(v, k, 1, 0, (0, 0), temperature=1.0)) < 1e-6   # T really changed it
