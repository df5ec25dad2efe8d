"""Tests: hardening (issue 17) -- shapes come from the program, one rule and one message per argument at every
front door, absurd sizes refused before allocating, Ctrl-C within one row, concurrent sample() calls.

The front doors of a sample call: the CLI, Sampler.sample / profile, sample_op (Python and the TF kernel),
naive.sample, rng.draw_levels, SampleCallback, and the bindings _core.ColumnProgram.sample / sample_profile,
_core.testing.EmulatedGpuProgram.sample_emulated and _core.testing.draw_levels. The Python ones use
pixelcnn_fast/checks.py, the C++ ones csrc/core/checks.h; each bad value must read the same after the door's
own "<where>: " prefix.
"""

import _thread
import re
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from fixtures import make_programs, seed_models
from pixelcnn_fast import _core, checks, naive
from pixelcnn_fast._core import testing as core_testing
from pixelcnn_fast import rng as prng
from pixelcnn_fast.sampler import Sampler
from pixelcnn_fast.tf_sampler import program_spec, sample_op

PROGRAMS = make_programs.load()


def program(name):
    spec, arrays, n = PROGRAMS[name]
    return _core.ColumnProgram.from_spec(spec, arrays, n)


def emulated(name):
    """The same program as the GPU sampler's flat tables, its loops run on the host."""
    spec, arrays, n = PROGRAMS[name]
    return core_testing.EmulatedGpuProgram.from_spec(spec, arrays, n)


@pytest.fixture(scope="module")
def sampler():
    sm = seed_models.keras_io()
    return sm, Sampler(sm.model, head="bernoulli")


# --------------------------------------------------------------------------- 1. shapes come from the program

def test_caller_shape_cannot_overflow_the_output():
    """The issue's reproduction: a program for 8x8x1 sampled with (height, width, channels) = (1, 1, 1) used
    to write 256 * 64 values into a 256-value buffer; (10, 10, 1) returned uninitialised values."""
    p = program("keras_io")
    for args in ((256, 0, 1.0, 0, 1, 1, 1), (2, 0, 1.0, 0, 10, 10, 1), (2, 0, 1.0, 0, 8, 8, 3)):
        with pytest.raises(ValueError, match=r"ColumnProgram.sample: \(height, width, channels\) \(\d+, \d+, \d+\) "
                                             r"is not the program's image shape \(8, 8, 1\)"):
            p.sample(*args)
    with pytest.raises(ValueError, match=r"sample_profile: \(height, width, channels\) \(1, 1, 1\) is not the "
                                         r"program's image shape \(8, 8, 1\)"):
        p.sample_profile(256, 0, 1.0, 1, 1, 1)
    with pytest.raises(ValueError, match=r"sample_profile: temperature must be a positive finite float32, got 0.0"):
        p.sample_profile(2, 0, 0.0)
    # The program's own shape, given or omitted, samples the same images.
    a, _ = p.sample(3, 7, 1.0, 0, 8, 8, 1)
    b, _ = p.sample(3, 7, 1.0)
    assert a.shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(a, b)


def test_per_image_constants_fix_the_batch():
    """A program built for 3 images' condition embeddings read past them when asked for more."""
    p = program("conditional_n3")
    emu = emulated("conditional_n3")
    msg = "n must equal the 3 images the program's per-image constants were built for, got 6"
    for call, where in ((lambda: p.sample(6, 0, 1.0), "ColumnProgram.sample"),
                        (lambda: p.sample_profile(6, 0, 1.0), "ColumnProgram.sample_profile"),
                        (lambda: emu.sample_emulated(6, 0, 1.0), "sample_emulated"),
                        (lambda: p.teacher_forced(np.zeros((6, 8, 8, 1), np.float32)),
                         "ColumnProgram.teacher_forced")):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == f"{where}: {msg}"
    assert p.sample(3, 0, 1.0)[0].shape == (3, 8, 8, 1)


def test_tf_kernel_output_shape_is_the_specs(sampler):
    sm, s = sampler
    spec, arrays = program_spec(s, s.program.evaluate_consts(1))
    from pixelcnn_fast._ext import tf_ops

    out = tf_ops().pixelcnn_fast_sample(consts=arrays, n=tf.constant(2, tf.int64), seed=tf.constant(0, tf.int64),
                                        temperature=tf.constant(1.0), image_offset=tf.constant(0, tf.int64), spec=spec)
    assert tuple(out.shape) == (2,) + s.program.image_shape


# --------------------------------------------------------------------------- 2. one rule, one message

