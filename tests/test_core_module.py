"""Tests: the pybind11 module's two faces -- pixelcnn_fast._core is the product, its test seams live in the
submodule pixelcnn_fast._core.testing (csrc/python/core_module.cc and core_testing.cc), which a test imports
explicitly -- and the seam that runs the GPU sampler's flat program on the host checks its arguments as the
product does."""

import importlib
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures import make_programs  # noqa: E402

SEAMS = ("masked_conv2d_forward_elementwise", "masked_conv2d_backprop_input_elementwise",
         "masked_conv2d_backprop_filter_elementwise", "kernel_live_taps", "live_taps", "philox4x32_10",
         "philox_uniform", "philox_uniform_grid", "draw_levels", "EmulatedGpuProgram")
EMULATION = ("sample_emulated", "teacher_forced_emulated", "gpu_step_count")


def test_test_seams_are_in_the_testing_submodule_only(core):
    testing = importlib.import_module("pixelcnn_fast._core.testing")  # importable by name, not only as attribute
    assert core.testing is testing
    for name in SEAMS:
        assert hasattr(testing, name), f"_core.testing lacks {name}"
        assert not hasattr(core, name), f"{name} is a test seam but _core (the product) has it"
    for name in EMULATION:
        assert hasattr(testing.EmulatedGpuProgram, name), name
        assert not hasattr(core.ColumnProgram, name), f"_core.ColumnProgram still has the test seam {name}"
    # The product is still whole: what pixelcnn_fast's front end calls.
    for name in ("masked_conv2d_forward", "masked_conv2d_backprop_input", "masked_conv2d_backprop_filter",
                 "set_num_threads", "get_num_threads", "isa", "supported_isas", "ColumnProgram"):
        assert hasattr(core, name), name


def test_emulated_program_checks_its_arrays_as_the_product_does(core, core_testing):
    spec, arrays, n = make_programs.load()["keras_io"]
    bad = [arrays[0].astype(np.float64)] + arrays[1:]
    messages = []
    for where, build in (("ColumnProgram.from_spec", core.ColumnProgram.from_spec),
                         ("EmulatedGpuProgram.from_spec", core_testing.EmulatedGpuProgram.from_spec)):
        with pytest.raises(TypeError) as e:
            build(spec, bad, n)
        assert str(e.value).startswith(where + ": arrays[0] must have dtype float32"), str(e.value)
        messages.append(str(e.value)[len(where):])
        with pytest.raises(ValueError, match=r"declares \d+ input arrays, got \d+"):
            build(spec, arrays[:-1], n)
    assert messages[0] == messages[1]


def test_emulated_program_counts_the_gpu_steps_of_its_program(core_testing):
    """Every program step is run, folded into a conv's epilogue or dropped: the three counts add up to the
    steps of the spec, whichever fixture."""
    for name, (spec, arrays, n) in sorted(make_programs.load().items()):
        steps, fused, dropped = core_testing.EmulatedGpuProgram.from_spec(spec, arrays, n).gpu_step_count()
        kinds = ("conv", "binary", "act", "concat", "gather", "softmax", "reduce")
        total = sum(1 for line in spec.splitlines() if line.split(" ", 1)[0] in kinds)
        assert steps >= 1 and steps + fused + dropped == total, (name, steps, fused, dropped, total)
