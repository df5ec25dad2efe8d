"""Sampler randomness (numba): Philox4x32-10 uniforms and inverse-CDF level draws, bit for bit as csrc/core/philox.h.

The contract (docs/SEMANTICS.md, "Randomness"), shared by the C++ core, CUDA and these
functions, so that the naive loops, the references and every fast backend draw the same image for one seed:

- one uniform per (image, position, channel): Philox4x32-10 with key = (seed mod 2**32, seed div 2**32) for a
  seed in [0, 2**64), counter = (image, position = i * W + j, channel, 0), image being the index among all images
  of the sampling call; u = (first output word >> 8) * 2**-24, a float32 in [0, 1).
- the level by inverse CDF, float32 throughout: bernoulli draws 1 iff u < 1 / (1 + exp(-logit / T));
  categorical uses e_k = exp(z_k / T - max_j z_j / T) (logits) or p_k ** (1/T) (probabilities, p_k at T == 1),
  s = sum_k e_k and c_k = c_{k-1} + e_k / s (sequential in k) and draws the smallest k with u < c_k, or, when
  rounding leaves c_{N-1} <= u, the largest k with e_k > 0.

Where the contract's formulas give 0/0 or inf - inf, both implementations extend it the same way (see philox.h):
levels whose z_k / T equals the maximum get weight 1 even when it is +-inf; probabilities whose powers all
underflow are divided by their maximum first (all zero: uniform); weights that are no distribution (NaN) draw
level 0 with margin 0.

Bit-exactness: the uniforms are integer arithmetic and agree with the C++ core everywhere. The draws call exp and
pow, which numba takes from the process's libm like the C++ core does, so the two agree exactly in one process
(tests/test_rng.py); another library (CUDA, numpy's SIMD exp) may differ in the last ulp, which changes a level
only when u is within rounding of a cdf boundary. The ``*_with_margin`` functions return that distance and
:func:`boundary_tolerance` a bound below which two correct implementations may disagree. So draw with these
functions rather than re-deriving the draw with numpy: numpy's vectorised float32 np.exp / np.power are SIMD
implementations that differ from libm's expf / powf in the last ulp for a large share of inputs (about 40 % and
18 % of random inputs on an AVX-512 machine), while numba's np.exp / ** on float32 scalars call libm's.

Jitted functions (usable from other ``@njit`` code): philox4x32_10, uniform01, fill_uniform_grid, draw_bernoulli,
draw_categorical_logits, draw_categorical_probs and their ``_with_margin`` forms. The categorical draws take a 1-D
array (any stride: a row or a column view), the counterpart of philox.h's (pointer, n, stride). Python wrappers
that check their arguments: uniform_grid, draw_levels.
"""

import numpy as np
from numba import njit, types

from pixelcnn_fast.checks import check_image_offset, check_int, check_temperature

__all__ = ["philox4x32_10", "uniform01", "fill_uniform_grid", "uniform_grid", "draw_bernoulli",
           "draw_bernoulli_with_margin", "draw_categorical_logits", "draw_categorical_logits_with_margin",
           "draw_categorical_probs", "draw_categorical_probs_with_margin", "draw_levels", "boundary_tolerance",
           "HEADS", "mixture_head_values", "mixture_component_uniform", "draw_logistic_mixture",
           "draw_logistic_mixture_with_margin", "draw_mixture_rows", "MIXTURE_LAYOUTS"]

# All word arithmetic is done in uint64 with explicit masks: numba widens uint32 operations to uint64, and mixing
# signed and unsigned 64-bit integers would give float64, so every constant is a uint64 too.
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S8 = np.uint64(8)
_ZERO64 = np.uint64(0)
_TWO_M24 = np.float32(2.0 ** -24)
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_FLT_MAX = np.float32(np.finfo(np.float32).max)
_NEG_INF = np.float32(-np.inf)

# Probability weight modes (philox.h's ProbWeight flags): plain p_k, p_k ** (1/T), and both divided by max p.
_PLAIN, _POWER, _NORM_PLAIN, _NORM_POWER = 0, 1, 2, 3