def _tail(message):
    """The message after the door's own "<where>: " prefix (the CLI's flag names are dashed)."""
    m = re.search(r"(?:^|: )-{0,2}(n|seed|temperature|image_offset) must", message)
    assert m, message
    return message[m.start(1):]


BAD = [
    ("temperature", 0.0, ValueError, "temperature must be a positive finite float32, got 0.0"),
    ("temperature", -1.0, ValueError, "temperature must be a positive finite float32, got -1.0"),
    ("temperature", float("nan"), ValueError, "temperature must be a positive finite float32, got nan"),
    ("temperature", float("inf"), ValueError, "temperature must be a positive finite float32, got inf"),
    ("temperature", 1e300, ValueError, "temperature must be a positive finite float32, got 1e+300"),
    ("temperature", 1e-50, ValueError, "temperature must be a positive finite float32, got 1e-50"),
    ("temperature", "1", TypeError, "temperature must be a positive finite float32, got str"),
    ("n", 0, ValueError, "n must be an integer in [1, 2**32), got 0"),
    ("n", 2 ** 32, ValueError, "n must be an integer in [1, 2**32), got 4294967296"),
    ("n", 1.5, TypeError, "n must be an integer in [1, 2**32), got float 1.5"),
    ("seed", -1, ValueError, "seed must be an integer in [0, 2**64), got -1"),
    ("seed", 2 ** 64, ValueError, "seed must be an integer in [0, 2**64), got 18446744073709551616"),
    ("seed", True, TypeError, "seed must be an integer in [0, 2**64), got bool True"),
]


def _doors(sm, s):
    """name -> call(n, seed, temperature) for every door that takes all three."""
    p = program("keras_io")
    emu = emulated("keras_io")
    from pixelcnn_fast.keras import SampleCallback

    return {
        "Sampler.sample": lambda n, seed, t: s.sample(n, seed, t),
        "Sampler.profile": lambda n, seed, t: s.profile(n, seed, t),
        "sample_op": lambda n, seed, t: sample_op(s, n, seed, t),
        "naive.sample": lambda n, seed, t: naive.sample(sm.model, n, head="bernoulli", seed=seed, temperature=t,
                                                        max_steps=1),
        "SampleCallback": lambda n, seed, t: SampleCallback(n=n, seed=seed, temperature=t),
        "ColumnProgram.sample": lambda n, seed, t: p.sample(n, seed, t),
        "ColumnProgram.sample_profile": lambda n, seed, t: p.sample_profile(n, seed, t),
        "sample_emulated": lambda n, seed, t: emu.sample_emulated(n, seed, t),
    }


@pytest.mark.parametrize("arg, value, exc, message", BAD, ids=[f"{a}={v!r}" for a, v, _, _ in BAD])
def test_every_front_door_gives_the_same_message(sampler, arg, value, exc, message):
    sm, s = sampler
    args = dict(n=1, seed=0, t=1.0)
    args["t" if arg == "temperature" else arg] = value
    for where, call in _doors(sm, s).items():
        with pytest.raises(exc) as e:
            call(args["n"], args["seed"], args["t"])
        assert str(e.value) == f"{where}: {message}", (where, str(e.value))
    if arg == "temperature":
        v, u = np.zeros((1, 2), np.float32), np.zeros(1, np.float32)
        for where, call in (("draw_levels", lambda: prng.draw_levels(v, "logits", value, u)),
                            ("draw_levels", lambda: core_testing.draw_levels(v, "logits", value, u))):
            with pytest.raises(exc) as e:
                call()
            assert str(e.value) == f"{where}: {message}", str(e.value)


def test_the_tf_kernel_and_the_cli_say_it_in_the_same_words(sampler, capsys):
    sm, s = sampler
    spec, arrays = program_spec(s, s.program.evaluate_consts(1))
    from pixelcnn_fast._ext import tf_ops

    def op(n=1, t=1.0):
        return tf_ops().pixelcnn_fast_sample(consts=arrays, n=tf.constant(n, tf.int64), seed=tf.constant(0, tf.int64),
                                             temperature=tf.constant(t, tf.float32),
                                             image_offset=tf.constant(0, tf.int64), spec=spec)

    for kwargs, message in ((dict(t=-1.0), "temperature must be a positive finite float32, got -1.0"),
                            (dict(t=float("inf")), "temperature must be a positive finite float32, got inf"),
                            (dict(t=0.0), "temperature must be a positive finite float32, got 0.0"),
                            (dict(n=0), "n must be an integer in [1, 2**32), got 0"),
                            (dict(n=2 ** 32), "n must be an integer in [1, 2**32), got 4294967296")):
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            op(**kwargs)
        # TF wraps it in "{{function_node ...}} <message> [Op:...]".
        assert re.search(r"(^|\} )" + re.escape(f"pixelcnn_fast sample: {message}") + r"( \[|$)", e.value.message), \
            e.value.message
    from pixelcnn_fast import cli

    for argv, message in ((["--temperature", "-1"], "--temperature must be a positive finite float32, got -1.0"),
                          (["--n", "0"], "--n must be an integer in [1, 2**32), got 0"),
                          (["--seed", "-1"], "--seed must be an integer in [0, 2**64), got -1")):
        assert cli.main(["sample", *argv]) != 0
        assert message in capsys.readouterr().err


