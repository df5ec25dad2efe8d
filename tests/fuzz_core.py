"""Tests (fuzzing, TF-free): seeded generators of masked-conv problems and of column-program spec mutations,
shared by tests/test_fuzz.py (the installed _core, plus the TF op) and tests/sanitizers/core_checks.py (the
same cases under AddressSanitizer/UBSan).

Every case is reproducible from (seed, case index): case k draws from numpy.random.default_rng([seed, k]).
A failure raises AssertionError naming the seed, the case and its parameters. Case counts: CI_CASES by
default (seconds), PIXELCNN_FAST_FUZZ_CASES=<n> for a longer run (PIXELCNN_FAST_FUZZ_KERAS_CASES for the Keras
graphs, ~1 s each), PIXELCNN_FAST_FUZZ_SEED=<s> to replay.
"""

import os
import re
import secrets
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from conftest import (direct_backprop_filter, direct_backprop_input, direct_forward,  # noqa: E402
                      tap_channel_mask)
from fixtures import make_programs  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)
CI_CONV_CASES = 150
CI_SPEC_CASES = 300


def fuzz_seed():
    """PIXELCNN_FAST_FUZZ_SEED, else a fresh random seed (printed by the callers, so any failure replays)."""
    env = os.environ.get("PIXELCNN_FAST_FUZZ_SEED", "")
    return int(env) if env else secrets.randbits(32)


def fuzz_cases(default, variable="PIXELCNN_FAST_FUZZ_CASES"):
    env = os.environ.get(variable, "")
    return int(env) if env else default


# ----------------------------------------------------------------------------- masked conv vs float64 oracle

def conv_problem(rng):
    """Random (x, kernel, mask_type, groups, dilation, padding): odd kernels, batch 1..3, sizes 1..11,
    dilation 1..3, colour groups 1 or 3 (channels multiples of them), 'same' or 'valid' (sizes big enough)."""
    groups = int(rng.choice([1, 1, 3]))  # the masks support 1 (grey) or 3 (RGB) colour groups
    cin = groups * int(rng.integers(1, 4))
    cout = groups * int(rng.integers(1, 4))
    kh, kw = (int(rng.choice([1, 3, 5, 7])) for _ in range(2))
    if kh == 1 and kw == 1:
        kh = 3
    dh, dw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    padding = "same" if rng.random() < 0.6 else "valid"
    lo_h = dh * (kh - 1) + 1 if padding == "valid" else 1
    lo_w = dw * (kw - 1) + 1 if padding == "valid" else 1
    h, w = int(rng.integers(lo_h, lo_h + 9)), int(rng.integers(lo_w, lo_w + 9))
    n = int(rng.integers(1, 4))
    mask_type = str(rng.choice(["A", "B", "none"]))
    x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
    k = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32)
    oracle_mask = "B" if mask_type == "none" else mask_type
    if mask_type == "none":
        # Taps read from the kernel's non-zeros: hand it a masked kernel (a B mask with the groups).
        for (ky, kx), cm in tap_channel_mask(kh, kw, cin, cout, "B", groups).items():
            k[ky, kx] *= cm.astype(np.float32)
        dense = np.zeros_like(k)
        for (ky, kx), cm in tap_channel_mask(kh, kw, cin, cout, "B", groups).items():
            dense[ky, kx] = cm
        k *= dense
    return dict(x=x, k=k, mask=None if mask_type == "none" else mask_type, oracle_mask=oracle_mask, groups=groups,
                dilation=(dh, dw), padding=padding)


def _close(got, want, scale, terms, what):
    """Within float32 rounding of a sum of `terms` products of size `scale` (elementwise), else a tap or
    channel block is wrong (an error of one whole product, ~scale / terms)."""
    tol = 2.0 * (terms + 8) * EPS32 * scale + 1e-30
    err = np.abs(got.astype(np.float64) - want)
    bad = err > tol
    assert not np.isnan(got).any(), f"{what}: NaN left in the output (a poisoned element never written)"
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements off; worst error {float(err.max()):.3e} at "
                           f"{np.unravel_index(int(np.argmax(err - tol)), err.shape)}")


