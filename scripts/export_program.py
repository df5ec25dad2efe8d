# Benchmarks (data export, runs with TF): writes the bundled keras.io model's column program + teacher data to benchmarks/data/keras_io_program.npz.
"""Exports the bundled trained keras.io model (pixelcnn_fast/assets/pixelcnn_mnist.keras) as its column
program, so that a GPU machine without TensorFlow can run the CUDA sampler and the PyTorch naive loops
(benchmarks/torch_program.py, benchmarks/bench_cuda.py) on the real weights and check them.

    PYTHONPATH=. python scripts/export_program.py [--out benchmarks/data/keras_io_program.npz]

The npz holds:
  spec             0-d unicode array: the program text (csrc/core/program_spec.h, version 1), exactly what
                   Sampler builds from: sampler.program_spec(sampler, sampler.program.evaluate_consts(n, []))
  array_0..array_K float32 rank-4 arrays the spec lists (kernels (kh, kw, cin, cout) after their masking
                   mechanism, biases as (1, 1, 1, c)); the keras.io model has no condition input, so the
                   constants do not depend on the batch n (checked here for n = 1 and n = 4)
  teacher_image    float32 (4, 28, 28, 1): four held-out MNIST digits (pixelcnn_fast.data), binarised as the
                   keras.io example does
  teacher_logits   float32 (4, 28, 28, 1): the model's logits (its head conv before the sigmoid) on those
                   images, one full forward pass computed by Keras: the reference the cached samplers'
                   teacher forcing and the PyTorch interpreter are checked against

tests/test_export_program.py checks that the committed file equals what this script produces now.
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "data", "keras_io_program.npz")
# Held-out digits (pixelcnn_fast.data.binarized_mnist_split()[1], 50 per class in label order): a 0, a 3,
# a 5 and an 8.
TEACHER_INDICES = (0, 150, 250, 400)


def load_bundled():
    """The bundled keras.io model, loaded as the CLI loads it (pixelcnn_fast.models)."""
    from pixelcnn_fast.models import bundled_model_path, load_model

    return load_model(bundled_model_path())


def export(model=None):
    """dict of the npz's arrays (see the module docstring) for `model` (default: the bundled one)."""
    import keras

    from pixelcnn_fast.data import binarized_mnist_split
    from pixelcnn_fast.sampler import Sampler, program_spec

    model = load_bundled() if model is None else model
    sampler = Sampler(model)
    spec, arrays = program_spec(sampler, sampler.program.evaluate_consts(1, []))
    spec4, arrays4 = program_spec(sampler, sampler.program.evaluate_consts(4, []))
    if spec4 != spec or len(arrays4) != len(arrays) or not all(np.array_equal(a, b) for a, b in zip(arrays, arrays4)):
        raise RuntimeError("the program's constants depend on the batch size: one exported file cannot serve every n")

    _, held_out = binarized_mnist_split()
    image = np.ascontiguousarray(held_out[list(TEACHER_INDICES)], np.float32)

    # The logits: everything up to the head layer through Keras, then the head's conv without its sigmoid.
    head = model.get_layer("head")
    features = keras.Model(model.input, head.input)(image, training=False)
    logits = keras.ops.conv(features, head.kernel, strides=1, padding="same")
    if head.use_bias:
        logits = logits + head.bias
    logits = np.asarray(keras.ops.convert_to_numpy(logits), np.float32)
    probs = np.asarray(keras.ops.convert_to_numpy(model(image, training=False)), np.float32)
    err = float(np.abs(1.0 / (1.0 + np.exp(-logits.astype(np.float64))) - probs).max())
    if err > 1e-5:
        raise RuntimeError(f"sigmoid(exported logits) differs from the model's output by {err:.2e}")

    out = {"spec": np.array(spec), "teacher_image": image, "teacher_logits": logits}
    for k, a in enumerate(arrays):
        out[f"array_{k}"] = np.ascontiguousarray(a, np.float32)
    return out


def read(path):
    """(spec text, [arrays], teacher_image, teacher_logits) from an exported npz."""
    with np.load(path) as z:
        spec = str(z["spec"][()])
        count = sum(1 for k in z.files if k.startswith("array_"))
        arrays = [np.ascontiguousarray(z[f"array_{k}"], np.float32) for k in range(count)]
        return spec, arrays, np.asarray(z["teacher_image"], np.float32), np.asarray(z["teacher_logits"], np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="npz to write (default: %(default)s)")
    args = ap.parse_args(argv)
    data = export()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out, **data)
    n_arrays = sum(1 for k in data if k.startswith("array_"))
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {n_arrays} arrays ({sum(data[f'array_{k}'].size for k in range(n_arrays)):,} floats), "
          f"teacher images {data['teacher_image'].shape}, {size / 2 ** 20:.2f} MiB")
    if size >= 3 * 2 ** 20:
        print("warning: the file is over 3 MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
