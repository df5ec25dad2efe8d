"""Tests (sanitizer job): builds csrc/core and the pybind _core module with AddressSanitizer and
UndefinedBehaviorSanitizer into a directory of its own (never the installed package), and runs a TF-free
script under it with the ASan runtime preloaded into Python.

    python tests/sanitizers/asan_build.py OUT_DIR [--seeded-bug] [--run] [core_checks.py arguments]

The source lists come from the package build's (build_support/sources.py: CORE_SOURCES, ISA_SOURCES,
CORE_MODULE_SOURCES), so this build compiles what the package compiles. -O1 -g keeps the reports readable;
NDEBUG is not defined, so the core's precondition asserts are on; -fno-sanitize-recover=all makes the first
UB report fatal. --seeded-bug adds -DPCF_SANITIZER_SEEDED_BUG, which compiles an off-by-one into the column
program's ring cache (csrc/core/column_program.cc): that build must fail the job (tests/test_sanitizers.py
checks both ways).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
CXXFLAGS = ["-std=c++17", "-O1", "-g", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wno-deprecated-declarations",
            "-ffp-contract=fast"] + SANITIZE


def _setup_lists():
    """CORE_SOURCES, ISA_SOURCES and CORE_MODULE_SOURCES (the _core binding) as the package build defines
    them (build_support/sources.py)."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from build_support.sources import CORE_MODULE_SOURCES, CORE_SOURCES, ISA_SOURCES

    return CORE_SOURCES, ISA_SOURCES, CORE_MODULE_SOURCES


def compiler():
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def runtime_library(name):
    """The compiler's own sanitizer runtime (e.g. libasan.so), or None when it has none."""
    cxx = compiler()
    if cxx is None:
        return None
    path = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def unavailable_reason():
    """None when this machine can build and run the sanitizer job, else why not."""
    if sys.platform != "linux":
        return "the sanitizer job runs on Linux only"
    if compiler() is None:
        return "no C++ compiler (g++)"
    if runtime_library("libasan.so") is None:
        return "the compiler has no AddressSanitizer runtime (libasan.so)"
    return None


SEEDED_SOURCE = "csrc/core/column_program.cc"  # where PCF_SANITIZER_SEEDED_BUG lives


def build(out_dir, seeded_bug=False, jobs=2):
    """Compiles every core source, the ISA microkernels and the _core binding's sources, links _core<EXT_SUFFIX>
    in out_dir/clean (or out_dir/seeded) and returns its path. Objects are kept in out_dir/obj and reused: the
    seeded build recompiles only the file holding the seeded bug (an object newer than its source is reused:
    use a fresh out_dir after editing a header)."""
    import pybind11

    core, isa, module = _setup_lists()
    cxx = compiler()
    includes = ["-I", sysconfig.get_paths()["include"], "-I", pybind11.get_include()]
    sources = [(s, []) for s in core] + list(isa.items()) + [(s, []) for s in module]

    def compile_one(item):
        src, flags = item
        seeded = seeded_bug and src == SEEDED_SOURCE
        obj_dir = os.path.join(out_dir, "obj-seeded" if seeded else "obj")
        os.makedirs(obj_dir, exist_ok=True)
        obj = os.path.join(obj_dir, src.replace("/", "_") + ".o")
        if os.path.exists(obj) and os.path.getmtime(obj) >= os.path.getmtime(os.path.join(REPO, src)):
            return obj
        defines = ["-DPCF_SANITIZER_SEEDED_BUG"] if seeded else []
        cmd = [cxx, *CXXFLAGS, *flags, *defines, *includes, "-c", os.path.join(REPO, src), "-o", obj + ".tmp"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"sanitizer build: compiling {src} failed:\n{proc.stderr[-4000:]}")
        os.replace(obj + ".tmp", obj)
        return obj

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        objects = list(pool.map(compile_one, sources))
    so = os.path.join(out_dir, ("seeded" if seeded_bug else "clean"),
                      "_core" + sysconfig.get_config_var("EXT_SUFFIX"))
    os.makedirs(os.path.dirname(so), exist_ok=True)
    proc = subprocess.run([cxx, "-shared", *SANITIZE, *objects, "-o", so, "-lpthread"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sanitizer build: linking failed:\n{proc.stderr[-4000:]}")
    return so


def sanitizer_env(module_path):
    """The environment that runs Python with the ASan runtime preloaded and the sanitized _core to load."""
    env = dict(os.environ)
    # libstdc++ right after the ASan runtime: Python is C, so without it ASan's __cxa_throw interceptor finds no
    # real __cxa_throw at start-up and the first C++ exception aborts ("CHECK failed: real___cxa_throw").
    env["LD_PRELOAD"] = " ".join(p for p in (runtime_library("libasan.so"), runtime_library("libstdc++.so.6")) if p)
    # Python's own allocations are never freed at exit: leak reports would be noise. Everything else aborts.
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=99:allocator_may_return_null=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=98"
    env["PCF_SANITIZED_CORE"] = module_path
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env["PYTHONMALLOC"] = "malloc"  # Python's allocator hides overflows inside its arenas from ASan
    return env


def run(module_path, *args, timeout=900):
    """Runs tests/sanitizers/core_checks.py under the sanitized module; the CompletedProcess."""
    script = os.path.join(REPO, "tests", "sanitizers", "core_checks.py")
    return subprocess.run([sys.executable, script, *args], env=sanitizer_env(module_path), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # --seed is core_checks.py's, not --seeded-bug
    p.add_argument("out_dir")
    p.add_argument("--seeded-bug", action="store_true")
    p.add_argument("--run", action="store_true", help="then run tests/sanitizers/core_checks.py under it")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    # Everything else goes to core_checks.py (e.g. --conv-cases 2000 --spec-cases 10000 --seed 7).
    a, rest = p.parse_known_args()
    rest = [r for r in rest if r != "--"]
    why = unavailable_reason()
    if why:
        sys.exit(f"sanitizer build: {why}")
    path = build(a.out_dir, a.seeded_bug, a.jobs)
    print(path)
    if a.run:
        proc = run(path, *rest, timeout=None)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        sys.exit(proc.returncode)
