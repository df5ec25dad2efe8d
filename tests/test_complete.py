"""Python front end + core executor + CUDA loops (host emulation) + CLI: image completion (docs/SEMANTICS.md). A known
position writes its given level instead of drawing; everything else is the sampler, so: nothing known draws
exactly `sample`'s images, the known levels come back bit for bit, and the drawn ones are the naive loop's
(which re-runs the whole model on the image with the known pixels in place: the model's conditionals),
same seed, up to float rounding at a CDF boundary. The GPU executor's loops (host emulation) draw the CPU
executor's completions; `pixelcnn-fast complete` keeps the given rows of a PNG in every completion."""

import types

import numpy as np
import pytest

from fixtures import seed_models
from sampling_checks import assert_same_images
from pixelcnn_fast import cli, naive
from pixelcnn_fast.png import read_png, write_png
from pixelcnn_fast.sampler import Sampler

CASES = [("keras_io", dict(height=6, width=7)), ("categorical4", dict(height=5, width=6)),
         ("rgb_3x256", dict(height=3, width=4)), ("conditional", dict(height=5, width=6))]
IDS = [c[0] for c in CASES]


def build(name, size):
    sm = getattr(seed_models, name)(**size)
    declared = getattr(sm.model, "inputs", None)
    sampler = Sampler(sm.model, head=sm.head, value_map=None if sm.head == "bernoulli" else sm.value_map,
                      image_shape=None if declared else sm.image_shape)
    return sm, sampler


def conditions_for(sm, n, rng):
    if not sm.num_classes:
        return None
    return [np.eye(sm.num_classes, dtype=np.float32)[rng.integers(0, sm.num_classes, n)]]


