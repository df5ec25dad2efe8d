"""Tests: the GPU-machine scripts on a CPU -- scripts/gpu_check.sh's stages without a GPU (they say so and
pass) and scripts/gpu_sanitize.py's driver with CuPy and the CUDA module replaced by NumPy and the CPU core
(the per-element code the CUDA kernels run), so a GPU session's few minutes are not spent on a script bug."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import pixelcnn_fast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK = os.path.join(REPO, "scripts", "gpu_check.sh")
SANITIZE = os.path.join(REPO, "scripts", "gpu_sanitize.py")


def _load_sanitize():
    spec = importlib.util.spec_from_file_location("gpu_sanitize", SANITIZE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_cupy():
    """The few CuPy names the driver uses, on NumPy arrays."""
    device = types.SimpleNamespace(synchronize=lambda: None, id=0)
    return types.SimpleNamespace(asarray=np.asarray, asnumpy=np.asarray, float32=np.float32,
                                 cuda=types.SimpleNamespace(Device=lambda *a: device))


def test_gpu_check_is_valid_bash():
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    proc = subprocess.run(["bash", "-n", CHECK], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_gpu_check_stages_without_a_gpu(tmp_path):
    """The stages after the build, on this checkout's build, with PIXELCNN_FAST_REQUIRE_GPU=0: the CUDA tests
    pass (their GPU part skipped), the GPU stages SKIP saying why (or PASS on a GPU machine), exit 0."""
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and timeout")
    if not os.path.abspath(pixelcnn_fast.__file__).startswith(os.path.join(REPO, "pixelcnn_fast")):
        pytest.skip("gpu_check.sh uses the checkout's in-place build; the package under test is installed")
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, PIXELCNN_FAST_REQUIRE_GPU="0",
               PIXELCNN_FAST_GPU_CHECK_BUDGET_S="300")
    env.pop("PIXELCNN_FAST_CUDA_ARCHS", None)
    proc = subprocess.run(["bash", CHECK, "import", "test", "sanitize", "bench"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    summary = (out / "summary.txt").read_text()
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert re.search(r"(?m)^import +PASS$", summary) and re.search(r"(?m)^test +PASS$", summary), summary
    for stage in ("sanitize-conv", "sanitize-sampler", "bench"):
        assert re.search(rf"(?m)^{stage}\S* +(PASS|SKIP: \S)", summary), summary
    assert "passed" in (out / "test.log").read_text()


def test_gpu_check_refuses_an_unknown_stage(tmp_path):
    proc = subprocess.run(["bash", CHECK, "nonsense"], cwd=REPO, env=dict(os.environ, OUT=str(tmp_path)),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown stage 'nonsense'" in proc.stderr


def test_sanitize_driver_conv_cases_on_the_cpu(core, core_testing):
    driver = _load_sanitize()
    cuda = types.SimpleNamespace(**{f"masked_conv2d_{fn}": getattr(core_testing, f"masked_conv2d_{fn}_elementwise")
                                    for fn in ("forward", "backprop_input", "backprop_filter")})
    assert driver.run_conv(_fake_cupy(), cuda, core) == 0


def test_sanitize_driver_sampler_on_the_cpu(tmp_path, monkeypatch, core):
    """The program file in the agreed format ("spec" a 0-d string array, "array_0".."array_K"), from a small
    keras.io-style model, run through the driver with the CPU ColumnProgram behind the CUDA API."""
    pytest.importorskip("tensorflow")
    from pixelcnn_fast import Sampler
    from pixelcnn_fast.models import keras_io_pixelcnn
    from pixelcnn_fast.sampler import program_spec

    sampler = Sampler(keras_io_pixelcnn(height=5, width=6, filters=8, blocks=1))
    spec, arrays = program_spec(sampler, sampler.program.evaluate_consts(2))
    path = tmp_path / "program.npz"
    np.savez(path, spec=np.array(spec), **{f"array_{k}": a for k, a in enumerate(arrays)})

    class CpuColumnProgram:  # pixelcnn_fast.cuda.ColumnProgram's API on the CPU core
        def __init__(self, spec_text, arrays, n):
            self.exe = core.ColumnProgram.from_spec(spec_text, arrays, n)
            m = re.search(r"image height=(\d+) width=(\d+) channels=(\d+)", spec_text)
            self.hwc = tuple(int(v) for v in m.groups())

        def sample(self, n, seed, temperature=1.0, image_offset=0, stream=None):
            return self.exe.sample(n, seed, temperature, image_offset, *self.hwc)

        def teacher_forced(self, image):
            return self.exe.teacher_forced(np.ascontiguousarray(image, np.float32))

    driver = _load_sanitize()
    monkeypatch.setattr(driver, "PROGRAM", str(path))
    spec_back, arrays_back, n = driver.load_program(str(path))
    assert spec_back == spec and len(arrays_back) == len(arrays) and n == 2
    assert driver.run_sampler(_fake_cupy(), types.SimpleNamespace(ColumnProgram=CpuColumnProgram)) == 0
    assert driver.run_sampler(_fake_cupy(), types.SimpleNamespace()) == driver.SKIP  # no ColumnProgram yet
