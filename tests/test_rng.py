"""Tests: sampler randomness — Philox4x32-10 known answers, C++ (_core.testing) == numba (rng) bit for bit, uniformity,
and the inverse-CDF level draws (agreement, frequencies, temperature limits, degenerate heads, argument errors).

Oracles: the Random123 known-answer vectors and TensorFlow's own Philox4x32-10 (tf.raw_ops with alg=1) for the
generator; a float64 computation and a literal numpy float32 transcription of the contract for the draws.
Where two float32 implementations may legitimately differ (exp/pow rounding), a disagreement is accepted only
when the reported margin says u lay within rounding of a cdf boundary (rng.boundary_tolerance).
"""

import numpy as np
import pytest

from pixelcnn_fast import rng as prng

U_MAX = np.float32(1.0 - 2.0 ** -24)  # the largest uniform the generator can produce
HEAD_CASES = [("bernoulli", 1), ("logits", 2), ("logits", 4), ("logits", 256), ("probs", 4), ("probs", 256)]

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key, output).
PHILOX_KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def chi2_bound(dof):
    """A generous chi-square acceptance bound: mean + 8 standard deviations (false alarm < 1e-9)."""
    return dof + 8.0 * np.sqrt(2.0 * dof)


def rare_fraction(n, tol):
    """An upper bound for the share of draws flagged near a boundary: u lies within tol of one of the <= N
    boundaries on a set of measure <= 2 N tol (1.6 % at N = 256); thrice that, or 0.1 %, leaves room for noise."""
    return max(3 * max(n, 2) * tol, 1e-3)


def philox_uniforms(seed, count):
    """`count` uniforms of the generator itself (one image row of `count` positions)."""
    return prng.uniform_grid(seed, 1, 1, count, 1).reshape(count)


def random_values(rng, head, m, n):
    """(m, n) float32 head values: logits of mixed scales (with ties and large magnitudes), or softmax rows with
    some exact zeros."""
    scale = np.exp(rng.uniform(np.log(0.05), np.log(20.0), size=(m, 1)))
    z = rng.standard_normal((m, n)) * scale
    if head == "probs":
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p[rng.random((m, n)) < 0.1] = 0.0
        p[np.arange(m), rng.integers(0, n, m)] += 0.01  # keep every row a distribution
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    if n > 1:
        tied = rng.random(m) < 0.05
        z[tied, 1] = z[tied, 0]  # a few rows with a tied pair
    return z.astype(np.float32)


def oracle_levels_f64(values, head, temperature, u):
    """The contract computed in float64 after its first float32 step (z / T, or 1/T), as an independent check."""
    t = np.float32(temperature)
    if head == "bernoulli":
        x = (-values[:, 0] / t).astype(np.float64)
        return (u < 1.0 / (1.0 + np.exp(x))).astype(np.int32)
    if head == "logits":
        zp = values / t
        m = zp.max(axis=1, keepdims=True)
        e = np.where(zp == m, 1.0, np.exp(zp.astype(np.float64) - m))
    else:
        inv_t = np.float32(1.0) / t
        e = values.astype(np.float64) ** float(inv_t)
    c = np.cumsum(e / e.sum(axis=1, keepdims=True), axis=1)
    return np.minimum((c <= u[:, None].astype(np.float64)).sum(axis=1), values.shape[1] - 1).astype(np.int32)


def contract_levels_numpy_f32(values, head, temperature, u):
    """A literal numpy float32 transcription of the contract (sequential accumulate, numpy's own SIMD exp)."""
    t = np.float32(temperature)
    if head == "bernoulli":
        with np.errstate(over="ignore"):  # exp(+large) = inf gives p = 0, as in the contract
            return (u < np.float32(1) / (np.float32(1) + np.exp(-values[:, 0] / t))).astype(np.int32)
    if head == "logits":
        zp = values / t
        e = np.exp(zp - zp.max(axis=1, keepdims=True))
    else:
        e = values if t == 1 else values ** (np.float32(1) / t)
    s = np.add.accumulate(e, axis=1, dtype=np.float32)[:, -1:]
    c = np.add.accumulate(e / s, axis=1, dtype=np.float32)
    below = (c <= u[:, None]).sum(axis=1)
    last_positive = e.shape[1] - 1 - np.argmax((e > 0)[:, ::-1], axis=1)
    return np.where(below < e.shape[1], below, last_positive).astype(np.int32)


