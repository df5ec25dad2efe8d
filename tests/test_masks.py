"""Tests: Python front end -- mask tap sets (pixelcnn_fast.masks) against the rule in docs/SEMANTICS.md."""

import numpy as np
import pytest

from pixelcnn_fast.masks import check_mask_args, live_taps, make_mask

SHAPES = [(1, 1), (3, 3), (5, 5), (7, 7), (3, 5), (1, 3), (5, 1), (1, 7)]


@pytest.mark.parametrize("kh,kw", SHAPES)
@pytest.mark.parametrize("mask_type", ["A", "B", "a", "b"])
@pytest.mark.parametrize("groups,cin,cout", [(1, 1, 1), (1, 2, 5), (3, 3, 3), (3, 6, 9),
                                             (3, 9, 3)])
def test_make_mask_matches_independent_rule(direct, kh, kw, mask_type, groups, cin, cout):
    # conftest re-derives the rule from docs/SEMANTICS.md with explicit loops; make_mask must agree.
    got = make_mask(kh, kw, cin, cout, mask_type, groups)
    assert got.dtype == np.float32 and got.shape == (kh, kw, cin, cout)
    np.testing.assert_array_equal(got, direct.dense_mask(kh, kw, cin, cout, mask_type, groups))


def test_live_tap_counts_from_design():
    # Numbers stated in docs/SEMANTICS.md: 7x7 mask A has 24 live taps of 49, 3x3 mask B 5 of 9.
    assert len(live_taps(7, 7, "A")) == 24
    assert len(live_taps(3, 3, "B")) == 5
    assert live_taps(1, 1, "A") == []          # nothing before the centre of a 1x1 kernel
    assert live_taps(1, 1, "B") == [(0, 0)]


@pytest.mark.parametrize("kh,kw", SHAPES)
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("groups", [1, 3])
def test_live_taps_are_the_nonzero_taps_in_raster_order(kh, kw, mask_type, groups):
    mask = make_mask(kh, kw, 3, 6, mask_type, groups)
    expected = [(ky, kx) for ky in range(kh) for kx in range(kw) if mask[ky, kx].any()]
    taps = live_taps(kh, kw, mask_type, groups) if groups != 1 else live_taps(kh, kw, mask_type)
    assert taps == expected


def test_check_mask_args_normalises():
    assert check_mask_args(3, "a", 1, 4, 5, 2, "SAME") == (3, 3, "A", (2, 2), "same")
    assert check_mask_args((5, 3), "B", 3, 6, None, (1, 3), "Valid") == \
        (5, 3, "B", (1, 3), "valid")


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(kernel_size=(4, 3)), r"masked_conv2d: kernel_size must be odd.*got \(4, 3\)"),
    (dict(kernel_size=0), r"kernel_size must be >= 1, got 0"),
    (dict(kernel_size=(3, 3, 3)), r"kernel_size.*\(3, 3, 3\)"),
    (dict(mask_type="C"), r"mask_type must be 'A' or 'B', got 'C'"),
    (dict(mask_type=None), r"mask_type must be 'A' or 'B', got None"),
    (dict(color_groups=2), r"color_groups must be 1 or 3, got 2"),
    (dict(color_groups=3, cin=4), r"color_groups=3 needs input channels divisible by 3, got 4"),
    (dict(color_groups=3, cin=3, cout=5),
     r"color_groups=3 needs output channels divisible by 3, got 5"),
    (dict(dilation_rate=0), r"dilation_rate must be >= 1, got 0"),
    (dict(dilation_rate=(1, -2)), r"dilation_rate must be >= 1, got \(1, -2\)"),
    (dict(padding="full"), r"padding must be 'same' or 'valid', got 'full'"),
])
def test_check_mask_args_messages(kwargs, pattern):
    args = dict(kernel_size=3, mask_type="A", color_groups=1, cin=None, cout=None,
                dilation_rate=1, padding="same", where="masked_conv2d")
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        check_mask_args(**args)
