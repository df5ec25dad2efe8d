#!/usr/bin/env bash
# GPU checks: the one command a session with a GPU machine runs, from the repository root. No TensorFlow needed.
#
#   scripts/gpu_check.sh                 # every stage: info build import test sanitize bench
#   scripts/gpu_check.sh test sanitize   # only those (reusing the in-place build already there)
#
# Stages, each logged to "$OUT/<stage>.log" (OUT defaults to gpu_out/), with PASS / FAIL / SKIP in a summary
# at the end ($OUT/summary.txt); the exit status is 1 when any stage failed:
#   info      nvidia-smi, Python, nvcc, compute-sanitizer and package versions (never fails)
#   build     python setup.py build_ext --inplace with PIXELCNN_FAST_TF=0 (no TF ops; the NumPy core and the
#             CUDA module) and PIXELCNN_FAST_CUDA_ARCHS set to the local GPUs' archs (e.g. 90 on an H100),
#             unless set already. NB: this replaces an in-place TF build in this checkout; rebuild after.
#   import    import pixelcnn_fast and pixelcnn_fast.cuda, print build_info() and why the GPU cannot run
#   test      python -m pytest -v tests/test_cuda*.py with PIXELCNN_FAST_REQUIRE_GPU (then a GPU test that
#             skips fails: no CUDA build, no CuPy, no device ...)
#   sanitize  compute-sanitizer memcheck and racecheck over scripts/gpu_sanitize.py: the masked-conv
#             functions (conv) and, when present, the CUDA ColumnProgram sampler (sampler)
#   bench     benchmarks/bench_cuda.py when it exists (as a script if it has a __main__ block, writing its
#             results.json and REPORT.md to $OUT/bench; else pytest)
#
# GPU or not: the GPU stages need a device and CuPy. PIXELCNN_FAST_REQUIRE_GPU=1 says this machine must
# have one (default: 1 when nvidia-smi lists a GPU, else 0). With 1, a GPU stage that cannot run FAILS; with 0
# (a machine without a GPU) the build, import and test stages still run, the GPU tests and the sanitize and
# bench stages SKIP saying why, and the script exits 0 when nothing else failed.
#
# Time: every stage runs under `timeout`, and the whole run stays within PIXELCNN_FAST_GPU_CHECK_BUDGET_S
# seconds (default 540, under the 10 minutes a device command may take): a stage gets what is left of it,
# minus 15 s for the summary. Per-stage limits: PIXELCNN_FAST_TEST_TIMEOUT (300), _SANITIZE_TIMEOUT (150
# per sanitizer run), _BENCH_TIMEOUT (240). PYTHON selects the interpreter (default python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT  # benchmarks/bench_cuda.py may write its results there
export PYTHON="${PYTHON:-python3}"
BUDGET="${PIXELCNN_FAST_GPU_CHECK_BUDGET_S:-540}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build of this checkout comes first
export TF_CPP_MIN_LOG_LEVEL=3

ALL_STAGES="info build import test sanitize bench"
STAGES="${*:-$ALL_STAGES}"
for s in $STAGES; do
  case " $ALL_STAGES " in *" $s "*) ;; *) echo "gpu_check.sh: unknown stage '$s' (stages: $ALL_STAGES)" >&2; exit 2;; esac
done
wants() { case " $STAGES " in *" $1 "*) return 0;; *) return 1;; esac; }

NAMES=()
RESULTS=()
record() {  # record NAME STATUS DETAIL
  NAMES+=("$1")
  RESULTS+=("$2${3:+: $3}")
  echo ">>> $1: $2${3:+: $3}"
}

time_left() { echo $((BUDGET - SECONDS - 15)); }

# run_stage NAME LIMIT_S CMD...: runs CMD (a program, or a function of this script exported with export -f)
# under timeout, its output to the terminal and $OUT/NAME.log.
# Exit status 0 PASS, 77 SKIP (the command says why), 124 FAIL (timed out), else FAIL.
run_stage() {
  local name=$1 limit=$2 rc=0 left
  shift 2
  left=$(time_left)
  if [ "$left" -lt 10 ]; then
    record "$name" FAIL "not run: the ${BUDGET} s budget is spent"
    return 0
  fi
  if [ "$limit" -gt "$left" ]; then limit=$left; fi
  echo
  echo "=== $name (limit ${limit} s): $*"
  if declare -F "$1" >/dev/null; then set -- bash -c "$1"; fi  # timeout runs programs, not functions
  set +e
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  case $rc in
    0) record "$name" PASS ;;
    77) record "$name" SKIP "$(grep -m1 -o 'SKIP: .*' "$OUT/$name.log" | cut -c7- || true)" ;;
    124|137) record "$name" FAIL "timed out after ${limit} s (log: $OUT/$name.log)" ;;
    *) record "$name" FAIL "exit status $rc (log: $OUT/$name.log)" ;;
  esac
}

