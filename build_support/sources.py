"""Build: what is compiled, with which flags, into which module. Adding a source file is one line here."""

import glob
import os

from setuptools import Extension

from build_support import ROOT
from build_support.toolkits import find_nvcc

# csrc/core, compiled once per build and linked into every module (_core, _tf_ops, _cuda).
CORE_SOURCES = [
    "csrc/core/tapset.cc",
    "csrc/core/gather_plan.cc",
    "csrc/core/masked_conv.cc",
    "csrc/core/masked_conv_elementwise.cc",
    "csrc/core/column_program.cc",
    "csrc/core/column_program_grids.cc",
    "csrc/core/column_split.cc",
    "csrc/core/program_spec.cc",
    "csrc/core/flat_program.cc",
    "csrc/core/flatten.cc",
    "csrc/core/program.cc",
    "csrc/core/kernels.cc",
    "csrc/core/threadpool.cc",
    "csrc/core/team.cc",
]
# pixelcnn_fast._core: the product's bindings and its test seams (the submodule _core.testing).
CORE_MODULE_SOURCES = [
    "csrc/python/core_module.cc",
    "csrc/python/core_testing.cc",
]
# Microkernel builds and their flags; kernels.cc picks one at run time with cpuid.
ISA_SOURCES = {
    "csrc/core/isa_avx512.cc": ["-mavx512f", "-mavx2", "-mfma"],
    "csrc/core/isa_avx2.cc": ["-mavx2", "-mfma"],
    "csrc/core/isa_generic.cc": [],
}
# GPU kernels of the TF ops (csrc/tf/*_gpu.cc, under GOOGLE_CUDA) call these CUDA launchers; they are
# compiled for _tf_ops.so with the toolkit tf_gpu.py chooses. A new launcher for a TF GPU kernel is one line.
TF_GPU_SOURCES = [
    "csrc/cuda/masked_conv.cu",
    "csrc/cuda/column_program.cu",
]
# The _cuda module (GPU backend) compiles every csrc/cuda/*.cu (command.py); the TF ops every csrc/tf/*.cc.

CXXFLAGS = ["-std=c++17", "-O3", "-g0", "-fvisibility=hidden", "-Wall", "-Wno-deprecated-declarations"]
# The microkernels are written as a*b+c: let the compiler fuse them (ISO C++ mode turns that off).
ISA_FLAGS = ["-ffp-contract=fast"]


def ext_modules():
    """The extensions setup() builds: _core (pybind11, NumPy), _tf_ops (the TF op library; command.py drops
    it without TensorFlow) and _cuda (pybind11, CuPy) when its source exists and nvcc compiles csrc/cuda.
    Decided here, not in build_extension: an in-place or editable build copies every listed extension and
    fails on a skipped one."""
    import pybind11

    modules = [
        Extension("pixelcnn_fast._core", CORE_MODULE_SOURCES, include_dirs=[pybind11.get_include()],
                  language="c++"),
        Extension("pixelcnn_fast._tf_ops", sorted(glob.glob("csrc/tf/*.cc")), language="c++"),
    ]
    if os.path.exists(os.path.join(ROOT, "csrc", "python", "cuda_module.cc")) and \
            glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")) and find_nvcc() is not None:
        modules.append(Extension("pixelcnn_fast._cuda", ["csrc/python/cuda_module.cc"],
                                 include_dirs=[pybind11.get_include()], language="c++"))
    return modules
