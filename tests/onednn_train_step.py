"""Test helper (run in a subprocess by tests/test_onednn.py): one SGD step of a dilated masked-conv model
with MaskedConv2D(implementation="reference") and with the fast op, from identical weights, under the
TF_ENABLE_ONEDNN_OPTS the parent set. Prints one JSON line: whether oneDNN is on, the weight difference
between the two, how far training moved the weights, and both losses.

A subprocess because TF reads TF_ENABLE_ONEDNN_OPTS once, at import."""

import json
import sys

import numpy as np
import tensorflow as tf
import keras
from tensorflow.python.util import _pywrap_util_port

from pixelcnn_fast import MaskedConv2D


def model(implementation):
    inp = keras.Input((13, 11, 1))
    x = MaskedConv2D(8, 5, "A", dilation_rate=2, activation="relu", implementation=implementation)(inp)
    x = MaskedConv2D(8, 3, "B", dilation_rate=(1, 3), activation="relu", implementation=implementation)(x)
    x = MaskedConv2D(6, 3, "B", dilation_rate=(2, 1), padding="valid", activation="relu",
                     implementation=implementation)(x)
    return keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))


def main(seed):
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    data = (rng.random((6, 13, 11, 1)) < 0.3).astype(np.float32)
    target = (rng.random((6, 9, 9, 1)) < 0.3).astype(np.float32)
    fast, ref = model("fast"), model("reference")
    ref.set_weights(fast.get_weights())
    w0 = [w.copy() for w in fast.get_weights()]
    losses = []
    for m in (fast, ref):
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="binary_crossentropy")
        losses.append(float(m.train_on_batch(data, target)))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(fast.get_weights(), ref.get_weights()))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(fast.get_weights(), w0))
    print(json.dumps({"onednn": bool(_pywrap_util_port.IsMklEnabled()), "weight_diff": diff,
                      "moved": moved, "loss_fast": losses[0], "loss_reference": losses[1],
                      "tf": tf.__version__}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
