# Benchmarks: the cached sampler (Sampler.sample) vs the naive repredict loops (rows / graph / predict), keras.io PixelCNN 28x28.
"""Sampling speed, measured as ratios in one run (DESIGN.md, "How speed is shown").

Run (from the repository root, ~5 minutes on 2 cores):

    /work/venv/bin/pytest benchmarks/bench_sampler.py --benchmark-json=benchmarks/results_sampler.json && /work/venv/bin/python benchmarks/report.py benchmarks/results_sampler.json benchmarks/REPORT_sampler.md

Model: the keras.io PixelCNN at its real size (tests/fixtures/seed_models.keras_io(full=True):
28x28x1, 128 filters, 5 residual blocks, sigmoid head; random weights, keras seed 0). Batches 1
and 16 (the issue's goals), then 4 and 64 (env PIXELCNN_BENCH_SAMPLER_BATCHES, e.g. "1,16").
Each batch is one ``benchmark.group``; its four variants run back to back:

  * ``cached``   Sampler(model).sample(n, seed), the full image, timed by pytest-benchmark (every
                 call re-evaluates the constants and rebuilds the C++ program, as a user's call does).
  * ``rows``     naive.sample(mode="rows"): per pixel a tf.function forward of rows 0..i only.
  * ``graph``    naive.sample(mode="graph"): per pixel a tf.function forward of the whole image.
  * ``predict``  naive.sample(mode="predict"): per pixel model.predict on the whole image (the seeds'
                 loop). One max_steps=1 call first: Keras builds its predict function on the first call.

The naive loops are far too slow to run in full (minutes to hours per image batch), so they are
timed over a counted number of steps and extrapolated; extra_info and the report say how many:

  * graph / predict: every step runs the same full-image forward, so the cost per step is constant:
    naive.sample(max_steps=K) for K steps (K from a probe call so one round takes ~NAIVE_SECONDS),
    full-image time = NaiveResult.seconds * 784 / K ("extrapolated from K of 784 steps").
    NaiveResult.seconds is the loop's own clock: tf.function tracing (and the first run of a new
    trace) is excluded, as it is a one-off per sampling run, not a per-step cost.
  * rows: step (i, j) runs the model on the first i+1 rows, so its cost grows with the row (the
    conv work is proportional to i+1, plus a fixed per-call overhead; measured, c(r) is concave in r
    at small batches, where TF's two threads are not yet saturated). Reaching deep rows through the
    full loop would take minutes; instead, ROWS_SPREAD rows r spread over the image (0, 9, 18, 27)
    are each timed over k of the loop's own steps (naive.rows_seconds_estimate: naive.sample with
    positions at that row, starting from realistic image content, tracing excluded). The cost per step c(r) is interpolated linearly between the timed rows and
    summed over all 28 rows x 28 columns: full-image time = 28 * sum_{r=0..27} c_interp(r)
    ("extrapolated from len(ROWS_SPREAD)*k of 784 steps, integrated over the rows"). For a concave
    c(r) the chords lie below the curve, so the estimate errs low: the naive loop looks faster than
    it is and the cached sampler's ratio against it is, if anything, understated.
    rows_affine_dev_pct records how far the middle rows are from the line through the end rows. As a check of
    that per-step model, the real loop naive.sample(mode="rows", max_steps=28) runs row 0 once
    before timing; its time per step and c(0) are both recorded (rows_check_*).

Correctness before any timing (a wrong fast path must never post a number), in the module fixture:
  * teacher forcing: Sampler.teacher_forced on random binary images equals one forward pass of the
    lowered program (lowering.run_program), max relative error < 1e-5, on the full model (batch 2);
  * same images: the cached sampler and naive.sample(mode="rows") draw the same images for the same
    seed on a small case (keras.io architecture at 128 filters / 5 blocks on a 6x7 image, n=2),
    checked with tests/sampling_checks.assert_same_images (a divergence is only allowed at a draw
    within float rounding of a CDF boundary);
  * and on the real model: every timed naive run's reached positions (and the rows check's row 0)
    must agree with the cached sample of the same seed, the same way.

Recorded (extra_info): full-image seconds per sample call (est_full_s: measured for cached,
extrapolated for naive), pixels/s (n*H*W / that time), for cached the achieved GFLOP/s in the live
convention -- 2 * exe.macs_per_position() * H*W * n / time, exe = sampler._executor(n, []); live
multiply-adds of every conv at one position (dead masked taps not counted, border taps in the
"same" padding counted), 2 FLOPs per MAC, softmax/activations/draws not counted -- its % of the
float32 GEMM peak measured in the same run (conftest.py), the peak cache memory
exe.cache_floats_per_image() * 4 * n bytes, and what each sample call spends outside the C++ loop
(constants + causality + program build, setup_s). The report computes cached-vs-each-naive ratios.
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

from fixtures import seed_models  # noqa: E402
from sampling_checks import assert_same_images  # noqa: E402

from pixelcnn_fast import lowering, naive  # noqa: E402
from pixelcnn_fast.sampler import Sampler  # noqa: E402

H, W, C = 28, 28, 1
STEPS_TOTAL = H * W * C
SEED = 7
BATCHES = tuple(int(b) for b in os.environ.get("PIXELCNN_BENCH_SAMPLER_BATCHES", "1,16,4,64").split(","))
IMPLS = ("cached", "rows", "graph", "predict")

BENCH_SECONDS = float(os.environ.get("PIXELCNN_BENCH_SECONDS", "3.0"))  # cached: time per benchmark
CACHED_MIN_ROUNDS, CACHED_MAX_ROUNDS = 3, 20
NAIVE_SECONDS = float(os.environ.get("PIXELCNN_BENCH_NAIVE_SECONDS", "1.5"))  # naive: time per round
NAIVE_ROUNDS = 3
NAIVE_MIN_STEPS, NAIVE_MAX_STEPS = 4, 64
ROWS_SPREAD = tuple(int(r) for r in np.linspace(0, H - 1, 4).round())  # (0, 9, 18, 27)
ROWS_MIN_K, ROWS_MAX_K = 3, W

TF_REL_TOL = 1e-5  # as tests/test_sampler.py: float32 sums in another order


# --------------------------------------------------------------------------- model, checks

def _same_images(ref, levels, margins, what):
    """assert_same_images on the positions ``ref`` (a NaiveResult, maybe partial) reached."""
    reached = ref.levels >= 0
    cached = types.SimpleNamespace(levels=np.where(reached, levels, -1),
                                   margins=np.where(reached, margins, np.nan), mode="cached")
    assert_same_images(ref, cached, 2)
    agree = (ref.levels[reached] == levels[reached]).mean()
    assert agree > 0.5, "%s: only %.0f%% of the draws agree with the cached sampler" % (what, 100 * agree)
    return float(agree)


@pytest.fixture(scope="module")
def checked():
    """The full keras.io model and its Sampler, after the correctness checks (module docstring)."""
    rng = np.random.default_rng(0)
    # Small case first: cached == naive rows loop, same seed (the same layers at 6x7).
    small = seed_models.keras_io(height=6, width=7, filters=128, blocks=5, seed=0)
    ref = naive.sample(small.model, 2, mode="rows", head="bernoulli", seed=3)
    levels, margins = Sampler(small.model).sample(2, seed=3, return_margins=True)
    small_agree = _same_images(ref, levels, margins, "small case 6x7")

    sm = seed_models.keras_io(full=True, seed=0)
    sampler = Sampler(sm.model)
    image = (rng.random((2, H, W, C)) < 0.5).astype(np.float32)
    got = sampler.teacher_forced(image)
    p = sampler.program
    want = lowering.run_program(p, p.evaluate_consts(2, []), image)[p.logits_buffer].numpy()
    err = float(np.abs(got - want).max() / (np.abs(want).max() + 1e-30))
    assert err < TF_REL_TOL, "teacher forcing != one forward pass: max relative error %.2e" % err
    dense_macs = sum(int(np.prod(v.shape)) for v in sm.model.weights if len(v.shape) == 4)
    return types.SimpleNamespace(model=sm.model, sampler=sampler, teacher_forced_rel_err=err,
                                 small_case_agree=small_agree, dense_macs_per_position=dense_macs,
                                 reference={})


def cached_reference(ck, n):
    """(levels, margins) of the cached sampler for (n, SEED): the oracle for the naive runs' draws."""
    if n not in ck.reference:
        ck.reference[n] = ck.sampler.sample(n, seed=SEED, return_margins=True)
    return ck.reference[n]