HEADS = ("bernoulli", "logits", "probs")


# --------------------------------------------------------------------------- Philox4x32-10

@njit(cache=True)
def _philox(x0, x1, x2, x3, k0, k1):
    """Philox4x32-10 on uint64 words holding 32-bit values; returns the 4 output words as uint64."""
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        p0 = _M0 * x0
        p1 = _M1 * x2
        x0, x1, x2, x3 = (p1 >> _S32) ^ x1 ^ k0, p1 & _MASK32, (p0 >> _S32) ^ x3 ^ k1, p0 & _MASK32
    return x0, x1, x2, x3


# The public scalar functions carry explicit signatures: a Python int seed >= 2**63 is typed uint64 by numba, and
# with a lazily compiled int64 version already present the dispatcher would try that one and overflow; with one
# uint64 signature every caller converts (a negative Python int is refused with OverflowError).
@njit(types.UniTuple(types.uint32, 4)(*[types.uint64] * 6), cache=True)
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1), 32-bit words; returns 4 uint32 words."""
    y0, y1, y2, y3 = _philox(c0, c1, c2, c3, k0, k1)
    return np.uint32(y0), np.uint32(y1), np.uint32(y2), np.uint32(y3)


@njit(cache=True)
def _uniform_key(k0, k1, image, position, channel):
    w = _philox(image, position, channel, _ZERO64, k0, k1)[0]
    return np.float32(w >> _S8) * _TWO_M24


@njit(types.float32(*[types.uint64] * 4), cache=True)
def uniform01(seed, image, position, channel):
    """The float32 uniform in [0, 1) of (image, position = i * W + j, channel) under a seed in [0, 2**64)."""
    return _uniform_key(seed & _MASK32, seed >> _S32, image, position, channel)


@njit(cache=True)
def fill_uniform_grid(out, seed, image_offset):
    """out[b, i, j, ch] = uniform01(seed, image_offset + b, i * W + j, ch) for a float32 (n, H, W, C) array."""
    n, h, w, c = out.shape
    s = np.uint64(seed)
    k0, k1 = s & _MASK32, s >> _S32
    offset = np.uint64(image_offset)
    for b in range(n):
        image = offset + np.uint64(b)
        for i in range(h):
            for j in range(w):
                position = np.uint64(i * w + j)
                for ch in range(c):
                    out[b, i, j, ch] = _uniform_key(k0, k1, image, position, np.uint64(ch))


def _check_uint(value, name, bits, where):
    return check_int(value, name, where, 0, bits)


def uniform_grid(seed, n, h, w, c, image_offset=0):
    """float32 (n, h, w, c) uniforms of images image_offset .. image_offset + n - 1 (as _core.testing.philox_uniform_grid)."""
    where = "uniform_grid"
    seed = _check_uint(seed, "seed", 64, where)
    n, h, w, c = (_check_uint(v, name, 32, where) for v, name in ((n, "n"), (h, "h"), (w, "w"), (c, "c")))
    image_offset = check_image_offset(image_offset, n, where)
    if h * w > 2 ** 32:
        raise ValueError(f"{where}: h * w must be <= 2**32 (positions are 32-bit), got {h} * {w}")
    out = np.empty((n, h, w, c), np.float32)
    # A seed >= 2**63 does not fit numba's default int64 typing of Python ints: pass it as uint64.
    fill_uniform_grid(out, np.uint64(seed), np.uint64(image_offset))
    return out


# --------------------------------------------------------------------------- level draws

@njit(cache=True)
def draw_bernoulli_with_margin(logit, temperature, u):
    """(level, margin): level 1 iff u < sigmoid(logit / T); margin = |u - p| (0 for a NaN logit)."""
    x = np.float32(logit)
    t = np.float32(temperature)
    uu = np.float32(u)
    p = _F1 / (_F1 + np.exp(-x / t))
    margin = np.abs(uu - p) if p == p else _F0
    return (1 if uu < p else 0), margin


@njit(cache=True)
def draw_bernoulli(logit, temperature, u):
    """Level 1 iff u < sigmoid(logit / T), float32 as philox.h's draw_bernoulli."""
    return draw_bernoulli_with_margin(logit, temperature, u)[0]


