"""Build: the TF ops' GPU kernels -- csrc/cuda launchers compiled for _tf_ops.so with a toolkit of TensorFlow's
CUDA major and linked with a static cudart (a build_ext mixin; command.py's BuildExt uses it)."""

import os
import subprocess
import sys

from build_support.sources import TF_GPU_SOURCES
from build_support.toolkits import CUDA_ARCHS, cuda_gencode_flags, find_nvcc, find_tf_gpu_toolkit


class TfGpuKernels:
    """build_ext mixin: compiles sources.TF_GPU_SOURCES for _tf_ops.so and links them with a static cudart.

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
