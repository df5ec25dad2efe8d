"""Tests: the smoke check tests/test_wheel.py runs inside a fresh venv that holds only an installed wheel.

Run from a folder outside the repository, so `import pixelcnn_fast` can only find the installed copy. Not
collected by pytest (no test_ prefix): it is a script, its exit status is the verdict.
"""

import os
import subprocess
import sys

import numpy as np

import pixelcnn_fast

where = os.path.realpath(os.path.dirname(pixelcnn_fast.__file__))
assert where.startswith(os.path.realpath(sys.prefix)), f"imported {where}, not the venv's installed wheel"
info = pixelcnn_fast.build_info()
print("pixelcnn_fast", pixelcnn_fast.__version__, "from", where)
print("build_info", info)
assert info["version"] == pixelcnn_fast.__version__, info
assert {"cpu", "tf_ops"} <= set(info["backends"]), info

import tensorflow as tf  # noqa: E402

from pixelcnn_fast import ops, reference  # noqa: E402

# The fast op against the pure-TF reference: the keras.io layer shapes, odd sizes, both masks.
rng = np.random.default_rng(0)
for mask, k, cin, cout, groups in [("A", 7, 1, 16, 1), ("B", 3, 12, 9, 3), ("B", 5, 4, 6, 1)]:
    x = rng.standard_normal((2, 13, 11, cin)).astype(np.float32)
    w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    got = ops.masked_conv2d(x, w, mask, color_groups=groups).numpy()
    want = reference.masked_conv2d(tf.constant(x), tf.constant(w), mask, color_groups=groups).numpy()
    # float32 sums in a different order: errors of a few ulps of sum |x||w| (at most k*k*cin terms of ~1).
    scale = float(np.abs(x).max() * np.abs(w).max() * k * k * cin)
    err = float(np.abs(got - want).max())
    assert got.shape == want.shape and err <= 1e-5 * scale, (mask, k, cin, cout, err, scale)
    print(f"masked_conv2d {k}x{k} mask {mask} {cin}->{cout} groups {groups}: max |fast - reference| = {err:.2e}")

# Sample 2 images from the bundled model, in this process and through the installed command.
from pixelcnn_fast.models import bundled_model_path, load_model  # noqa: E402

model = load_model(bundled_model_path())
images = pixelcnn_fast.Sampler(model).sample(2, seed=0)
assert images.shape == (2, 28, 28, 1) and set(np.unique(images)) <= {0, 1}, (images.shape, np.unique(images))
print(f"Sampler: 2 images, {int(images.sum())} pixels on")

cli = os.path.join(os.path.dirname(sys.executable), "pixelcnn-fast")
subprocess.run([cli, "sample", "--n", "2", "--out", "x.png", "--quiet"], check=True)
with open("x.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n", "x.png is not a PNG"
print("pixelcnn-fast sample --n 2 --out x.png: ok")
print("SMOKE OK")