def check_conv_case(core, seed, case, elementwise=False):
    """Forward, input gradient and filter gradient of one random problem against the float64 oracle, each
    written into a NaN-poisoned out= array."""
    rng = np.random.default_rng([seed, case])
    p = conv_problem(rng)
    x, k, mask, om, g, dil, pad = (p[key] for key in ("x", "k", "mask", "oracle_mask", "groups", "dilation",
                                                       "padding"))
    what = (f"conv fuzz seed={seed} case={case}: x{x.shape} k{k.shape} mask={mask} groups={g} dilation={dil} "
            f"padding={pad}{' elementwise' if elementwise else ''}")
    sfx = "_elementwise" if elementwise else ""
    module = core.testing if elementwise else core  # the CUDA kernels' per-element arithmetic is a test seam
    fwd = getattr(module, "masked_conv2d_forward" + sfx)
    bwd_in = getattr(module, "masked_conv2d_backprop_input" + sfx)
    bwd_k = getattr(module, "masked_conv2d_backprop_filter" + sfx)
    kh, kw, cin, cout = k.shape
    terms = kh * kw * cin
    want = direct_forward(x, k, om, g, dil, pad)
    scale = direct_forward(np.abs(x), np.abs(k), om, g, dil, pad)
    out = np.full(want.shape, np.nan, np.float32)
    gc = 1 if mask is None else g  # taps from non-zeros: the kernel's zeros carry the groups
    got = fwd(x, k, mask, gc, dil, pad, out=out)
    assert got is out or np.shares_memory(got, out), what + ": out= not used"
    _close(out, want, scale, terms, what + " forward")
    dy = rng.standard_normal(want.shape).astype(np.float32)
    want_dx = direct_backprop_input(dy, k, x.shape[1:3], om, g, dil, pad)
    scale_dx = direct_backprop_input(np.abs(dy), np.abs(k), x.shape[1:3], om, g, dil, pad)
    out = np.full(x.shape, np.nan, np.float32)
    bwd_in(dy, k, x.shape[1:3], mask, gc, dil, pad, out=out)
    _close(out, want_dx, scale_dx, kh * kw * cout, what + " backprop_input")
    want_dk = direct_backprop_filter(x, dy, (kh, kw), om, g, dil, pad)
    scale_dk = direct_backprop_filter(np.abs(x), np.abs(dy), (kh, kw), om, g, dil, pad)
    out = np.full(k.shape, np.nan, np.float32)
    if mask is None:
        # Taps from non-zeros: the filter gradient takes the kernel's shape only, so give the mask type.
        bwd_k(x, dy, (kh, kw), om, g, dil, pad, out=out)
    else:
        bwd_k(x, dy, (kh, kw), mask, g, dil, pad, out=out)
    _close(out, want_dk, scale_dk, x.shape[0] * want.shape[1] * want.shape[2], what + " backprop_filter")
    dead = want_dk == 0
    assert (out[dead & (scale_dk == 0)] == 0).all(), what + ": dead kernel entries must be exactly 0"


def run_conv_fuzz(core, seed, cases, log=print):
    log(f"conv fuzz: seed={seed} cases={cases} (replay: PIXELCNN_FAST_FUZZ_SEED={seed})")
    for case in range(cases):
        check_conv_case(core, seed, case, elementwise=(case % 4 == 3))
    return cases


# ----------------------------------------------------------------------------- program-spec mutations

PROGRAMS = None


def programs():
    global PROGRAMS
    if PROGRAMS is None:
        PROGRAMS = make_programs.load()
    return PROGRAMS


_NUMBER = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")
_ODD_NUMBERS = ["0", "-1", "1", "2", "3", "7", "255", "65536", "2147483647", "2147483648", "4294967296",
                "9223372036854775807", "99999999999999999999", "1e9", "nan", "inf", "-0", "0.5", "", "x"]
_ODD_TOKENS = ["kind=gather", "fn=frobnicate", "in=999", "out=0", "a=b0", "b=i99", "parts=b0,b0", "channels=",
               "channels=0,0,0", "group=0", "log=2", "phase=-1", "phase=99", "padding=full", "name=%ZZ",
               "name=%00", "kernel=-1", "dh=0", "levels=0", "buffer=-1", "scale=nan", "offset=inf", "=", "\x00",
               "\u00e9", "end", "head kind=probs buffer=0 levels=1 scale=1 offset=0",
               # shifts and delays (docs/SEMANTICS.md): keys a mutant may gain or lose
               "delay=1", "delay=-3", "delay=99999", "dy=1", "dx=-65536", "padding=offset", "oy=-1", "ox=2"]