def test_python_and_cpp_print_values_alike():
    """checks.h's py_repr is Python's repr of a float; the float32 rule reads the same both ways."""
    for t in (0.0, -0.0, -1.0, -1e-5, -123456.789, -1e16, -3.4028235677973366e38, 1e39, 1e-46, float("nan"),
              float("-inf"), -2.5e-310, -0.0001, -1234567890123456.0):
        for door in (lambda: prng.draw_levels(np.zeros((1, 2), np.float32), "logits", t, np.zeros(1, np.float32)),
                     lambda: core_testing.draw_levels(np.zeros((1, 2), np.float32), "logits", t, np.zeros(1, np.float32))):
            with pytest.raises(ValueError) as e:
                door()
            assert str(e.value) == f"draw_levels: temperature must be a positive finite float32, got {t!r}"


def test_image_offset_rule_is_shared():
    p = program("keras_io")
    emu = emulated("keras_io")
    msg = "image_offset + n must be <= 2**32 (image indices are 32-bit), got 4294967295 + 2"
    for call, where in ((lambda: p.sample(2, 0, 1.0, 2 ** 32 - 1), "ColumnProgram.sample"),
                        (lambda: emu.sample_emulated(2, 0, 1.0, 2 ** 32 - 1), "sample_emulated"),
                        (lambda: prng.uniform_grid(0, 2, 1, 1, 1, 2 ** 32 - 1), "uniform_grid"),
                        (lambda: core_testing.philox_uniform_grid(0, 2, 1, 1, 1, 2 ** 32 - 1), "philox_uniform_grid"),
                        (lambda: checks.check_image_offset(2 ** 32 - 1, 2, "check"), "check")):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == f"{where}: {msg}"
    with pytest.raises(ValueError, match=r"ColumnProgram.sample: image_offset must be an integer in \[0, 2\*\*32\), "
                                         r"got -1"):
        p.sample(1, 0, 1.0, -1)


# --------------------------------------------------------------------------- 3. limits, Ctrl-C, threads

def test_absurd_sizes_are_refused_before_allocating(sampler):
    sm, s = sampler
    p = program("keras_io")
    emu = emulated("keras_io")
    n = 2 ** 32 - 1  # the most images a call may ask for: ~2**32 * (512 + caches) bytes, terabytes
    pattern = (r"n=4294967295 images of 8x8x1 would need [0-9.e+]+ bytes for outputs and caches, more than this "
               r"machine's memory \(\d+ bytes\)")
    for where, call in (("Sampler.sample", lambda: s.sample(n)), ("sample_op", lambda: sample_op(s, n)),
                        ("ColumnProgram.sample", lambda: p.sample(n, 0, 1.0)),
                        ("sample_emulated", lambda: emu.sample_emulated(n, 0, 1.0))):
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=re.escape(where) + ": " + pattern) as e:
            call()
        assert time.perf_counter() - t0 < 5, f"{where} took long to refuse: did it allocate first?"
    # Python and C++ compute the same number of bytes.
    py_msg = None
    try:
        checks.check_sample_memory(n, (8, 8, 1), p.cache_floats_per_image(), "ColumnProgram.sample")
    except ValueError as e:
        py_msg = str(e)
    with pytest.raises(ValueError) as e:
        p.sample(n, 0, 1.0)
    assert py_msg == str(e.value)
    # The TF kernel (a tensor n is not seen by the Python checks).
    spec, arrays = program_spec(s, s.program.evaluate_consts(1))
    from pixelcnn_fast._ext import tf_ops

    with pytest.raises(tf.errors.InvalidArgumentError, match="pixelcnn_fast sample: " + pattern):
        tf_ops().pixelcnn_fast_sample(consts=arrays, n=tf.constant(n, tf.int64), seed=tf.constant(0, tf.int64),
                                      temperature=tf.constant(1.0), image_offset=tf.constant(0, tf.int64), spec=spec)


