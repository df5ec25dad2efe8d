"""Core executor + Python front end: a position's work split across threads (csrc/core/column_split.cc, team.cc).

With fewer images than threads the executor splits each position's conv output channels and elementwise
channel ranges among the threads of an image group, meeting at a spinning barrier. Each output element is the
same float sum in the same order, so every thread count must give bit-identical levels, margins, completions
and teacher-forced heads -- checked here for thread counts 1..4 and batches 1, 2, 3, 5 on models that exercise
every executor path: grey 1-channel (keras.io), RGB colour passes with per-channel phases (the blog's 3x256),
delayed steps and shifts (gated PixelCNNs, PixelCNN++), logistic-mixture heads, per-image constants (a
class-conditional model) and integer codes (the VQ-VAE prior). Also: on_row and cancel in split mode, the
barrier's cost and ordering, a failing thread (test seams), and the TF op (whose pool promises no concurrency, so it
keeps images per thread) at batch 1. The split runs under both policies: "always" (every row split, whatever the machine's load) and "auto" (the
product's: split, with a fallback to one thread when the split is slower than one thread's pace, timed by the calls that
keep one thread per image).
"""

import numpy as np
import pytest

from fixtures import mixture_models, seed_models, zoo_models
from pixelcnn_fast import _core
from pixelcnn_fast._core import testing
from pixelcnn_fast.sampler import Sampler

THREADS = [1, 2, 3, 4]
BATCHES = [1, 2, 3, 5]


def _seed(name, **kw):
    sm = seed_models.build(name, **kw)
    declared = getattr(sm.model, "inputs", None)
    sampler = Sampler(sm.model, head=sm.head, value_map=None if sm.head == "bernoulli" else sm.value_map,
                      image_shape=None if declared else sm.image_shape)
    labels = None
    if sm.conditional:
        labels = lambda n, rng: np.eye(sm.num_classes, dtype=np.float32)[rng.integers(0, sm.num_classes, n)]
    return sampler, labels


def _zoo(name, **kw):
    zm = zoo_models.build(name, **kw)
    if zm.head == "logistic_mixture":
        return Sampler(zm.model, head="logistic_mixture"), None
    value_map = "identity" if zm.value_map == "identity" else "level/(N-1)"
    return Sampler(zm.model, head="categorical", value_map=value_map), None


MODELS = {
    # 48 filters: three 16-channel GEMM windows, dealt out unevenly to 2 or 4 threads.
    "keras_io": lambda: _seed("keras_io", height=5, width=7, filters=48, blocks=1),
    "rgb_3x256": lambda: _seed("rgb_3x256", height=4, width=5),
    "conditional": lambda: _seed("conditional", height=5, width=6),
    "gated_shifted": lambda: _zoo("gated_shifted", height=5, width=6, filters=16),
    "gated_masked": lambda: _zoo("gated_masked", height=5, width=6, filters=16),
    # Wide enough that the fused gates split: 2C = 64 or 96 channels, four or six 16-channel windows joined in
    # pairs (window w of tanh's half with window w of sigmoid's).
    "gated_shifted_wide": lambda: _zoo("gated_shifted", height=4, width=5, filters=48, layers=2),
    "gated_masked_wide": lambda: _zoo("gated_masked", height=4, width=5, filters=32, layers=2),
    "pixelcnn_pp_rgb": lambda: _zoo("pixelcnn_pp_rgb", height=4, width=5),
    "pixelcnn_pp_grey_wide": lambda: _zoo("pixelcnn_pp_grey", height=4, width=5, filters=32),
    "vqvae_prior_one_hot": lambda: _zoo("vqvae_prior_one_hot", height=4, width=5),
    "mixture_rgb": lambda: (Sampler(mixture_models.mixture_pixelcnn(height=4, width=5, channels=3, filters=32),
                                    head="logistic_mixture"), None),
}


