# Tests: the committed GPU-benchmark data (benchmarks/data/keras_io_program.npz) is what scripts/export_program.py writes now, and the CPU core reproduces its teacher logits.
"""benchmarks/bench_cuda.py runs on a GPU machine without TensorFlow from benchmarks/data/keras_io_program.npz
(the bundled model's column program, four digits and Keras' logits on them). These tests keep that file from
going stale silently: a change to the bundled model, the lowering or the spec writer fails here until the file
is regenerated (PYTHONPATH=. python scripts/export_program.py) and committed."""

import importlib.util
import os
import re

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NPZ = os.path.join(ROOT, "benchmarks", "data", "keras_io_program.npz")
REGENERATE = "regenerate it with `PYTHONPATH=. python scripts/export_program.py` and commit it"


def _export_module():
    spec = importlib.util.spec_from_file_location("export_program", os.path.join(ROOT, "scripts", "export_program.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exporter():
    return _export_module()


@pytest.fixture(scope="module")
def committed(exporter):
    assert os.path.isfile(NPZ), f"{NPZ} is missing: {REGENERATE}"
    return exporter.read(NPZ)


@pytest.fixture(scope="module")
def fresh(exporter):
    return exporter.export()


def test_file_is_small_and_complete():
    assert os.path.getsize(NPZ) < 3 * 2 ** 20, "the exported program should stay under 3 MiB"
    with np.load(NPZ) as z:
        keys = set(z.files)
        assert {"spec", "teacher_image", "teacher_logits"} <= keys
        assert z["spec"].shape == () and z["spec"].dtype.kind == "U"
        count = sum(1 for k in keys if k.startswith("array_"))
        assert keys == {"spec", "teacher_image", "teacher_logits"} | {f"array_{k}" for k in range(count)}
        for k in range(count):
            a = z[f"array_{k}"]
            assert a.dtype == np.float32 and a.ndim == 4, f"array_{k}: {a.dtype} {a.shape}"
        assert z["teacher_image"].dtype == np.float32 and z["teacher_image"].shape == (4, 28, 28, 1)
        assert set(np.unique(z["teacher_image"])) == {0.0, 1.0}
        assert z["teacher_logits"].dtype == np.float32 and z["teacher_logits"].shape == (4, 28, 28, 1)


def test_committed_file_matches_a_fresh_export(committed, fresh):
    spec, arrays, image, logits = committed
    # Layer names carry Keras's per-process name counters (they change with the tests run before this one).
    def unnamed(text):
        return re.sub(r" name=\S*", "", text)

    assert unnamed(spec) == unnamed(str(fresh["spec"][()])), f"the program spec changed: {REGENERATE}"
    count = sum(1 for k in fresh if k.startswith("array_"))
    assert len(arrays) == count, f"{len(arrays)} arrays committed, {count} exported now: {REGENERATE}"
    for k, a in enumerate(arrays):
        b = fresh[f"array_{k}"]
        assert a.shape == b.shape and np.array_equal(a, b), f"array_{k} changed: {REGENERATE}"
    assert np.array_equal(image, fresh["teacher_image"]), f"the teacher images changed: {REGENERATE}"
    # Keras' forward may sum in another order on another machine: the project's sampler tolerance.
    want = fresh["teacher_logits"]
    err = float(np.abs(logits - want).max())
    assert err <= 1e-5 * (float(np.abs(want).max()) + 1.0), f"teacher logits differ by {err:.2e}: {REGENERATE}"


def test_core_teacher_forcing_reproduces_teacher_logits(committed, core):
    spec, arrays, image, logits = committed
    program = core.ColumnProgram.from_spec(spec, arrays, image.shape[0])
    got = program.teacher_forced(image)
    assert got.shape == logits.shape
    err = float(np.abs(got - logits).max())
    # As tests/test_sampler.py: the cached path equals one full forward pass up to float32 summation order.
    assert err <= 1e-5 * (float(np.abs(logits).max()) + 1.0), f"max |cached - Keras| = {err:.2e}"
