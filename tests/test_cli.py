"""Tests: the Python front end's `pixelcnn-fast` command line (cli.py) end to end, and its PNG writer (png.py)."""

# What is promised is process-level (exit status, one line on stderr, no traceback), so each kind of
# failure runs once as a real subprocess (`python -m pixelcnn_fast.cli ...`, and the installed
# `pixelcnn-fast` script). Each process imports TensorFlow (~5 s of CPU), so those runs start together
# in one module fixture and the tests read their results; variants of an already-covered path (other
# corrupt files, other unwritable --out) and --help run in-process through cli.main().

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from pixelcnn_fast import cli
from pixelcnn_fast.models import bundled_model_path, load_model
from pixelcnn_fast.png import encode_png, grid_shape, image_grid, read_png, write_png

# TensorFlow / absl log lines written at import, before our code runs (TF_CPP_MIN_LOG_LEVEL does not
# silence the ones logged before absl is initialised): not ours, so not counted as our error lines.
_TF_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|To enable the following "
                       r"instructions|.*cuda|.*oneDNN)")


def _own_stderr_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and not _TF_NOISE.match(line)]


def _script():
    """The `pixelcnn-fast` console script of this interpreter's environment, or None."""
    found = os.path.join(os.path.dirname(sys.executable), "pixelcnn-fast")
    return found if os.path.isfile(found) else shutil.which("pixelcnn-fast")