def mutate_text(rng, text):
    """One random structural or lexical mutation of a spec's text."""
    lines = text.split("\n")
    op = int(rng.integers(0, 9))
    if op == 0 and len(lines) > 1:  # drop a line
        del lines[int(rng.integers(0, len(lines)))]
    elif op == 1:  # duplicate a line
        i = int(rng.integers(0, len(lines)))
        lines.insert(i, lines[i])
    elif op == 2 and len(lines) > 2:  # swap two lines
        i, j = (int(v) for v in rng.integers(0, len(lines), 2))
        lines[i], lines[j] = lines[j], lines[i]
    elif op in (3, 4, 5):  # replace a number
        spots = [(i, m) for i, ln in enumerate(lines) for m in _NUMBER.finditer(ln)]
        if spots:
            i, m = spots[int(rng.integers(0, len(spots)))]
            new = str(rng.choice(_ODD_NUMBERS)) if rng.random() < 0.7 else str(int(m.group()) + int(
                rng.integers(-2, 3))) if re.fullmatch(r"-?\d+", m.group()) else "1"
            lines[i] = lines[i][:m.start()] + new + lines[i][m.end():]
    elif op == 6:  # replace or insert a token
        i = int(rng.integers(0, len(lines)))
        toks = lines[i].split(" ")
        at = int(rng.integers(0, len(toks) + 1))
        tok = str(rng.choice(_ODD_TOKENS))
        if at < len(toks) and rng.random() < 0.5:
            toks[at] = tok
        else:
            toks.insert(at, tok)
        lines[i] = " ".join(toks)
    elif op == 7:  # truncate
        text = "\n".join(lines)
        return text[:int(rng.integers(0, len(text) + 1))]
    else:  # random bytes somewhere
        text = "\n".join(lines)
        at = int(rng.integers(0, len(text) + 1))
        junk = "".join(chr(int(c)) for c in rng.integers(1, 0x250, int(rng.integers(1, 6))))
        return text[:at] + junk + text[at:]
    return "\n".join(lines)


def build_and_run_mutant(core, text, arrays, case, max_floats=None):
    """A mutated spec either fails to build or builds and runs (one image sampled, zeros teacher-forced), with
    every failure a typed error (ValueError / TypeError), never a crash. True when it built. max_floats: skip
    running an image larger than that (a mutated size)."""
    try:
        program = core.ColumnProgram.from_spec(text, arrays, 1)
    except (ValueError, TypeError):
        return False
    h, w, c = program.image_shape
    if max_floats is not None and h * w * c > max_floats:
        return True
    try:
        levels, _ = program.sample(1, case, 1.0)
        assert levels.shape == (1, h, w, c)
        program.teacher_forced(np.zeros((1, h, w, c), np.float32))
    except (ValueError, TypeError):
        pass
    return True


def mutate_arrays(rng, arrays):
    """One random mutation of the spec's arrays (count, shape, dtype, layout, values)."""
    arrays = list(arrays)
    op = int(rng.integers(0, 9))
    k = int(rng.integers(0, len(arrays))) if arrays else 0
    if op == 0 and arrays:
        del arrays[k]
    elif op == 1:
        arrays.append(np.zeros((1, 1, 1, 1), np.float32))
    elif op == 2 and arrays:
        a = arrays[k]
        arrays[k] = np.ascontiguousarray(a.reshape(a.shape[::-1]) if a.ndim == 4 else a)
    elif op == 3 and arrays:
        arrays[k] = arrays[k].astype(np.float64)
    elif op == 4 and arrays:
        arrays[k] = np.asfortranarray(arrays[k]) if arrays[k].ndim > 1 and arrays[k].size > 1 else arrays[k][..., None]
    elif op == 5 and arrays and arrays[k].size:
        a = arrays[k].copy()
        a.reshape(-1)[int(rng.integers(0, a.size))] = rng.choice([np.nan, np.inf, -np.inf, 1e38, -1e38])
        arrays[k] = a
    elif op == 6 and arrays:
        a = arrays[k]
        arrays[k] = np.ascontiguousarray(a[..., :max(0, a.shape[-1] - 1)]) if a.ndim else a
    elif op == 7 and arrays:
        arrays[k] = arrays[k].reshape(-1)
    elif arrays:
        arrays[k] = np.repeat(arrays[k], 2, axis=0)
    return arrays