@njit(cache=True)
def _logit_weight(z, k, t, m):
    zk = np.float32(z[k]) / t
    if zk == m:
        return _F1
    return np.exp(zk - m)


@njit(cache=True)
def _prob_weight(p, k, mode, inv_t, pmax):
    x = np.float32(p[k])
    if mode >= _NORM_PLAIN:
        x = _F1 if x == pmax else x / pmax
    if mode == _POWER or mode == _NORM_POWER:
        return x ** inv_t
    return x


@njit(cache=True)
def _weight(values, k, logits, mode, t, inv_t, ref):
    if logits:
        return _logit_weight(values, k, t, ref)
    return _prob_weight(values, k, mode, inv_t, ref)


@njit(cache=True)
def _weight_sum(values, logits, mode, t, inv_t, ref):
    s = _F0
    for k in range(values.shape[0]):
        s += _weight(values, k, logits, mode, t, inv_t, ref)
    return s


@njit(cache=True)
def _inverse_cdf(values, logits, mode, t, inv_t, ref, s, u):
    """philox_detail::inverse_cdf: (level, margin) of u under the weights, recomputed in a second pass."""
    if not (s > _F0 and s <= _FLT_MAX):
        return 0, _F0
    c = _F0
    last_positive = 0
    for k in range(values.shape[0]):
        e = _weight(values, k, logits, mode, t, inv_t, ref)
        below = c
        c += e / s
        if e > _F0:
            last_positive = k
        if u < c:
            d = c - u
            if below > _F0 and u - below < d:
                d = u - below
            return k, d
    return last_positive, u - c


@njit(cache=True)
def draw_categorical_logits_with_margin(z, temperature, u):
    """(level, margin) of the categorical head with logits z (1-D float32, n >= 1) at temperature T."""
    t = np.float32(temperature)
    uu = np.float32(u)
    m = _NEG_INF
    for k in range(z.shape[0]):
        zk = np.float32(z[k]) / t
        if zk > m:
            m = zk
    s = _weight_sum(z, True, _PLAIN, t, _F1, m)
    return _inverse_cdf(z, True, _PLAIN, t, _F1, m, s, uu)


@njit(cache=True)
def draw_categorical_logits(z, temperature, u):
    """Level of the categorical head with logits z (1-D float32) at temperature T for uniform u."""
    return draw_categorical_logits_with_margin(z, temperature, u)[0]


@njit(cache=True)
def draw_categorical_probs_with_margin(p, temperature, u):
    """(level, margin) of the categorical head with probabilities p (1-D float32, n >= 1) at temperature T."""
    t = np.float32(temperature)
    uu = np.float32(u)
    inv_t = _F1 / t
    mode = _POWER if t != _F1 else _PLAIN
    pmax = _F0
    s = _weight_sum(p, False, mode, t, inv_t, pmax)
    if not (s > _F0):
        for k in range(p.shape[0]):
            pk = np.float32(p[k])
            if pk > pmax:
                pmax = pk
        mode += _NORM_PLAIN
        s = _weight_sum(p, False, mode, t, inv_t, pmax)
    return _inverse_cdf(p, False, mode, t, inv_t, pmax, s, uu)


@njit(cache=True)
def draw_categorical_probs(p, temperature, u):
    """Level of the categorical head with probabilities p (1-D float32) at temperature T for uniform u."""
    return draw_categorical_probs_with_margin(p, temperature, u)[0]


# --------------------------------------------------------------------------- logistic-mixture head

_F_HALF = np.float32(0.5)
_F_MINUS7 = np.float32(-7.0)


def mixture_head_values(k, channels):
    """Head values per pixel for k components over `channels` image channels (philox.h; 0: no layout)."""
    return 3 * k if channels == 1 else 10 * k if channels == 3 else 0


