"""Python front end: argument checks shared by the front ends (one place, one wording): the masked conv's (the fast
op and the reference), the samplers' (CLI, Sampler, sample_op, naive, rng) and a saved model file's (CLI, models)."""

import math
import os

import numpy as np

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


# ----------------------------------------------------------------------------- sampler arguments
# One function per rule, one message: the Python twin of csrc/core/checks.h (the pybind modules and the TF
# kernels use that one), word for word, so an argument refused at any front door (CLI, Sampler, sample_op,
# naive, rng, _core, _cuda, the TF op) reads the same. tests/test_robustness.py compares every door.

def _prefix(where):
    return f"{where}: " if where else ""


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name, where, lo=0, bits=32):
    """value as an int in [lo, 2**bits): TypeError for a non-integer (bool, float, str), ValueError out of range."""
    bound = f"an integer in [{lo}, 2**{bits})"
    if not _is_int(value):
        raise TypeError(f"{_prefix(where)}{name} must be {bound}, got {type(value).__name__} {value!r}")
    if not lo <= int(value) < 2 ** bits:
        raise ValueError(f"{_prefix(where)}{name} must be {bound}, got {int(value)}")
    return int(value)


def check_count(n, where, name="n"):
    """Images per call: an int in [1, 2**32) (image indices, the Philox counter's image word, are 32-bit)."""
    return check_int(n, name, where, 1, 32)


def check_seed(seed, where, name="seed"):
    return check_int(seed, name, where, 0, 64)


def check_image_offset(image_offset, n, where):
    """The call's first image index: images image_offset .. image_offset + n - 1 must be 32-bit indices."""
    image_offset = check_int(image_offset, "image_offset", where, 0, 32)
    if image_offset + n > 2 ** 32:
        raise ValueError(f"{_prefix(where)}image_offset + n must be <= 2**32 (image indices are 32-bit), got "
                         f"{image_offset} + {n}")
    return image_offset


def check_temperature(temperature, where, name="temperature"):
    """The temperature as the float32 the samplers divide by: positive and finite before and after the
    conversion (1e300 is a finite float64 but an infinite float32)."""
    if isinstance(temperature, (bool, np.bool_, str, bytes)) or not isinstance(
            temperature, (int, float, np.integer, np.floating)):
        raise TypeError(f"{_prefix(where)}{name} must be a positive finite float32, got "
                        f"{type(temperature).__name__}")
    t = float(temperature)
    with np.errstate(over="ignore"):
        t32 = np.float32(t)
    if not (math.isfinite(t) and t > 0 and np.isfinite(t32) and t32 > 0):
        raise ValueError(f"{_prefix(where)}{name} must be a positive finite float32, got {t!r}")
    return t32


def physical_memory_bytes():
    """This machine's physical memory (0 when unknown: no limit), as checks.h reads it."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGESIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def check_sample_memory(n, image_shape, cache_floats_per_image, where, head_floats_per_image=0, limit=None):
    """Refuses a call whose outputs (levels int32 + margins float32 per image value) and per-image caches could
    never fit in this machine's memory, before anything is allocated, naming the bytes it would need."""
    h, w, c = (int(d) for d in image_shape)
    limit = physical_memory_bytes() if limit is None else limit
    need = (h * w * c * 8 + cache_floats_per_image * 4 + head_floats_per_image * 4) * int(n)
    if limit and need > limit:
        raise ValueError(f"{_prefix(where)}n={int(n)} images of {h}x{w}x{c} would need {float(need):.4g} bytes "
                         f"for outputs and caches, more than this machine's memory ({limit} bytes)")


# ----------------------------------------------------------------------------- text values, model files, messages
# Python-only rules (no C++ door takes these): the CLI's text values, what it refuses before importing Keras,
# and how it quotes an error (models.load_model does the same).

def parse_value_map(text, where, name="value_map"):
    """A value map given as text (the CLI's --value-map): None for None, a name in Sampler's VALUE_MAPS as
    it is, or 'SCALE,OFFSET' as the pair (scale, offset) of finite floats (input = level * SCALE + OFFSET);
    ValueError naming `name` for anything else."""
    if text is None:
        return None
    from pixelcnn_fast.sampler import VALUE_MAPS

    if text in VALUE_MAPS:
        return text
    parts = text.split(",")
    try:
        if len(parts) == 2:
            scale, offset = (float(p) for p in parts)
            if math.isfinite(scale) and math.isfinite(offset):
                return scale, offset
    except ValueError:
        pass
    raise ValueError(f"{_prefix(where)}{name} must be one of {', '.join(sorted(VALUE_MAPS))} or SCALE,OFFSET "
                     f"(two numbers), got {text!r}")


class ModelLoadError(ValueError):
    """A model file that cannot be loaded (missing, unreadable, corrupt): the message is one line,
    "cannot load model 'path': <reason>", fit for a command line's error output (models.load_model)."""


def check_model_file(path):
    """Refuses a saved-model path that cannot be a loadable .keras file (ModelLoadError), without TensorFlow:
    the CLI runs it before importing Keras, so a mistyped --model costs no waiting."""
    import zipfile

    where = f"cannot load model '{path}'"
    if not os.path.exists(path):
        raise ModelLoadError(f"{where}: no such file")
    if os.path.isdir(path):
        raise ModelLoadError(f"{where}: it is a directory, not a .keras file")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"{where}: permission denied")
    # Keras reports a .keras file that is not a zip archive as "File not found", which misleads: say
    # what is wrong (a truncated download fails here too: the zip directory sits at the end).
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{where}: not a .keras (zip) archive: the file is corrupt or truncated")
    return path


def one_line(exc, limit=400):
    """An exception's message on one line (TF/Keras messages span many lines), shortened to `limit`: how the
    CLI and models.load_model quote an error they report."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
