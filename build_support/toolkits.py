"""Build: the toolkit probes -- TensorFlow (for the TF ops), nvcc and the CUDA archs (for the _cuda module),
and the CUDA toolkit of TensorFlow's CUDA major (for the TF ops' GPU kernels). Each says why when it finds
nothing; the build records that reason in build_info().

Switches (environment): PIXELCNN_FAST_TF=0 (no TF ops), PIXELCNN_FAST_CUDA=0 (no nvcc), PIXELCNN_FAST_CUDA_ARCHS
("90", "80,90": only those archs instead of the default list, e.g. for a quick build on one GPU),
PIXELCNN_FAST_TF_CUDA_HOME (the TF-GPU toolkit).
"""

import glob
import os
import re
import shutil
import subprocess
import sys

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


# Read once, when setup.py imports the build helpers: a malformed value stops the build before anything runs.
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


def find_nvcc(honour_switch=True):
    """nvcc of CUDA_HOME, CUDA_PATH, /usr/local/cuda or PATH, in that order; None when there is none, or
    when PIXELCNN_FAST_CUDA=0 and honour_switch (scripts/build_wheels.py asks past the switch: it sets it
    per wheel variant)."""
    if honour_switch and os.environ.get("PIXELCNN_FAST_CUDA", "1") == "0":
        return None
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def nvcc_release(nvcc=None):
    """'13.0' from `nvcc --version` (the cudart linked statically comes from the same toolkit)."""
    out = subprocess.run([nvcc or find_nvcc(), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([0-9.]+)", out)
    return m.group(1) if m else "unknown"


def cuda_gencode_flags():
    """nvcc -gencode flags: a cubin per CUDA_ARCHS entry, and the last one also as PTX (newer GPUs JIT it)."""
    flags = []
    for a in CUDA_ARCHS:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return flags + ["-gencode", f"arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}"]


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
        found.append(dict(home=home, nvcc=nvcc, include=include, cudart=cudart, release=nvcc_release(nvcc)))
    for t in found:
        if t["release"].split(".")[0] == major:
            return t
    if found and allow_other_major:
        return found[0]
    where = ", ".join(f"CUDA {t['release']} at {t['home']}" for t in found) or "none"
    return (f"no CUDA {major} toolkit (nvcc, cuda_runtime_api.h, libcudart_static.a) found for TensorFlow's "
            f"CUDA {tf_cuda_version}; toolkits found: {where}. Set PIXELCNN_FAST_TF_CUDA_HOME to a CUDA {major} "
            f"toolkit (or PIXELCNN_FAST_TF_GPU=1 to build with another major, unsupported)")
