"""Python front end: the pure-TF reference path trains dilated masked convs with TensorFlow's oneDNN on
and off (issue: TF's CPU Conv2DBackpropInput without oneDNN refuses dilation > 1, and TF turns oneDNN
on by default only on AVX-512-class CPUs, so a model that trained here failed on an AVX2 machine).

Each setting runs in a subprocess (TF reads TF_ENABLE_ONEDNN_OPTS once, at import); .ci/run also runs
the reference and gradient test files under both settings."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_dilated_reference_model_trains_like_the_fast_layer(onednn, rng, tmp_path):
    root = os.path.dirname(HERE)
    # The repository root first on the path: the subprocess imports the same (in-place built) package.
    path = os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=path)
    seed = int(rng.integers(2**31))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "onednn_train_step.py"), str(seed)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"TF_ENABLE_ONEDNN_OPTS={onednn}:\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(result)
    # The setting took effect (so the "off" run really exercised TF's non-oneDNN CPU kernels).
    assert result["onednn"] == (onednn == "1")
    # One SGD step (lr 0.5) moves weights of size ~0.3 by ~1e-2; the two paths differ only in float32
    # summation order (~1e-7 relative per value), so 1e-5 is far above rounding and far below a real
    # difference (a wrong tap or channel block changes the update by its full size).
    assert result["moved"] > 1e-3, result
    assert result["weight_diff"] <= 1e-5, result
    assert abs(result["loss_fast"] - result["loss_reference"]) <= 1e-5 * abs(result["loss_reference"])