# --------------------------------------------------------------------------- Philox4x32-10

@pytest.mark.parametrize("counter,key,want", PHILOX_KAT)
def test_philox_known_answers(core_testing, counter, key, want):
    assert tuple(int(w) for w in prng.philox4x32_10(*counter, *key)) == want
    assert tuple(core_testing.philox4x32_10(list(counter), list(key))) == want


def test_philox_matches_tensorflow(core_testing, rng):
    """TensorFlow's stateless Philox4x32-10 (alg=1) takes key and counter directly: a second, independent oracle."""
    import tensorflow as tf

    for _ in range(20):
        ctr = [int(x) for x in rng.integers(0, 2 ** 32, 4)]
        key = [int(x) for x in rng.integers(0, 2 ** 32, 2)]
        out = tf.raw_ops.StatelessRandomUniformFullIntV2(
            shape=[4], key=tf.constant([key[0] | key[1] << 32], tf.uint64),
            counter=tf.constant([ctr[0] | ctr[1] << 32, ctr[2] | ctr[3] << 32], tf.uint64), alg=1, dtype=tf.uint32)
        want = tuple(int(x) for x in out.numpy())
        assert tuple(int(w) for w in prng.philox4x32_10(*ctr, *key)) == want, (ctr, key)
        assert tuple(core_testing.philox4x32_10(ctr, key)) == want, (ctr, key)


def test_uniform_is_first_philox_word_under_the_seed_key(rng):
    for seed in [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 63, 2 ** 64 - 1, int(rng.integers(0, 2 ** 63))]:
        image, position, channel = (int(x) for x in rng.integers(0, 2 ** 32, 3))
        w0 = int(prng.philox4x32_10(image, position, channel, 0, seed & 0xFFFFFFFF, seed >> 32)[0])
        assert float(prng.uniform01(seed, image, position, channel)) == (w0 >> 8) * 2.0 ** -24


def test_uniform_cpp_equals_numba_bit_for_bit(core_testing, rng):
    edges = [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]
    seeds = edges + [int(s) for s in rng.integers(0, 2 ** 32, 200)] + \
        [int(s) for s in rng.integers(2 ** 32, 2 ** 64 - 1, 400, dtype=np.uint64)]
    for seed in seeds:
        image, position, channel = (int(x) for x in rng.integers(0, 2 ** 32, 3))
        for args in ((image, position, channel), (0, position % 4096, channel % 3), (2 ** 32 - 1, 2 ** 32 - 1, 2)):
            want = core_testing.philox_uniform(seed, *args)
            got = prng.uniform01(seed, *args)  # numba types seeds >= 2**63 as uint64, others as int64
            assert np.float32(got).tobytes() == np.float32(want).tobytes(), (seed, args)
            assert got == prng.uniform01(np.uint64(seed), *(np.uint32(a) for a in args))
            assert want == core_testing.philox_uniform(np.uint64(seed), *(np.int64(a) for a in args))  # NumPy integers


@pytest.mark.parametrize("shape,offset", [((1, 1, 1, 1), 0), ((3, 5, 7, 3), 11), ((2, 28, 28, 1), 2 ** 32 - 2),
                                          ((4, 8, 9, 3), 1000)])
