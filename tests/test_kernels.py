"""Core microkernels: the GEMM register tiles (core/kernels_isa.inc) of every instruction-set build this CPU
runs, called directly through _core.testing.gemm, against a float64 product on fresh random inputs: every row
count 1..17 and multiples of 8 up to 72 (the row tiles and their balanced split: 7 rows as 4 + 3; 1-3-row tiles
across several panels where N allows, the wide tiles; on AVX-512 the
8-row tall tiles of M = 8, 16, ..., 64, two vectors wide, and past 64 the balanced split again), odd K split into k ranges with gaps (the
gather plans' segments), N over partial and whole panels, and NaN-poisoned outputs (every entry of C[:, :N]
written, nothing past column N)."""

import numpy as np
import pytest

from pixelcnn_fast import _core
from pixelcnn_fast._core import testing

ISAS = [isa for isa in ("avx512", "avx2", "generic") if isa in _core.supported_isas()]
N_VALUES = (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 48, 63, 64, 65, 70, 128, 129, 200, 257)


def _ranges(rng, lda, pieces):
    """`pieces` disjoint increasing [begin, end) runs of columns of a, gaps between them (as a segment's)."""
    cuts = np.sort(rng.choice(np.arange(1, lda), size=2 * pieces - 1, replace=False))
    bounds = np.concatenate([[0], cuts, [lda]])
    return [(int(bounds[2 * i]), int(bounds[2 * i + 1])) for i in range(pieces)]


def _reference(a, b, ranges):
    cols = np.concatenate([np.arange(lo, hi) for lo, hi in ranges])
    return a[:, cols].astype(np.float64) @ b.astype(np.float64)


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_matches_float64_every_row_count_and_panel_edge(isa):
    rng = np.random.default_rng()  # fresh inputs each run; a failure prints the shapes
    worst = 0.0
    for m in list(range(1, 18)) + [24, 32, 40, 64, 72]:
        for n in N_VALUES:
            pieces = int(rng.integers(1, 4))
            lda = int(rng.integers(2 * pieces + 1, 160)) | 1  # odd
            ranges = _ranges(rng, lda, pieces)
            k = sum(hi - lo for lo, hi in ranges)
            a = rng.standard_normal((m, lda)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            pad = int(rng.integers(1, 5))
            c, _ = testing.gemm(isa, a, b, ranges, pad)
            assert c.shape == (m, n + pad)
            assert np.isnan(c[:, n:]).all(), (isa, m, n, k, "wrote past column N")
            assert not np.isnan(c[:, :n]).any(), (isa, m, n, k, "left an output unwritten")
            ref = _reference(a, b, ranges)
            # float32 accumulation of k unit-normal products: |error| <~ k * eps * sum |a b| per entry.
            scale = np.abs(a[:, np.concatenate([np.arange(lo, hi) for lo, hi in ranges])]).astype(np.float64) @ \
                np.abs(b).astype(np.float64)
            err = np.max(np.abs(c[:, :n] - ref) / scale)
            worst = max(worst, err)
            assert err < k * 2.0 ** -23, (isa, m, n, k, ranges, err)
    print(isa, "worst error relative to sum |a b|:", worst)


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_row_values_do_not_depend_on_the_row_tiling(isa):
    # Every tile sums a row's k terms in order, so a row's bits are the same whether it is computed alone, in a
    # 6-row tile, in a balanced 4 + 3 split or in 8-row tall tiles: the sampler's image does not depend on the batch
    # it is drawn in.
    rng = np.random.default_rng()
    for m in (2, 7, 8, 9, 13, 16, 17, 32, 64, 72):
        n = int(rng.choice((17, 64, 70, 130, 257)))
        a = rng.standard_normal((m, 257)).astype(np.float32)
        b = rng.standard_normal((257, n)).astype(np.float32)
        c, _ = testing.gemm(isa, a, b, None, 0)
        for i in range(m):
            alone, _ = testing.gemm(isa, a[i:i + 1].copy(), b, None, 0)
            np.testing.assert_array_equal(c[i], alone[0], err_msg=f"{isa} m={m} row {i}")


def test_gemm_seam_names_bad_arguments():
    a = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match="isa"):
        testing.gemm("nope", a, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="b must have as many rows"):
        testing.gemm(ISAS[0], a, np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="range"):
        testing.gemm(ISAS[0], a, np.zeros((4, 3), np.float32), [(3, 7)])
    with pytest.raises(TypeError, match="float32"):
        testing.gemm(ISAS[0], a.astype(np.float64), np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="copies >= 1"):
        testing.gemm(ISAS[0], a, np.zeros((5, 3), np.float32), copies=0)


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_window_and_copies_give_the_panels_bits(isa):
    # B packed as a split thread's window (ldb = N rounded up to the window unit: the batch-1 path) and the timed
    # calls' copies of B give the same bits as the panel packing: one row's sum does not depend on B's layout.
    rng = np.random.default_rng()
    panel = {"avx512": 64, "avx2": 16, "generic": 8}[isa]  # VL x NV_MAX (isa_*.cc)
    for m in (1, 2, 5, 8):
        for n in (1, 15, 16, 17, 32, panel):
            if n > panel:
                continue
            a = rng.standard_normal((m, 301)).astype(np.float32)
            b = rng.standard_normal((250, n)).astype(np.float32)
            ranges = [(0, 100), (120, 270)]
            want, _ = testing.gemm(isa, a, b, ranges, 2)
            got, _ = testing.gemm(isa, a, b, ranges, 2, window=True)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} m={m} n={n} window")
            again, _ = testing.gemm(isa, a, b, ranges, 2, repeats=3, window=True, copies=2)
            np.testing.assert_array_equal(again, want, err_msg=f"{isa} m={m} n={n} copies")