def spec_case(seed, case):
    """(fixture name, mutated spec, mutated arrays, batch) of one spec-fuzz case."""
    rng = np.random.default_rng([seed, case])
    names = sorted(programs())
    name = names[case % len(names)]
    spec, arrays, n = programs()[name]
    for _ in range(int(rng.integers(1, 4))):
        r = rng.random()
        if r < 0.6:
            spec = mutate_text(rng, spec)
        elif r < 0.9:
            arrays = mutate_arrays(rng, arrays)
        else:
            n = int(rng.choice([0, 1, 2, n + 1, -1, 2 ** 40]))
    return name, spec, arrays, n


TYPED = (ValueError, TypeError)


def check_spec_case(core, seed, case, tf_op=None):
    """One mutated spec through _core.ColumnProgram.from_spec and (if it builds) every path that runs it:
    sample, sample_profile, teacher_forced and the host emulation of the CUDA program (_core.testing.
    EmulatedGpuProgram, which must build whenever the CPU program does, except for its documented refusal of
    shifts and delays). Each either works,
    with outputs of the program's shape and levels in range, or raises a typed error. tf_op(spec, arrays, n)
    (optional) runs the TF op on the same case: it must build and sample exactly when _core does, or raise
    InvalidArgumentError. Returns True when the mutant built."""
    name, spec, arrays, n = spec_case(seed, case)
    what = f"spec fuzz seed={seed} case={case} ({name})"
    try:
        program = core.ColumnProgram.from_spec(spec, arrays, n)
    except TYPED:
        program = None
    except Exception as e:  # anything else escaping is the defect the fuzzer looks for
        raise AssertionError(f"{what}: from_spec raised {type(e).__name__}: {e}") from e
    if tf_op is not None:
        tf_op(what, spec, arrays, n, program is not None)
    if program is None:
        return False
    h, w, c = program.image_shape
    if h * w * c > 4096:
        return True  # built; running a big mutant (e.g. width=65536) would test patience, not robustness
    calls = max(1, n)
    lv = _head_levels(spec)
    try:
        emulated = core.testing.EmulatedGpuProgram.from_spec(spec, arrays, n)
    except ValueError as e:
        if "does not take shifts and delays yet" not in str(e):  # the flat program's one documented refusal
            raise AssertionError(f"{what}: built for the CPU but not as the GPU's flat program: {e}") from e
        emulated = None
    except Exception as e:
        raise AssertionError(f"{what}: built for the CPU but not as the GPU's flat program: "
                             f"{type(e).__name__}: {e}") from e
    try:
        levels, margins = program.sample(calls, case, 1.0)
        assert levels.shape == margins.shape == (calls, h, w, c), f"{what}: sample shape {levels.shape}"
        # Every draw is a level of the head, NaN/inf constants included: never an out-of-range index.
        assert ((levels >= 0) & (levels < lv)).all(), f"{what}: levels outside [0, {lv})"
        image = np.zeros((calls, h, w, c), np.float32)
        head = program.teacher_forced(image)
        assert head.shape[:3] == (calls, h, w), f"{what}: teacher_forced shape {head.shape}"
        program.sample_profile(calls, case, 0.5)
        if emulated is None:
            return True
        el, _ = emulated.sample_emulated(calls, case, 1.0, 0, 2)
        assert el.shape == levels.shape and ((el >= 0) & (el < lv)).all(), f"{what}: emulated levels"
        he = emulated.teacher_forced_emulated(image, 2)
        assert he.shape == head.shape, f"{what}: emulated teacher_forced shape {he.shape}"
    except TYPED:
        pass
    except AssertionError:
        raise
    except Exception as e:
        raise AssertionError(f"{what}: a built program raised {type(e).__name__}: {e}") from e
    return True


def _head_levels(spec):
    """Levels the head draws from (bernoulli: 2), read from the spec text of a program that built."""
    line = next(ln for ln in spec.split("\n") if ln.startswith("head "))
    kind = re.search(r"\bkind=(\w+)", line).group(1)
    return 2 if kind == "bernoulli" else int(re.search(r"\blevels=([-+]?\d+)", line).group(1))


def run_spec_fuzz(core, seed, cases, tf_op=None, log=print):
    log(f"spec fuzz: seed={seed} cases={cases} (replay: PIXELCNN_FAST_FUZZ_SEED={seed})")
    built = sum(bool(check_spec_case(core, seed, case, tf_op)) for case in range(cases))
    log(f"spec fuzz: {built} of {cases} mutants built and ran; the rest raised typed errors")
    return cases, built
