"""Tests: scripts/cuda12_toolkit.py assembles a CUDA 12 toolkit from registry packages (Debian 13's
nvidia-cuda-toolkit through a private apt configuration, PyPI's nvidia-cuda-*-cu12 wheels), and a copy of
the tree built with PIXELCNN_FAST_TF_CUDA_HOME pointing at it has the TF GPU kernels of every op, linked to
a static cudart, for every CUDA architecture, and loads and runs its CPU kernels on a machine without a GPU.

Downloads ~116 MB and compiles the GPU kernels (~2 minutes on 2 cores in all), so it runs only when
PIXELCNN_FAST_TEST_CUDA12_TOOLKIT=1 asks (.ci/run sets it); otherwise it skips saying so.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

from test_tf_gpu import CUDA_SMS, build_tree_copy, check_link_report, check_loads_without_a_gpu, link_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = "PIXELCNN_FAST_TEST_CUDA12_TOOLKIT"


@pytest.fixture(scope="module")
def toolkit_build(tmp_path_factory):
    if os.environ.get(ENV, "0") in ("", "0"):
        pytest.skip(f"{ENV}=1 not set: this test downloads ~116 MB (Debian's nvidia-cuda-toolkit, PyPI's CUDA "
                    f"wheels) and compiles the TF GPU kernels")
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.fail(f"{ENV}=1 but apt-get / dpkg-deb are missing: the script needs a Debian-family machine")
    d = tmp_path_factory.mktemp("cuda12")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "cuda12_toolkit.py"), str(d / "toolkit")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assembled = time.monotonic()
    # PIXELCNN_FAST_CUDA=0 (no _cuda module: quicker) turns the TF GPU kernels off too unless
    # PIXELCNN_FAST_TF_GPU=1; with PIXELCNN_FAST_TF_CUDA_HOME the toolkit is ours alone either way.
    root = build_tree_copy(d / "tree", PIXELCNN_FAST_TF_CUDA_HOME=str(d / "toolkit"), PIXELCNN_FAST_CUDA="0",
                           PIXELCNN_FAST_TF_GPU="1")
    print(f"cuda12 toolkit: assembled in {assembled - start:.0f} s, the TF GPU kernels built in "
          f"{time.monotonic() - assembled:.0f} s")
    return root


def test_toolkit_builds_the_tf_gpu_kernels_of_every_op_linked_statically(toolkit_build):
    check_link_report(link_report(str(toolkit_build / "pixelcnn_fast" / "_tf_ops.so")))


def test_the_build_loads_and_registers_every_gpu_kernel_without_a_gpu(toolkit_build, tmp_path):
    info = check_loads_without_a_gpu(toolkit_build, tmp_path)
    assert info["tf_gpu_kernels"].startswith("built (CUDA 12.4"), info  # TF's major
    assert info["tf_gpu_archs"] == [f"sm_{s}" for s in CUDA_SMS], info
