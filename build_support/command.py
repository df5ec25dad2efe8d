"""Build: the build_ext command -- compiles csrc/core once (one object per microkernel ISA, with its own -m
flags) and links it into the pybind11 module pixelcnn_fast._core and the TF op library pixelcnn_fast/_tf_ops.so,
the latter against the TensorFlow in the build environment (tf.sysconfig flags); csrc/cuda/*.cu with nvcc into
pixelcnn_fast._cuda when a toolkit is found; the TF ops' GPU kernels through tf_gpu.py. Without TensorFlow (not
importable, or PIXELCNN_FAST_TF=0) the TF op library is skipped and the core is compiled without TF's -D flags:
_core and _cuda (NumPy/CuPy) only, recorded in _build_info.py."""

import glob
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from setuptools.command.build_ext import build_ext

from build_support import ROOT, TF_REQUIREMENT, VERSION
from build_support.sources import CORE_SOURCES, CXXFLAGS, ISA_FLAGS, ISA_SOURCES
from build_support.tf_gpu import TfGpuKernels
from build_support.toolkits import CUDA_ARCHS, cuda_gencode_flags, find_nvcc, find_tensorflow, nvcc_release


class BuildExt(TfGpuKernels, build_ext):
    """build_ext that compiles csrc/core once (one object per microkernel ISA, with its own -m flags) and the
    CUDA sources, links them into every extension, and writes pixelcnn_fast/_build_info.py (build_info())."""

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
            "nvcc": nvcc_release() if self.cuda_archs else None,
            "compiler": self.compiler.compiler_type if self.compiler else "unknown",
        }
        info.update(self._tf_gpu_info())
        if self.tf_gpu is not None:
            info["backends"].append("tf_gpu")
        text = ('"""Build record written by setup.py: what was compiled, against what."""\n'
                f"BUILD_INFO = {info!r}\n")
        for root in {os.path.join(ROOT, "pixelcnn_fast"), os.path.join(self.build_lib, "pixelcnn_fast")}:
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