# ------------------------------------------------------------------ the categorical draw (Kernels::draw_logits)

def _logit_rows(rng, rows, n):
    z = rng.standard_normal((rows, n)).astype(np.float32) * np.float32(rng.choice((0.3, 3.0, 30.0)))
    # Edge rows: ties at the max, -inf levels, an all -inf row, +inf, NaN, a single live level, huge spreads.
    z[0] = 0.0
    z[1, : n // 2] = -np.inf
    z[2] = -np.inf
    z[3, n // 3] = np.inf
    z[4, n // 2] = np.nan
    z[5] = -1e30
    z[5, n - 1] = 0.0
    z[6] = np.linspace(-200.0, 200.0, n, dtype=np.float32)
    return z


@pytest.mark.parametrize("isa", ISAS)
def test_vectorised_draw_matches_the_scalar_draw_up_to_cdf_boundaries(isa):
    # The executor's draw computes e_k with the build's vexp (<= 1 ulp from libm's expf) and otherwise runs philox.h's
    # code: the level may differ from the scalar draw only where u lies within rounding of a CDF boundary, which
    # both margins then report (below rng.boundary_tolerance, the bound every cross-backend test uses).
    from pixelcnn_fast.rng import boundary_tolerance
    rng = np.random.default_rng()
    seed = int(rng.integers(2**32))
    differ = total = 0
    for n in (1, 2, 3, 7, 16, 17, 100, 128, 255, 256, 1000, 1024):
        for t in (1.0, 0.5, 2.7, 1e-3):
            z = _logit_rows(np.random.default_rng([seed, n]), 400 if n > 8 else 60, n)
            u = rng.random(z.shape[0], dtype=np.float32)
            # u on (and a hair off) the scalar draw's CDF boundaries: the cases rounding decides.
            u[-20:] = np.clip(np.cumsum(np.exp(z[-20:, :].astype(np.float64)), axis=1)[:, 0] /
                              np.exp(z[-20:].astype(np.float64)).sum(axis=1), 0, 0.999999).astype(np.float32)
            want, want_m = testing.draw_levels(z, "logits", t, u, return_margin=True)
            got, got_m = testing.draw_levels(z, "logits", t, u, return_margin=True, isa=isa)
            tol = boundary_tolerance(n)
            bad = got != want
            total += len(u)
            differ += int(bad.sum())
            assert np.all(np.minimum(want_m[bad], got_m[bad]) < tol), (isa, n, t, np.flatnonzero(bad))
            # Where both agree the margins are the same up to the same rounding.
            same = ~bad & np.isfinite(want_m)
            np.testing.assert_allclose(got_m[same], want_m[same], rtol=0, atol=tol)
    print(isa, f"seed {seed}: {differ} of {total} draws differ, all within a CDF boundary's rounding")
    assert differ <= total // 100


def test_vectorised_draw_refuses_what_it_does_not_draw():
    z = np.zeros((2, 1025), np.float32)
    with pytest.raises(ValueError, match="N <= 1024"):
        testing.draw_levels(z, "logits", 1.0, np.zeros(2, np.float32), isa=ISAS[0])
    with pytest.raises(ValueError, match="head 'probs'"):
        testing.draw_levels(np.zeros((2, 4), np.float32), "probs", 1.0, np.zeros(2, np.float32), isa=ISAS[0])
