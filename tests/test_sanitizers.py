"""Tests: the sanitizer job -- csrc/core and the pybind _core module built with -fsanitize=address,undefined in a
temporary directory (tests/sanitizers/asan_build.py), tests/sanitizers/core_checks.py run under it with the ASan
runtime preloaded (no TensorFlow in that process): clean on this tree, and failing on a build with a seeded
off-by-one (-DPCF_SANITIZER_SEEDED_BUG), which shows the job fails when it should.

The two builds share every object but column_program.cc's; about 2-3 minutes on 2 cores. Skipped, saying
why, where the compiler has no ASan runtime. PIXELCNN_FAST_FUZZ_CASES / _SEED lengthen or replay the fuzz
part (see tests/fuzz_core.py).
"""

import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sanitizers"))
import asan_build as asan  # noqa: E402

pytestmark = pytest.mark.skipif(asan.unavailable_reason() is not None,
                                reason=f"sanitizer job: {asan.unavailable_reason()}")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("asan"))


def _cases():
    env = os.environ.get("PIXELCNN_FAST_FUZZ_CASES", "")
    return ["--conv-cases", env, "--spec-cases", env] if env else []


def test_core_is_clean_under_asan_and_ubsan(build_dir):
    module = asan.build(build_dir)
    proc = asan.run(module, *_cases())
    print(proc.stdout)
    assert proc.returncode == 0, f"sanitizer job failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-6000:]}"
    assert proc.stdout.rstrip().endswith("sanitizer checks: clean"), proc.stdout[-2000:]
    assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr, proc.stderr[-6000:]


def test_the_job_fails_on_a_seeded_off_by_one(build_dir):
    module = asan.build(build_dir, seeded_bug=True)
    proc = asan.run(module, "--conv-cases", "1", "--spec-cases", "1")
    assert proc.returncode == 99, f"rc {proc.returncode}: the seeded bug went unnoticed\n{proc.stderr[-3000:]}"
    # A write past the ring's end: "heap-buffer-overflow", or "unknown-crash" when a vector store straddles it.
    assert re.search(r"AddressSanitizer: (heap-buffer-overflow|unknown-crash)", proc.stderr), proc.stderr[-3000:]
    assert "make_slice" in proc.stderr or "run_step" in proc.stderr or "ColumnProgram" in proc.stderr, \
        proc.stderr[-3000:]