def test_uniform_grid_cpp_equals_numba_and_layout(core_testing, rng, shape, offset):
    seed = int(rng.integers(0, 2 ** 64, dtype=np.uint64))
    n, h, w, c = shape
    got_cpp = core_testing.philox_uniform_grid(seed, n, h, w, c, image_offset=offset)
    got_nb = prng.uniform_grid(seed, n, h, w, c, image_offset=offset)
    assert got_cpp.dtype == got_nb.dtype == np.float32 and got_cpp.shape == got_nb.shape == shape
    assert got_cpp.tobytes() == got_nb.tobytes()
    for _ in range(20):
        b, i, j, ch = (int(rng.integers(0, d)) for d in shape)
        assert got_nb[b, i, j, ch] == prng.uniform01(seed, offset + b, i * w + j, ch)
    # An image's uniforms do not depend on the batch it is drawn in (splitting a batch changes nothing).
    if n > 1:
        assert prng.uniform_grid(seed, 1, h, w, c, image_offset=offset + 1).tobytes() == got_nb[1:2].tobytes()


def test_uniforms_in_unit_interval_on_the_2_pow_24_grid_and_uniform(rng):
    seed = int(rng.integers(0, 2 ** 64, dtype=np.uint64))
    u = prng.uniform_grid(seed, 16, 64, 64, 16)  # 2**20 values
    assert u.min() >= 0.0 and u.max() < 1.0
    scaled = u.astype(np.float64) * 2.0 ** 24
    assert np.array_equal(scaled, np.floor(scaled))
    bins = 256
    counts = np.bincount((u.ravel() * bins).astype(np.int64), minlength=bins)
    expected = u.size / bins
    assert ((counts - expected) ** 2 / expected).sum() < chi2_bound(bins - 1)
    assert abs(u.mean() - 0.5) < 6 * np.sqrt(1 / 12 / u.size)
    # Neighbours are independent: adjacent channels, adjacent positions, adjacent images (2-D chi-square).
    for a, b in ((u[..., 0], u[..., 1]), (u[:, :, :-1, 0], u[:, :, 1:, 0]), (u[:-1, ..., 0], u[1:, ..., 0])):
        k = 16
        joint = np.bincount((a.ravel() * k).astype(np.int64) * k + (b.ravel() * k).astype(np.int64),
                            minlength=k * k)
        expected = a.size / (k * k)
        assert ((joint - expected) ** 2 / expected).sum() < chi2_bound(k * k - 1)


def test_seed_words_both_matter(rng):
    low = int(rng.integers(0, 2 ** 32))
    streams = [prng.uniform_grid(s, 1, 4, 4, 3).tobytes() for s in (low, low + 2 ** 32, low + 2 ** 63, low + 1)]
    assert len(set(streams)) == len(streams)


# --------------------------------------------------------------------------- draws: C++ == numba

_AGREEMENT = {"draws": 0, "disagreements": 0, "near": 0}


@pytest.mark.parametrize("head,n", HEAD_CASES)
@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.9, 0.05])
def test_draws_cpp_equal_numba(core_testing, rng, head, n, temperature):
    m = 20000
    values = random_values(rng, head, m, n)
    u = philox_uniforms(int(rng.integers(0, 2 ** 63)), m)
    lev_cpp, mar_cpp = core_testing.draw_levels(values, head, temperature, u, return_margin=True)
    lev_nb, mar_nb = prng.draw_levels(values, head, temperature, u, return_margin=True)
    tol = prng.boundary_tolerance(max(n, 2))
    near = np.minimum(mar_cpp, mar_nb) < tol
    differ = lev_cpp != lev_nb
    _AGREEMENT["draws"] += m
    _AGREEMENT["disagreements"] += int(differ.sum())
    _AGREEMENT["near"] += int(near.sum())
    print(f"{head} N={n} T={temperature}: {int(differ.sum())} disagreements in {m} draws, "
          f"{int(near.sum())} near a boundary; running total {_AGREEMENT}")
    # The contract's allowance: only draws within rounding of a cdf boundary may differ ...
    assert not (differ & ~near).any(), np.flatnonzero(differ & ~near)[:10]
    assert near.mean() < rare_fraction(n, tol)
    # ... and here there are none: the core and numba call the same libm expf/powf in one process and do the same
    # float32 operations in the same order. A failure below (with the one above passing) means a build flag or a
    # numba version now computes exp/pow or the sums differently: allowed by the contract, but worth knowing.
    assert differ.sum() == 0
    assert mar_cpp.tobytes() == mar_nb.tobytes()