def _run_all(sampler, labels, batch, seed):
    """(levels, margins, completed, teacher-forced head) of one batch at the module's current thread count."""
    rng = np.random.default_rng(seed)
    conditions = labels(batch, rng) if labels is not None else None
    h, w, c = sampler.program.image_shape
    levels, margins = sampler.sample(batch, seed=seed, temperature=0.9, conditions=conditions, return_margins=True,
                                     image_offset=3)
    given = rng.integers(0, sampler.levels, (batch, h, w, c)).astype(np.int32)
    known = np.zeros((h, w), bool)
    known[: h // 2] = True
    known[h // 2, : w // 2] = True
    if sampler.program.input_rank == 3:
        given, known = given[..., 0], known
    completed = sampler.complete(given, known, seed=seed + 1, conditions=conditions)
    image = rng.uniform(0.0, 1.0, (batch, h, w, c)).astype(np.float32)
    if sampler.program.input_rank == 3:
        image = rng.integers(0, sampler.levels, (batch, h, w)).astype(np.float32)
    head = sampler.teacher_forced(image, conditions=conditions)
    return levels, margins, completed, head


# "always": every row split (whatever the machine's load); "auto": row 0 on one thread, then split, falling back to
# one thread when the split is slower -- the images must be the same bits either way.
@pytest.mark.parametrize("policy", ["always", "auto"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_thread_count_gives_the_same_bits(name, policy, restore_threads):
    sampler, labels = MODELS[name]()
    testing.set_position_split(policy)
    for batch in BATCHES:
        _core.set_num_threads(1)
        want = _run_all(sampler, labels, batch, seed=100 + batch)
        for threads in THREADS[1:]:
            _core.set_num_threads(threads)
            got = _run_all(sampler, labels, batch, seed=100 + batch)
            for what, a, b in zip(("levels", "margins", "completion", "teacher-forced head"), want, got):
                assert a.shape == b.shape and a.dtype == b.dtype
                # Bits, not values: a split that reordered a sum would differ in the last place somewhere.
                assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), \
                    f"{name}: {what} differ at batch {batch} on {threads} threads"


def test_split_calls_count_how_each_call_ran(restore_threads):
    # ColumnProgram.split_calls: every call with fewer images than threads counts once, as split, fell_back or
    # skipped (the benchmark reports it beside batch-1 times); a call that cannot split counts nowhere.
    sampler, _ = MODELS["keras_io"]()
    exe = sampler.executor(1, [])

    def calls():
        c = exe.split_calls()
        return c["split"], c["fell_back"], c["skipped"]

    assert set(exe.split_calls()) == {"split", "fell_back", "skipped", "timed_alone"}
    _core.set_num_threads(2)
    testing.set_position_split("always")  # never falls back, never skips
    s0, f0, k0 = calls()
    for _ in range(3):
        exe.sample(1, 5, 1.0, 0)
    assert calls() == (s0 + 3, f0, k0)
    exe.sample(2, 5, 1.0, 0)  # as many images as threads: images per thread
    testing.set_position_split("never")
    exe.sample(1, 5, 1.0, 0)
    _core.set_num_threads(1)
    testing.set_position_split("always")
    exe.sample(1, 5, 1.0, 0)
    assert calls() == (s0 + 3, f0, k0)
    _core.set_num_threads(2)
    testing.set_position_split("auto")  # each call exactly one of the four, whichever the machine's load gives
    before = sum(calls()) + exe.split_calls()["timed_alone"]
    for _ in range(5):
        exe.sample(1, 5, 1.0, 0)
    assert sum(calls()) + exe.split_calls()["timed_alone"] == before + 5


def test_a_fallback_skips_calls_with_a_doubling_backoff(restore_threads):
    # After a split that fell back the program keeps one thread for 1 call, then 2, 4, 8 and at most 15 while its
    # tries keep falling back; a split that holds to the end starts over at 1 (column_split.cc). 'auto_slow' is
    # auto finding every split slower, so the schedule does not depend on the machine's load.
    sampler, _ = MODELS["keras_io"]()
    exe = sampler.executor(1, [])
    _core.set_num_threads(2)

    def pattern(calls):
        out = ""
        for _ in range(calls):
            before = exe.split_calls()
            exe.sample(1, 5, 1.0, 0)
            after = exe.split_calls()
            changed = [k for k in ("split", "fell_back", "skipped") if after[k] != before[k]]
            assert len(changed) == 1 and after[changed[0]] == before[changed[0]] + 1, (before, after)
            out += {"split": "P", "fell_back": "F", "skipped": "S"}[changed[0]]
        return out

    assert exe.split_calls() == {"split": 0, "fell_back": 0, "skipped": 0, "timed_alone": 0}  # a fresh program
    testing.set_position_split("auto_slow")
    assert pattern(11) == "FSFSSFSSSSF"
    testing.set_position_split("always")  # splits to the end: the backoff starts over; the 8 pending skips stay
    assert pattern(1) == "P"
    testing.set_position_split("auto_slow")
    assert pattern(13) == "S" * 8 + "FSFSS"
    assert pattern(46) == "F" + "S" * 4 + "F" + "S" * 8 + ("F" + "S" * 15) * 2  # 4, 8, then at most 15


def test_auto_times_one_threads_pace_on_its_first_call_and_after_64_splits(restore_threads):
    # 'auto' compares the split's pace with one thread's, timed by the calls that keep one thread per image: the
    # calls skipped after a fallback, a program's first call that could split, and one after every 64 splits
    # (timed_alone; column_split.cc, for_each_member). Checked call by call against that rule under whatever load
    # the machine has (its fallbacks decide the schedule), with the images equal to one thread's bit for bit.
    sampler, _ = MODELS["keras_io"]()
    exe = sampler.executor(1, [])
    _core.set_num_threads(2)
    testing.set_position_split("never")
    want = exe.sample(1, 5, 1.0, 0)
    testing.set_position_split("always")
    exe.sample(1, 5, 1.0, 0)
    assert exe.split_calls()["timed_alone"] == 0  # never, always and images per thread do not time
    testing.set_position_split("auto")
    paced, left, kinds = False, 0, ""
    for call in range(140):
        before = exe.split_calls()
        got = exe.sample(1, 5, 1.0, 0)
        after = exe.split_calls()
        for a, b in zip(want, got):
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"call {call}: auto drew other bits"
        outcome = [k for k in after if after[k] != before[k]]
        assert len(outcome) == 1 and after[outcome[0]] == before[outcome[0]] + 1, (before, after)
        kinds += {"split": "P", "fell_back": "F", "skipped": "S", "timed_alone": "T"}[outcome[0]]
        if outcome[0] == "skipped":  # one thread per image: timed too
            paced, left = True, 64
            continue
        expect = not paced
        if paced:
            expect, left = left <= 0, left - 1
        assert (outcome[0] == "timed_alone") == expect, f"call {call}: {kinds}"
        if expect:
            paced, left = True, 64
    assert kinds[0] == "T", kinds  # a fresh program times first (the periodic one: the rule above, when no skip
    # after a fallback timed meanwhile)
    testing.set_position_split("auto_slow")  # splits at once (no pace needed) and falls back: no timed calls
    before = exe.split_calls()
    for _ in range(20):  # after at most 15 calls skipped for auto's fallbacks above
        exe.sample(1, 5, 1.0, 0)
    after = exe.split_calls()
    assert after["timed_alone"] == before["timed_alone"] and after["fell_back"] > before["fell_back"]


def test_a_cancelled_timing_call_keeps_no_pace(restore_threads):
    # auto's first call that could split keeps one thread to time its pace. Cancelled at row 2 of 5, it ran 2 rows
    # in its time: a pace from it would read 2.5x fast and send the splits after it to fall back. It keeps none,
    # so the next call times again; the one after has a pace and splits (or falls back under load), untimed.
    sampler, _ = MODELS["keras_io"]()
    exe = sampler.executor(1, [])
    _core.set_num_threads(2)
    testing.set_position_split("auto")

    def stop_at_row_2(r):
        if r == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        exe.sample(1, 5, 1.0, 0, on_row=stop_at_row_2)
    assert exe.split_calls() == {"split": 0, "fell_back": 0, "skipped": 0, "timed_alone": 1}
    exe.sample(1, 5, 1.0, 0)
    assert exe.split_calls() == {"split": 0, "fell_back": 0, "skipped": 0, "timed_alone": 2}
    exe.sample(1, 5, 1.0, 0)
    after = exe.split_calls()
    assert after["timed_alone"] == 2 and after["split"] + after["fell_back"] == 1, after


@pytest.mark.parametrize("policy", ["always", "auto"])
def test_on_row_and_cancel_in_split_mode(policy, restore_threads):
    sampler, _ = MODELS["keras_io"]()
    testing.set_position_split(policy)
    exe = sampler.executor(1, [])
    h = sampler.program.image_shape[0]
    _core.set_num_threads(1)
    want, _ = exe.sample(1, 5, 1.0, 0)
    for threads in (2, 3):
        _core.set_num_threads(threads)
        rows = []
        got, _ = exe.sample(1, 5, 1.0, 0, on_row=rows.append)
        assert rows == list(range(1, h + 1)) and np.array_equal(got, want)

        def stop_at_row_2(r):
            if r == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            exe.sample(1, 5, 1.0, 0, on_row=stop_at_row_2)
        # The group stopped together (no thread left waiting at a barrier) and the program is still usable.
        again, _ = exe.sample(1, 5, 1.0, 0)
        assert np.array_equal(again, want)


@pytest.mark.parametrize("members", [2, 3])
def test_barrier_orders_every_meeting(members, restore_threads):
    _core.set_num_threads(members)
    ns = testing.barrier_ns(members, 20000)  # raises if a member ever passed a meeting early
    print(f"{members} threads: {ns:.0f} ns per meeting")
    assert ns > 0
    with pytest.raises(ValueError, match="members must be in"):
        testing.barrier_ns(members + 1, 10)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        testing.barrier_ns(members, 0)


@pytest.mark.parametrize("members,failing", [(2, 0), (2, 1), (3, 2)])
def test_a_failing_thread_reaches_the_caller(members, failing, restore_threads):
    # An exception in one thread of the team: the others leave their barrier, the caller gets it, the pool works on.
    _core.set_num_threads(members)
    with pytest.raises(RuntimeError, match=f"member {failing} failed at round 50"):
        testing.team_failure(members, failing, 100)
    assert testing.barrier_ns(members, 100) > 0


def test_split_policy_is_checked(restore_threads):
    assert testing.set_position_split("never") == "auto"
    assert testing.set_position_split("auto") == "never"
    with pytest.raises(ValueError, match="policy must be 'auto', 'always', 'never' or 'auto_slow', got 'sometimes'"):
        testing.set_position_split("sometimes")


# Fused epilogues split as groups (column_split.cc): the hand-written program of test_epilogue_fusion.py (a gate
# read in place, a broadcast bias, a residual add of another group's output, a reversing gather and a concat_elu)
# with odd channel counts, fused and split on 2-4 threads with NaN-poisoned caches, against the unfused program on
# one thread: the same bits, and no member reads a value no thread wrote.
@pytest.mark.parametrize("channels", [1, 7, 17, 32, 33, 48])
def test_split_fused_epilogues_equal_the_unfused_program(channels, restore_threads):
    from test_epilogue_fusion import build, synthetic_program

    rng = np.random.default_rng(channels)
    spec, arrays = synthetic_program(channels, rng, const_bias_channels=channels if channels > 3 else 1)
    fused, unfused = build(spec, arrays, 0, True), build(spec, arrays, 0, False)
    testing.set_position_split("always")
    for batch in (1, 2):
        image = rng.integers(0, 2, (batch,) + fused.image_shape).astype(np.float32)
        _core.set_num_threads(1)
        want_head = unfused.teacher_forced(image)
        want = unfused.sample(batch, 77, 0.9, 2)
        assert np.isfinite(want_head).all()
        for threads in (2, 3, 4):
            _core.set_num_threads(threads)
            got_head = fused.teacher_forced(image)
            got = fused.sample(batch, 77, 0.9, 2)
            assert np.array_equal(got_head.view(np.uint8), want_head.view(np.uint8)), (channels, batch, threads)
            for a, b in zip(got, want):
                assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), (channels, batch, threads)


def test_the_cached_split_plan_follows_a_fusion_change(restore_threads):
    # The split plan (and its packed weight windows) is kept with the program per thread count (split_plan);
    # switching fusion prepares the program again and must drop it: a stale plan would run the unfused steps with
    # the fused groups' shares (steps left uncomputed: NaN from the poisoned caches, or other bits).
    from test_epilogue_fusion import build, synthetic_program

    spec, arrays = synthetic_program(33, np.random.default_rng(5))
    program, reference = build(spec, arrays, 0, True), build(spec, arrays, 0, False)
    testing.set_position_split("always")
    _core.set_num_threads(1)
    want = reference.sample(1, 11, 1.0, 0)
    _core.set_num_threads(2)
    for fused in (True, False, True):
        testing.set_epilogue_fusion(program, fused)
        got = program.sample(1, 11, 1.0, 0)
        for a, b in zip(got, want):
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), fused
        work = testing.split_work(program, 2)[1]  # step 1: in conv 0's group when fused, a plan of its own if not
        assert (work == [0, 0]) == fused and all(w > 0 for w in work) != fused, (fused, work)


def test_a_gate_splits_in_matching_windows(restore_threads):
    # 32 gate channels: the gate conv's 64 columns are four windows; window w of tanh's half (0..31) is read with
    # window w of sigmoid's (32..63), so each of two threads gets two matching windows (32 columns) and the gate's
    # chain splits with them: its bias (32 of 64 channels), tanh, sigmoid and product (16 of 32 each); the splits
    # are read in place (no op).
    from test_epilogue_fusion import build, synthetic_program

    spec, arrays = synthetic_program(32, np.random.default_rng(0))
    program = build(spec, arrays, 0, True, poison=False)
    assert testing.fused_into(program)[1:7] == [0] * 6
    work = testing.split_work(program, 2)
    assert work[0] == [32 + 32 + 3 * 16] * 2 and work[1:7] == [[0, 0]] * 6, work
    # nin's group (a constant bias broadcast joins nothing; the reversing gather joins window w with 1 - w) splits
    # too; the head conv (one column, a `dot` segment) and its bias run on one thread: the first, which draws from
    # it (so the draw needs no meeting).
    assert all(w > 0 for w in work[7]), work[7]
    assert work[16] == [2, 0], work[16]


def test_tf_op_draws_the_same_images_at_batch_1():
    # The TF op runs the executor on TF's intra-op pool, which promises no concurrency (Parallel::team_threads
    # is 1, so a barrier could deadlock there): it keeps images per thread, and draws the same bits.
    tf_sampler = pytest.importorskip("pixelcnn_fast.tf_sampler")
    sampler, _ = MODELS["gated_shifted"]()
    want = sampler.sample(1, seed=9)
    got = tf_sampler.sample_op(sampler, 1, seed=9).numpy()
    assert np.array_equal(got, want)
