"""Tests (sanitizer job): the core's checks run in a process whose pixelcnn_fast._core is the AddressSanitizer +
UBSan build of tests/sanitizers/asan_build.py (PCF_SANITIZED_CORE names it; LD_PRELOAD holds the ASan runtime).

TensorFlow must not load here (it is not built with ASan, and its allocator and threads make the reports
noise): the script uses NumPy, the TF-free fuzzers of tests/fuzz_core.py and the committed fixture programs,
and fails if tensorflow ends up in sys.modules. Covered: the masked conv passes (blocked and per-element,
forward and both gradients, against the float64 oracle), tap sets, the column program and its spec parser
(every fixture program sampled, profiled, teacher-forced; spec mutations; a position's work split across 2
and 3 threads), the host emulation of the CUDA
program, and the binding's error paths. A sanitizer report exits non-zero (ASan 99, UBSan 98); the last line
is "sanitizer checks: clean" otherwise.

    python tests/sanitizers/core_checks.py [--conv-cases N] [--spec-cases N] [--seed S]
"""

import argparse
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)


def load_sanitized_core():
    path = os.environ.get("PCF_SANITIZED_CORE")
    if not path:
        sys.exit("core_checks.py: PCF_SANITIZED_CORE must name the sanitized _core module (tests/sanitizers/asan_build.py)")
    spec = importlib.util.spec_from_file_location("pixelcnn_fast._core", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pixelcnn_fast._core"] = module  # nothing may load the regular build next to it
    spec.loader.exec_module(module)
    return module


def check_fixture_programs(core, seed):
    """Every committed program through every executor path, with NaN-poisoned nothing (outputs are fresh)."""
    import numpy as np

    from fixtures import make_programs

    for name, (spec, arrays, n) in sorted(make_programs.load().items()):
        p = core.ColumnProgram.from_spec(spec, arrays, n)
        e = core.testing.EmulatedGpuProgram.from_spec(spec, arrays, n)  # the GPU's flat program on the host
        calls = n or 3
        levels, margins = p.sample(calls, seed, 0.8, 1)
        h, w, c = p.image_shape
        assert levels.shape == (calls, h, w, c), name
        el, em = e.sample_emulated(calls, seed, 0.8, 1, 2)
        assert el.shape == levels.shape, name
        image = levels.astype(np.float32)
        head = p.teacher_forced(image)
        emulated = e.teacher_forced_emulated(image, 3)
        assert np.allclose(head, emulated, rtol=1e-4, atol=1e-4), name
        p.sample_profile(calls, seed, 1.0)
        assert e.gpu_step_count()[0] >= 1
        if n <= 1:
            one, _ = p.sample(1, seed, 0.8, 1)
            np.testing.assert_array_equal(one[0], levels[0])


def check_shifts_and_delays(core, seed):
    """A hand-written program with offset taps, a shift and delays (ahead and late; docs/SEMANTICS.md, "Delays")
    on small, one-row and one-column images: every ring-cache read in bounds, the same images twice."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for h, w in ((5, 6), (1, 4), (4, 1), (7, 3)):
        spec = ("pixelcnn_fast.column_program 1\n"
                f"image height={h} width={w} channels=1\nbuffers channels=1,3,3,3,4\n"
                "input index=0 kind=kernel shape=2,3,1,3\ninput index=1 kind=kernel shape=2,3,3,3\n"
                "input index=2 kind=kernel shape=1,1,3,4\n"
                # sees its own row two columns ahead: late; then one row up and ahead: reads it from the cache
                "conv out=1 in=0 kernel=0 dh=1 dw=1 padding=offset oy=-1 ox=-1 phase=0 delay=0,2 name=v\n"
                "conv out=2 in=1 kernel=1 dh=1 dw=1 padding=offset oy=-2 ox=-1 phase=0 delay=-1,3 name=v2\n"
                "shift out=3 in=2 dy=0 dx=-1 phase=0 name=right\n"
                "conv out=4 in=3 kernel=2 dh=1 dw=1 padding=same phase=0 name=head\n"
                "head kind=logits buffer=4 levels=4 scale=1 offset=0\nend\n")
        arrays = [rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 1, 3), (2, 3, 3, 3), (1, 1, 3, 4))]
        p = core.ColumnProgram.from_spec(spec, arrays, 0)
        _run_twice(p, seed)


def _run_twice(p, seed):
    """Samples 3 images twice (the same images), teacher-forces the drawn levels and profiles one call."""
    import numpy as np

    levels, _ = p.sample(3, seed, 1.0, 0)
    again, _ = p.sample(3, seed, 1.0, 0)
    np.testing.assert_array_equal(levels, again)
    p.teacher_forced(levels.astype(np.float32))
    p.sample_profile(2, seed, 1.0)


def check_grids(core, seed):
    """A hand-written program on grids (docs/SEMANTICS.md, "Grids"): a conv that reads its own row ahead, a stride-2
    conv to a coarse grid, a transposed conv back (phases), a head; on even, odd, one-row and one-column images:
    every ring-cache read in bounds, the same images twice."""
    import fuzz_core
    import numpy as np

    rng = np.random.default_rng(seed)
    for h, w in ((5, 6), (1, 4), (4, 1), (7, 3), (6, 8)):
        ch, cw = -(-h // 2), -(-w // 2)
        spec = ("pixelcnn_fast.column_program 1\n"
                f"image height={h} width={w} channels=1\nbuffers channels=1,3,3,3,4\n"
                f"grids fy=1,1,2,1,1 fx=1,1,2,1,1 ny={h},{h},{ch},{h},{h} nx={w},{w},{cw},{w},{w}\n"
                "input index=0 kind=kernel shape=2,3,1,3\ninput index=1 kind=kernel shape=2,3,3,3\n"
                "input index=2 kind=kernel shape=2,3,3,3\ninput index=3 kind=kernel shape=1,1,3,4\n"
                "conv out=1 in=0 kernel=0 dh=1 dw=1 padding=offset oy=-1 ox=-1 phase=1 name=u\n"
                "conv out=2 in=1 kernel=1 dh=1 dw=1 padding=offset oy=-2 ox=-1 stride=2,2 phase=0 name=down\n"
                "conv out=3 in=2 kernel=2 dh=1 dw=1 padding=offset oy=0 ox=1 stride=2,2 transpose=1 phase=0 name=up\n"
                "conv out=4 in=3 kernel=3 dh=1 dw=1 padding=same phase=0 name=head\n"
                "head kind=logits buffer=4 levels=4 scale=1 offset=0\nend\n")
        arrays = [rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 1, 3), (2, 3, 3, 3), (2, 3, 3, 3),
                                                                       (1, 1, 3, 4))]
        p = core.ColumnProgram.from_spec(spec, arrays, 0)
        _run_twice(p, seed)
        assert p.executed_macs_per_image() > 0 and p.model_macs_per_image() > 0
        for _ in range(40):  # mutants: built and run, or refused with a typed error
            fuzz_core.build_and_run_mutant(core, fuzz_core.mutate_text(rng, spec), arrays, seed, max_floats=4096)


def check_split_threads(core, seed):
    """Fewer images than threads: each position's work split among threads (csrc/core/column_split.cc) on every
    fixture program and the delayed/shifted one, at 1..3 threads: the same bits as one thread, no report."""
    import numpy as np

    from fixtures import make_programs

    programs = [(name, spec, arrays, n) for name, (spec, arrays, n) in sorted(make_programs.load().items())]
    rng = np.random.default_rng(seed)
    for policy, (name, spec, arrays, n) in [(p, prog) for p in ("always", "auto") for prog in programs]:
        core.testing.set_position_split(policy)  # always: every row split, whatever the load under ASan
        p = core.ColumnProgram.from_spec(spec, arrays, n)
        h, w, c = p.image_shape
        for batch in ((1, 2) if n == 0 else (n,)):
            image = rng.uniform(0, 1, (batch, h, w, c)).astype(np.float32)
            core.set_num_threads(1)
            want = p.sample(batch, seed, 0.9, 2) + (p.teacher_forced(image),)
            for threads in (2, 3):
                core.set_num_threads(threads)
                got = p.sample(batch, seed, 0.9, 2) + (p.teacher_forced(image),)
                for a, b in zip(want, got):
                    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), (name, batch, threads, policy)
    core.testing.set_position_split("auto")
    core.testing.barrier_ns(3, 2000)
    try:
        core.testing.team_failure(3, 1, 100)
        raise AssertionError("team_failure did not raise")
    except RuntimeError:
        pass
    core.set_num_threads(2)


def check_taps_and_errors(core):
    import numpy as np

    for kh, kw in ((1, 3), (3, 3), (5, 7), (7, 1)):
        for mask in ("A", "B"):
            for g, cin, cout in ((1, 2, 5), (3, 3, 6), (3, 6, 3)):
                taps, live, dense = core.testing.live_taps(kh, kw, mask, g, cin, cout)
                assert 0 <= live <= dense
    k = np.zeros((5, 5, 3, 3), np.float32)
    k[0, 0] = 1
    k[2, 2, 0, 1] = 1
    assert core.testing.kernel_live_taps(k)[0] == [(0, 0), (2, 2)]
    bad = [
        lambda: core.masked_conv2d_forward(np.zeros((1, 4, 4, 2), np.float32), np.zeros((3, 3, 3, 2), np.float32),
                                           "B"),
        lambda: core.masked_conv2d_forward(np.zeros((1, 4, 4, 2), np.float64), np.zeros((3, 3, 2, 2), np.float32),
                                           "B"),
        lambda: core.masked_conv2d_forward(np.zeros((1, 4, 4, 2), np.float32), np.zeros((3, 3, 2, 2), np.float32),
                                           "B", out=np.zeros((1, 4, 4, 1), np.float32)),
        lambda: core.masked_conv2d_backprop_input(np.zeros((1, 4, 4, 2), np.float32),
                                                  np.zeros((3, 3, 2, 2), np.float32), (5, 4), "B"),
        lambda: core.testing.draw_levels(np.zeros((2, 3), np.float32), "logits", 0.0, np.zeros(2, np.float32)),
        lambda: core.testing.philox_uniform_grid(0, 2, 1, 1, 1, 2 ** 32 - 1),
    ]
    for call in bad:
        try:
            call()
        except (ValueError, TypeError):
            continue
        raise AssertionError("a bad call was accepted")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conv-cases", type=int, default=60)
    ap.add_argument("--spec-cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    core = load_sanitized_core()
    import fuzz_core

    seed = fuzz_core.fuzz_seed() if a.seed is None else a.seed
    print(f"sanitizer checks: module {core.__file__}, seed {seed}", flush=True)
    core.set_num_threads(2)  # the pool's threads and the executor's slices under ASan too
    check_taps_and_errors(core)
    check_fixture_programs(core, seed)
    check_shifts_and_delays(core, seed)
    check_grids(core, seed)
    check_split_threads(core, seed)
    conv = fuzz_core.run_conv_fuzz(core, seed, a.conv_cases)
    spec, built = fuzz_core.run_spec_fuzz(core, seed, a.spec_cases)
    assert "tensorflow" not in sys.modules, "TensorFlow was loaded under the sanitizer"
    print(f"sanitizer checks: {conv} conv cases, {spec} spec cases ({built} built)")
    print("sanitizer checks: clean", flush=True)


if __name__ == "__main__":
    main()