# --------------------------------------------------------------------------- variants

def bench_cached(benchmark, record_flops, ck, n):
    sampler = ck.sampler
    t0 = time.perf_counter()
    exe = sampler._executor(n, [])
    setup_s = time.perf_counter() - t0
    levels, _ = cached_reference(ck, n)
    assert np.array_equal(sampler.sample(n, SEED), levels), "cached sampler is not deterministic"
    t0 = time.perf_counter()
    sampler.sample(n, SEED)
    dt = time.perf_counter() - t0
    rounds = max(CACHED_MIN_ROUNDS, min(CACHED_MAX_ROUNDS, int(math.ceil(BENCH_SECONDS / max(dt, 1e-6)))))
    record_flops.quiet()
    benchmark.pedantic(sampler.sample, args=(n, SEED), rounds=rounds, warmup_rounds=1, iterations=1)
    macs = exe.macs_per_position()
    flops_live = 2 * macs * H * W * n
    flops_dense = 2 * ck.dense_macs_per_position * H * W * n
    info = record_flops(flops_dense, flops_live, "live",
                        timed="full image, %d rounds" % rounds, steps_timed=STEPS_TOTAL,
                        macs_per_position=int(macs), cache_bytes=int(exe.cache_floats_per_image()) * 4 * n,
                        setup_s=round(setup_s, 5),
                        teacher_forced_rel_err=ck.teacher_forced_rel_err,
                        small_case_agree=ck.small_case_agree)
    st = benchmark.stats
    if st is not None:
        info["est_full_s"] = st.stats.mean
        info["est_full_s_median"] = st.stats.median
        info["est_full_s_rounds"] = list(st.stats.data)


