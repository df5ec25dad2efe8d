"""Python front end: dataset generation (pixelcnn_fast/generate.py's shard contract, pixelcnn_fast.beam, the
`pixelcnn-fast generate` command).

Without Beam (always): shards drawn by global index hold exactly Sampler.sample's images of one call, with
the PNG of each; the manifest lists every shard with its SHA-256; a re-run skips complete shards and redraws
a deleted one byte for byte; a shard whose drawing fails leaves no file under its final name; another job
into the same directory is refused; the CLI's --local path and its message when Beam is missing.
With Beam (the test extra installs apache-beam, so CI runs these; elsewhere they skip saying so): the
DirectRunner pipeline with 1 and with 2 worker processes (multi_processing) writes byte-identical shards, the
same as the local runner's, and resumes after a shard is deleted.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pixelcnn_fast import cli, generate
from pixelcnn_fast.png import read_png

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from pixelcnn_fast.models import keras_io_pixelcnn

    path = tmp_path_factory.mktemp("gen") / "small.keras"
    keras_io_pixelcnn(height=8, width=7, filters=8, blocks=1).save(path)
    return str(path)


@pytest.fixture(scope="module")
def sampler(small_model):
    return generate.load_sampler(generate.Job(small_model, "/nonexistent", 1))


def shard_bytes(out):
    return {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".tfrecord")}


def test_shards_hold_one_calls_images_and_the_manifest_lists_them(small_model, sampler, tmp_path, rng):
    seed = int(rng.integers(0, 2 ** 63))
    job = generate.Job(small_model, tmp_path / "out", n=7, seed=seed, temperature=0.9, shard_size=3)
    manifest = generate.run_local(job, sampler)
    want = sampler.sample(7, seed, 0.9)
    files = sorted(f for f in os.listdir(job.out_dir) if not f.startswith("."))
    assert files == ["images-00000-of-00003.tfrecord", "images-00001-of-00003.tfrecord",
                     "images-00002-of-00003.tfrecord", "job.json", "manifest.json"]
    records = [r for f in files[:3] for r in generate.read_shard(os.path.join(job.out_dir, f))]
    assert [r[0] for r in records] == list(range(7))
    np.testing.assert_array_equal(np.stack([r[1] for r in records]), want)
    for index, levels, png in records:  # the PNG is the image: level 1 white, 0 black
        (tmp_path / "x.png").write_bytes(png)
        np.testing.assert_array_equal(read_png(tmp_path / "x.png"), levels[:, :, 0] * 255)
    assert manifest == json.load(open(os.path.join(job.out_dir, "manifest.json")))
    assert manifest["model_sha256"] == generate.file_sha256(small_model) and manifest["seed"] == seed
    assert manifest["counts"] == {"images": 7, "shards": 3, "written_this_run": 3}
    assert [(s["first_index"], s["count"]) for s in manifest["shards"]] == [(0, 3), (3, 3), (6, 1)]
    for s in manifest["shards"]:
        assert s["sha256"] == generate.file_sha256(os.path.join(job.out_dir, s["file"]))
    assert manifest["image_shape"] == [8, 7, 1] and manifest["levels"] == 2


def test_rerun_skips_complete_shards_and_redraws_a_deleted_one(small_model, sampler, tmp_path):
    job = generate.Job(small_model, tmp_path / "out", n=9, seed=4, shard_size=4)
    generate.run_local(job, sampler)
    before = shard_bytes(job.out_dir)
    os.unlink(os.path.join(job.out_dir, "images-00001-of-00003.tfrecord"))
    # A crash's leftover: a temporary file is never taken for a shard.
    open(os.path.join(job.out_dir, ".images-00001-of-00003.tfrecord.x.tmp"), "wb").write(b"half")
    manifest = generate.run_local(job, sampler)
    assert manifest["counts"]["written_this_run"] == 1
    assert shard_bytes(job.out_dir) == before


def test_a_failed_shard_leaves_no_file_under_its_final_name(small_model, sampler, tmp_path):
    class Failing:
        levels, program = sampler.levels, sampler.program

        def sample(self, *args, **kwargs):
            raise RuntimeError("simulated crash while drawing")

    job = generate.Job(small_model, tmp_path / "out", n=5, seed=1, shard_size=2)
    job.prepare()
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate.write_shard(job, Failing(), 1)
    assert sorted(os.listdir(job.out_dir)) == ["job.json"]


def test_another_job_into_the_same_directory_is_refused(small_model, sampler, tmp_path):
    generate.run_local(generate.Job(small_model, tmp_path / "out", n=3, seed=1, shard_size=2), sampler)
    with pytest.raises(ValueError, match=r"holds another job \(seed=1, shard_size=2, this one has seed=2, "
                                         r"shard_size=3\)"):
        generate.Job(small_model, tmp_path / "out", n=3, seed=2, shard_size=3).prepare()
    for kwargs, message in [(dict(n=0), "n must be an int >= 1"), (dict(n=2, shard_size=0), "shard_size must"),
                            (dict(n=2, temperature=0), "temperature must"), (dict(n=2, seed=-1), "seed must")]:
        with pytest.raises(ValueError, match=message):
            generate.Job(small_model, tmp_path / "o2", **kwargs)


def test_cli_generate_local_and_without_beam(small_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    argv = ["generate", "--model", small_model, "--n", "5", "--shard-size", "2", "--seed", "3", "--out", str(out)]
    assert cli.main(argv + ["--local"]) == 0
    assert "5 images in 3 shard(s) of 2" in capsys.readouterr().out
    ref = tmp_path / "ref"
    generate.run_local(generate.Job(small_model, ref, n=5, seed=3, shard_size=2))
    assert shard_bytes(out) == shard_bytes(ref)
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # as if Beam were not installed
    monkeypatch.delitem(sys.modules, "pixelcnn_fast.beam", raising=False)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert 'runs on Apache Beam, which is not installed (pip install "pixelcnn-fast[beam]")' in err
    assert "--local" in err


# --------------------------------------------------------------------------- Beam (the DirectRunner)

def run_beam(small_model, out, workers):
    """`pixelcnn-fast generate` in a fresh process (Beam's worker processes import pixelcnn_fast from
    PYTHONPATH); returns its stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in sys.path if p]),
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "pixelcnn_fast.cli", "generate", "--model", small_model, "--n", "11",
                           "--shard-size", "3", "--seed", "8", "--out", str(out), "--workers", str(workers)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_beam_pipeline_one_and_two_workers_write_identical_shards_and_resume(small_model, tmp_path):
    pytest.importorskip("apache_beam", reason='Apache Beam is not installed (pip install "pixelcnn-fast[beam]"; '
                                               "the test extra installs it, so CI runs this)")
    one, two, local = tmp_path / "one", tmp_path / "two", tmp_path / "local"
    assert "11 images in 4 shard(s) of 3" in run_beam(small_model, one, 1)
    assert "4 shard(s) written now" in run_beam(small_model, two, 2)
    generate.run_local(generate.Job(small_model, local, n=11, seed=8, shard_size=3))
    assert shard_bytes(one) == shard_bytes(two) == shard_bytes(local)
    manifests = [json.load(open(d / "manifest.json")) for d in (one, two)]
    assert manifests[0]["shards"] == manifests[1]["shards"]
    before = shard_bytes(two)
    os.unlink(two / "images-00002-of-00004.tfrecord")
    assert "1 shard(s) written now" in run_beam(small_model, two, 2)
    assert shard_bytes(two) == before


def test_cli_generate_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in ("--n", "--out", "--shard-size", "--workers", "--local", "DataflowRunner", "pixelcnn-fast[beam]"):
        assert word in text, (word, text)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "generate" in capsys.readouterr().out