@pytest.mark.parametrize("head,n", HEAD_CASES)
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_draws_match_float64_oracle_except_within_margin(core_testing, rng, head, n, temperature):
    """The margin is a correct detector: every disagreement with an independent float64 computation (and with a
    numpy float32 transcription using numpy's SIMD exp, which differs from libm's in the last ulp) is flagged."""
    m = 20000
    values = random_values(rng, head, m, n)
    u = philox_uniforms(int(rng.integers(0, 2 ** 63)), m)
    levels, margins = core_testing.draw_levels(values, head, temperature, u, return_margin=True)
    tol = prng.boundary_tolerance(max(n, 2))
    near = margins < tol
    for name, other in (("float64 oracle", oracle_levels_f64(values, head, temperature, u)),
                        ("numpy float32", contract_levels_numpy_f32(values, head, temperature, u))):
        differ = levels != other
        print(f"{head} N={n} T={temperature} vs {name}: {int(differ.sum())} disagreements, "
              f"{int(near.sum())} of {m} draws near a boundary")
        assert not (differ & ~near).any(), (name, np.flatnonzero(differ & ~near)[:10])
    assert near.mean() < rare_fraction(n, tol)


def test_probs_at_unit_temperature_is_the_direct_inverse_cdf(core_testing, rng):
    """T == 1 on the probabilities path is the contract's inverse CDF exactly (no exp, no pow): bit for bit."""
    for n in (2, 7, 256):
        values = random_values(rng, "probs", 5000, n)
        u = philox_uniforms(int(rng.integers(0, 2 ** 63)), values.shape[0])
        want = contract_levels_numpy_f32(values, "probs", 1.0, u)
        assert np.array_equal(core_testing.draw_levels(values, "probs", 1.0, u), want)
        assert np.array_equal(prng.draw_levels(values, "probs", 1.0, u), want)


def test_numba_draws_accept_strided_views(rng):
    values = random_values(rng, "logits", 64, 9)
    u = philox_uniforms(7, 64)
    columns = np.ascontiguousarray(values.T)  # (9, 64): row r of values is the strided column columns[:, r]
    probs = random_values(rng, "probs", 64, 9)
    pcols = np.ascontiguousarray(probs.T)
    for r in range(64):
        assert prng.draw_categorical_logits(columns[:, r], 0.8, u[r]) == \
            prng.draw_categorical_logits(values[r], 0.8, u[r])
        assert prng.draw_categorical_probs(pcols[:, r], 1.3, u[r]) == prng.draw_categorical_probs(probs[r], 1.3, u[r])


# --------------------------------------------------------------------------- draws: distributions

def _draw_both(core_testing, values, head, temperature, u):
    lev = core_testing.draw_levels(values, head, temperature, u)
    assert np.array_equal(lev, prng.draw_levels(values, head, temperature, u))
    return lev


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_bernoulli_frequencies(core_testing, rng, temperature):
    m = 100000
    for logit in (-3.0, -0.5, 0.0, 0.7, 2.5):
        u = philox_uniforms(int(rng.integers(0, 2 ** 63)), m)
        lev = _draw_both(core_testing, np.full((m, 1), logit, np.float32), "bernoulli", temperature, u)
        p = 1.0 / (1.0 + np.exp(-logit / temperature))
        assert abs(lev.mean() - p) < 6 * np.sqrt(p * (1 - p) / m) + 1e-6, (logit, lev.mean(), p)


@pytest.mark.parametrize("head", ["logits", "probs"])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 2.5])
def test_categorical_frequencies(core_testing, rng, head, temperature):
    m, n = 200000, 6
    if head == "logits":
        z = rng.standard_normal(n).astype(np.float32)
        w = np.exp(z.astype(np.float64) / temperature)
        row = z
    else:
        p = rng.dirichlet(np.ones(n)).astype(np.float32)
        w = p.astype(np.float64) ** (1.0 / temperature)
        row = p
    expected = m * w / w.sum()
    u = philox_uniforms(int(rng.integers(0, 2 ** 63)), m)
    lev = _draw_both(core_testing, np.tile(row, (m, 1)), head, temperature, u)
    counts = np.bincount(lev, minlength=n)
    assert ((counts - expected) ** 2 / expected).sum() < chi2_bound(n - 1), (counts, expected)


