"""Python front end: a dependency-free PNG writer and reader (zlib + struct) and the sample-grid layout.

The CLI writes sampled digits as a PNG without pulling in Pillow or matplotlib: a PNG of 8-bit greyscale
or RGB pixels is a signature, an IHDR chunk, zlib-compressed scanlines (each prefixed by its filter
type) and an IEND chunk, each chunk with a CRC-32. `read_png` decodes 8-bit greyscale / RGB,
non-interlaced files with any of the five scanline filters (what any encoder may emit for these
types); it exists so that tests check what `write_png` wrote, not as a general PNG library.
"""

import math
import struct
import zlib

import numpy as np

__all__ = ["write_png", "read_png", "image_grid"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (0 greyscale, 2 RGB)


def _chunk(kind, data):
    # The CRC covers the chunk type and its data, not the length (PNG spec, section 5.3).
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _as_pixels(array):
    """(H, W, C) uint8 with C in {1, 3} from (H, W), (H, W, 1) or (H, W, 3) uint8 / integer in [0, 255]."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in _COLOR_TYPES or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"write_png: array must be (H, W), (H, W, 1) or (H, W, 3) with H, W >= 1, "
                         f"got shape {a.shape}")
    if a.dtype != np.uint8:
        # Refuse silent wrap-around: a float image in [0, 1] cast to uint8 would come out black.
        if a.dtype.kind not in "iub" or a.min() < 0 or a.max() > 255:
            raise ValueError(f"write_png: array must hold integers in [0, 255] (uint8), got dtype {a.dtype}"
                             + (f" with values in [{a.min()}, {a.max()}]" if a.size and a.dtype.kind in "iuf"
                                else ""))
        a = a.astype(np.uint8)
    return np.ascontiguousarray(a)


def encode_png(array, level=6):
    """The bytes of a PNG holding `array` (see write_png)."""
    a = _as_pixels(array)
    h, w, c = a.shape
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPES[c], 0, 0, 0)  # 8-bit, deflate, no interlace
    # Filter type 0 (None) on every scanline: simple and what read_png is tested on; zlib still
    # compresses the mostly-constant sample grids well.
    raw = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, w * c)], axis=1).tobytes()
    return (_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, level))
            + _chunk(b"IEND", b""))


def write_png(path, array):
    """Writes an 8-bit greyscale ((H, W) or (H, W, 1)) or RGB ((H, W, 3)) uint8 array as a PNG file."""
    data = encode_png(array)
    with open(path, "wb") as f:
        f.write(data)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw, h, stride, bpp):
    """Undoes the per-scanline filters (types 0-4) of the decompressed image data."""
    if len(raw) != h * (stride + 1):
        raise ValueError(f"read_png: image data holds {len(raw)} bytes, expected {h * (stride + 1)}")
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if ftype == 0:
            cur = line
        elif ftype == 2:  # Up
            cur = (line + prev) & 0xFF
        elif ftype in (1, 3, 4):  # Sub, Average, Paeth depend on the reconstructed left byte: per byte
            cur = np.zeros(stride, np.int64)
            for x in range(stride):
                left = cur[x - bpp] if x >= bpp else 0
                up = prev[x]
                if ftype == 1:
                    pred = left
                elif ftype == 3:
                    pred = (left + up) >> 1
                else:
                    pred = _paeth(left, up, prev[x - bpp] if x >= bpp else 0)
                cur[x] = (line[x] + pred) & 0xFF
        else:
            raise ValueError(f"read_png: unknown scanline filter type {ftype} in row {y}")
        out[y] = cur
        prev = cur
    return out


def read_png(path):
    """Decodes an 8-bit greyscale or RGB, non-interlaced PNG into (H, W) or (H, W, 3) uint8.

    Checks the signature and every chunk's CRC; other colour types, bit depths and interlacing are
    refused (ValueError): this decoder is for checking our own output, not a general reader."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"read_png: {path!r} is not a PNG file (bad signature)")
    pos, header, idat = len(_SIGNATURE), None, []
    while True:
        if pos + 8 > len(data):
            raise ValueError(f"read_png: {path!r} ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise ValueError(f"read_png: {path!r}: chunk {kind!r} is truncated")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise ValueError(f"read_png: {path!r}: chunk {kind!r} has a bad CRC")
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"read_png: {path!r} has no IHDR chunk")
    w, h, depth, ctype, compression, filtering, interlace = header
    channels = {v: k for k, v in _COLOR_TYPES.items()}.get(ctype)
    if depth != 8 or channels is None or compression != 0 or filtering != 0 or interlace != 0:
        raise ValueError(f"read_png: only 8-bit greyscale / RGB non-interlaced PNGs are supported, got bit "
                         f"depth {depth}, colour type {ctype}, interlace {interlace}")
    pixels = _unfilter(zlib.decompress(b"".join(idat)), h, w * channels, channels)
    return pixels.reshape(h, w) if channels == 1 else pixels.reshape(h, w, 3)


def grid_shape(n):
    """(rows, cols) of a near-square grid for n images: cols = ceil(sqrt(n)), as few rows as fit."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def image_grid(levels, levels_count, pad=2, value=128):
    """Tiles n images of integer levels 0..levels_count-1, (n, H, W, C) with C in {1, 3} (or (n, H, W)),
    into one uint8 image: a near-square grid (grid_shape) with `pad` pixels of grey `value` between
    and around the images (also filling unused cells). Level k becomes round(255 * k / (levels_count - 1)),
    so the lowest level is black and the highest white whatever the level count."""
    a = np.asarray(levels)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[0] < 1 or a.shape[3] not in (1, 3):
        raise ValueError(f"image_grid: levels must be (n, H, W), (n, H, W, 1) or (n, H, W, 3) with n >= 1, "
                         f"got shape {a.shape}")
    if isinstance(levels_count, bool) or int(levels_count) != levels_count or levels_count < 2:
        raise ValueError(f"image_grid: levels_count must be an integer >= 2, got {levels_count!r}")
    if a.min() < 0 or a.max() > levels_count - 1:
        raise ValueError(f"image_grid: levels must lie in [0, {levels_count - 1}], got values in "
                         f"[{a.min()}, {a.max()}]")
    if int(pad) < 0 or not 0 <= int(value) <= 255:
        raise ValueError(f"image_grid: pad must be >= 0 and value in [0, 255], got pad={pad}, value={value}")
    pad, value = int(pad), int(value)
    n, h, w, c = a.shape
    pixels = np.rint(a.astype(np.float64) * (255.0 / (levels_count - 1))).astype(np.uint8)
    rows, cols = grid_shape(n)
    grid = np.full((pad + rows * (h + pad), pad + cols * (w + pad), c), value, np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = pixels[k]
    return grid[:, :, 0] if c == 1 else grid
