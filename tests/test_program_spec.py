# Tests: pixelcnn_fast/program/spec.py's NumPy reader of the program text, against the C++ parser (no TensorFlow, no torch).
"""The spec reader (pixelcnn_fast.program.spec.parse_spec) is what benchmarks/torch_program.py runs programs
from; it must read what the writer writes and refuse what the C++ parser (csrc/core/program_spec.cc) refuses
as malformed text. Checked here without torch (the parser tests that used to live in test_torch_program.py,
skipped where torch is missing, run everywhere now) and without TensorFlow (the reader's module must not
import it).
"""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from fixtures import make_programs
from fuzz_core import mutate_text
from pixelcnn_fast.program.ir import ACT_FNS, BINARY_FNS, HEAD_KINDS, REDUCE_FNS, STEP_KINDS
from pixelcnn_fast.program.spec import STEP_KEYS, SpecError, parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, "benchmarks") not in sys.path:
    sys.path.append(os.path.join(ROOT, "benchmarks"))  # appended: benchmarks/run.py, report.py must shadow nothing
import torch_program as tp  # noqa: E402  (importable without torch: its work counts are plain NumPy)

NPZ = os.path.join(ROOT, "benchmarks", "data", "keras_io_program.npz")


@pytest.fixture(scope="module")
def core():
    return importlib.import_module("pixelcnn_fast._core")  # an import error fails these tests, never skips them