# --------------------------------------------------------------------------- GPU or not
GPU_ARCHS=""
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep '^GPU ' >/dev/null; then
  HAVE_GPU=1
  GPU_ARCHS=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' .' | sort -u |
              paste -sd, - || true)
else
  HAVE_GPU=0
fi
export PIXELCNN_FAST_REQUIRE_GPU="${PIXELCNN_FAST_REQUIRE_GPU:-$HAVE_GPU}"
if [ -z "${PIXELCNN_FAST_CUDA_ARCHS:-}" ] && [ -n "$GPU_ARCHS" ]; then
  export PIXELCNN_FAST_CUDA_ARCHS="$GPU_ARCHS"
fi

find_sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer 2>/dev/null || true)" "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
           /usr/local/cuda/bin/compute-sanitizer; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}
export -f find_sanitizer

# Why the GPU stages cannot run here ("" when they can): asks the package, so it needs the build.
gpu_problem() {
  "$PYTHON" -c 'import pixelcnn_fast.cuda as c; r = c.unavailable_reason(); print(r or "")' 2>&1 | tail -1
}

# A GPU stage that cannot run: FAIL on a GPU machine, SKIP elsewhere.
cannot_run() {  # cannot_run NAME WHY
  if [ "$PIXELCNN_FAST_REQUIRE_GPU" = "1" ]; then
    record "$1" FAIL "PIXELCNN_FAST_REQUIRE_GPU=1 but $2"
  else
    record "$1" SKIP "$2"
  fi
}

echo "gpu_check.sh: stages '$STAGES'; GPU seen: $HAVE_GPU; PIXELCNN_FAST_REQUIRE_GPU=$PIXELCNN_FAST_REQUIRE_GPU;" \
     "PIXELCNN_FAST_CUDA_ARCHS=${PIXELCNN_FAST_CUDA_ARCHS:-<setup.py default>}; logs in $OUT"

# --------------------------------------------------------------------------- info
if wants info; then
  stage_info() {
    echo "--- date / host"; date -u; uname -a
    echo "--- nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    echo "--- python"; command -v "$PYTHON"; "$PYTHON" --version
    echo "--- nvcc"; (command -v nvcc && nvcc --version) 2>&1 || /usr/local/cuda/bin/nvcc --version 2>&1 ||
      echo "nvcc: not found"
    echo "--- compute-sanitizer"; (s=$(find_sanitizer) && "$s" --version) 2>&1 || echo "compute-sanitizer: not found"
    echo "--- packages"
    "$PYTHON" - <<'EOF'
import importlib
for name in ("numpy", "cupy", "torch", "pybind11", "pytest", "setuptools", "pytest_benchmark", "tensorflow"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001 - a report, not a check
        print(f"{name}: not importable ({type(e).__name__}: {e})")
EOF
    echo "--- git"; git -C "$ROOT" log --oneline -1 2>/dev/null || echo "not a git checkout"
    git -C "$ROOT" status --short 2>/dev/null | head -20 || true
    return 0
  }
  export -f stage_info
  export ROOT
  run_stage info 60 stage_info
fi

# --------------------------------------------------------------------------- build
BUILD_OK=1
if wants build; then
  stage_build() {
    set -euo pipefail
    PIXELCNN_FAST_TF=0 "$PYTHON" setup.py build_ext --inplace -j "$(nproc)"
    "$PYTHON" - <<'EOF'
import os, sys
sys.path.insert(0, os.getcwd())
from pixelcnn_fast import build_info
info = build_info()
print("build_info:", info)
if os.environ["PIXELCNN_FAST_REQUIRE_GPU"] == "1" and info["cuda"] != "built":
    sys.exit(f"PIXELCNN_FAST_REQUIRE_GPU=1 but the CUDA module was not built ({info['cuda']})")
EOF
  }
  export -f stage_build
  run_stage build 400 stage_build
  case "${RESULTS[-1]}" in PASS*) ;; *) BUILD_OK=0;; esac
fi

needs_build() {  # needs_build NAME: records a FAIL and returns 1 when the build stage failed
  if [ "$BUILD_OK" = "1" ]; then return 0; fi
  record "$1" FAIL "not run: the build failed"
  return 1
}

