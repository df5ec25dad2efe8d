#!/usr/bin/env python3
"""Build tooling: assembles a CUDA 12 toolkit (TF 2.21's CUDA major) from registry packages only, for the
TF ops' GPU kernels, into one folder that setup.py takes as PIXELCNN_FAST_TF_CUDA_HOME.

    python3 scripts/cuda12_toolkit.py [--prefix .cuda12]      # prints the prefix; ~120 MB of downloads

Why: TF 2.21's GPU build runs a CUDA 12 runtime and our GPU kernels must be compiled by a toolkit of the same
major (docs/ARCHITECTURE.md, "Toolkit and cudart"); this project's machines have only nvcc 13, and PyPI has
no CUDA 12 nvcc. Where the pieces come from (nothing of NVIDIA's is committed; everything is downloaded
into the prefix, nothing is installed into the system):

- Debian 13's `nvidia-cuda-toolkit` (component non-free, CUDA 12.4): nvcc, cicc, cudafe++, ptxas, fatbinary,
  nvlink, bin2c, the crt link stubs and libdevice. Reached through a private apt configuration (its own
  sources list, package lists and cache under the prefix) that leaves the system's sources alone; the .deb
  is downloaded (`apt-get download`) and unpacked (`dpkg-deb -x`), not installed, so none of its
  dependencies (nvidia-cuda-dev alone is 930 MB) are needed.
- PyPI `nvidia-cuda-runtime-cu12==12.4.127`, `nvidia-cuda-nvcc-cu12==12.4.131` and
  `nvidia-cuda-cccl-cu12==12.4.127.post1`: the runtime, crt and libcu++ headers of the same 12.4 release.
- PyPI `nvidia-cuda-runtime-cu12==12.9.79`: `libcudart_static.a` only (the 12.4-12.8 runtime wheels ship
  the shared library alone). A newer minor's static runtime serves code compiled by 12.4 (CUDA's minor
  version compatibility); it runs on any driver for CUDA 12 (>= 525) and opens libcuda.so.1 at its first call.

The result has the layout of a CUDA install (bin/, nvvm/libdevice, include/, lib64/) with an nvcc.profile
that points nvcc at it. A stamp file records what was assembled; a second run with the same recipe does
nothing. Needs apt-get, dpkg-deb and pip (this Python's), and network access to the two registries.
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

DEBIAN_SOURCE = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian " \
                "trixie main contrib non-free"
DEBIAN_PACKAGE = "nvidia-cuda-toolkit"
DEBIAN_VERSION_PREFIX = "12.4."  # the trixie release; anything else is refused (headers must match nvcc)
HEADER_WHEELS = ["nvidia-cuda-runtime-cu12==12.4.127", "nvidia-cuda-nvcc-cu12==12.4.131",
                 "nvidia-cuda-cccl-cu12==12.4.127.post1"]
STATIC_RUNTIME_WHEEL = "nvidia-cuda-runtime-cu12==12.9.79"
RECIPE = {"debian": [DEBIAN_SOURCE, DEBIAN_PACKAGE, DEBIAN_VERSION_PREFIX], "headers": HEADER_WHEELS,
          "cudart_static": STATIC_RUNTIME_WHEEL, "layout": 1}
NVCC_PROFILE = """\
# Written by scripts/cuda12_toolkit.py: nvcc finds its tools, headers and libdevice in this prefix.
TOP = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
PATH += $(_HERE_):
INCLUDES += "-I$(TOP)/include" $(_SPACE_)
LIBRARIES =+ $(_SPACE_) "-L$(TOP)/lib64"
"""


def log(msg):
    print(f"[cuda12_toolkit] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    """Runs a tool with its output on stderr: stdout carries only the prefix (CI captures it)."""
    log(" ".join(cmd))
    kw.setdefault("stdout", sys.stderr)
    subprocess.run(cmd, check=True, **kw)


def apt_download(work):
    """Downloads DEBIAN_PACKAGE's .deb through a private apt configuration; returns its path and version."""
    root = os.path.join(work, "apt")
    for d in ("lists/partial", "cache/archives/partial", "etc"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(root, "etc", "sources.list"), "w") as f:
        f.write(DEBIAN_SOURCE + "\n")
    open(os.path.join(root, "status"), "w").close()
    opts = ["-o", f"Dir::Etc::sourcelist={root}/etc/sources.list", "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={root}/lists", "-o", f"Dir::Cache={root}/cache",
            "-o", f"Dir::State::status={root}/status", "-o", "APT::Sandbox::User=root", "-q"]
    run(["apt-get"] + opts + ["update"], stdout=subprocess.DEVNULL)
    version = subprocess.run(["apt-cache"] + opts + ["show", "--no-all-versions", DEBIAN_PACKAGE], check=True,
                             capture_output=True, text=True).stdout
    version = next(line.split(":", 1)[1].strip() for line in version.splitlines() if line.startswith("Version:"))
    if not version.startswith(DEBIAN_VERSION_PREFIX):
        sys.exit(f"cuda12_toolkit: Debian's {DEBIAN_PACKAGE} is {version}, expected {DEBIAN_VERSION_PREFIX}*: "
                 "update HEADER_WHEELS to the matching release first")
    debs = os.path.join(work, "debs")
    os.makedirs(debs, exist_ok=True)
    run(["apt-get"] + opts + ["download", f"{DEBIAN_PACKAGE}={version}"], cwd=debs)
    return glob.glob(os.path.join(debs, f"{DEBIAN_PACKAGE}_*.deb"))[0], version


