"""Build: compiles csrc/core once (one object per microkernel ISA, with its own -m flags) and links it
into the pybind11 module pixelcnn_fast._core and the TF op library pixelcnn_fast/_tf_ops.so, the latter
against the TensorFlow in the build environment (tf.sysconfig flags). csrc/cuda/*.cu are compiled with
nvcc when present and a toolkit is found (PIXELCNN_FAST_CUDA=0 turns that off; PIXELCNN_FAST_CUDA_ARCHS=90 or
"80,90" builds only those archs instead of the default list, e.g. for a quick build on one GPU). The TF ops'
GPU kernels go into _tf_ops.so when TF is a CUDA build and a toolkit of TF's CUDA major is found
(TfGpuKernels below; PIXELCNN_FAST_TF_GPU=0 turns that off, =1 forces it).

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
                "csrc/core/flatten.cc",
                "csrc/core/program.cc",
                "csrc/core/kernels.cc", "csrc/core/threadpool.cc"]
# pixelcnn_fast._core: the product's bindings and its test seams (the submodule _core.testing).
CORE_MODULE_SOURCES = ["csrc/python/core_module.cc", "csrc/python/core_testing.cc"]
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


def _nvcc_release(nvcc=None):
    """'13.0' from `nvcc --version` (the cudart linked statically comes from the same toolkit)."""
    import subprocess

    out = subprocess.run([nvcc or find_nvcc(), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([0-9.]+)", out)
    return m.group(1) if m else "unknown"


def cuda_gencode_flags():
    """nvcc -gencode flags: a cubin per CUDA_ARCHS entry, and the last one also as PTX (newer GPUs JIT it)."""
    flags = []
    for a in CUDA_ARCHS:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return flags + ["-gencode", f"arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}"]


# ------------------------------------------------------------------------------ TF GPU kernels
# GPU kernels of the TF ops (csrc/tf/*_gpu.cc, under GOOGLE_CUDA) call these CUDA launchers; they are
# compiled for _tf_ops.so with the toolkit chosen below. A new launcher for a TF GPU kernel is one line here.
TF_GPU_SOURCES = ["csrc/cuda/masked_conv.cu", "csrc/cuda/column_program.cu"]


def _toolkit_pieces(home):
    """(nvcc, include dir, libcudart_static.a) of a CUDA toolkit folder, or None when one is missing."""
    nvcc = os.path.join(home, "bin", "nvcc")
    include = os.path.join(home, "include")
    libs = [os.path.join(home, d, "libcudart_static.a") for d in ("lib64", "lib", os.path.join("targets",
                                                                                             "x86_64-linux", "lib"))]
    cudart = next((p for p in libs if os.path.exists(p)), None)
    if not os.path.exists(nvcc) or not os.path.exists(os.path.join(include, "cuda_runtime_api.h")) or cudart is None:
        return None
    return nvcc, include, cudart


def find_tf_gpu_toolkit(tf_cuda_version, allow_other_major):
    """The CUDA toolkit for the TF GPU kernels: a dict (home, nvcc, include, cudart, release) or a reason str.

    TensorFlow's GPU build runs a CUDA runtime of one major version (12 for TF 2.21). The kernels are built
    with a toolkit of that major: NVIDIA's "Rules for version mixing" (CUDA driver/runtime API docs, since
    11.0) call it unsafe to pass CUDA handles -- a stream is one -- between code compiled with different
    major toolkits. PIXELCNN_FAST_TF_CUDA_HOME names the toolkit; otherwise CUDA_HOME, CUDA_PATH,
    /usr/local/cuda, /usr/local/cuda-<major>* and nvcc on PATH are tried, the first of TF's major wins.
    No CUDA 12 *compiler* is on PyPI (nvidia-cuda-nvcc-cu12 ships ptxas and libnvvm, no nvcc), so this is a
    system toolkit. allow_other_major (PIXELCNN_FAST_TF_GPU=1) takes the first toolkit of any major.
    """
    major = tf_cuda_version.split(".")[0]
    explicit = os.environ.get("PIXELCNN_FAST_TF_CUDA_HOME")
    if explicit:
        homes = [explicit]
    else:
        versioned = sorted(glob.glob(f"/usr/local/cuda-{major}*"), key=lambda h: [int(x) for x in
                                                                                  re.findall(r"\d+", h)],
                           reverse=True)
        on_path = shutil.which("nvcc")
        homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"] + versioned + \
                ([os.path.dirname(os.path.dirname(os.path.realpath(on_path)))] if on_path else [])
    found, seen = [], set()
    for home in homes:
        if not home or os.path.realpath(home) in seen:
            continue
        seen.add(os.path.realpath(home))
        pieces = _toolkit_pieces(home)
        if pieces is None:
            continue
        nvcc, include, cudart = pieces
        found.append(dict(home=home, nvcc=nvcc, include=include, cudart=cudart, release=_nvcc_release(nvcc)))
    for t in found:
        if t["release"].split(".")[0] == major:
            return t
    if found and allow_other_major:
        return found[0]
    where = ", ".join(f"CUDA {t['release']} at {t['home']}" for t in found) or "none"
    return (f"no CUDA {major} toolkit (nvcc, cuda_runtime_api.h, libcudart_static.a) found for TensorFlow's "
            f"CUDA {tf_cuda_version}; toolkits found: {where}. Set PIXELCNN_FAST_TF_CUDA_HOME to a CUDA {major} "
            f"toolkit (or PIXELCNN_FAST_TF_GPU=1 to build with another major, unsupported)")


class TfGpuKernels:
    """build_ext mixin: compiles TF_GPU_SOURCES for _tf_ops.so and links them with a static cudart.

    PIXELCNN_FAST_TF_GPU: unset/auto (default) builds them when TF is a CUDA build and a toolkit of TF's CUDA
    major is found; 0 never (nor does PIXELCNN_FAST_CUDA=0, unless PIXELCNN_FAST_TF_GPU=1); 1 always, with a
    toolkit of any major, and stops the build when that is impossible. build_info()["tf_gpu_kernels"] says
    "built (CUDA x.y)" or "not built: <why>".

    cudart is linked statically (libcudart_static.a, whose symbols are hidden, and
    -Wl,--exclude-libs to keep it so), not against libcudart.so.12: a DT_NEEDED on libcudart.so.12 would stop
    _tf_ops.so from loading where TF's nvidia-cuda-runtime-cu12 package is absent (CPU-only installs,
    CI), while the static runtime opens the driver (libcuda.so.1) only at its first call. It is what TF's
    own tf_custom_op_library rule links (@local_config_cuda//cuda:cudart_static) and what tensorflow/addons
    switched to (PR #539) after its ops failed to load. Our runtime instance and TF's share the device's
    primary context (TF's StreamExecutor retains it, cuDevicePrimaryCtxRetain, and makes it current around
    Compute) and TF's compute stream, a driver CUstream, is a valid cudaStream_t for any runtime. Not taken:
    resolving the cuda* symbols against the cudart stub libtensorflow_framework.so.2 exports (it dlopens
    TF's libcudart.so.12): TF-internal, and it would register our fatbin in whatever libcudart minor
    version the user has.
    """

    def _tf_gpu_mode(self):
        mode = os.environ.get("PIXELCNN_FAST_TF_GPU", "auto").strip().lower() or "auto"
        if mode not in ("0", "1", "auto"):
            sys.exit(f"PIXELCNN_FAST_TF_GPU must be 0, 1 or auto, got {mode!r}")
        return mode

    def _compile_tf_gpu(self, tf):
        """Sets self.tf_gpu (the toolkit dict, or None), self.tf_gpu_objects and self.tf_gpu_status."""
        self.tf_gpu, self.tf_gpu_objects = None, []
        mode = self._tf_gpu_mode()
        if tf is None:
            self.tf_gpu_status = "not built: the TF ops are not built"
            return
        build = tf.sysconfig.get_build_info()
        tf_cuda = build.get("cuda_version") if build.get("is_cuda_build") else None

        def refuse(why):
            if mode == "1":
                sys.exit(f"PIXELCNN_FAST_TF_GPU=1 but the TF GPU kernels cannot be built: {why}")
            self.tf_gpu_status = "not built: " + why

        if mode == "0":
            return refuse("disabled by PIXELCNN_FAST_TF_GPU=0")
        if mode == "auto" and os.environ.get("PIXELCNN_FAST_CUDA", "1") == "0":
            return refuse("disabled by PIXELCNN_FAST_CUDA=0")
        if not tf_cuda:
            return refuse(f"TensorFlow {tf.__version__} is not a CUDA build")
        toolkit = find_tf_gpu_toolkit(tf_cuda, allow_other_major=mode == "1")
        if isinstance(toolkit, str):
            return refuse(toolkit)
        import subprocess

        abi0 = "-D_GLIBCXX_USE_CXX11_ABI=0" in self.tf_compile_defs
        same_nvcc = self.cuda_objects and find_nvcc() and \
            os.path.realpath(find_nvcc()) == os.path.realpath(toolkit["nvcc"])
        objs = []
        for src in TF_GPU_SOURCES:
            shared = os.path.join(self.build_temp, os.path.basename(src) + ".o")
            if same_nvcc and not abi0 and shared in self.cuda_objects:
                # The _cuda module's object: same nvcc, same flags (TF's -D flags change nothing in a .cu
                # while TF uses GCC's default C++11 ABI).
                objs.append(shared)
                continue
            obj = os.path.join(self.build_temp, "tf_gpu", os.path.basename(src) + ".o")
            os.makedirs(os.path.dirname(obj), exist_ok=True)
            cmd = [toolkit["nvcc"], "-std=c++17", "-O3", "-Xcompiler", "-fPIC,-Wall", "-c", src, "-o", obj] + \
                self.tf_compile_defs + cuda_gencode_flags()
            try:
                subprocess.check_call(cmd)
            except subprocess.CalledProcessError:
                if mode == "1":
                    raise
                print(f"pixelcnn_fast: warning: the TF GPU kernels are not built: nvcc {toolkit['release']} "
                      f"failed on {src}")
                return refuse(f"nvcc {toolkit['release']} ({toolkit['nvcc']}) failed on {src}")
            objs.append(obj)
        self.tf_gpu, self.tf_gpu_objects = toolkit, objs
        note = "" if toolkit["release"].split(".")[0] == tf_cuda.split(".")[0] else \
            f"; TF is CUDA {tf_cuda}: mixed major versions, PIXELCNN_FAST_TF_GPU=1"
        self.tf_gpu_status = f"built (CUDA {toolkit['release']}{note})"

    def _tf_gpu_link(self, ext):
        """Adds the GPU kernels to the _tf_ops extension (GOOGLE_CUDA, launcher objects, static cudart)."""
        if self.tf_gpu is None:
            return
        ext.extra_compile_args = list(ext.extra_compile_args) + ["-DGOOGLE_CUDA=1", "-isystem",
                                                                 self.tf_gpu["include"]]
        # The archive sits with the objects, before -l:libtensorflow_framework.so.2: the launchers' cuda*
        # references must bind to it, not to the cudart stub the framework library exports.
        ext.extra_objects = list(ext.extra_objects) + self.tf_gpu_objects + [self.tf_gpu["cudart"]]
        ext.extra_link_args = list(ext.extra_link_args) + ["-Wl,--exclude-libs,libcudart_static.a", "-ldl",
                                                           "-lrt", "-lpthread"]

    def _tf_gpu_info(self):
        built = self.tf_gpu is not None
        return {"tf_gpu_kernels": self.tf_gpu_status,
                "tf_gpu_cuda": self.tf_gpu["release"] if built else None,
                "tf_gpu_archs": [f"sm_{a}" for a in CUDA_ARCHS] if built else [],
                # The project's verification record, not this build's: no GPU machine with TensorFlow has run
                # these kernels yet (README, "The op and the NumPy module"). Update when one has.
                "tf_gpu_run_on_a_gpu": False if built else None}


class BuildExt(TfGpuKernels, build_ext):
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
        self._compile_tf_gpu(tf)
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

        objs = []
        for src in sources:
            obj = os.path.join(self.build_temp, os.path.basename(src) + ".o")
            subprocess.check_call([nvcc, "-std=c++17", "-O3", "-Xcompiler", "-fPIC,-Wall", "-c", src, "-o", obj] +
                                  cuda_gencode_flags())
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
        info.update(self._tf_gpu_info())
        if self.tf_gpu is not None:
            info["backends"].append("tf_gpu")
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
            self._tf_gpu_link(ext)
        super().build_extension(ext)


ext_modules = [
    Extension("pixelcnn_fast._core", CORE_MODULE_SOURCES, include_dirs=[pybind11.get_include()], language="c++"),
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
