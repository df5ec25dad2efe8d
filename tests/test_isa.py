"""Core microkernels: every instruction-set build this CPU can run (AVX-512, AVX2, SSE2) computes the
same masked conv as the float64 oracle. The build is chosen once per process, so each runs in a
subprocess with PIXELCNN_FAST_ISA set."""

import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# Shapes chosen to hit every tile edge: output channels 1..4 (the dot kernel; 1-3 input channels make the
# input gradient the GEMM-then-gather-add path), 5..17 and 63..70
# (partial register panels, and 15 with colour groups), pixel counts that are not multiples of the 6-row tile, colour groups,
# dilation and 'valid' padding.
SCRIPT = textwrap.dedent(r"""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from conftest import direct_forward, direct_backprop_input, direct_backprop_filter
    from pixelcnn_fast import _core
    assert _core.isa() == sys.argv[1], (_core.isa(), sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[3]))
    cases = [
        (1, 5, 7, 1, 1, 3, "A", 1, 1, "same"), (2, 3, 4, 5, 3, 3, "B", 1, 1, "same"),
        (1, 7, 9, 6, 66, 5, "A", 3, 1, "same"), (3, 4, 5, 9, 15, 3, "B", 3, 2, "same"),
        (1, 9, 8, 13, 70, 3, "B", 1, 1, "valid"), (2, 6, 11, 2, 4, 7, "A", 1, 1, "same"),
        (1, 13, 17, 12, 63, 3, "A", 3, 3, "same"), (2, 2, 3, 33, 2, 1, "B", 1, 1, "same"),
        (2, 9, 11, 1, 128, 7, "A", 1, 1, "same"), (1, 8, 7, 3, 37, 7, "A", 1, 2, "same"),
    ]
    worst = 0.0
    for n, h, w, cin, cout, k, mask, groups, dil, pad in cases:
        x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
        kern = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
        y = _core.masked_conv2d_forward(x, kern, mask, groups, (dil, dil), pad)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = _core.masked_conv2d_backprop_input(dy, kern, (h, w), mask, groups, (dil, dil), pad)
        dk = _core.masked_conv2d_backprop_filter(x, dy, (k, k), mask, groups, (dil, dil), pad)
        x64, k64, dy64 = x.astype(np.float64), kern.astype(np.float64), dy.astype(np.float64)
        refs = [direct_forward(x64, k64, mask, groups, dil, pad),
                direct_backprop_input(dy64, k64, (h, w), mask, groups, dil, pad),
                direct_backprop_filter(x64, dy64, (k, k), mask, groups, dil, pad)]
        for name, got, ref in zip(("forward", "backprop_input", "backprop_filter"), (y, dx, dk), refs):
            # float32 accumulation over at most a few hundred products of unit normals.
            err = np.max(np.abs(got - ref)) / (np.max(np.abs(ref)) + 1e-30)
            worst = max(worst, err)
            assert err < 1e-5, (sys.argv[1], name, (n, h, w, cin, cout, k, mask, groups, dil, pad), err)
    print("worst relative error", worst)
""")


def _supported():
    from pixelcnn_fast import _core
    return _core.supported_isas()


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_every_isa_build_matches_float64(isa, tmp_path):
    if isa not in _supported():
        pytest.skip(f"this CPU cannot run the {isa} microkernels")
    script = tmp_path / "isa_check.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PIXELCNN_FAST_ISA=isa)
    proc = subprocess.run([sys.executable, str(script), isa, HERE, "1234"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "worst relative error" in proc.stdout