@njit(types.float32(*[types.uint64] * 3), cache=True)
def mixture_component_uniform(seed, image, position):
    """The pixel's component uniform: word 1 of the (image, position, 0, 0) Philox block (philox.h)."""
    w = _philox(image, position, _ZERO64, _ZERO64, seed & _MASK32, seed >> _S32)[1]
    return np.float32(w >> _S8) * _TWO_M24


@njit(cache=True)
def _sigmoid32(x):
    return _F1 / (_F1 + np.exp(-x))


MIXTURE_LAYOUTS = ("pixelcnn_pp", "tfp")  # philox.h's MixtureLayout, in its order
_F_EXP_MINUS7 = np.float32(9.118819655545162e-04)  # philox.h's kExpMinus7


@njit(cache=True)
def _softplus32(r):
    return (r if r > _F0 else _F0) + np.log1p(np.exp(-np.abs(r)))


@njit(cache=True)
def draw_logistic_mixture_with_margin(v, k, channels, channel, drawn, levels, temperature, u_component, u,
                                      layout=0):
    """(level, margin) of image channel `channel` from one pixel's mixture head v, statement for statement as
    philox.h's draw_logistic_mixture (the layouts, coupling, temperature and rounding are defined there);
    layout: the index of MIXTURE_LAYOUTS."""
    t32 = np.float32(temperature)
    tfp = layout == 1
    n = 1 + 2 * channels + channels * (channels - 1) // 2 if tfp else 1
    j, component_margin = draw_categorical_logits_with_margin(v[0:k * n:n], t32, np.float32(u_component))
    c0 = j * n  # TFP: component j's block
    block = k if channels == 1 else k + 3 * k * channel
    mu = np.float32(v[c0 + 1 + channel]) if tfp else np.float32(v[block + j])
    log_scale = np.float32(v[c0 + 1 + channels + channel]) if tfp else np.float32(v[block + k + j])
    if log_scale != log_scale:
        return 0, _F0
    half = np.float32(levels - 1) * _F_HALF
    if channels == 3 and channel > 0:
        x_r = np.float32(drawn[0]) / half - _F1
        coef = c0 + 1 + 2 * channels
        if channel == 1:
            mu += (np.float32(v[coef]) if tfp else np.tanh(np.float32(v[k + 2 * k + j]))) * x_r
        else:
            x_g = np.float32(drawn[1]) / half - _F1
            mu += (np.float32(v[coef + 1]) if tfp else np.tanh(np.float32(v[k + 3 * k + 2 * k + j]))) * x_r
            mu += (np.float32(v[coef + 2]) if tfp else np.tanh(np.float32(v[k + 6 * k + 2 * k + j]))) * x_g
    if tfp:
        s = (_softplus32(log_scale) + _F_EXP_MINUS7) * t32
    else:
        s = np.exp(log_scale if log_scale > _F_MINUS7 else _F_MINUS7) * t32
    uu = np.float32(u)
    t = mu + s * (np.log(uu) - np.log1p(-uu))
    y = (t + _F1) * half - _F_HALF
    if y != y or not (s > _F0) or s > _FLT_MAX:
        return 0, _F0
    yk = np.floor(y) + _F1
    if yk < _F0:
        level = 0
    elif yk > np.float32(levels - 1):
        level = levels - 1
    else:
        level = int(yk)
    d = component_margin
    if level < levels - 1:
        b = np.float32(2 * level + 1) / np.float32(levels - 1) - _F1
        e = np.abs(_sigmoid32((b - mu) / s) - uu)
        if e < d:
            d = e
    if level > 0:
        b = np.float32(2 * level - 1) / np.float32(levels - 1) - _F1
        e = np.abs(uu - _sigmoid32((b - mu) / s))
        if e < d:
            d = e
    return level, d


@njit(cache=True)
def draw_logistic_mixture(v, k, channels, channel, drawn, levels, temperature, u_component, u, layout=0):
    """Level of image channel `channel` from one pixel's mixture head (see draw_logistic_mixture_with_margin)."""
    return draw_logistic_mixture_with_margin(v, k, channels, channel, drawn, levels, temperature, u_component,
                                             u, layout)[0]


