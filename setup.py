"""Build: compiles csrc/core once (one object per microkernel ISA, with its own -m flags) and links it
into the pybind11 module pixelcnn_fast._core and the TF op library pixelcnn_fast/_tf_ops.so, the latter
against the TensorFlow in the build environment (tf.sysconfig flags). csrc/cuda/*.cu are compiled with
nvcc when present and a toolkit is found (PIXELCNN_FAST_CUDA=0 turns that off; PIXELCNN_FAST_CUDA_ARCHS=90 or
"80,90" builds only those archs instead of the default list, e.g. for a quick build on one GPU).

Without TensorFlow (not importable, or PIXELCNN_FAST_TF=0) the TF op library is skipped and the core is
compiled without TF's -D flags: _core and _cuda (NumPy/CuPy) only, recorded in _build_info.py.

Why setuptools + pybind11 rather than scikit-build-core + CMake: the TF flags come from Python
(tf.sysconfig) anyway, the source list is short, and one file keeps the build readable; per-file ISA
flags and nvcc objects need only a small build_ext subclass.
"""

import glob
import os
import re
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import pybind11
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = re.search(r'__version__ = "([^"]+)"',
                    open(os.path.join(HERE, "pixelcnn_fast", "_version.py")).read()).group(1)
TF_REQUIREMENT = re.search(r'TF_REQUIREMENT = "([^"]+)"',
                           open(os.path.join(HERE, "pixelcnn_fast", "_version.py")).read()).group(1)

CORE_SOURCES = ["csrc/core/tapset.cc", "csrc/core/gather_plan.cc", "csrc/core/masked_conv.cc",
                "csrc/core/masked_conv_elementwise.cc", "csrc/core/column_program.cc", "csrc/core/program_spec.cc",
                "csrc/core/flat_program.cc",
                "csrc/core/kernels.cc", "csrc/core/threadpool.cc"]
# Microkernel builds and their flags; kernels.cc picks one at run time with cpuid.
ISA_SOURCES = {
    "csrc/core/isa_avx512.cc": ["-mavx512f", "-mavx2", "-mfma"],
    "csrc/core/isa_avx2.cc": ["-mavx2", "-mfma"],
    "csrc/core/isa_generic.cc": [],
}
CXXFLAGS = ["-std=c++17", "-O3", "-g0", "-fvisibility=hidden", "-Wall", "-Wno-deprecated-declarations"]
# The microkernels are written as a*b+c: let the compiler fuse them (ISO C++ mode turns that off).
ISA_FLAGS = ["-ffp-contract=fast"]
DEFAULT_CUDA_ARCHS = ["75", "80", "86", "89", "90"]


def cuda_archs():
    """The archs to compile for: PIXELCNN_FAST_CUDA_ARCHS ("90", "80,90", "80 90") or the default list.
    The last one is also embedded as PTX."""
    env = os.environ.get("PIXELCNN_FAST_CUDA_ARCHS", "").replace(",", " ").split()
    if not env:
        return list(DEFAULT_CUDA_ARCHS)
    bad = [a for a in env if not re.fullmatch(r"\d{2,3}[a-z]?", a)]
    if bad:
        sys.exit(f"PIXELCNN_FAST_CUDA_ARCHS: expected compute capabilities like 90 or 80,90, got {bad}")
    return env


CUDA_ARCHS = cuda_archs()


def find_tensorflow():
    """(tensorflow module, None), or (None, why the TF ops are not built)."""
    if os.environ.get("PIXELCNN_FAST_TF", "1") == "0":
        return None, "disabled by PIXELCNN_FAST_TF=0"
    try:
        import tensorflow as tf
    except ImportError as e:
        return None, f"TensorFlow not importable ({e})"
    return tf, None


