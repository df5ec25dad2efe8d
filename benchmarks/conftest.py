# Benchmarks: shared pytest-benchmark fixtures (same-run GEMM peak, FLOP-rate bookkeeping, collection of bench_*.py).
"""Fixtures shared by the benchmark suites in this directory.

docs/SEMANTICS.md ("How speed is shown") asks for achieved GFLOP/s against the machine's
GEMM peak *measured in the same run*, never a number from another machine. This
conftest provides:

* ``gemm_peak_gflops`` (session fixture): the best float32 square-GEMM rate this
  process reaches with all threads, from NumPy's BLAS and from TensorFlow's own
  matmul (the convolutions under test run on TF's oneDNN/Eigen, whose GEMM can be
  faster than NumPy's OpenBLAS; the peak is the max of the two so "% of peak" is
  never flattered by a slow denominator). Printed, and written into the
  pytest-benchmark JSON's ``machine_info["pixelcnn_fast"]``.
* ``record_flops`` (function fixture): call it after ``benchmark.pedantic(...)``
  with the FLOP counts of one call; it stores ``gflops`` / ``pct_of_peak`` (and the
  raw counts) in ``benchmark.extra_info`` from the measured mean time.
* Collection of ``bench_*.py`` when this directory is named on the pytest command
  line (``pytest benchmarks``). A file named explicitly (``pytest
  benchmarks/bench_masked_conv.py``) is always collected by pytest itself. Doing it
  here, rather than in a pytest.ini, keeps the top-level pytest configuration
  (the lead's) in charge, and keeps a plain ``pytest`` at the repository root from
  wandering into minutes of benchmarks.
"""

import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _pytest.python import path_matches_patterns

# Benchmark the checkout this directory belongs to when the package is not
# installed: the pytest console script does not put the working directory on
# sys.path, and benchmarks/ (no __init__.py) is what pytest prepends. An installed
# pixelcnn_fast (editable or not) wins; machine_info records which one ran.
_ROOT = Path(__file__).resolve().parent.parent
# find_spec only locates the package; importing it here could fail on a
# half-built extension and take the baselines down with it.
if importlib.util.find_spec("pixelcnn_fast") is None:
    sys.path.insert(0, str(_ROOT))

# Filled by the session fixture, read by the machine-info hook at save time
# (pytest-benchmark builds machine_info when it writes the JSON, after the tests).
_PEAK_INFO = {}

# Square sizes for the peak: large enough that BLAS packing/threading overheads
# are amortised (1024 already reaches ~90% of the big-size rate here), small enough
# to keep the whole measurement to a few seconds on 2 cores.
_PEAK_SIZES = (1024, 2048, 3072)
_PEAK_REPEATS = 6


# --------------------------------------------------------------------------- collection

def pytest_collect_file(file_path, parent):
    """Collect benchmarks/bench_*.py when benchmarks/ itself was asked for."""
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    session = parent.session
    # pytest's own python plugin already collects an explicitly named file and any
    # file matching the configured python_files; returning a second Module would
    # run every benchmark twice.
    if session.isinitpath(file_path):
        return None
    if path_matches_patterns(file_path, parent.config.getini("python_files")):
        return None
    # Only when this directory was named on the command line (pytest benchmarks/).
    if not session.isinitpath(Path(__file__).resolve().parent):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


# --------------------------------------------------------------------------- contention

# The box has 2 cores, shared with whatever else runs (builds, test suites, a
# noisy neighbour on the host). A benchmark that competed for the CPU reads slow
# and its ratios lie, so every measurement records how much CPU *other*
# processes used meanwhile (system busy time from /proc/stat minus this
# process's own CPU time) and the hypervisor's steal time, as a share of
# wall time x cores. The report flags rows where either is large.
_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_snapshot():
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:  # not Linux: no contention numbers
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    own = os.times()
    return (time.monotonic(), (user + nice + system + irq + softirq) / _CLK, steal / _CLK,
            own.user + own.system)


def _contention_since(snap):
    """{'foreign_cpu_pct', 'steal_pct'} since ``snap`` (percent of wall x cores), or {}."""
    now = _cpu_snapshot()
    if snap is None or now is None:
        return {}
    wall = (now[0] - snap[0]) * (os.cpu_count() or 1)
    if wall <= 0:
        return {}
    foreign = max(0.0, (now[1] - snap[1]) - (now[3] - snap[3]))
    return {"foreign_cpu_pct": round(100.0 * foreign / wall, 1),
            "steal_pct": round(100.0 * (now[2] - snap[2]) / wall, 1)}