# ----------------------------------------------------------------------------------- models on disk

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import keras

    from pixelcnn_fast import MaskedConv2D
    from pixelcnn_fast.models import keras_io_pixelcnn

    d = tmp_path_factory.mktemp("models")
    # The bundled architecture (residual blocks included) at toy size: fast to lower, load and sample.
    small = keras_io_pixelcnn(height=8, width=8, filters=8, blocks=1)
    small.save(d / "small.keras")
    # Non-causal: a plain 3x3 Conv2D after the mask-A layer reads the next row and column.
    inputs = keras.Input((8, 8, 1))
    x = MaskedConv2D(4, 3, mask_type="A", activation="relu", name="first_masked")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="peeking_conv")(x)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="head")(x)
    keras.Model(inputs, outputs, name="peeking").save(d / "peeking.keras")
    (d / "corrupt.keras").write_bytes(b"this is not a zip archive" * 10)
    whole = (d / "small.keras").read_bytes()
    (d / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    # A zip archive that is not a Keras model: Keras's own error comes through on one line.
    with zipfile.ZipFile(d / "emptyzip.keras", "w") as z:
        z.writestr("readme.txt", "no config here")
    (d / "a_file").write_text("a file where a directory is expected")
    return d


@pytest.fixture(scope="module")
def runs(models):
    """name -> CompletedProcess for every CLI run of this module, run concurrently (see the header)."""
    py = [sys.executable, "-m", "pixelcnn_fast.cli"]
    small, out = str(models / "small.keras"), models / "out"
    out.mkdir()
    jobs = {
        "sample": py + ["sample", "--model", small, "--n", "5", "--seed", "3", "--out", str(out / "s.png")],
        "check_peeking": py + ["check", str(models / "peeking.keras")],
        "missing": py + ["sample", "--model", str(models / "nope.keras"), "--out", str(out / "m.png")],
        "corrupt": py + ["sample", "--model", str(models / "corrupt.keras"), "--out", str(out / "c.png")],
        "n_negative": py + ["sample", "--model", small, "--n", "-1", "--out", str(out / "n.png")],
        "temperature_0": py + ["sample", "--model", small, "--temperature", "0", "--out", str(out / "t.png")],
        "out_no_dir": py + ["sample", "--model", small, "--out", str(models / "no_such_dir" / "x.png")],
        "unknown_command": py + ["frobnicate"],
    }
    if os.geteuid() != 0:  # root writes into a mode-0555 directory anyway
        locked = models / "locked"
        locked.mkdir(mode=0o555)
        jobs["out_locked"] = py + ["sample", "--model", small, "--out", str(locked / "x.png")]
    bundled = bundled_model_path()
    if os.path.isfile(bundled):
        jobs["bundled"] = py + ["sample", "--n", "4", "--out", str(out / "bundled.png"), "--quiet"]
    script = _script()
    if script:
        jobs["script_sample"] = [script, "sample", "--model", small, "--n", "2", "--out", str(out / "e.png")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    env.pop("PIXELCNN_FAST_TRACEBACK", None)

    def run(argv):
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(models), timeout=300)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        futures = {name: pool.submit(run, argv) for name, argv in jobs.items()}
        results = {name: f.result() for name, f in futures.items()}
    results["_out"] = out
    return results


def _main(capsys, argv):
    """cli.main(argv) in this process: (exit status, stdout, stderr)."""
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = _own_stderr_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pixelcnn-fast"), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------- sample / check

def test_sample_writes_a_png_grid(runs):
    proc = runs["sample"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    path = runs["_out"] / "s.png"
    assert f"wrote 5 samples (2x3 grid) to {path}" in proc.stdout
    assert "row 8/8" in proc.stderr  # the progress bar
    image = read_png(path)
    # 2 rows x 3 columns of 8x8 images, 2 pixels of padding between and around.
    assert image.shape == (2 + 2 * 10, 2 + 3 * 10)
    assert set(np.unique(image).tolist()) <= {0, 128, 255}
    cells = [image[2 + r * 10:10 + r * 10, 2 + c * 10:10 + c * 10] for r in range(2) for c in range(3)]
    assert all(set(np.unique(cell).tolist()) <= {0, 255} for cell in cells[:5])  # binary digits
    assert (cells[5] == 128).all()  # the unused sixth cell is padding


def test_sample_matches_the_sampler(runs, models):
    """The PNG holds exactly what Sampler.sample draws for the same seed."""
    import keras

    from pixelcnn_fast import Sampler

    levels = Sampler(keras.models.load_model(models / "small.keras", compile=False)).sample(5, seed=3)
    assert np.array_equal(read_png(runs["_out"] / "s.png"), image_grid(levels, 2))


def test_check_prints_the_report(capsys, models):
    code, out, err = _main(capsys, ["check", str(models / "small.keras")])
    assert code == 0, err
    assert "causal: yes" in out and "model 'pixelcnn'" in out


def test_check_refuses_a_non_causal_model_naming_the_layer(runs):
    line = _assert_one_line_error(runs["check_peeking"], "not causal", "peeking_conv")
    assert runs["check_peeking"].returncode == 1, line


def test_sample_refuses_a_non_causal_model(capsys, models, tmp_path):
    code, out, err = _main(capsys, ["sample", "--model", str(models / "peeking.keras"), "--out",
                                    str(tmp_path / "p.png")])
    assert code == 1 and err.count("\n") == 1 and "peeking_conv" in err, err
    assert not (tmp_path / "p.png").exists()


def test_sample_categorical_head_flags(capsys, tmp_path):
    """A 4-level model with raw logits: --head and --value-map reach the Sampler; the grid maps 0..3."""
    import keras

    from pixelcnn_fast import MaskedConv2D

    inputs = keras.Input((6, 6, 1))
    x = MaskedConv2D(8, 3, mask_type="A", activation="relu")(inputs)
    keras.Model(inputs, keras.layers.Conv2D(4, 1)(x)).save(tmp_path / "cat.keras")
    base = ["sample", "--model", str(tmp_path / "cat.keras"), "--n", "3", "--quiet", "--out",
            str(tmp_path / "cat.png")]
    code, out, err = _main(capsys, base)
    assert code == 1 and err.count("\n") == 1 and "--head" in err, err
    code, out, err = _main(capsys, base + ["--head", "categorical"])
    assert code == 1 and err.count("\n") == 1 and "value_map" in err and "--value-map" in err, err
    code, out, err = _main(capsys, base + ["--head", "categorical", "--value-map", "level/(N-1)"])
    assert code == 0, err
    image = read_png(tmp_path / "cat.png")
    assert image.shape == (2 + 2 * 8, 2 + 2 * 8)
    assert set(np.unique(image).tolist()) <= {0, 85, 128, 170, 255}


def test_sample_and_bench_a_logistic_mixture_head(capsys, tmp_path):
    """An RGB model ending in a 10K mixture head: --head logistic_mixture reaches the Sampler (never guessed), the
    grid is RGB over 256 levels, and bench's naive loop feeds the levels back as the Sampler does."""
    import keras

    from pixelcnn_fast import MaskedConv2D

    inputs = keras.Input((6, 6, 3))
    x = MaskedConv2D(8, 3, mask_type="A", activation="relu")(inputs)
    keras.Model(inputs, keras.layers.Conv2D(20, 1)(x)).save(tmp_path / "mix.keras")
    base = ["sample", "--model", str(tmp_path / "mix.keras"), "--n", "3", "--quiet", "--out",
            str(tmp_path / "mix.png")]
    code, out, err = _main(capsys, base)
    assert code == 1 and err.count("\n") == 1 and "--head" in err, err
    code, out, err = _main(capsys, base + ["--head", "logistic_mixture"])
    assert code == 0, err
    assert read_png(tmp_path / "mix.png").shape == (2 + 2 * 8, 2 + 2 * 8, 3)
    code, out, err = _main(capsys, ["bench", "--model", str(tmp_path / "mix.keras"), "--head", "logistic_mixture",
                                    "--n", "2", "--steps", "2", "--repeats", "1"])
    assert code == 0, err
    assert "logistic_mixture head, 256 levels" in out and "same draws as the naive loop on row 0: 36 of 36" in out, out


def test_bench_prints_both_times_and_the_ratio(capsys, models):
    code, out, err = _main(capsys, ["bench", "--model", str(models / "small.keras"), "--n", "2", "--steps", "2",
                                    "--repeats", "1"])
    assert code == 0, err
    assert "cached sampler:" in out and "EXTRAPOLATED" in out and "x faster" in out
    assert "same draws as the naive loop on row 0: 16 of 16" in out


# ----------------------------------------------------------------------------------- one-line errors

@pytest.mark.parametrize("name, fragments", [
    ("missing", ["cannot load model", "nope.keras", "no such file"]),
    ("corrupt", ["cannot load model", "corrupt.keras", "corrupt or truncated"]),
    ("n_negative", ["--n must be an integer in [1, 2**32)", "-1"]),
    ("temperature_0", ["--temperature must be a positive finite float32", "got 0"]),
    ("out_no_dir", ["cannot write --out", "does not exist"]),
    ("out_locked", ["cannot write --out", "not writable"]),
    ("unknown_command", ["invalid choice", "frobnicate"]),
])
def test_errors_are_one_line_without_traceback(runs, name, fragments):
    if name not in runs:
        pytest.skip("running as root: a mode-0555 directory is writable, nothing to refuse")
    _assert_one_line_error(runs[name], *fragments)


@pytest.mark.parametrize("argv, fragments", [
    (["check", "{models}/truncated.keras"], ["cannot load model", "truncated.keras", "corrupt or truncated"]),
    (["check", "{models}/emptyzip.keras"], ["cannot load model", "emptyzip.keras"]),
    (["check", "{models}"], ["cannot load model", "directory"]),
    (["sample", "--out", "{models}/a_file/x.png"], ["cannot write --out"]),
    (["sample", "--out", "{models}"], ["cannot write --out", "is a directory"]),
    (["sample", "--seed", "-2"], ["--seed must be"]),
    (["sample", "--value-map", "level/7"], ["--value-map must be"]),
    (["bench", "--n", "0"], ["--n must be an integer in [1, 2**32), got 0"]),
])
def test_more_errors_in_process(capsys, models, argv, fragments):
    argv = [a.format(models=models) for a in argv]
    if argv[0] == "sample":
        argv += ["--model", str(models / "small.keras")]
    code, out, err = _main(capsys, argv)
    assert code == 1 and err.count("\n") == 1 and err.startswith(f"pixelcnn-fast {argv[0]}: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_no_png_is_written_on_argument_errors(runs):
    # The checks run before any model is loaded or sampled: nothing half-done is left behind.
    for name in ("n.png", "t.png", "m.png", "c.png"):
        assert not (runs["_out"] / name).exists()


def test_installed_script(runs):
    if "script_sample" not in runs:
        pytest.skip("no `pixelcnn-fast` script next to this interpreter: reinstall with pip install -e . "
                    "to register the [project.scripts] entry point")
    proc = runs["script_sample"]
    assert proc.returncode == 0, proc.stderr
    assert read_png(runs["_out"] / "e.png").shape == (2 + 10, 2 + 2 * 10)


def test_bundled_model_samples(runs):
    if "bundled" not in runs:
        pytest.skip(f"the bundled model {bundled_model_path()} does not exist yet "
                    f"(train it with `pixelcnn-fast train --out <that path>`)")
    proc = runs["bundled"]
    assert proc.returncode == 0, proc.stderr
    assert read_png(runs["_out"] / "bundled.png").shape == (2 + 2 * 30, 2 + 2 * 30)


def test_load_model_reads_the_bundled_architecture(models):
    """keras_io_pixelcnn's residual blocks reload from .keras (they need a build(): the bundled model has 5)."""
    model = load_model(str(models / "small.keras"))
    assert [layer.name for layer in model.layers if "residual" in layer.name] == ["residual_block_0"]


# ----------------------------------------------------------------------------------- --help, in-process

@pytest.mark.parametrize("argv, expect", [
    ([], ["sample", "check", "bench", "train"]),
    (["sample"], ["--model", "--n", "--seed", "--temperature", "--backend", "--out", "--head", "--value-map"]),
    (["check"], ["PATH.keras", "causal"]),
    (["bench"], ["--model", "--n", "--steps", "extrapolated"]),
    (["train"], ["--epochs", "--out", "--limit"]),
])
def test_help(capsys, argv, expect):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in expect:
        assert word in text, (word, text)


def test_value_map_parsing():
    assert cli.value_map_option("level/255") == "level/255"
    assert cli.value_map_option("0.5,-1") == (0.5, -1.0)
    for bad in ("level/256", "1,2,3", "a,b", "nan,0"):
        with pytest.raises(cli.CliError, match="--value-map"):
            cli.value_map_option(bad)


# ----------------------------------------------------------------------------------- PNG

@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (4, 6, 3), (1, 1)])
def test_png_round_trip(tmp_path, shape):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    write_png(tmp_path / "a.png", a)
    back = read_png(tmp_path / "a.png")
    assert np.array_equal(back, a.reshape(shape[:2]) if len(shape) == 2 or shape[2] == 1 else a)


def test_png_decodes_with_pillow_when_present(tmp_path):
    """An independent decoder reads our file, and ours reads Pillow's (adaptive filters 1-4 included)."""
    image_module = pytest.importorskip("PIL.Image", reason="Pillow not installed: the independent cross-check "
                                                           "is skipped; the round trip tests still run")
    rng = np.random.default_rng(1)
    # Smooth gradients plus noise so that Pillow's adaptive filtering picks Sub/Up/Average/Paeth rows.
    ramp = np.add.outer(np.arange(40), np.arange(50)).astype(np.int64)
    for a in (np.uint8((ramp * 3 + rng.integers(0, 4, ramp.shape)) % 256),
              np.uint8(np.stack([ramp, ramp * 2, 255 - ramp], -1) % 256)):
        write_png(tmp_path / "ours.png", a)
        assert np.array_equal(np.asarray(image_module.open(tmp_path / "ours.png")), a)
        image_module.fromarray(a).save(tmp_path / "pillow.png", optimize=True)
        assert np.array_equal(read_png(tmp_path / "pillow.png"), a)


def test_png_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="integers in"):
        encode_png(np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((2, 2, 2), np.uint8))
    data = bytearray(encode_png(np.zeros((3, 3), np.uint8)))
    data[-20] ^= 0xFF  # inside the IDAT chunk
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        read_png(tmp_path / "bad.png")


def test_image_grid_layout_and_levels():
    assert [grid_shape(n) for n in (1, 2, 3, 4, 5, 16, 17)] == [(1, 1), (1, 2), (2, 2), (2, 2), (2, 3),
                                                              (4, 4), (4, 5)]
    levels = np.arange(4 * 2 * 3).reshape(4, 2, 3, 1) % 4
    grid = image_grid(levels, 4, pad=1, value=7)
    assert grid.shape == (1 + 2 * 3, 1 + 2 * 4) and grid.dtype == np.uint8
    assert np.array_equal(grid[1:3, 1:4], np.array([[0, 85, 170], [255, 0, 85]], np.uint8))
    assert (grid[0] == 7).all() and (grid[:, 0] == 7).all()
    rgb = image_grid(np.zeros((2, 4, 4, 3), int), 256)
    assert rgb.shape == (2 + 4 + 2, 2 + 2 * 6, 3)
    with pytest.raises(ValueError, match="levels must lie"):
        image_grid(levels, 3)
