"""Build: compiles csrc/core once and links it into pixelcnn_fast._core (pybind11, NumPy), the TF op library
pixelcnn_fast/_tf_ops.so (against the TensorFlow in the build environment) and, with nvcc, pixelcnn_fast._cuda
(CuPy). The helpers live in build_support/ (next to this file, carried by the sdist, not installed): the
source lists and flags (build_support/sources.py; adding a source file is one line there), the toolkit probes
(toolkits.py), the TF ops' GPU kernels (tf_gpu.py) and the build_ext command (command.py).

Switches (environment): PIXELCNN_FAST_TF=0 builds without the TF ops (as does a missing TensorFlow);
PIXELCNN_FAST_CUDA=0 without nvcc; PIXELCNN_FAST_CUDA_ARCHS=90 or "80,90" builds only those CUDA archs
instead of the default list (e.g. for a quick build on one GPU); PIXELCNN_FAST_TF_GPU=0/1/auto and
PIXELCNN_FAST_TF_CUDA_HOME choose the TF ops' GPU kernels (build_support/tf_gpu.py). What was built, and why
not, is recorded in pixelcnn_fast/_build_info.py (pixelcnn_fast.build_info()).
"""

import os
import sys

from setuptools import setup

# A PEP 517 build runs this file without its folder on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from build_support import VERSION  # noqa: E402
from build_support.command import BuildExt  # noqa: E402
from build_support.sources import ext_modules  # noqa: E402

setup(version=VERSION, ext_modules=ext_modules(), cmdclass={"build_ext": BuildExt})