def test_low_temperature_approaches_argmax(core_testing, rng):
    m, n = 4000, 10
    z = rng.standard_normal((m, n)).astype(np.float32)
    top2 = np.sort(z, axis=1)[:, -2:]
    z = z[top2[:, 1] - top2[:, 0] > 1e-2]  # no near-ties: argmax is well defined at T = 1e-4
    u = philox_uniforms(int(rng.integers(0, 2 ** 63)), z.shape[0])
    argmax = np.argmax(z, axis=1)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    rates = []
    for t in (1.0, 0.3, 0.1, 0.01, 1e-4):
        hit = _draw_both(core_testing, z, "logits", t, u) == argmax
        rates.append(hit.mean())
        # probabilities: at T = 1e-4 every p_k ** (1/T) underflows to 0 unless rescaled by max p (philox.h).
        hit_p = _draw_both(core_testing, p, "probs", t, u) == argmax
        if t == 1e-4:  # the top two differ by >= 1e-2, so the runner-up's weight is <= exp(-100)
            assert hit.all() and hit_p.all(), t
    assert all(a <= b + 0.01 for a, b in zip(rates, rates[1:])), rates
    logits = rng.standard_normal((m, 1)).astype(np.float32)
    logits[np.abs(logits) < 1e-3] = 1.0
    u = philox_uniforms(3, m)
    assert np.array_equal(_draw_both(core_testing, logits, "bernoulli", 1e-6, u), (logits[:, 0] > 0).astype(np.int32))


# --------------------------------------------------------------------------- draws: degenerate heads

EDGE_U = np.array([0.0, 2.0 ** -24, 0.25, 0.5, 0.75, U_MAX], np.float32)


