"""The CPU executor's row prefixes (csrc/core/column_program.cc, plan_row_prefixes / row_prefix; docs/SAMPLER.md,
"Row prefixes"): at its first position of a row, a conv whose rows above are final by then (any conv on an undelayed
input; a gated PixelCNN's delayed vertical stack) sums the leading k of its GEMM that read them, for every position of
the row in one GEMM per image, and each position goes on from those sums over the taps of its own row. It is the same float operations in the same order as one sum, so the executor with
prefixes must write exactly the bits it writes without them -- checked here on every fixture program (colour passes
with their segments, per-image constants, mixture heads), on the zoo (delayed vertical stacks and u streams, with
prefixes where their rows above are final in time; shifts), on hand-written convs of every kernel size, dilation and offset up to
widths and heights of 1 (every position at a border: all gathered), at batch 1, 2 and 3, with ring caches and the
prefix sums poisoned with NaN, on one thread and split across two (each member its own columns' prefixes). The carry
(a position adds the next one's left tap, which reads its own pixel, to that one's sums; in split mode interleaved
with its own centre by Kernels::gemm_pair) is part of the prefixed path and held to the same bits; the CI reruns this
file with every microkernel build the CPU has (PIXELCNN_FAST_ISA)."""

import numpy as np
import pytest

from fixtures import make_programs
from pixelcnn_fast import _core
from pixelcnn_fast._core import testing as core_testing

PROGRAMS = make_programs.load()
head_levels = make_programs.head_levels
conv_chain = make_programs.conv_chain


def build(spec, arrays, n, prefixes):
    program = _core.ColumnProgram.from_spec(spec, arrays, n)
    core_testing.set_row_prefixes(program, prefixes)
    core_testing.set_poison_caches(program, True)
    return program


def same_bits(a, b, what):
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)), what


# (threads, policy): one thread; two splitting every row (batch 1: the carry interleaved, gemm_pair); two with row 0 on
# one thread and a fallback to one thread a few positions into row 1 (the carry in whole sums, from there on too).
RUNS = ((1, "always"), (2, "always"), (2, "auto_slow"))


def assert_prefixes_change_no_bit(spec, arrays, n, batches, rng, levels=None, runs=RUNS):
    """Prefixes on == off, bit for bit: teacher-forced heads, levels and margins; returns row_prefix_k."""
    on, off = build(spec, arrays, n, True), build(spec, arrays, n, False)
    assert all(k == [] for k in core_testing.row_prefix_k(off))
    h, w, c = on.image_shape
    levels = levels or head_levels(spec)
    for batch in batches:
        image = rng.integers(0, levels, (batch, h, w, c)).astype(np.float32) / max(levels - 1, 1)
        seed = int(rng.integers(0, 2 ** 63))
        for t, policy in runs:
            _core.set_num_threads(t)
            core_testing.set_position_split(policy)
            want = off.teacher_forced(image)
            assert np.isfinite(want).all()
            same_bits(on.teacher_forced(image), want, f"teacher-forced head, batch {batch}, {t} threads")
            lv_on, mg_on = on.sample(batch, seed, 0.9, 2)
            lv_off, mg_off = off.sample(batch, seed, 0.9, 2)
            same_bits(lv_on, lv_off, f"levels, batch {batch}, {t} threads")
            same_bits(mg_on, mg_off, f"margins, batch {batch}, {t} threads")
    return core_testing.row_prefix_k(on)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_fixture_programs_prefixes_change_no_bit(name, rng, restore_threads):
    spec, arrays, n = PROGRAMS[name]
    pk = assert_prefixes_change_no_bit(spec, arrays, n, [n] if n else [1, 3], rng)
    # Every fixture model starts with a masked conv over the rows above; the RGB ones' colour groups of 4 channels
    # are narrow (dot) segments, which sum along k in vector lanes and keep their whole sums.
    assert any(k for k in pk) == (name not in ("rgb_3x256", "dilated_rgb_groups")), pk