def test_an_empty_constant_is_refused():
    """Regression (spec fuzzer, seed 3 case 7540): a constant of shape (0, 1, 1, 1) was accepted and the
    executor read the empty array (a segfault)."""
    spec, arrays, n = PROGRAMS["keras_io_13x17"]
    arrays = list(arrays)
    arrays[-1] = np.zeros((0, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"input 13 \(a constant\): constant shape \(0, 1, 1, 1\) must have every "
                                         r"dimension >= 1"):
        _core.ColumnProgram.from_spec(spec, arrays, n)


def test_a_huge_image_spec_is_refused():
    spec, arrays, n = PROGRAMS["keras_io"]
    big = spec.replace("image height=8 width=8", "image height=100000 width=100000")
    with pytest.raises(ValueError, match=r"height \* width"):
        _core.ColumnProgram.from_spec(big, arrays, n)


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler (KeyboardInterrupt), as in a terminal. A process started with SIGINT ignored
    (a CI job started in the background: non-interactive shells ignore SIGINT for `cmd &`) keeps SIG_IGN, and
    then _thread.interrupt_main() does nothing."""
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _slow_program():
    """keras_io at 48x48 with a wide batch: ~1 s per call on one core, many rows."""
    sm = seed_models.keras_io(height=48, width=48, filters=32, blocks=2)
    return Sampler(sm.model, head="bernoulli")


def test_ctrl_c_stops_sample_within_a_row_and_the_sampler_stays_usable(python_sigint_handler):
    s = _slow_program()
    want = s.sample(2, seed=5)
    rows = []

    def on_row(k):
        rows.append(k)
        if k == 3:
            _thread.interrupt_main()  # as Ctrl-C: SIGINT's handler runs at the next check

    exe = s.executor(2, [])
    with pytest.raises(KeyboardInterrupt):
        exe.sample(2, 5, 1.0, 0, on_row=on_row)
    assert rows == [1, 2, 3], rows  # stopped at the row it was asked to, not at the end (48 rows)
    np.testing.assert_array_equal(s.sample(2, seed=5), want)  # usable, same images


def test_ctrl_c_from_another_thread_interrupts_a_long_sample(python_sigint_handler):
    s = _slow_program()
    t0 = time.perf_counter()
    s.sample(8, seed=1)
    per_image = (time.perf_counter() - t0) / 8
    n = int(min(4096, max(16, 3.0 / per_image)))  # a call of about 3 s
    per_row = per_image * n / 48
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            s.sample(n, seed=1)
    finally:
        timer.cancel()
    waited = time.perf_counter() - t0 - 0.3
    assert waited < 3 * per_row + 0.5, (waited, per_row)
    assert s.sample(1, seed=2).shape == (1, 48, 48, 1)


def test_concurrent_sample_calls_equal_sequential_ones():
    sm = seed_models.rgb_3x256()
    s = Sampler(sm.model, head=sm.head, value_map=sm.value_map, image_shape=sm.image_shape)
    jobs = [(n, seed) for n, seed in ((1, 0), (3, 1), (2, 2), (5, 3), (1, 4), (4, 5))]
    want = [s.sample(n, seed) for n, seed in jobs]
    got = [None] * len(jobs)
    errors = []

    def run(k):
        try:
            for _ in range(2):
                got[k] = s.sample(*jobs[k])
        except Exception as e:  # reported below with the thread's job
            errors.append((jobs[k], e))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (n, seed), a, b in zip(jobs, want, got):
        np.testing.assert_array_equal(a, b, err_msg=f"n={n} seed={seed}")
    # And one C++ program shared by threads (its lazy setup must not race).
    p = program("dilated_rgb_groups")
    want = [p.sample(2, seed, 1.0)[0] for seed in range(6)]
    got = [None] * 6
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, p.sample(2, k, 1.0)[0])) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_set_num_threads_while_another_thread_samples():
    """set_num_threads() replaces the module's pool; a call running on the old one keeps it alive (the pool
    is shared), so it finishes with the same images instead of using a destroyed pool."""
    p = program("rgb_3x256")
    threads_before = _core.get_num_threads()
    want = p.sample(8, 3, 1.0)[0]
    got, errors = [], []

    def run():
        try:
            for _ in range(5):
                got.append(p.sample(8, 3, 1.0)[0])
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        while t.is_alive():
            for k in (1, 2, 3):
                _core.set_num_threads(k)
    finally:
        t.join()
        _core.set_num_threads(threads_before)
    assert not errors, errors
    assert len(got) == 5
    for g in got:
        np.testing.assert_array_equal(g, want)