def random_case(sampler, n, rng):
    h, w, c = sampler.program.image_shape
    images = rng.integers(0, sampler.levels, (n, h, w, c)).astype(np.int32)
    per_element = rng.random((n, h, w, c)) < 0.5  # any pattern, future pixels known included
    top_rows = np.zeros((h, w), bool)
    top_rows[: h // 2] = True
    return images, per_element, top_rows


def emulated_gpu_program(sampler, n):
    """The sampler's program for n images (no conditions) as the GPU's flat program, its loops run on the host."""
    from pixelcnn_fast._core import testing
    from pixelcnn_fast.tf_sampler import program_spec

    spec, arrays = program_spec(sampler, sampler.program.evaluate_consts(n, []))
    return testing.EmulatedGpuProgram.from_spec(spec, arrays, n)


@pytest.mark.parametrize("name,size", CASES, ids=IDS)
def test_completion_keeps_the_known_levels_and_draws_the_naive_loops_rest(name, size, rng):
    sm, sampler = build(name, size)
    n, seed, offset = 3, int(rng.integers(0, 2 ** 63)), int(rng.integers(0, 1000))
    images, per_element, top_rows = random_case(sampler, n, rng)
    conds = conditions_for(sm, n, rng)
    declared = getattr(sm.model, "inputs", None)
    for known in (per_element, top_rows):
        mask = np.broadcast_to(known[None, :, :, None] if known.ndim == 2 else known, images.shape)
        got, margins = sampler.complete(images, known, seed, 0.9, conditions=conds, image_offset=offset,
                                        return_margins=True)
        assert got.dtype == np.int32 and got.shape == images.shape
        np.testing.assert_array_equal(got[mask], images[mask])  # bit for bit
        assert np.all(np.isinf(margins[mask])) and np.all(np.isfinite(margins[~mask]))
        assert got[~mask].min() >= 0 and got[~mask].max() < sampler.levels
        ref = naive.complete(sm.model, images, known, mode="rows", head=sm.head, levels=sm.levels,
                             value_map=sm.value_map, seed=seed, temperature=0.9, conditions=conds,
                             image_offset=offset, image_shape=None if declared else sm.image_shape)
        np.testing.assert_array_equal(ref.levels[mask], images[mask])
        assert_same_images(ref, types.SimpleNamespace(levels=got, margins=margins, mode="cached"), sm.levels)
        assert (ref.levels == got).mean() > 0.5


@pytest.mark.parametrize("name,size", CASES, ids=IDS)
def test_nothing_known_is_sample_and_everything_known_is_the_input(name, size, rng):
    sm, sampler = build(name, size)
    n, seed, offset = 4, int(rng.integers(0, 2 ** 63)), int(rng.integers(0, 2 ** 31))
    images, _, _ = random_case(sampler, n, rng)
    conds = conditions_for(sm, n, rng)
    h, w, _ = sampler.program.image_shape
    none = sampler.complete(images, np.zeros((h, w), bool), seed, conditions=conds, image_offset=offset)
    np.testing.assert_array_equal(none, sampler.sample(n, seed, conditions=conds, image_offset=offset))
    np.testing.assert_array_equal(sampler.complete(images, np.ones((h, w), bool), seed, conditions=conds), images)


@pytest.mark.parametrize("name,size", CASES[:3], ids=IDS[:3])
def test_emulated_gpu_loops_complete_like_the_cpu_executor(name, size, rng):
    """The CUDA kernel's loops (csrc/core/flat_program.h, run on the host) write the known levels too."""
    from test_cuda_sampler import assert_same_draws

    sm, sampler = build(name, size)
    n, seed = 5, int(rng.integers(0, 2 ** 63))
    images, per_element, _ = random_case(sampler, n, rng)
    given = np.where(per_element, images, -1).astype(np.int32)
    exe = sampler.executor(n, [])
    h, w, c = sampler.program.image_shape
    want, want_margins = exe.sample(n, seed, 1.0, 7, h, w, c, None, given)
    probe = rng.random((n, h, w, c)).astype(np.float32)
    gpu = emulated_gpu_program(sampler, n)
    head_error = 4 * float(np.abs(gpu.teacher_forced_emulated(probe, 1) - exe.teacher_forced(probe)).max())
    for ipb in (1, 2, 5):
        got, margins = gpu.sample_emulated(n, seed, 1.0, 7, ipb, given)
        np.testing.assert_array_equal(got[per_element], images[per_element])
        assert_same_draws(got, margins, want, want_margins, sampler.levels, head_error, 1.0, f"{name}, ipb {ipb}")


def test_bad_completion_input_is_refused_naming_the_argument(rng):
    sm, sampler = build("categorical4", dict(height=5, width=6))
    images = np.zeros((2, 5, 6, 1), np.int32)
    top = np.zeros((5, 6), bool)
    with pytest.raises(ValueError, match=r"Sampler.complete: images must be integer levels of shape \(n >= 1, 5, 6, "
                                         r"1\), got shape \(2, 6, 5, 1\)"):
        sampler.complete(np.zeros((2, 6, 5, 1), np.int32), top)
    with pytest.raises(ValueError, match=r"images must hold integer levels \(0 .. 3\), got dtype float32"):
        sampler.complete(images.astype(np.float32), top)
    with pytest.raises(ValueError, match=r"known must be a boolean mask, got dtype int64"):
        sampler.complete(images, top.astype(np.int64))
    with pytest.raises(ValueError, match=r"known must have shape \(5, 6\) .* or \(2, 5, 6, 1\), got \(6, 5\)"):
        sampler.complete(images, top.T)
    bad = images.copy()
    bad[1, 0, 0, 0] = 4
    top[0, 0] = True
    with pytest.raises(ValueError, match=r"known levels of images must lie in \[0, 3\], got values in \[0, 4\]"):
        sampler.complete(bad, top)
    sampler.complete(bad, ~top)  # an unknown element's value is ignored
    with pytest.raises(ValueError, match=r"Sampler.complete: seed must be an int"):
        sampler.complete(images, top, seed=-1)
    # The bindings check what reaches the core: shape, dtype, and each level (no Python check in between).
    exe = sampler.executor(2, [])
    with pytest.raises(ValueError, match=r"ColumnProgram.sample: known must be C-contiguous with shape "
                                         r"\(2, 5, 6, 1\)"):
        exe.sample(2, 0, 1.0, 0, 5, 6, 1, None, np.zeros((2, 5, 6, 2), np.int32))
    with pytest.raises(TypeError, match=r"known must have dtype int32"):
        exe.sample(2, 0, 1.0, 0, 5, 6, 1, None, np.zeros((2, 5, 6, 1), np.int64))
    for value in (4, -2):
        given = np.full((2, 5, 6, 1), -1, np.int32)
        given[1, 2, 3, 0] = value
        with pytest.raises(ValueError, match=rf"sample: known levels must be -1 \(draw\) or in \[0, 4\), got {value} "
                                             r"at flat index 45"):
            exe.sample(2, 0, 1.0, 0, 5, 6, 1, None, given)
        with pytest.raises(ValueError, match=r"sample_emulated: known levels must be -1"):
            emulated_gpu_program(sampler, 2).sample_emulated(2, 0, 1.0, 0, 1, given)


def test_cli_complete_keeps_the_given_rows(tmp_path, capsys):
    from pixelcnn_fast.models import keras_io_pixelcnn

    model_path = tmp_path / "small.keras"
    keras_io_pixelcnn(height=8, width=8, filters=8, blocks=1).save(model_path)
    digit = np.zeros((8, 8), np.uint8)
    digit[1:7, 3:5] = 255  # a "1"
    digit[2, 2] = 200      # grey reads as on (>= 128)
    write_png(tmp_path / "digit.png", digit)
    out = tmp_path / "grid.png"
    argv = ["complete", "--model", str(model_path), "--image", str(tmp_path / "digit.png"), "--keep-rows", "4",
            "--n", "3", "--seed", "5", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "kept rows 0-3 of" in text and str(out) in text
    grid = read_png(out)
    # Tiles: the given part (unknown rows grey), then the n completions (grid layout of image_grid, pad 2).
    tiles = [grid[2 + r * 10:10 + r * 10, 2 + q * 10:10 + q * 10] for r in range(2) for q in range(2)]
    binary = (digit >= 128).astype(np.uint8) * 255
    np.testing.assert_array_equal(tiles[0][:4], binary[:4])
    assert np.all(tiles[0][4:] == 128)
    for tile in tiles[1:]:
        np.testing.assert_array_equal(tile[:4], binary[:4])
        assert set(np.unique(tile[4:])) <= {0, 255}
    # The same seed gives the same PNG; the completions are Sampler.complete's.
    first = out.read_bytes()
    assert cli.main(argv) == 0 and out.read_bytes() == first
    capsys.readouterr()
    # Errors: one line, naming the flag.
    assert cli.main(argv[:6] + ["9"] + argv[7:]) == 1
    assert "--keep-rows must be in [0, 8] for the model's 8 rows, got 9" in capsys.readouterr().err
    write_png(tmp_path / "wide.png", np.zeros((8, 9), np.uint8))
    assert cli.main(["complete", "--model", str(model_path), "--image", str(tmp_path / "wide.png"), "--out",
                     str(out)]) == 1
    assert "--image 'wide.png' is 8x9x1, the model takes 8x8x1" in capsys.readouterr().err.replace(str(tmp_path) + "/", "")


def test_cli_complete_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["complete", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in ("--image", "--keep-rows", "--n", "--out", "--seed", "Sampler.complete"):
        assert word in text, (word, text)