def _naive_kwargs(n, mode, max_steps):
    return dict(n=n, mode=mode, head="bernoulli", seed=SEED, max_steps=max_steps)


def bench_naive_full_image(benchmark, record_contention, ck, n, mode):
    """graph / predict: constant cost per step, K steps timed, x 784 / K."""
    model = ck.model
    if mode == "predict":
        naive.sample(model, **_naive_kwargs(n, mode, 1))  # Keras builds its predict function here
    probe = naive.sample(model, **_naive_kwargs(n, mode, 2))
    per_step = probe.seconds / probe.steps_run
    k = max(NAIVE_MIN_STEPS, min(NAIVE_MAX_STEPS, int(math.ceil(NAIVE_SECONDS / max(per_step, 1e-6)))))
    results = []

    def run():
        results.append(naive.sample(model, **_naive_kwargs(n, mode, k)))

    record_contention.quiet()
    benchmark.pedantic(run, rounds=NAIVE_ROUNDS, warmup_rounds=0, iterations=1)
    levels, margins = cached_reference(ck, n)
    agree = _same_images(results[-1], levels, margins, "naive %s (batch %d)" % (mode, n))
    assert all(r.steps_run == k for r in results)
    est = [r.seconds * STEPS_TOTAL / r.steps_run for r in results]
    record_contention(
        timed="extrapolated from %d of %d steps" % (k, STEPS_TOTAL),
        extrapolation="NaiveResult.seconds (loop clock, tracing excluded) x %d / %d per round; "
                      "the cost per step is the same at every step in this mode" % (STEPS_TOTAL, k),
        steps_timed=k, est_full_s=float(np.mean(est)), est_full_s_median=float(np.median(est)),
        est_full_s_rounds=est, trace_s=[r.trace_seconds for r in results],
        per_step_s=[r.seconds / r.steps_run for r in results], draws_agree_with_cached=agree)