# Waiting for a quiet machine before each timing: a shared 2-core box is often
# busy in bursts (a compile, a test run). Each wait is capped, and so is their
# sum over the session, so the suite's run time stays bounded when it never
# gets quiet; the per-row contention numbers then tell the report.
QUIET_PCT = 5.0
QUIET_WAIT_EACH = float(os.environ.get("PIXELCNN_BENCH_QUIET_WAIT", "10"))
QUIET_WAIT_TOTAL = float(os.environ.get("PIXELCNN_BENCH_QUIET_WAIT_TOTAL", "60"))
_quiet_budget = [QUIET_WAIT_TOTAL]


def wait_for_quiet(window=0.5):
    """Sleep in ``window`` steps until other processes use < QUIET_PCT of the CPU.

    Returns (seconds waited, quiet reached). Our own threads are excluded, so
    TF/OpenBLAS pools spinning down do not count as noise.
    """
    t0 = time.monotonic()
    limit = min(QUIET_WAIT_EACH, _quiet_budget[0])
    while True:
        snap = _cpu_snapshot()
        if snap is None:
            return 0.0, True
        time.sleep(window)
        c = _contention_since(snap)
        waited = time.monotonic() - t0
        quiet = c.get("foreign_cpu_pct", 0) < QUIET_PCT and c.get("steal_pct", 0) < QUIET_PCT
        if quiet or waited >= limit:
            _quiet_budget[0] = max(0.0, _quiet_budget[0] - max(0.0, waited - window))
            return round(waited, 1), quiet


# --------------------------------------------------------------------------- GEMM peak

def _best_rate(matmul, n, repeats):
    """Best-of-``repeats`` GFLOP/s of ``matmul`` on n x n float32 (2 n^3 flops)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def measure_numpy_peak():
    rng = np.random.default_rng(0)
    rates = {}
    for n in _PEAK_SIZES:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)
        np.matmul(a, b, out=c)  # warm-up: thread pool start, page faults on c
        rates[n] = _best_rate(lambda: np.matmul(a, b, out=c), n, _PEAK_REPEATS)
    return rates


def measure_tf_peak():
    try:
        import tensorflow as tf
    except Exception:  # TF missing: the NumPy number alone is the peak
        return {}
    rates = {}
    mm = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    for n in _PEAK_SIZES:
        a = tf.random.stateless_normal((n, n), seed=(1, n))
        b = tf.random.stateless_normal((n, n), seed=(2, n))
        mm(a, b)  # trace + warm-up
        # CPU tf.function calls return materialised tensors (eager is synchronous
        # on the CPU), so wall time around the call is the compute time.
        rates[n] = _best_rate(lambda: mm(a, b), n, _PEAK_REPEATS)
    return rates


def _blas_name():
    try:
        cfg = np.show_config(mode="dicts")
        return cfg["Build Dependencies"]["blas"]["name"]
    except Exception:
        return "unknown"


@pytest.fixture(scope="session")
def gemm_peak_gflops():
    """This machine's float32 GEMM peak (GFLOP/s), measured now, all threads."""
    waited, quiet = wait_for_quiet()
    snap = _cpu_snapshot()
    np_rates = measure_numpy_peak()
    tf_rates = measure_tf_peak()
    # OpenBLAS worker threads spin for a while after a call; let them go to sleep so
    # they do not steal a core from the first timed benchmark.
    time.sleep(0.5)
    peak_np = max(np_rates.values())
    peak_tf = max(tf_rates.values()) if tf_rates else 0.0
    peak = max(peak_np, peak_tf)
    _PEAK_INFO.update(
        gemm_peak_gflops=round(peak, 2),
        gemm_peak_source="tensorflow" if peak_tf > peak_np else "numpy",
        gemm_numpy_gflops_by_size={str(k): round(v, 2) for k, v in np_rates.items()},
        gemm_tf_gflops_by_size={str(k): round(v, 2) for k, v in tf_rates.items()},
        gemm_repeats=_PEAK_REPEATS,
        numpy_blas=_blas_name(),
        cpu_count=os.cpu_count(),
        gemm_contention=dict(_contention_since(snap), waited_s=waited, quiet_before=quiet),
    )
    sys.stdout.write(
        "\n[gemm peak] float32 GEMM peak %.1f GFLOP/s (%s); numpy %s; tf %s; contention %s\n"
        % (
            peak,
            _PEAK_INFO["gemm_peak_source"],
            _PEAK_INFO["gemm_numpy_gflops_by_size"],
            _PEAK_INFO["gemm_tf_gflops_by_size"],
            _PEAK_INFO["gemm_contention"],
        )
    )
    return peak


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def platform_info():
    """CPU model, our microkernel ISA in use, and whether TF's oneDNN is on in this process."""
    info = {"cpu_model": _cpu_model()}
    try:
        from pixelcnn_fast import _core

        info["pixelcnn_fast_isa"] = _core.isa()
    except Exception as e:
        info["pixelcnn_fast_isa"] = "unknown (%s)" % (e,)
    try:
        # TF's own switch (what TF_ENABLE_ONEDNN_OPTS and the CPU-dependent default decide); private
        # API, hence the fallback.
        from tensorflow.python.util import _pywrap_util_port

        info["onednn_enabled"] = bool(_pywrap_util_port.IsMklEnabled())
    except Exception:
        info["onednn_enabled"] = None
    return info