@pytest.mark.parametrize("n", [1, 5, 256])
@pytest.mark.parametrize("temperature", [1.0, 0.3, 3.0])
def test_all_mass_on_one_level(core_testing, n, temperature):
    for j in sorted({0, n // 2, n - 1}):
        probs = np.zeros((len(EDGE_U), n), np.float32)
        probs[:, j] = 1.0
        logits = np.full((len(EDGE_U), n), -np.inf, np.float32)
        logits[:, j] = 0.0
        very_negative = np.where(np.isinf(logits), np.float32(-1e30), logits)
        for values, head in ((probs, "probs"), (logits, "logits"), (very_negative, "logits")):
            assert np.all(_draw_both(core_testing, values, head, temperature, EDGE_U) == j), (head, j)


def test_minus_inf_logits_and_zero_probs_are_never_drawn(core_testing, rng):
    m, n = 20000, 8
    z = rng.standard_normal((m, n)).astype(np.float32)
    dead = rng.random((m, n)) < 0.4
    dead[np.arange(m), rng.integers(0, n, m)] = False
    z[dead] = -np.inf
    p = np.where(dead, 0.0, rng.random((m, n))).astype(np.float32)
    p /= p.sum(axis=1, keepdims=True)
    u = philox_uniforms(int(rng.integers(0, 2 ** 63)), m)
    u[:200] = U_MAX
    u[200:400] = 0.0
    for values, head in ((z, "logits"), (p, "probs")):
        for t in (1.0, 0.5, 2.0):
            lev = _draw_both(core_testing, values, head, t, u)
            assert not dead[np.arange(m), lev].any(), (head, t)


def test_rounding_fallback_skips_trailing_zero_levels(core_testing, rng):
    """When the float32 cdf ends below u, the level is the last one with mass, never a massless one after it."""
    n_live, n_dead = 256, 5
    p = np.zeros((4000, n_live + n_dead), np.float32)
    p[:, :n_live] = rng.dirichlet(np.ones(n_live), size=4000)
    e = p
    s = np.add.accumulate(e, axis=1, dtype=np.float32)[:, -1:]
    c_last = np.add.accumulate(e / s, axis=1, dtype=np.float32)[:, -1]
    rows = np.flatnonzero(c_last <= U_MAX)
    assert rows.size > 10, "no row whose float32 cdf ends below the largest uniform: the fallback is untested"
    u = np.full(rows.size, U_MAX, np.float32)
    lev, margin = core_testing.draw_levels(p[rows], "probs", 1.0, u, return_margin=True)
    assert np.all(lev == n_live - 1)
    assert np.all(margin < prng.boundary_tolerance(n_live))  # a fallback draw is always flagged as rounding-decided
    assert np.array_equal(lev, prng.draw_levels(p[rows], "probs", 1.0, u))


def test_bernoulli_infinite_and_zero_logits(core_testing):
    u = EDGE_U
    for logit, want in ((np.inf, np.ones(len(u))), (-np.inf, np.zeros(len(u))), (0.0, u < 0.5),
                        (1e30, np.ones(len(u))), (-1e30, np.zeros(len(u)))):
        for t in (1.0, 1e-3, 100.0):
            lev = _draw_both(core_testing, np.full((len(u), 1), logit, np.float32), "bernoulli", t, u)
            assert np.array_equal(lev, np.asarray(want, np.int32)), (logit, t)


def test_no_distribution_draws_level_zero_flagged(core_testing):
    """NaN anywhere in the weights: level 0 with margin 0 (decided by no u), the same in both implementations."""
    u = EDGE_U
    cases = [(np.array([0.3, np.nan, 1.0], np.float32), "logits"), (np.array([0.2, np.nan, 0.8], np.float32), "probs"),
             (np.array([np.nan], np.float32), "bernoulli")]
    for row, head in cases:
        values = np.tile(row, (len(u), 1))
        for impl in (core_testing.draw_levels, prng.draw_levels):
            lev, margin = impl(values, head, 1.0, u, return_margin=True)
            assert np.all(lev == 0) and np.all(margin == 0), (head, impl)


def test_flat_heads_are_uniform(core_testing):
    """All logits -inf or all probabilities 0 (no mass anywhere): every level equally likely, like equal logits."""
    n = 4
    u = ((np.arange(n) + 0.5) / n).astype(np.float32)
    for values, head in ((np.full((n, n), -np.inf, np.float32), "logits"), (np.zeros((n, n), np.float32), "probs"),
                         (np.full((n, n), 3.0, np.float32), "logits")):
        for t in (1.0, 0.25):
            assert np.array_equal(_draw_both(core_testing, values, head, t, u), np.arange(n)), (head, t)


def test_small_cases(core_testing):
    u = EDGE_U
    assert np.all(_draw_both(core_testing, np.full((len(u), 1), 2.0, np.float32), "logits", 0.5, u) == 0)  # one level
    first_live = np.tile(np.array([0.0, 0.0, 0.3, 0.7], np.float32), (len(u), 1))
    lev = _draw_both(core_testing, first_live, "probs", 1.0, u)
    assert lev[0] == 2 and lev[-1] == 3 and set(lev) <= {2, 3}  # u = 0 draws the first level with mass


# --------------------------------------------------------------------------- argument errors

def test_core_rng_argument_errors(core_testing):
    ok_v, ok_u = np.zeros((3, 4), np.float32), np.zeros(3, np.float32)
    cases = [
        (lambda: core_testing.philox_uniform(-1, 0, 0, 0), ValueError, r"seed must be an integer in \[0, 2\*\*64\), got -1"),
        (lambda: core_testing.philox_uniform(2 ** 64, 0, 0, 0), ValueError, r"seed .* got 18446744073709551616"),
        (lambda: core_testing.philox_uniform(1.5, 0, 0, 0), TypeError, r"seed must be an integer .* got float"),
        (lambda: core_testing.philox_uniform(True, 0, 0, 0), TypeError, r"seed must be an integer .* got bool"),
        (lambda: core_testing.philox_uniform(0, 2 ** 32, 0, 0), ValueError, r"image must be an integer in \[0, 2\*\*32\)"),
        (lambda: core_testing.philox_uniform(0, 0, -3, 0), ValueError, r"position .* got -3"),
        (lambda: core_testing.philox_uniform_grid(0, 3, 2, 2, 1, image_offset=2 ** 32 - 2), ValueError,
         r"image_offset \+ n must be <= 2\*\*32"),
        (lambda: core_testing.philox4x32_10([0, 0, 0], [0, 0]), ValueError, r"counter must hold 4 words and key 2, got 3"),
        (lambda: core_testing.draw_levels(ok_v.astype(np.float64), "logits", 1.0, ok_u), TypeError,
         r"values must have dtype float32, got float64"),
        (lambda: core_testing.draw_levels(ok_v[0], "logits", 1.0, ok_u), ValueError, r"values must have rank 2"),
        (lambda: core_testing.draw_levels(np.asfortranarray(np.zeros((3, 2), np.float32)), "logits", 1.0, ok_u), ValueError,
         r"values must be C-contiguous"),
        (lambda: core_testing.draw_levels(ok_v, "bernoulli", 1.0, ok_u), ValueError,
         r"values must have shape \(M, 1\) for head 'bernoulli' .* got \(3, 4\)"),
        (lambda: core_testing.draw_levels(ok_v, "softmax", 1.0, ok_u), ValueError,
         r"head must be 'bernoulli', 'logits' or 'probs', got 'softmax'"),
        (lambda: core_testing.draw_levels(np.zeros((3, 0), np.float32), "logits", 1.0, ok_u), ValueError, r"1 <= N"),
        (lambda: core_testing.draw_levels(ok_v, "logits", 1.0, ok_u[:2]), ValueError, r"u must have shape \(3,\).* got \(2,\)"),
        (lambda: core_testing.draw_levels(ok_v, "logits", 1.0, np.ones(3, np.float32)), ValueError,
         r"u must lie in \[0, 1\), got u\[0\] = 1.0"),
    ]
    for t in (0.0, -1.0, np.inf, np.nan, 1e-50, 1e39):
        cases.append((lambda t=t: core_testing.draw_levels(ok_v, "logits", t, ok_u), ValueError,
                      r"temperature must be a positive finite float32"))
    for call, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            call()


def test_numba_wrapper_argument_errors():
    ok_v, ok_u = np.zeros((3, 4), np.float32), np.zeros(3, np.float32)
    cases = [
        (lambda: prng.uniform_grid(-1, 1, 1, 1, 1), ValueError, r"seed must be an integer in \[0, 2\*\*64\), got -1"),
        (lambda: prng.uniform_grid(2 ** 64, 1, 1, 1, 1), ValueError, r"seed"),
        (lambda: prng.uniform_grid(0.5, 1, 1, 1, 1), TypeError, r"seed must be an integer .* got float"),
        (lambda: prng.uniform_grid(0, 3, 2, 2, 1, image_offset=2 ** 32 - 2), ValueError,
         r"image_offset \+ n must be <= 2\*\*32"),
        (lambda: prng.draw_levels(ok_v.astype(np.float64), "logits", 1.0, ok_u), ValueError,
         r"values must be a float32 array"),
        (lambda: prng.draw_levels(ok_v, "bernoulli", 1.0, ok_u), ValueError, r"shape \(M, 1\) for head 'bernoulli'"),
        (lambda: prng.draw_levels(ok_v, "softmax", 1.0, ok_u), ValueError, r"head must be"),
        (lambda: prng.draw_levels(ok_v, "logits", 1.0, ok_u[:2]), ValueError, r"u must be a float32 array of shape"),
        (lambda: prng.draw_levels(ok_v, "logits", 1.0, np.ones(3, np.float32)), ValueError, r"u must lie in \[0, 1\)"),
    ]
    for t in (0.0, -1.0, np.inf, np.nan, 1e-50, 1e39):
        cases.append((lambda t=t: prng.draw_levels(ok_v, "logits", t, ok_u), ValueError,
                      r"temperature must be a positive finite float32"))
    for call, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            call()