ZOO = ["gated_shifted", "gated_masked_conditional", "pixelcnn_pp_grey", "pixelcnn_pp_rgb", "vqvae_prior_one_hot",
       "rgb_3x256_wide"]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_programs_prefixes_change_no_bit(name, rng, restore_threads):
    """The zoo's models, and the blog's RGB model with colour groups wide enough for GEMM panels (segments with
    different prefixes: a group's taps at the centre read the groups before it)."""
    from fixtures import seed_models, zoo_models
    from pixelcnn_fast.sampler import Sampler

    if name == "rgb_3x256_wide":
        sm = seed_models.rgb_3x256(height=5, width=6, hidden_dim=8, out_dim=16, n_layers=2)
        sampler = Sampler(sm.model, head=sm.head, value_map=sm.value_map, image_shape=sm.image_shape)
        levels, conditions = 256, []
    else:
        zm = zoo_models.build(name, height=5, width=6)
        sampler = Sampler(zm.model, head=zm.head, levels=zm.levels, value_map=zm.value_map)
        levels = zm.levels
        conditions = [np.eye(10, dtype=np.float32)[[3, 8]]] if zm.num_classes else []
    for batch in (1, 2):
        sampler.executor(batch, [c[:batch] for c in conditions])
        spec, arrays = sampler.last_spec
        pk = assert_prefixes_change_no_bit(spec, arrays, batch, [batch], rng, levels=levels)
    if name == "rgb_3x256_wide":
        assert sum(1 for k in pk if k) >= 2, pk
    if name == "gated_shifted":  # the delayed vertical stack's convs (delay 0, x) sum their row above at (i, 0)
        steps = [ln for ln in spec.splitlines() if ln.split()[0] in
                 ("conv", "binary", "act", "concat", "gather", "softmax", "reduce", "shift", "embed", "onehot")]
        assert len(steps) == len(pk), (len(steps), len(pk))
        stack = [k for k, ln in enumerate(steps) if ln.startswith("conv ") and " delay=0," in ln]
        assert stack and all(pk[k] for k in stack), (stack, pk)


@pytest.mark.parametrize("height,width", [(1, 1), (1, 6), (4, 1), (3, 2), (6, 7), (9, 5)])
@pytest.mark.parametrize("kh,kw,dh,dw", [(3, 3, 1, 1), (5, 5, 1, 1), (7, 7, 1, 1), (3, 5, 2, 1), (5, 3, 1, 3),
                                         (15, 15, 1, 2)])
def test_convs_of_every_size_and_dilation_change_no_bit(height, width, kh, kw, dh, dw, rng, restore_threads):
    channels = int(rng.choice([5, 16, 33, 80]))
    spec, arrays = conv_chain(rng, height, width, kh, kw, dh, dw, channels)
    pk = assert_prefixes_change_no_bit(spec, arrays, 0, [1, 3], rng)
    # The first conv: its kh // 2 rows above (kw taps each, one channel); the mask-B conv: its row above (3 taps of
    # every channel) unless its C // 2 + 1 outputs are a narrow (dot) product; the bias, the relu and the head none.
    wide = channels // 2 + 1 > 4
    assert pk == [[(kh // 2) * kw], [], [], [3 * channels] if wide else [], []], pk
    # The mask-B conv's carry: its tap left of the position is (0, -1) unless dilated along the row.
    program = _core.ColumnProgram.from_spec(spec, arrays, 0)
    assert core_testing.row_carry(program) == [0, 0, 0, channels if wide and dw == 1 else 0, 0]


def test_a_wide_dilated_kernel_reads_its_many_ranges_in_place(rng, restore_threads):
    """A 15x15 first conv dilated 2 along rows on a 9x32 image: from row 7 its 105 rows-above taps lie inside the
    image at positions 14..17 and are read in place as 105 separate k ranges (more than the GEMM part's stack
    buffer holds: gather_plan.cc PartRanges)."""
    spec, arrays = conv_chain(rng, 9, 32, 15, 15, 1, 2, 16)
    pk = assert_prefixes_change_no_bit(spec, arrays, 0, [1, 2], rng)
    assert pk[0] == [105], pk


@pytest.mark.parametrize("offset", [(-2, -1), (-3, 0), (-1, -3)])
def test_offset_taps_in_rows_above_are_summed_at_the_row_start(offset, rng, restore_threads):
    """A pad + VALID conv (2x3 taps from (oy, ox)): with both rows above (a down-shift folded into the conv) its
    whole product is a prefix and a position runs only its epilogue; from (-1, -3), the row above's 3 taps."""
    spec, arrays = conv_chain(rng, 5, 6, 2, 3, 1, 1, 16, offset=offset)
    pk = assert_prefixes_change_no_bit(spec, arrays, 0, [1, 2], rng)
    assert pk[0] == [6 if offset[0] <= -2 else 3], pk


def test_keras_io_convs_have_their_row_prefixes():
    """keras.io's model at full size: the 7x7 mask-A conv sums 21 of its 24 taps at a row's first position, each 3x3 mask-B
    conv 384 of its 640 k (the row above's three taps of 128 channels), the 1x1 convs and the head none."""
    from fixtures import seed_models
    from pixelcnn_fast.sampler import Sampler

    sampler = Sampler(seed_models.keras_io(full=True).model, head="bernoulli")
    exe = sampler.executor(1, [])
    pk = [k for k in core_testing.row_prefix_k(exe) if k]
    assert pk == [[21]] + [[384]] * 5, pk
    # Each 3x3 conv's carry: the next position's left tap (128 channels) summed with the centre.
    assert [c for c in core_testing.row_carry(exe) if c] == [128] * 5