def pytest_benchmark_update_machine_info(config, machine_info):
    """Put the same-run peak (and what the convs ran on) into the JSON."""
    info = dict(_PEAK_INFO)
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["tf_intra_op_threads_setting"] = tf.config.threading.get_intra_op_parallelism_threads()
    except Exception:
        pass
    # oneDNN on/off changes tf.nn.conv2d's speed a lot (and TF's default depends on the CPU): record
    # the setting and whether oneDNN actually ran, the CPU model and which of our microkernels ran.
    info["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "<unset: TF default>")
    info.update(platform_info())
    info["python"] = platform.python_version()
    try:
        import pixelcnn_fast

        info["pixelcnn_fast_path"] = list(getattr(pixelcnn_fast, "__path__", []))
    except Exception as e:
        info["pixelcnn_fast_path"] = "not importable: %s" % (e,)
    machine_info["pixelcnn_fast"] = info


# --------------------------------------------------------------------------- FLOP bookkeeping

@pytest.fixture
def record_flops(benchmark, gemm_peak_gflops):
    """Return ``record(flops_dense, flops_live, counted, **extra)``.

    Call it after ``benchmark.pedantic``. ``counted`` names which count is the work
    the variant actually performs ("live" or "dense"); ``gflops`` is that count over
    the mean time, ``pct_of_peak`` relates it to ``gemm_peak_gflops``;
    ``foreign_cpu_pct`` / ``steal_pct`` say how contended the machine was (from
    ``record.quiet()``, which the test calls right before timing, or from the start
    of the test).
    ``gflops_dense_equiv`` (dense count / mean time) is the same yardstick for every
    variant, i.e. an inverse time, comparable across rows.
    """

    snap = [_cpu_snapshot()]  # contention over the whole test, or from quiet() on

    def quiet():
        """Call right before timing: waits (bounded) for a quiet CPU, restarts the contention window."""
        waited, ok = wait_for_quiet()
        benchmark.extra_info["quiet_wait_s"] = waited
        benchmark.extra_info["quiet_before"] = ok
        snap[0] = _cpu_snapshot()

    def record(flops_dense, flops_live, counted, **extra):
        if counted not in ("live", "dense"):
            raise ValueError("counted must be 'live' or 'dense', got %r" % (counted,))
        info = benchmark.extra_info
        info.update(extra)
        info["flops_dense"] = int(flops_dense)
        info["flops_live"] = int(flops_live)
        info["flops_counted"] = counted
        info["gemm_peak_gflops"] = round(gemm_peak_gflops, 2)
        info.update(_contention_since(snap[0]))
        meta = benchmark.stats  # None under --benchmark-disable: nothing was timed
        if meta is None:
            return info
        mean = meta.stats.mean
        work = flops_live if counted == "live" else flops_dense
        info["gflops"] = round(work / mean / 1e9, 3)
        info["gflops_dense_equiv"] = round(flops_dense / mean / 1e9, 3)
        info["pct_of_peak"] = round(100.0 * info["gflops"] / gemm_peak_gflops, 2)
        return info

    record.quiet = quiet
    return record


# --------------------------------------------------------------------------- contention only

@pytest.fixture
def record_contention(benchmark):
    """``record_flops`` without the FLOP bookkeeping, for timings that are not a FLOP rate.

    The naive sampling loops (bench_sampler.py) are timed by their own clock (the loop
    time NaiveResult reports, tracing excluded), not by pytest-benchmark's mean, so
    ``record_flops``' gflops would be computed from the wrong time. ``quiet()`` waits
    for a quiet CPU and restarts the window, exactly as ``record_flops.quiet``;
    ``record(**extra)`` stores ``extra`` plus ``foreign_cpu_pct`` / ``steal_pct`` since
    then in ``benchmark.extra_info``.
    """
    snap = [_cpu_snapshot()]

    def quiet():
        waited, ok = wait_for_quiet()
        benchmark.extra_info["quiet_wait_s"] = waited
        benchmark.extra_info["quiet_before"] = ok
        snap[0] = _cpu_snapshot()

    def record(**extra):
        info = benchmark.extra_info
        info.update(extra)
        info.update(_contention_since(snap[0]))
        return info

    record.quiet = quiet
    return record
