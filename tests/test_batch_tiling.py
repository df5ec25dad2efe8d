"""An image's bits do not depend on the batch it is drawn in, whatever register tiles the executor's GEMMs use for that
batch (core/kernels_isa.inc: balanced 4-6-row tiles; on AVX-512, 8-row x 2-vector tall tiles when a thread's images
are a multiple of 8, up to 64; 1-3-row tiles across several B panels, the wide tiles). The tiles start from the row prefixes' sums (GemmArgs::init) and end in the fused
epilogues (bias, activation, residual add) at their own column offsets, which a kernel-level test does not reach: so
here every fixture program, and hand-written conv chains whose prefixed convs have more outputs than one tall tile
covers, draw batches of 7, 8, 16 and 24 images (3 + 4, 8 or 12 per thread on two threads; 7 as a 4-row tile and a
wide 3-row one below it, 8 to 24 on one thread) and each image must
equal the same image drawn alone (image_offset), bit for bit: levels, margins and the teacher-forced head. The CI reruns this file with every microkernel build the CPU has (PIXELCNN_FAST_ISA)."""

import numpy as np
import pytest

from fixtures import make_programs
from pixelcnn_fast import _core
from pixelcnn_fast._core import testing as core_testing

PROGRAMS = {name: p for name, p in make_programs.load().items() if p[2] == 0}  # batch-free: any n


def same_bits(a, b, what):
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)), what


def assert_images_do_not_depend_on_their_batch(name, spec, arrays, rng):
    program = _core.ColumnProgram.from_spec(spec, arrays, 0)
    core_testing.set_poison_caches(program, True)
    h, w, c = program.image_shape
    levels = make_programs.head_levels(spec)
    seed, offset = int(rng.integers(0, 2 ** 63)), int(rng.integers(0, 1000))
    alone = {}  # image index -> (levels, margins, teacher-forced head), each drawn in a call of its own on one thread
    _core.set_num_threads(1)
    image = rng.integers(0, levels, (24, h, w, c)).astype(np.float32) / max(levels - 1, 1)
    for i in range(24):
        lv, mg = program.sample(1, seed, 0.9, offset + i)
        alone[i] = (lv[0], mg[0], program.teacher_forced(image[i:i + 1])[0])
    for threads in (1, 2):
        _core.set_num_threads(threads)
        for batch in (7, 8, 16, 24):
            lv, mg = program.sample(batch, seed, 0.9, offset)
            head = program.teacher_forced(image[:batch])
            for i in range(batch):
                what = f"{name}: image {i} of a batch of {batch} on {threads} threads"
                same_bits(lv[i], alone[i][0], what + ", levels")
                same_bits(mg[i], alone[i][1], what + ", margins")
                same_bits(head[i], alone[i][2], what + ", teacher-forced head")


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_fixture_images_do_not_depend_on_their_batch(name, rng, restore_threads):
    spec, arrays, _ = PROGRAMS[name]
    assert_images_do_not_depend_on_their_batch(name, spec, arrays, rng)


@pytest.mark.parametrize("channels", [40, 70, 130])
def test_prefixed_wide_convs_do_not_depend_on_their_batch(channels, rng, restore_threads):
    """A 7x7 mask-A conv to C channels (its bias fused) and a 3x3 mask-B conv to C // 2 + 1, both with row prefixes:
    tall tiles at column offsets 32, 64, ... start from the prefix sums and add the bias of their own columns."""
    spec, arrays = make_programs.conv_chain(rng, 5, 6, 7, 7, 1, 1, channels)
    assert_images_do_not_depend_on_their_batch(f"conv chain to {channels} channels", spec, arrays, rng)