def find_nvcc():
    if os.environ.get("PIXELCNN_FAST_CUDA", "1") == "0":
        return None
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _nvcc_release():
    """'13.0' from `nvcc --version` (the cudart linked statically comes from the same toolkit)."""
    import subprocess

    out = subprocess.run([find_nvcc(), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([0-9.]+)", out)
    return m.group(1) if m else "unknown"


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1
        # Decided before anything is built or listed (an in-place or editable build copies every extension
        # in self.extensions): without TensorFlow the op library is dropped from the list.
        self.tf, self.tf_status = find_tensorflow()
        if self.tf is None:
            self.extensions[:] = [e for e in self.extensions if not e.name.endswith("_tf_ops")]
            self.tf_status = "not built: " + self.tf_status
            print(f"pixelcnn_fast: building without the TF ops ({self.tf_status})")
        else:
            self.tf_status = "built"

    def get_ext_filename(self, ext_name):
        # tf.load_op_library takes any path: a plain name makes clear it is no Python module.
        if ext_name.endswith("_tf_ops"):
            return os.path.join(*ext_name.split(".")[:-1], "_tf_ops.so")
        return super().get_ext_filename(ext_name)

    def _compile(self, source, extra, include_dirs=()):
        objs = self.compiler.compile([source], output_dir=self.build_temp, include_dirs=list(include_dirs),
                                     extra_postargs=CXXFLAGS + extra)
        return objs[0]

    def build_extensions(self):
        # Runs after build_ext.run() has set up self.compiler: compile the shared objects first.
        tf = self.tf
        if tf is not None:
            self.tf_version = tf.__version__
            if ".".join(self.tf_version.split(".")[:2]) != TF_REQUIREMENT:
                sys.exit(f"pixelcnn_fast needs TensorFlow {TF_REQUIREMENT}.x to build its TF ops, found "
                         f"{self.tf_version} (PIXELCNN_FAST_TF=0 builds without them)")
            self.tf_include = tf.sysconfig.get_include()
            self.tf_lib = tf.sysconfig.get_lib()
            # The core is linked into the TF op library too: one set of -D flags (ABI, Eigen alignment) for
            # every object of a build.
            self.tf_compile_defs = [f for f in tf.sysconfig.get_compile_flags() if f.startswith("-D")]
        else:
            self.tf_version = None
            self.tf_compile_defs = []
        if "-fPIC" not in CXXFLAGS:
            CXXFLAGS.append("-fPIC")
        os.makedirs(self.build_temp, exist_ok=True)
        jobs = [(s, self.tf_compile_defs) for s in CORE_SOURCES] + \
               [(s, self.tf_compile_defs + ISA_FLAGS + f) for s, f in ISA_SOURCES.items()]
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            self.core_objects = list(pool.map(lambda j: self._compile(*j), jobs))
        self.cuda_archs = []
        self.cuda_objects = self._compile_cuda()
        self._write_build_info()
        super().build_extensions()

    def _compile_cuda(self):
        sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        nvcc = find_nvcc()
        if not sources or nvcc is None:
            why = ("no csrc/cuda sources" if not sources else
                   "disabled by PIXELCNN_FAST_CUDA=0" if os.environ.get("PIXELCNN_FAST_CUDA", "1") == "0" else
                   "nvcc not found")
            self.cuda_status = "not built: " + why
            return []
        import subprocess

        gencode = []
        for a in CUDA_ARCHS:
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        gencode += ["-gencode", f"arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}"]
        objs = []
        for src in sources:
            obj = os.path.join(self.build_temp, os.path.basename(src) + ".o")
            subprocess.check_call([nvcc, "-std=c++17", "-O3", "-Xcompiler", "-fPIC,-Wall", "-c", src, "-o", obj] + gencode)
            objs.append(obj)
        self.cuda_archs = [f"sm_{a}" for a in CUDA_ARCHS]
        self.cuda_status = "built"
        return objs

    def _write_build_info(self):
        cuda_module = bool(self.cuda_objects) and any(e.name.endswith("_cuda") for e in self.extensions)
        info = {
            "version": VERSION,
            # pixelcnn-fast (CPU) or pixelcnn-fast-cu13 (CUDA): scripts/build_wheels.py sets it per variant.
            "distribution": self.distribution.get_name(),
            "tensorflow": self.tf_version,
            "backends": ["cpu"] + (["tf_ops"] if self.tf_version else []) + (["cuda"] if cuda_module else []),
            "tf_ops": self.tf_status,
            "cpu_isas": ["avx512", "avx2", "generic"],
            "cuda": self.cuda_status,
            "cuda_archs": self.cuda_archs,
            # The last arch is also embedded as PTX, so newer GPUs JIT-compile it.
            "cuda_ptx": [f"compute_{CUDA_ARCHS[-1]}"] if self.cuda_archs else [],
            "nvcc": _nvcc_release() if self.cuda_archs else None,
            "compiler": self.compiler.compiler_type if self.compiler else "unknown",
        }
        text = ('"""Build record written by setup.py: what was compiled, against what."""\n'
                f"BUILD_INFO = {info!r}\n")
        for root in {os.path.join(HERE, "pixelcnn_fast"), os.path.join(self.build_lib, "pixelcnn_fast")}:
            os.makedirs(root, exist_ok=True)
            with open(os.path.join(root, "_build_info.py"), "w") as f:
                f.write(text)

    def build_extension(self, ext):
        ext.extra_objects = list(self.core_objects)
        # build_ext relinks a module only when a listed source or dependency is newer than it: list the core
        # (and CUDA) objects, recompiled above, so a changed core or a switch of flags (TF / no TF) relinks.
        ext.depends = list(ext.depends) + [o for o in self.core_objects + self.cuda_objects if o not in ext.depends]
        if ext.name.endswith("_cuda"):
            if not self.cuda_objects:
                print(f"pixelcnn_fast: skipping {ext.name}: CUDA {self.cuda_status}")
                return
            # cudart linked statically: the module needs only the driver on the target machine.
            cuda_home = os.path.dirname(os.path.dirname(find_nvcc()))
            ext.extra_objects += self.cuda_objects
            ext.include_dirs = list(ext.include_dirs) + [os.path.join(cuda_home, "include")]
            ext.extra_link_args = [f"-L{os.path.join(cuda_home, 'lib64')}", "-lcudart_static", "-ldl", "-lrt",
                                   "-lpthread"]
        ext.extra_compile_args = CXXFLAGS + self.tf_compile_defs
        if ext.name.endswith("_tf_ops"):
            ext.extra_compile_args += ["-isystem", self.tf_include]
            ext.extra_link_args = [f"-L{self.tf_lib}", "-l:libtensorflow_framework.so.2",
                                   "-Wl,-rpath,$ORIGIN/../tensorflow"]
        super().build_extension(ext)


ext_modules = [
    Extension("pixelcnn_fast._core", ["csrc/python/core_module.cc"], include_dirs=[pybind11.get_include()],
              language="c++"),
    Extension("pixelcnn_fast._tf_ops", sorted(glob.glob("csrc/tf/*.cc")), language="c++"),
]
# The CUDA binding (GPU backend) is built when its source exists and nvcc compiles csrc/cuda. Decided here,
# not in build_extension: an in-place or editable build copies every listed extension and fails on a
# skipped one.
if os.path.exists(os.path.join(HERE, "csrc", "python", "cuda_module.cc")) and \
        glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")) and find_nvcc() is not None:
    ext_modules.append(Extension("pixelcnn_fast._cuda", ["csrc/python/cuda_module.cc"],
                                 include_dirs=[pybind11.get_include()], language="c++"))

setup(version=VERSION, ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