# --------------------------------------------------------------------------- import
if wants import && needs_build import; then
  run_stage import 60 "$PYTHON" -c '
import sys
import pixelcnn_fast, pixelcnn_fast.cuda
print("pixelcnn_fast", pixelcnn_fast.__version__, "from", pixelcnn_fast.__file__)
print("build_info", pixelcnn_fast.build_info())
print("tensorflow imported:", sys.modules.get("tensorflow") is not None)
print("GPU backend:", pixelcnn_fast.cuda.unavailable_reason() or "can run")'
fi

# --------------------------------------------------------------------------- test
if wants test && needs_build test; then
  shopt -s nullglob
  TEST_FILES=(tests/test_cuda*.py)
  shopt -u nullglob
  if [ "${#TEST_FILES[@]}" -eq 0 ]; then
    record test FAIL "no tests/test_cuda*.py in this checkout"
  else
    # --continue-on-collection-errors: a module that fails to collect (or skips whole under
    # PIXELCNN_FAST_REQUIRE_GPU=1) must not hide the others' results.
    run_stage test "${PIXELCNN_FAST_TEST_TIMEOUT:-300}" "$PYTHON" -m pytest -v -rs -p no:cacheprovider \
      --continue-on-collection-errors --junitxml="$OUT/test.xml" "${TEST_FILES[@]}"
  fi
fi

# --------------------------------------------------------------------------- sanitize
if wants sanitize && needs_build sanitize; then
  problem=$(gpu_problem)
  sanitizer=$(find_sanitizer || true)
  if [ -n "$problem" ]; then
    for part in conv sampler; do cannot_run "sanitize-$part" "no GPU to run on: $problem"; done
  elif [ -z "$sanitizer" ]; then
    for part in conv sampler; do cannot_run "sanitize-$part" "compute-sanitizer not found"; done
  else
    for part in conv sampler; do
      for tool in memcheck racecheck; do
        name="sanitize-$tool-$part"
        run_stage "$name" "${PIXELCNN_FAST_SANITIZE_TIMEOUT:-150}" "$sanitizer" --tool "$tool" --error-exitcode 1 \
          "$PYTHON" scripts/gpu_sanitize.py "$part"
        # A runtime the sanitizer cannot attach to (seen on gVisor machines) is no finding about our code.
        if [[ "${RESULTS[-1]}" == FAIL* ]] && grep -q "Device not supported" "$OUT/$name.log" 2>/dev/null; then
          RESULTS[-1]="FAIL: compute-sanitizer does not support this device or runtime (see $OUT/$name.log):"`
                     `" nothing was checked"
          echo ">>> $name: ${RESULTS[-1]}"
        fi
      done
    done
  fi
fi

# --------------------------------------------------------------------------- bench
if wants bench; then
  BENCH=benchmarks/bench_cuda.py
  if [ ! -f "$BENCH" ]; then
    record bench SKIP "$BENCH does not exist in this checkout"
  elif needs_build bench; then
    problem=$(gpu_problem)
    if [ -n "$problem" ]; then
      cannot_run bench "no GPU to run on: $problem"
    elif grep -q '__name__ == "__main__"\|__name__ == '"'__main__'" "$BENCH"; then
      run_stage bench "${PIXELCNN_FAST_BENCH_TIMEOUT:-240}" "$PYTHON" "$BENCH" --out "$OUT/bench"
    else
      json=()
      if "$PYTHON" -c 'import pytest_benchmark' 2>/dev/null; then json=(--benchmark-json="$OUT/bench_cuda.json"); fi
      run_stage bench "${PIXELCNN_FAST_BENCH_TIMEOUT:-240}" "$PYTHON" -m pytest -v -p no:cacheprovider \
        ${json[@]+"${json[@]}"} "$BENCH"
    fi
  fi
fi

# --------------------------------------------------------------------------- summary
{
  echo
  echo "=== gpu_check.sh summary ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), ${SECONDS} s; GPU seen: $HAVE_GPU;" \
       "PIXELCNN_FAST_REQUIRE_GPU=$PIXELCNN_FAST_REQUIRE_GPU)"
  for i in "${!NAMES[@]}"; do printf '%-28s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}"; done
} | tee "$OUT/summary.txt"
for r in "${RESULTS[@]}"; do
  case "$r" in FAIL*) echo "gpu_check.sh: FAILED (logs in $OUT)"; exit 1;; esac
done
echo "gpu_check.sh: OK"
