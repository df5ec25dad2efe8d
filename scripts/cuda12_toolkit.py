#!/usr/bin/env python3
# Scripts: assembles a CUDA 12 toolkit (for the TF GPU kernels) from registry packages only, into a prefix.
"""Assembles a CUDA 12 toolkit folder that setup.py accepts as PIXELCNN_FAST_TF_CUDA_HOME, from registry
packages only (nothing of NVIDIA's is committed; nothing is installed into the system):

  * Debian 13 (trixie) `non-free` component: `nvidia-cuda-toolkit` (12.4.131~12.4.1-2, 87 MB), fetched with
    `apt-get download` through a private apt configuration (its own sources list, lists and cache under the
    work folder; the system's sources and dpkg database are untouched) and unpacked with `dpkg-deb -x`, not
    installed: nvcc, cicc, ptxas, fatbinary, nvlink, cudafe++, bin2c, libdevice.
  * PyPI: nvidia-cuda-nvcc-cu12 12.4.* (nvcc's own headers, crt/*, matching the Debian compiler),
    nvidia-cuda-cccl-cu12 12.4.* (thrust/cub/libcu++ headers) and nvidia-cuda-runtime-cu12 12.9.* (the
    runtime headers and libcudart_static.a: the 12.4-12.8 wheels ship only libcudart.so.12). A 12.9 static
    runtime in a 12.4-compiled library: CUDA's minor-version compatibility within major 12 (TF 2.21 itself
    runs CUDA 12.5).

    python scripts/cuda12_toolkit.py PREFIX [--work DIR]
    PIXELCNN_FAST_TF_CUDA_HOME=PREFIX pip install -e .      # builds _tf_ops.so with its GPU kernels

Layout written: PREFIX/bin (nvcc, its tools and an nvcc.profile pointing inside PREFIX), PREFIX/nvvm/bin/cicc,
PREFIX/nvvm/libdevice, PREFIX/include, PREFIX/lib64/libcudart_static.a. Ends by compiling a one-kernel .cu
file to an object with PREFIX/bin/nvcc (no GPU needed). Prints the bytes downloaded and the seconds taken.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

DEBIAN_SOURCE = ("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian "
                 "trixie non-free")
DEBIAN_PACKAGE = "nvidia-cuda-toolkit"
WHEELS = ["nvidia-cuda-nvcc-cu12==12.4.*", "nvidia-cuda-cccl-cu12==12.4.*", "nvidia-cuda-runtime-cu12==12.9.*"]
TOOLS = ["ptxas", "fatbinary", "nvlink", "cudafe++", "bin2c", "nvprune", "cuobjdump", "nvdisasm", "cu++filt"]
NVCC_PROFILE = """\
TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib64:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
"""


def run(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def fetch_deb(work):
    """apt-get download of DEBIAN_PACKAGE through a private apt configuration; returns the .deb path."""
    apt = os.path.join(work, "apt")
    for d in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"):
        os.makedirs(os.path.join(apt, d), exist_ok=True)
    with open(os.path.join(apt, "etc", "sources.list"), "w") as f:
        f.write(DEBIAN_SOURCE + "\n")
    open(os.path.join(apt, "status"), "a").close()
    conf = os.path.join(apt, "apt.conf")
    with open(conf, "w") as f:
        for key, value in [("Dir::State", apt), ("Dir::State::Lists", f"{apt}/lists"),
                           ("Dir::State::status", f"{apt}/status"), ("Dir::Cache", f"{apt}/cache"),
                           ("Dir::Etc::SourceList", f"{apt}/etc/sources.list"),
                           ("Dir::Etc::SourceParts", f"{apt}/etc/sources.list.d"),
                           ("Dir::Etc::Preferences", f"{apt}/etc/preferences"),
                           ("Dir::Etc::PreferencesParts", f"{apt}/etc/preferences.d"),
                           ("APT::Architecture", "amd64"), ("APT::Sandbox::User", "root")]:
            f.write(f'{key} "{value}";\n')
    env = dict(os.environ, APT_CONFIG=conf)
    run(["apt-get", "update", "-q"], env=env)
    debs = os.path.join(work, "debs")
    os.makedirs(debs, exist_ok=True)
    run(["apt-get", "download", "-q", DEBIAN_PACKAGE], env=env, cwd=debs)
    return glob.glob(os.path.join(debs, f"{DEBIAN_PACKAGE}_*.deb"))[0]


def fetch_wheels(work):
    wheels = os.path.join(work, "wheels")
    os.makedirs(wheels, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", wheels] + WHEELS)
    return sorted(glob.glob(os.path.join(wheels, "*.whl")))


def copy_tree(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True, symlinks=False)


def assemble(prefix, deb, wheels, work):
    stage = os.path.join(work, "deb_root")
    shutil.rmtree(stage, ignore_errors=True)
    run(["dpkg-deb", "-x", deb, stage])
    cuda_lib = os.path.join(stage, "usr", "lib", "nvidia-cuda-toolkit")
    shutil.rmtree(prefix, ignore_errors=True)
    for d in ("bin", "nvvm/bin", "nvvm/libdevice", "include", "lib64"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    shutil.copy2(os.path.join(cuda_lib, "bin", "nvcc"), os.path.join(prefix, "bin", "nvcc"))  # the real binary
    copy_tree(os.path.join(cuda_lib, "bin", "crt"), os.path.join(prefix, "bin", "crt"))
    for tool in TOOLS:
        shutil.copy2(os.path.join(stage, "usr", "bin", tool), os.path.join(prefix, "bin", tool))
    shutil.copy2(os.path.join(cuda_lib, "bin", "cicc"), os.path.join(prefix, "nvvm", "bin", "cicc"))
    copy_tree(os.path.join(cuda_lib, "libdevice"), os.path.join(prefix, "nvvm", "libdevice"))
    with open(os.path.join(prefix, "bin", "nvcc.profile"), "w") as f:
        f.write(NVCC_PROFILE)
    unpacked = os.path.join(work, "wheel_root")
    shutil.rmtree(unpacked, ignore_errors=True)
    for whl in wheels:
        with zipfile.ZipFile(whl) as z:
            z.extractall(unpacked)
    for part in ("cuda_nvcc", "cuda_cccl", "cuda_runtime"):  # later parts win: the runtime's own headers
        inc = os.path.join(unpacked, "nvidia", part, "include")
        if os.path.isdir(inc):
            copy_tree(inc, os.path.join(prefix, "include"))
    static = glob.glob(os.path.join(unpacked, "nvidia", "cuda_runtime", "lib", "libcudart_static.a"))
    if not static:
        sys.exit("cuda12_toolkit: the nvidia-cuda-runtime-cu12 wheel has no lib/libcudart_static.a")
    shutil.copy2(static[0], os.path.join(prefix, "lib64", "libcudart_static.a"))
    for tool in ["nvcc"] + TOOLS:
        os.chmod(os.path.join(prefix, "bin", tool), 0o755)
    os.chmod(os.path.join(prefix, "nvvm", "bin", "cicc"), 0o755)


def smoke(prefix, work):
    src = os.path.join(work, "smoke.cu")
    with open(src, "w") as f:
        f.write('#include <cuda_runtime_api.h>\n__global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }\n'
                'int main() { float* x = nullptr; k<<<1, 32>>>(x); return cudaGetLastError() == cudaSuccess ? 0 : 0; }\n')
    run([os.path.join(prefix, "bin", "nvcc"), "--version"])
    # An object, as setup.py compiles TF_GPU_SOURCES (it links them itself with lib64/libcudart_static.a).
    run([os.path.join(prefix, "bin", "nvcc"), "-c", "-arch=sm_75", "-o", os.path.join(work, "smoke.o"), src])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prefix", help="the toolkit folder to write (replaced)")
    ap.add_argument("--work", default=None, help="downloads and staging (default: a temporary folder, removed)")
    args = ap.parse_args()
    start = time.monotonic()
    work = args.work or tempfile.mkdtemp(prefix="cuda12_toolkit_")
    os.makedirs(work, exist_ok=True)
    try:
        deb = fetch_deb(work)
        wheels = fetch_wheels(work)
        fetched = time.monotonic()
        size = os.path.getsize(deb) + sum(os.path.getsize(w) for w in wheels)
        assemble(os.path.abspath(args.prefix), deb, wheels, work)
        smoke(os.path.abspath(args.prefix), work)
        print(f"cuda12_toolkit: {args.prefix} ready; downloaded {size / 1e6:.1f} MB in {fetched - start:.1f} s, "
              f"{time.monotonic() - start:.1f} s in all")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