def pip_download(work, requirement):
    dest = os.path.join(work, "wheels", hashlib.sha1(requirement.encode()).hexdigest()[:8])
    os.makedirs(dest, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", dest,
         requirement])
    return glob.glob(os.path.join(dest, "*.whl"))[0]


def copy_tree(src, dst):
    for base, _, files in os.walk(src):
        out = os.path.join(dst, os.path.relpath(base, src))
        os.makedirs(out, exist_ok=True)
        for name in files:
            shutil.copy2(os.path.join(base, name), os.path.join(out, name))


def assemble(prefix):
    with tempfile.TemporaryDirectory(prefix="cuda12_") as work:
        deb, version = apt_download(work)
        deb_root = os.path.join(work, "deb")
        run(["dpkg-deb", "-x", deb, deb_root])
        tk = os.path.join(deb_root, "usr", "lib", "nvidia-cuda-toolkit")
        stage = prefix + ".partial"
        shutil.rmtree(stage, ignore_errors=True)
        bin_dir = os.path.join(stage, "bin")
        os.makedirs(bin_dir)
        # The real nvcc driver (usr/bin/nvcc is a wrapper script with absolute paths) and cicc.
        for name in ("nvcc", "cicc"):
            shutil.copy2(os.path.join(tk, "bin", name), bin_dir)
        copy_tree(os.path.join(tk, "bin", "crt"), os.path.join(bin_dir, "crt"))
        for name in ("ptxas", "fatbinary", "nvlink", "cudafe++", "bin2c", "nvprune", "cuobjdump"):
            shutil.copy2(os.path.join(deb_root, "usr", "bin", name), bin_dir)
        with open(os.path.join(bin_dir, "nvcc.profile"), "w") as f:
            f.write(NVCC_PROFILE)
        copy_tree(os.path.join(tk, "libdevice"), os.path.join(stage, "nvvm", "libdevice"))
        include = os.path.join(stage, "include")
        wheels = [pip_download(work, r) for r in HEADER_WHEELS]
        for whl in wheels:
            unpacked = os.path.join(work, "unpacked", os.path.basename(whl))
            with zipfile.ZipFile(whl) as z:
                z.extractall(unpacked)
            for inc in glob.glob(os.path.join(unpacked, "nvidia", "*", "include")):
                copy_tree(inc, include)
        static = pip_download(work, STATIC_RUNTIME_WHEEL)
        lib64 = os.path.join(stage, "lib64")
        os.makedirs(lib64)
        with zipfile.ZipFile(static) as z:
            member = next(n for n in z.namelist() if n.endswith("/libcudart_static.a"))
            with z.open(member) as src, open(os.path.join(lib64, "libcudart_static.a"), "wb") as dst:
                shutil.copyfileobj(src, dst)
        for path in glob.glob(os.path.join(bin_dir, "*")):
            if os.path.isfile(path) and not path.endswith(".profile"):
                os.chmod(path, 0o755)
        # Headers are tested as a set with this nvcc: a tiny kernel must compile, link and embed sm_90 code.
        smoke_test(stage, work)
        record = dict(RECIPE, debian_version=version, wheels=[os.path.basename(w) for w in wheels + [static]])
        with open(os.path.join(stage, "pixelcnn_fast_toolkit.json"), "w") as f:
            json.dump(record, f, indent=1)
        shutil.rmtree(prefix, ignore_errors=True)
        os.replace(stage, prefix)


def smoke_test(home, work):
    src = os.path.join(work, "smoke.cu")
    with open(src, "w") as f:
        f.write('#include <cuda_runtime.h>\n__global__ void k(float* x) { x[threadIdx.x] *= 2.f; }\n'
                'int main() { float* p = nullptr; k<<<1, 32>>>(p); return cudaGetLastError() == 1000; }\n')
    # -cudart none: nvcc would otherwise also link libcudadevrt, which is not assembled (no relocatable
    # device code here); the static runtime is linked explicitly, as setup.py does.
    run([os.path.join(home, "bin", "nvcc"), "-std=c++17", "-cudart", "none", "-gencode", "arch=compute_90,code=sm_90",
         "-o", os.path.join(work, "smoke"), src, f"-L{home}/lib64", "-lcudart_static", "-ldl", "-lrt",
         "-lpthread"])


def is_current(prefix):
    try:
        with open(os.path.join(prefix, "pixelcnn_fast_toolkit.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    return all(record.get(k) == v for k, v in RECIPE.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", default=".cuda12", help="where the toolkit goes (default: .cuda12)")
    ap.add_argument("--force", action="store_true", help="assemble again even when the prefix is current")
    args = ap.parse_args(argv)
    prefix = os.path.abspath(args.prefix)
    if args.force or not is_current(prefix):
        assemble(prefix)
    else:
        log(f"{prefix} is current")
    out = subprocess.run([os.path.join(prefix, "bin", "nvcc"), "--version"], capture_output=True, text=True)
    log(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else out.stderr)
    print(prefix)


if __name__ == "__main__":
    main()
