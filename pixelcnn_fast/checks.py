"""Python front end: argument checks shared by the fast op and the reference (one place, one wording)."""


from pixelcnn_fast.masks import check_mask_args


def _static_dim(shape, axis):
    dim = shape[axis]
    return None if dim is None else int(dim)


def check_conv_inputs(x, kernel, mask_type, color_groups, dilation_rate, padding, where, dtypes=None):
    """Checks tensors x (N,H,W,Cin) and kernel (kh,kw,Cin,Cout) and the mask arguments.

    dtypes: the accepted dtypes (None: any floating dtype). Returns check_mask_args' normalised
    (kh, kw, mask_type, (dh, dw), padding). Raises ValueError naming argument, expected and received.
    """
    if x.shape.rank is not None and x.shape.rank != 4:
        raise ValueError(f"{where}: x must be rank 4 (N, H, W, Cin), got rank {x.shape.rank} "
                         f"with shape {tuple(x.shape)}")
    if kernel.shape.rank is not None and kernel.shape.rank != 4:
        raise ValueError(f"{where}: kernel must be rank 4 (kh, kw, Cin, Cout), got rank "
                         f"{kernel.shape.rank} with shape {tuple(kernel.shape)}")
    for name, t in (("x", x), ("kernel", kernel)):
        if dtypes is None:
            if not t.dtype.is_floating:
                raise ValueError(f"{where}: {name} must be a floating dtype (float16, bfloat16, "
                                 f"float32, float64), got {t.dtype.name}")
        elif t.dtype not in dtypes:
            raise ValueError(f"{where}: {name} must have dtype "
                             f"{' or '.join(d.name for d in dtypes)}, got {t.dtype.name}")
    if kernel.dtype != x.dtype:
        raise ValueError(f"{where}: kernel dtype must match x dtype {x.dtype.name}, got "
                         f"{kernel.dtype.name}")
    if kernel.shape.rank is None or not kernel.shape.is_fully_defined():
        # The tap set is built from the kernel's static shape.
        raise ValueError(f"{where}: kernel must have a fully known static shape, got {kernel.shape}")
    kh, kw, kcin, kcout = (int(d) for d in kernel.shape)
    xcin = _static_dim(x.shape, 3) if x.shape.rank is not None else None
    # Kernel size / mask / groups / dilation / padding first, then the channel agreement:
    # an even kernel is reported as such whatever its channels.
    kh, kw, mask_type, (dh, dw), padding = check_mask_args(
        (kh, kw), mask_type, color_groups, kcin, kcout, dilation_rate, padding, where=where)
    if xcin is not None and xcin != kcin:
        raise ValueError(f"{where}: kernel input channels (kernel.shape[2]) must equal x "
                         f"channels (x.shape[3]) = {xcin}, got {kcin}")
    if padding == "valid" and x.shape.rank is not None:
        for axis, k, d, name in ((1, kh, dh, "height"), (2, kw, dw, "width")):
            size = _static_dim(x.shape, axis)
            extent = d * (k - 1) + 1
            if size is not None and size < extent:
                raise ValueError(
                    f"{where}: padding='valid' needs x {name} >= the dilated kernel extent "
                    f"{extent}, got {size}")
    return kh, kw, mask_type, (dh, dw), padding
