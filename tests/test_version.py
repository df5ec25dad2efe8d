"""Tests: version metadata in one place (pixelcnn_fast/_version.py) and build_info()'s record of the build."""

import re

import pixelcnn_fast
from pixelcnn_fast import _version


def test_version_comes_from_version_py():
    assert pixelcnn_fast.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+)?(\.dev\d+)?", pixelcnn_fast.__version__)


def test_build_info_says_what_was_compiled():
    import tensorflow as tf

    info = pixelcnn_fast.build_info()
    assert info["version"] == pixelcnn_fast.__version__
    assert info["distribution"].startswith("pixelcnn-fast")
    assert info["tensorflow"] == tf.__version__  # built against the TF that runs it
    assert {"cpu", "tf_ops"} <= set(info["backends"])
    assert info["cpu_isas"] == ["avx512", "avx2", "generic"]
    if "cuda" in info["backends"]:
        assert info["cuda"] == "built" and info["cuda_archs"], info
        assert info["cuda_ptx"] and info["nvcc"], info
    else:
        # Not built, and why (no sources, PIXELCNN_FAST_CUDA=0, nvcc not found).
        assert info["cuda"].startswith("not built: "), info
        assert info["cuda_archs"] == [] and info["cuda_ptx"] == []
