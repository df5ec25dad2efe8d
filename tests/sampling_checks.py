"""Tests: comparing two samplers' images draw by draw (naive loops, cached sampler).

Two samplers given the same seed draw the same images except where a draw's uniform lies within float
rounding of a CDF boundary (docs/SEMANTICS.md, "Randomness"). After such a draw the images legitimately
diverge, so only each image's first differing draw is examined: its margin must be below the boundary
tolerance, else it is a real bug.
"""

import warnings

import numpy as np

from pixelcnn_fast import rng as prng


def first_disagreements(a, b, levels):
    """Per image, the first raster-order draw where runs a and b differ: [(image, index, margin)].

    Raises AssertionError when such a draw had a margin at or above rng.boundary_tolerance (a real bug).
    """
    tol = prng.boundary_tolerance(levels)
    found = []
    for k in range(a.levels.shape[0]):
        la, lb = a.levels[k].ravel(), b.levels[k].ravel()
        diff = np.flatnonzero(la != lb)
        if diff.size == 0:
            continue
        idx = int(diff[0])
        margin = float(min(a.margins[k].ravel()[idx], b.margins[k].ravel()[idx]))
        where = np.unravel_index(idx, a.levels.shape[1:])
        assert margin < tol, (
            f"{a.mode} and {b.mode} disagree at image {k}, (row, col, channel) {tuple(map(int, where))}: "
            f"levels {la[idx]} vs {lb[idx]} with margin {margin:.3e} >= boundary tolerance {tol:.3e}")
        found.append((k, where, margin))
    return found


def assert_same_images(a, b, levels):
    near = first_disagreements(a, b, levels)
    if near:
        warnings.warn(f"{a.mode} vs {b.mode}: {len(near)} image(s) diverged at a draw within float rounding "
                      f"of a CDF boundary (image, position, margin): {near}")
