"""Tests: the package without TensorFlow (a GPU machine may have none) -- the import, the NumPy/CUDA modules,
tests/test_cuda.py, and a build from a copy of the sources, each in a subprocess where tensorflow and keras
cannot be imported."""

import os
import re
import shutil
import subprocess
import sys

import pytest

import pixelcnn_fast
from pixelcnn_fast._version import TF_REQUIREMENT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The pixelcnn_fast under test (this checkout's in-place build, or an installed one) comes first on the path.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pixelcnn_fast.__file__)))

# Prepended to every child's code: tensorflow and keras raise ModuleNotFoundError as if not installed.
BLOCK_TF = '''
import sys


class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTensorFlow())
'''

TF_NAMES = ["MaskedConv2D", "Sampler", "check", "convert", "LoweringError", "NotCausalError"]


def run_without_tf(code, *args, path=PACKAGE_PARENT, cwd=REPO, env=None):
    environ = dict(os.environ, **(env or {}))
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", BLOCK_TF + code, *args], cwd=cwd, env=environ,
                          capture_output=True, text=True)


def test_import_and_numpy_cuda_modules_without_tensorflow():
    proc = run_without_tf(f'''
import numpy as np
import pixelcnn_fast, pixelcnn_fast.cuda
from pixelcnn_fast import _core

info = pixelcnn_fast.build_info()
assert info["version"] == pixelcnn_fast.__version__, info
assert pixelcnn_fast.__file__.startswith({PACKAGE_PARENT!r}), pixelcnn_fast.__file__
y = _core.masked_conv2d_forward(np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 2, 2), np.float32), "A")
assert y.shape == (1, 4, 4, 2) and y[0, 0, 0, 0] == 0 and y[0, 1, 1, 0] == 8, y[0, :, :, 0]  # 4 live taps x 2
reason = pixelcnn_fast.cuda.unavailable_reason()
if info["cuda"] == "built":
    import pixelcnn_fast._cuda
    assert isinstance(pixelcnn_fast._cuda.device_problem(), str)
for name in {TF_NAMES!r}:
    try:
        getattr(pixelcnn_fast, name)
    except ImportError as e:
        assert str(e).startswith(f"pixelcnn_fast.{{name}} needs TensorFlow {TF_REQUIREMENT}"), e
        assert "pixelcnn_fast.cuda" in str(e) and "pixelcnn_fast._core" in str(e), e
    else:
        raise AssertionError(name + " did not raise")
try:
    from pixelcnn_fast import Sampler
except ImportError as e:
    print("MESSAGE", e)
else:
    raise AssertionError("from pixelcnn_fast import Sampler did not raise")
assert set(pixelcnn_fast.__all__) <= set(dir(pixelcnn_fast))
assert not hasattr(pixelcnn_fast, "no_such_name")
assert "tensorflow" not in sys.modules and "keras" not in sys.modules
print("OK", reason)
''')
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MESSAGE pixelcnn_fast.Sampler needs TensorFlow" in proc.stdout


def test_the_tf_names_load_lazily_and_register_the_keras_classes():
    # A fresh process with TensorFlow installed: a bare import does not load it; the first TF name loads
    # the layers and models, so a saved model with ResidualBlock / MaskedConv2D loads afterwards.
    pytest.importorskip("tensorflow")
    code = '''
import sys
import pixelcnn_fast
assert "tensorflow" not in sys.modules
assert pixelcnn_fast.check.__module__ == "pixelcnn_fast.program.report"
import keras
for name in ("pixelcnn_fast>ResidualBlock", "pixelcnn_fast>MaskedConv2D"):
    assert keras.saving.get_registered_object(name) is not None, name
from pixelcnn_fast import Sampler, MaskedConv2D, models
assert pixelcnn_fast.layers.MaskedConv2D is MaskedConv2D
print("OK")
'''
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH"))
                                                          if p), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environ, capture_output=True, text=True)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_cuda_tests_pass_without_tensorflow():
    proc = run_without_tf("import pytest\nsys.exit(pytest.main(sys.argv[1:]))\n",
                          "-q", "-rs", "-p", "no:cacheprovider", os.path.join("tests", "test_cuda.py"))
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert re.search(r"\b\d+ passed", proc.stdout), proc.stdout[-2000:]
    # Every skip says why (no CUDA build / no CuPy / no device), never a bare skip.
    for line in proc.stdout.splitlines():
        if line.startswith("SKIPPED"):
            assert re.match(r"SKIPPED \[\d+\] \S+:\d+: \S", line), line


def _copy_sources(dst):
    ignore = shutil.ignore_patterns("*.so", "*.o", "_build_info.py", "__pycache__", "build")
    for name in ("csrc", "pixelcnn_fast", "build_support"):
        shutil.copytree(os.path.join(REPO, name), os.path.join(dst, name), ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(os.path.join(REPO, name), dst)


def test_build_without_tensorflow(tmp_path):
    """setup.py where TensorFlow cannot be imported (CUDA off, to stay quick): no _tf_ops, no TF -D flags on
    the core, the record says why, and the result imports and runs."""
    if not os.path.exists(os.path.join(REPO, "setup.py")):
        pytest.skip("no source checkout next to the tests")
    src = str(tmp_path / "src")
    _copy_sources(src)
    build = run_without_tf("import runpy\nsys.argv = ['setup.py', 'build_ext', '--inplace', '-j2']\n"
                           "runpy.run_path('setup.py', run_name='__main__')\n",
                           path=None, cwd=src, env={"PIXELCNN_FAST_CUDA": "0"})
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-6000:]
    assert "building without the TF ops (not built: TensorFlow not importable" in log, log[-3000:]
    compiles = [line for line in log.splitlines() if re.search(r"\s-c\s", line)]
    assert compiles and not [c for c in compiles if "-D_GLIBCXX_USE_CXX11_ABI" in c or "-DEIGEN" in c], compiles
    assert not os.path.exists(os.path.join(src, "pixelcnn_fast", "_tf_ops.so"))
    check = run_without_tf(f'''
import numpy as np
import pixelcnn_fast
from pixelcnn_fast import _core, _ext
assert pixelcnn_fast.__file__.startswith({src!r}), pixelcnn_fast.__file__
info = pixelcnn_fast.build_info()
assert info["tensorflow"] is None and info["backends"] == ["cpu"], info
assert info["tf_ops"].startswith("not built: TensorFlow not importable"), info
assert info["cuda"] == "not built: disabled by PIXELCNN_FAST_CUDA=0", info
x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
k = np.random.default_rng(1).standard_normal((3, 3, 3, 6)).astype(np.float32)
y = _core.masked_conv2d_forward(x, k, "B", color_groups=3)
from pixelcnn_fast._core import testing
y_elementwise = testing.masked_conv2d_forward_elementwise(x, k, "B", color_groups=3)
np.testing.assert_allclose(y, y_elementwise, rtol=1e-5, atol=1e-5)
try:
    _ext.tf_ops()
except ImportError as e:
    assert "built without its TensorFlow ops (not built: TensorFlow not importable" in str(e), e
    print("MESSAGE", e)
else:
    raise AssertionError("tf_ops() did not raise")
''', path=src, cwd=src)
    print(check.stdout)
    assert check.returncode == 0, check.stdout + check.stderr
