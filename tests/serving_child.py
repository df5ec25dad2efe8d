"""Tests: the fresh serving process of tests/test_serving.py (run as a script: python serving_child.py DIR).

In this order: a raw tf.saved_model.load before any pixelcnn_fast op is registered (TensorFlow's error is
recorded); serving.load with the op library made unloadable (its message recorded); serving.load for real,
sampling each exported Sampler through its function and its signature; the Keras export served."""

import json
import sys

import numpy as np
import tensorflow as tf

d = sys.argv[1]
cases = json.load(open(f"{d}/cases.json"))
out = {}
try:
    tf.saved_model.load(cases["cases"][0]["path"])
    out["raw_error"] = None
except Exception as exc:  # what a user sees: recorded, the test checks it
    out["raw_error"] = {"type": type(exc).__name__, "message": str(exc)}

import pixelcnn_fast._ext as ext  # noqa: E402  (after the raw load: importing it registers nothing yet)
from pixelcnn_fast import serving  # noqa: E402

real = ext.tf_ops


def unloadable():
    raise ImportError("simulated: built without TF ops")


ext.tf_ops = unloadable
try:
    serving.load(cases["cases"][0]["path"])
    out["helper_error"] = None
except RuntimeError as exc:
    out["helper_error"] = str(exc)
ext.tf_ops = real

for case in cases["cases"]:
    loaded = serving.load(case["path"])
    conds = [np.load(f"{d}/{case['name']}_cond{k}.npy") for k in range(case["conditions"])]
    levels = loaded.sample(case["n"], case["seed"], 0.8, case["offset"], *conds)["levels"]
    np.save(f"{d}/{case['name']}_function.npy", levels.numpy())
    names = {f"condition_{k}": tf.constant(c) for k, c in enumerate(conds)}
    sig = loaded.signatures[serving.SIGNATURE]
    levels = sig(n=tf.constant(case["n"], tf.int64), seed=tf.constant(case["seed"], tf.int64),
                 temperature=tf.constant(0.8), image_offset=tf.constant(case["offset"], tf.int64), **names)["levels"]
    np.save(f"{d}/{case['name']}_signature.npy", levels.numpy())

keras_model = serving.load(cases["keras"])
np.save(f"{d}/keras_got.npy", keras_model.serve(np.load(f"{d}/keras_image.npy")).numpy())
json.dump(out, open(f"{d}/child.json", "w"))