def test_parser_reads_the_keras_io_program():
    with np.load(NPZ) as z:
        spec, arrays = str(z["spec"][()]), [z[f"array_{k}"] for k in range(sum(k.startswith("array_") for k in z.files))]
    sp = parse_spec(spec)
    assert (sp.height, sp.width, sp.channels) == (28, 28, 1)
    assert len(sp.inputs) == len(arrays) == 38
    assert sp.head == dict(kind="bernoulli", buffer=61, levels=1, scale=1.0, offset=0.0)
    assert [st.kind for st in sp.steps].count("conv") == 19  # 7x7 A, 5 blocks x 3, two 1x1 B, the head
    assert sp.steps[0].name.startswith("pixel_conv_a (PixelcnnFastMaskedConv2D ")  # %20 decoded
    # live taps: 7x7 A has 24 of 49, each 3x3 B 5 of 9 (the trained kernels' zeros are exactly the masks)
    k0 = arrays[0]
    assert np.count_nonzero(np.any(k0 != 0, axis=(2, 3))) == 24
    assert tp.macs_per_position(sp, arrays) < tp.dense_macs_per_position(sp)


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("pixelcnn_fast.column_program 2\n", "unsupported version"),
    ("pixelcnn_fast.column_program 1\nimage height=2 width=2 channels=1\nbuffers channels=1,2\n"
     "input index=0 kind=const\nbinary out=1 fn=pow a=b0 b=i0 phase=0\nhead kind=bernoulli buffer=1 levels=1 "
     "scale=1 offset=0\nend\n", "unknown fn 'pow'"),
    ("pixelcnn_fast.column_program 1\nimage height=2 width=2 channels=1\nbuffers channels=1,2\n"
     "act out=1 in=0 fn=relu phase=0\nhead kind=bernoulli buffer=1 levels=1 scale=1 offset=0\nend\n",
     "needs alpha="),
    ("pixelcnn_fast.column_program 1\nimage height=2 width=2 channels=1\nbuffers channels=1,2\n"
     "act out=1 in=0 fn=relu alpha=0.2 phase=0 colour=red\nhead kind=bernoulli buffer=1 levels=1 scale=1 "
     "offset=0\nend\n", "unknown key"),
    ("pixelcnn_fast.column_program 1\nimage height=2 width=2 channels=1\nbuffers channels=1,2\n"
     "act out=1 in=0 fn=relu alpha=0.2 phase=0\nhead kind=bernoulli buffer=1 levels=1 scale=1 offset=0\n",
     "truncated"),
    ("pixelcnn_fast.column_program 1\nimage height=2 width=2 channels=1\nbuffers channels=1,2\n"
     "input index=0 kind=kernel shape=3,3,1,2\nconv out=1 in=0 kernel=0 dh=1 dw=1 padding=valid phase=0\n"
     "head kind=bernoulli buffer=1 levels=1 scale=1 offset=0\nend\n", "1x1 kernels only"),
])
def test_parser_refuses_malformed_specs(text, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(text)


def test_core_agrees_with_the_parser_on_what_is_malformed(core):
    # The spec the parser refuses for an unknown key, C++ refuses too (both read the same format).
    bad = ("pixelcnn_fast.column_program 1\nimage height=2 width=2 channels=1\nbuffers channels=1,2\n"
           "act out=1 in=0 fn=relu alpha=0.2 phase=0 colour=red\nhead kind=bernoulli buffer=1 levels=1 scale=1 "
           "offset=0\nend\n")
    with pytest.raises(ValueError, match="unknown key"):
        core.ColumnProgram.from_spec(bad, [], 1)


def test_the_step_vocabulary_is_the_readers():
    # One vocabulary (pixelcnn_fast/program/ir.py) for the writer, the reader and the lowering's tables.
    from pixelcnn_fast.program.lower_image_ops import ACTIVATIONS, BINARY, REDUCE

    assert tuple(STEP_KEYS) == STEP_KINDS
    assert set(ACTIVATIONS.values()) == set(ACT_FNS)
    assert set(BINARY.values()) == set(BINARY_FNS)
    assert set(REDUCE.values()) == set(REDUCE_FNS)
    assert HEAD_KINDS == ("bernoulli", "logits", "probs")


@pytest.mark.parametrize("name", sorted(make_programs.load()))
def test_reader_reads_every_fixture_program_as_the_core_builds_it(core, name):
    spec, arrays, n = make_programs.load()[name]
    sp = parse_spec(spec)
    exe = core.ColumnProgram.from_spec(spec, arrays, n)
    assert (sp.height, sp.width, sp.channels) == tuple(exe.image_shape)
    assert len(sp.inputs) == len(arrays)
    for (kind, shape), a in zip(sp.inputs, arrays):
        if kind == "kernel":
            assert tuple(a.shape) == shape
    assert sp.buffer_channels[0] == sp.channels and sp.head["buffer"] < len(sp.buffer_channels)
    assert [st.out for st in sp.steps] == sorted(st.out for st in sp.steps)  # each step writes a new buffer
    assert {st.kind for st in sp.steps} <= set(STEP_KINDS)


def test_text_the_core_accepts_the_reader_reads(core):
    """Mutated fixture texts (tests/fuzz_core.mutate_text) with their arrays: whatever the C++ parser builds, the
    reader reads too (it refuses only with SpecError), with the same image and head buffer. The reader may accept
    text that C++ refuses for what it checks beyond the text (arrays, phases, channel counts)."""
    seed = 20261130
    built = 0
    for case, (name, (spec, arrays, n)) in enumerate(sorted(make_programs.load().items()) * 40):
        rng = np.random.default_rng([seed, case])
        text = mutate_text(rng, spec)
        try:
            exe = core.ColumnProgram.from_spec(text, arrays, n)
        except (ValueError, TypeError):
            exe = None
        try:
            sp = parse_spec(text)
        except SpecError as e:
            assert exe is None, f"case {case} ({name}): the core builds it, the reader refuses: {e}\n{text}"
            continue
        if exe is not None:
            built += 1
            assert (sp.height, sp.width, sp.channels) == tuple(exe.image_shape), f"case {case} ({name})"
    assert built > 0  # some mutants survive both, or the check compares nothing


def test_the_reader_imports_without_tensorflow():
    code = ("import sys\nimport pixelcnn_fast.program.spec, pixelcnn_fast.rng\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n"
            "print('OK')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]