def bench_naive_rows(benchmark, record_contention, ck, n):
    """rows: per-step cost timed at ROWS_SPREAD, interpolated over the rows (module docstring)."""
    model = ck.model
    # The real loop over row 0: its draws must match the cached sampler; its time per step checks c(0).
    check = naive.sample(model, **_naive_kwargs(n, "rows", W * C))
    levels, margins = cached_reference(ck, n)
    agree = _same_images(check, levels, margins, "naive rows, row 0 (batch %d)" % n)

    # The loop's own steps at rows spread over the image (naive.rows_seconds_estimate: positions at
    # each row, from realistic content), the cost interpolated over the rows. k columns per row,
    # sized by one probe of the deepest row so a round takes about NAIVE_SECONDS.
    image = levels.astype(np.float32).copy()
    probe = naive.sample(model, n, mode="rows", head="bernoulli", levels=2, seed=SEED,
                         positions=[(ROWS_SPREAD[-1], 0)], image=image)
    c_deep = probe.seconds / probe.steps_run
    k = max(ROWS_MIN_K, min(ROWS_MAX_K, int(math.ceil(NAIVE_SECONDS / len(ROWS_SPREAD) / max(c_deep, 1e-6)))))
    per_round, est = [], []

    def run():
        e, cost = naive.rows_seconds_estimate(model, n, rows=ROWS_SPREAD, steps_per_row=k, image=image,
                                              head="bernoulli", levels=2, seed=SEED)
        per_round.append(cost)
        est.append(e)

    record_contention.quiet()
    benchmark.pedantic(run, rounds=NAIVE_ROUNDS, warmup_rounds=0, iterations=1)
    c_rows = np.mean(per_round, axis=0)
    # Affinity of c(r) in r: the middle rows against the line through the end rows.
    line = np.interp(ROWS_SPREAD, [ROWS_SPREAD[0], ROWS_SPREAD[-1]], [c_rows[0], c_rows[-1]])
    steps = len(ROWS_SPREAD) * min(k, W)
    record_contention(
        timed="extrapolated from %d of %d steps (%d at each of rows %s), integrated over the rows"
              % (steps, STEPS_TOTAL, min(k, W), ", ".join(map(str, ROWS_SPREAD))),
        extrapolation="cost per step c(r) timed at rows %s with the loop's own per-step work, interpolated "
                      "linearly in r and summed: %d x sum_{r=0..%d} c(r) per round"
                      % (list(ROWS_SPREAD), W * C, H - 1),
        steps_timed=steps, rows_spread=list(ROWS_SPREAD), steps_per_row=min(k, W),
        est_full_s=float(np.mean(est)), est_full_s_median=float(np.median(est)), est_full_s_rounds=est,
        per_step_s_by_row={str(r): float(c) for r, c in zip(ROWS_SPREAD, c_rows)},
        rows_affine_dev_pct=float(100 * np.max(np.abs(c_rows - line) / line)),
        rows_check_real_loop_row0_per_step_s=check.seconds / check.steps_run,
        rows_check_timed_row0_per_step_s=float(c_rows[0]),
        trace_s=check.trace_seconds, draws_agree_with_cached=agree)


# --------------------------------------------------------------------------- the benchmarks

# Variants innermost so a group's rows are measured back to back.
CASES = [pytest.param(n, impl, id="b%d-%s" % (n, impl)) for n in BATCHES for impl in IMPLS]


@pytest.mark.parametrize("n,impl", CASES)
def test_sampler(request, benchmark, checked, n, impl):
    benchmark.group = "keras.io 28x28 sample | batch %d" % n
    benchmark.extra_info.update(suite="sampler", impl=impl, batch=n, hw=[H, W], channels=C,
                                steps_total=STEPS_TOTAL, model="keras_io(full=True): 128 filters, 5 blocks",
                                seed=SEED)
    if impl == "cached":
        bench_cached(benchmark, request.getfixturevalue("record_flops"), checked, n)
    else:
        rec = request.getfixturevalue("record_contention")
        rec(gemm_peak_gflops=round(request.getfixturevalue("gemm_peak_gflops"), 2))
        if impl == "rows":
            bench_naive_rows(benchmark, rec, checked, n)
        else:
            bench_naive_full_image(benchmark, rec, checked, n, impl)
    info = benchmark.extra_info
    if "est_full_s" in info:
        info["pixels_per_s"] = n * H * W / info["est_full_s"]