@njit(cache=True)
def draw_mixture_rows(values, k, channels, channel, drawn, levels, temperature, seed, image_offset, position,
                      out_levels, out_margins, layout=0):
    """Channel `channel` of one pixel of M images (image_offset + r) from their mixture heads values (M, 3K or
    10K) float32, drawn (M, >= channel) int32 the levels of the channels before: with the pixel's Philox uniforms,
    as the executors' draw_pixel_channel (philox.h). Writes out_levels / out_margins (M,). layout: the index of
    MIXTURE_LAYOUTS."""
    seed64 = np.uint64(seed)
    for r in range(values.shape[0]):
        image = np.uint64(image_offset + r)
        uc = mixture_component_uniform(seed64, image, np.uint64(position))
        u = uniform01(seed64, image, np.uint64(position), np.uint64(channel))
        prior = np.zeros(2, np.int64)
        for c in range(min(channel, 2)):
            prior[c] = drawn[r, c]
        level, margin = draw_logistic_mixture_with_margin(values[r], k, channels, channel, prior, levels,
                                                          temperature, uc, u, layout)
        out_levels[r] = level
        out_margins[r] = margin


@njit(cache=True)
def _draw_rows(values, head, temperature, u, levels, margins):
    for r in range(values.shape[0]):
        if head == 0:
            level, margin = draw_bernoulli_with_margin(values[r, 0], temperature, u[r])
        elif head == 1:
            level, margin = draw_categorical_logits_with_margin(values[r], temperature, u[r])
        else:
            level, margin = draw_categorical_probs_with_margin(values[r], temperature, u[r])
        levels[r] = level
        margins[r] = margin


def draw_levels(values, head, temperature, u, return_margin=False):
    """int32 (M,) levels from each row of values (M, N) float32 with uniform u[i] (as _core.testing.draw_levels).

    head: 'bernoulli' (N == 1, logits), 'logits' or 'probs'. return_margin: also the float32 (M,) distance of
    each u to the nearest cdf boundary.
    """
    where = "draw_levels"
    if head not in HEADS:
        raise ValueError(f"{where}: head must be 'bernoulli', 'logits' or 'probs', got {head!r}")
    values = np.asarray(values)
    u = np.asarray(u)
    if values.dtype != np.float32 or values.ndim != 2:
        raise ValueError(f"{where}: values must be a float32 array of shape (M, N), got {values.dtype} "
                         f"{values.shape}")
    m, n = values.shape
    if head == "bernoulli" and n != 1:
        raise ValueError(f"{where}: values must have shape (M, 1) for head 'bernoulli' (one logit per draw), "
                         f"got {values.shape}")
    if n < 1:
        raise ValueError(f"{where}: values must have shape (M, N) with N >= 1 levels, got {values.shape}")
    if u.dtype != np.float32 or u.shape != (m,):
        raise ValueError(f"{where}: u must be a float32 array of shape ({m},) (one uniform per row of values), "
                         f"got {u.dtype} {u.shape}")
    bad = ~((u >= 0) & (u < 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{where}: u must lie in [0, 1), got u[{i}] = {float(u[i])!r}")
    t = check_temperature(temperature, where)
    levels = np.empty(m, np.int32)
    margins = np.empty(m, np.float32)
    _draw_rows(values, HEADS.index(head), t, u, levels, margins)
    return (levels, margins) if return_margin else levels


def boundary_tolerance(n_levels, ulps=4.0):
    """A margin below which two correct float32 implementations of one draw may pick different levels.

    Their exp/pow may differ by up to `ulps` ulp (glibc, CUDA, numpy's SIMD loops: a few ulp at most) and each
    rounds its own sums: e_k / s differs by about (2 * ulps + 2) ulp of its value, the sum s by up to n_levels
    ulp relative, and the cdf accumulates n_levels roundings of size <= 2**-24. A float64 oracle of the same
    contract (the float32 z / T kept) is within this bound too. Bernoulli: pass n_levels=2.
    """
    return float((2 * n_levels + 2 * ulps + 4) * 2.0 ** -24)
