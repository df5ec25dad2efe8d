"""Python front end: causal mask tap sets and the shared masked-convolution argument checks."""

# One semantics for every backend (see docs/SEMANTICS.md, "Masks are tap sets"):
#
#   * raster order; the centre tap of a (kh, kw) kernel is (kh // 2, kw // 2), which is why
#     both sizes must be odd;
#   * mask "A": every row above the centre row, and on the centre row the columns strictly
#     left of the centre; mask "B": the same plus the centre tap;
#   * color_groups=3: input and output channels split into three contiguous blocks
#     (block i = channels [i*c/3, (i+1)*c/3)); away from the centre every live tap connects
#     all channels, at the centre input block i feeds output block j only when i < j (A)
#     or i <= j (B).  color_groups=1 makes the centre all-or-nothing (A dead, B live).
#
# check_mask_args is shared with pixelcnn_fast.ops, pixelcnn_fast.reference and the
# MaskedConv2D layer so every entry point refuses bad input with the same message.

import numbers

import numpy as np

__all__ = ["check_mask_args", "make_mask", "live_taps", "VALID_COLOR_GROUPS"]

# The colour-group rule is defined for a single channel (grey / anything) and for the
# PixelCNN paper's three RGB blocks.
VALID_COLOR_GROUPS = (1, 3)
_MASK_TYPES = ("A", "B")
_PADDINGS = ("same", "valid")


def _prefix(where):
    return f"{where}: " if where else ""


def _is_int(value):
    # bool is an int subclass, but kernel_size=True is certainly a mistake.
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _pair(value, name, where, minimum):
    """Normalise an int or a length-2 sequence of ints to a tuple of two Python ints."""
    if _is_int(value):
        pair = (int(value), int(value))
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise ValueError(
                f"{_prefix(where)}{name} must be an int or a pair of ints, got {value!r}"
            ) from None
        if len(items) != 2 or not all(_is_int(v) for v in items):
            raise ValueError(
                f"{_prefix(where)}{name} must be an int or a pair of ints, got {value!r}"
            )
        pair = (int(items[0]), int(items[1]))
    if min(pair) < minimum:
        shown = pair[0] if _is_int(value) else pair
        raise ValueError(f"{_prefix(where)}{name} must be >= {minimum}, got {shown}")
    return pair


def _check_mask_type(mask_type, where):
    if isinstance(mask_type, bytes):
        mask_type = mask_type.decode("ascii", "replace")
    if not isinstance(mask_type, str) or mask_type.upper() not in _MASK_TYPES:
        raise ValueError(f"{_prefix(where)}mask_type must be 'A' or 'B', got {mask_type!r}")
    return mask_type.upper()


def _check_color_groups(color_groups, where):
    if not _is_int(color_groups) or int(color_groups) not in VALID_COLOR_GROUPS:
        raise ValueError(
            f"{_prefix(where)}color_groups must be 1 or 3, got {color_groups!r}"
        )
    return int(color_groups)


def _check_channels(count, role, color_groups, where):
    if count is None:  # not known yet (layer construction, unknown static shape)
        return
    if not _is_int(count) or int(count) < 1:
        raise ValueError(f"{_prefix(where)}{role} channels must be >= 1, got {count!r}")
    if int(count) % color_groups:
        raise ValueError(
            f"{_prefix(where)}color_groups={color_groups} needs {role} channels divisible "
            f"by {color_groups}, got {int(count)}"
        )


def check_mask_args(kernel_size, mask_type, color_groups=1, cin=None, cout=None,
                    dilation_rate=1, padding="same", where=""):
    """Validate and normalise the arguments of a masked convolution.

    Args:
      kernel_size: int or (kh, kw); both odd and >= 1.
      mask_type: "A" or "B", case-insensitive.
      color_groups: 1 or 3.
      cin, cout: input / output channel counts, or None when not known yet.
      dilation_rate: int or (dh, dw), each >= 1.
      padding: "same" or "valid", case-insensitive.
      where: name of the caller, prefixed to every message ("masked_conv2d: ...").

    Returns:
      (kh, kw, mask_type, (dh, dw), padding) with mask_type upper case and padding lower case.

    Raises:
      ValueError naming the argument, what was expected and what came.
    """
    kh, kw = _pair(kernel_size, "kernel_size", where, minimum=1)
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(
            f"{_prefix(where)}kernel_size must be odd in both dimensions (the centre tap of "
            f"an even kernel is ambiguous), got {(kh, kw)}"
        )
    mask_type = _check_mask_type(mask_type, where)
    color_groups = _check_color_groups(color_groups, where)
    _check_channels(cin, "input", color_groups, where)
    _check_channels(cout, "output", color_groups, where)
    dilation = _pair(dilation_rate, "dilation_rate", where, minimum=1)
    if isinstance(padding, bytes):
        padding = padding.decode("ascii", "replace")
    if not isinstance(padding, str) or padding.lower() not in _PADDINGS:
        raise ValueError(f"{_prefix(where)}padding must be 'same' or 'valid', got {padding!r}")
    return kh, kw, mask_type, dilation, padding.lower()


def live_taps(kh, kw, mask_type, color_groups=1):
    """Kernel indices (ky, kx) of the taps that carry any weight, in raster order.

    With color_groups=1 (the contract's three-argument form) these are the taps before the
    centre, plus the centre for mask "B".  With color_groups=3 the centre tap of mask "A"
    is partially live (input block i -> output block j for i < j), so it is listed too;
    make_mask gives the per-channel detail.
    """
    kh, kw, mask_type, _, _ = check_mask_args((kh, kw), mask_type, color_groups,
                                              where="live_taps")
    cy, cx = kh // 2, kw // 2
    taps = [(ky, kx) for ky in range(cy) for kx in range(kw)]
    taps += [(cy, kx) for kx in range(cx)]
    if mask_type == "B" or color_groups > 1:
        taps.append((cy, cx))
    return taps


def make_mask(kh, kw, cin, cout, mask_type, color_groups=1):
    """The 0/1 float32 mask of shape (kh, kw, cin, cout) for a masked kernel."""
    kh, kw, mask_type, _, _ = check_mask_args((kh, kw), mask_type, color_groups, cin, cout,
                                              where="make_mask")
    mask = np.zeros((kh, kw, cin, cout), dtype=np.float32)
    cy, cx = kh // 2, kw // 2
    mask[:cy] = 1.0
    mask[cy, :cx] = 1.0
    if color_groups == 1:
        if mask_type == "B":
            mask[cy, cx] = 1.0
        return mask
    bi, bo = cin // color_groups, cout // color_groups
    for i in range(color_groups):
        for j in range(color_groups):
            if i < j or (i == j and mask_type == "B"):
                mask[cy, cx, i * bi:(i + 1) * bi, j * bo:(j + 1) * bo] = 1.0
    return mask
