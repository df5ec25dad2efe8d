# Benchmarks (GPU baseline, no TF): a column-program spec run as full-image PyTorch ops, and the naive repredict sampling loops on it.
"""A column program (csrc/core/program_spec.h, version 1: the text + arrays that pixelcnn_fast.program.spec writes and
scripts/export_program.py saves) executed as ordinary full-image PyTorch ops, for the GPU benchmarks
(benchmarks/bench_cuda.py): the baseline a PyTorch user gets, cuDNN convolutions on the dense masked kernels
(zeros multiplied), re-run over the whole image once per pixel.

Needs numpy, numba and torch, and the package's TensorFlow-free parts: pixelcnn_fast.program.spec (the spec reader)
and pixelcnn_fast.rng (the sampler's uniforms and draws). TensorFlow is not imported: the GPU machine may not have it.

* ``parse_spec(text)``: the spec as a Python object (pixelcnn_fast.program.spec.parse_spec: strict about the
  statements and keys it reads, like the C++ parser).
* ``TorchProgram(spec, arrays, device, layout="nchw"|"nhwc", dtype)``: ``forward(image)`` on an (n, C, h, W)
  tensor (h <= H: a row-cropped image) returns the head buffer (n, head channels, h, W). Convs are F.conv2d with
  the kernel (kh, kw, cin, cout) as (cout, cin, kh, kw) and TF's 'same' padding (pad (extent - 1) // 2 before,
  the rest after, extent = (k - 1) * d + 1; asymmetric padding through F.pad), 'valid' only for 1x1 kernels as
  the C++ executor requires; a conv whose output only feeds an add of a per-channel constant gets it as
  F.conv2d's bias (what a PyTorch user writes: one cuDNN call, not two kernels); steps the head does not read
  (the keras.io model's final sigmoid) are skipped; buffers are freed after their last reader. layout "nhwc"
  keeps every tensor in torch.channels_last memory format (logical shapes stay NCHW).
* Randomness: the uniforms are pixelcnn_fast.rng.uniform_grid (csrc/core/philox.h's Philox4x32-10, bit-identical
  to the C++ and CUDA samplers); ``draw_levels`` draws with pixelcnn_fast.rng.draw_levels on the host (the same
  float32 inverse CDF as the C++ core, libm's exp), so one small device-to-host copy of the head values per step.
* ``naive_sample(program, n, seed, temperature, mode)``: mode "full" re-runs ``forward`` on the whole image once
  per pixel and image channel (H*W*C forwards); mode "rows" on rows 0..i only (pixelcnn_fast/naive.py's "rows":
  for a causal model the outputs in row i depend only on rows <= i, so the crop gives the same values).
  ``naive_sample_full`` / ``naive_sample_rows`` are the two modes. The image stays on the device between steps;
  only the head values of the drawn pixel come to the host for the draw (as pixelcnn_fast.naive does). Each new
  input shape (every crop height in "rows") is run once before its first timed use (cuDNN's autotuner with
  cudnn.benchmark; pixelcnn_fast.naive excludes tf.function tracing the same way) and that time is reported
  apart (warm_seconds). ``rows_seconds_estimate`` is naive.rows_seconds_estimate on this loop.
"""

import dataclasses
import math
import os
import sys
import time

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - the parser and the draws work without torch; the executor needs it
    torch = None
    F = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # the checkout's pixelcnn_fast when it is not installed

from pixelcnn_fast import rng  # noqa: E402
from pixelcnn_fast.program.spec import Spec, SpecError, parse_spec  # noqa: E402,F401 (re-exported)

__all__ = ["parse_spec", "Spec", "SpecError", "TorchProgram", "draw_levels", "naive_sample", "naive_sample_full",
           "naive_sample_rows", "rows_seconds_estimate", "NaiveResult", "first_disagreements", "macs_per_position",
           "dense_macs_per_position"]


# ----------------------------------------------------------------------------- work counts of a parsed spec

def macs_per_position(spec, arrays):
    """Multiply-adds per position per image of every conv over its live taps (a tap with any non-zero weight
    counts cin x cout; taps in the 'same' padding counted): the C++ executor's macs_per_position() for models
    without colour groups (with groups it also skips dead channel blocks at the centre tap)."""
    total = 0
    for st in spec.steps:
        if st.kind == "conv":
            k = np.asarray(arrays[st.attrs["kernel"]])
            live = int(np.count_nonzero(np.any(k != 0, axis=(2, 3))))
            total += live * k.shape[2] * k.shape[3]
    return total


def dense_macs_per_position(spec):
    """The same counting every tap (what a dense convolution of the masked kernel multiplies)."""
    return sum(int(np.prod(spec.inputs[st.attrs["kernel"]][1])) for st in spec.steps if st.kind == "conv")


# ----------------------------------------------------------------------------- randomness (pixelcnn_fast.rng)

def draw_levels(values, kind, temperature, u):
    """(levels int32 (M,), margins float32 (M,)) on values' device: pixelcnn_fast.rng.draw_levels of each row.

    values (M, L) head values (bernoulli: L == 1, the logit); u (M,) float32 uniforms (numpy or a tensor). The
    draw runs on the host, in float32 as the C++ core's (so a level can differ from the core's only where the
    uniform lies within rounding of a CDF boundary, which the margins tell)."""
    host = np.ascontiguousarray(values.detach().to("cpu", torch.float32).numpy())
    u = np.ascontiguousarray(u.detach().cpu().numpy() if torch.is_tensor(u) else u, np.float32)
    levels, margins = rng.draw_levels(host, kind, temperature, u, return_margin=True)
    return (torch.from_numpy(levels).to(values.device), torch.from_numpy(margins).to(values.device))


# ----------------------------------------------------------------------------- the executor

_ACTS = {
    "relu": lambda x, a: F.relu(x),
    "relu6": lambda x, a: F.relu6(x),
    "elu": lambda x, a: F.elu(x),
    "selu": lambda x, a: F.selu(x),
    "tanh": lambda x, a: torch.tanh(x),
    "sigmoid": lambda x, a: torch.sigmoid(x),
    "softplus": lambda x, a: F.softplus(x, beta=1.0, threshold=20.0),
    "softsign": lambda x, a: F.softsign(x),
    "leaky_relu": lambda x, a: F.leaky_relu(x, a),
    "neg": lambda x, a: torch.neg(x),
    "exp": lambda x, a: torch.exp(x),
    "square": lambda x, a: torch.square(x),
    "abs": lambda x, a: torch.abs(x),
    "erf": lambda x, a: torch.erf(x),
}
_BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "max": lambda a, b: torch.maximum(a, b),
    "min": lambda a, b: torch.minimum(a, b),
}


def _same_pads(k, d):
    extent = (k - 1) * d + 1
    before = (extent - 1) // 2
    return before, extent - 1 - before


class TorchProgram:
    """A parsed program as full-image torch ops: forward((n, C, h, W) image) -> head buffer (n, Ch, h, W)."""

    def __init__(self, spec, arrays, device="cpu", layout="nchw", dtype=None, fuse_bias=True):
        if torch is None:
            raise ImportError("TorchProgram needs PyTorch (pip install torch)")
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"TorchProgram: layout must be 'nchw' or 'nhwc', got {layout!r}")
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        sp = self.spec
        if len(arrays) != len(sp.inputs):
            raise ValueError(f"TorchProgram: the spec declares {len(sp.inputs)} inputs, got {len(arrays)} arrays")
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.layout = layout
        self.memory_format = torch.channels_last if layout == "nhwc" else torch.contiguous_format
        self.height, self.width, self.channels = sp.height, sp.width, sp.channels
        for st in sp.steps:  # the row-cropped forward below assumes unshifted, undelayed steps
            if st.kind == "shift" or st.attrs.get("padding") == "offset" or st.attrs.get("delay", (0, 0)) != (0, 0):
                raise ValueError(f"TorchProgram: step '{st.name}' ({st.kind}) is a shift or delayed step, which this "
                                 "baseline does not run (docs/SEMANTICS.md, 'Shifts are read offsets')")
        self.head = dict(sp.head)
        self.head_channels = sp.buffer_channels[sp.head["buffer"]]
        self.levels_per_channel = sp.head["levels"]
        self.arrays = []
        for k, ((kind, shape), a) in enumerate(zip(sp.inputs, arrays)):
            a = np.asarray(a, np.float32)
            if a.ndim != 4:
                raise ValueError(f"TorchProgram: arrays[{k}] must be rank 4, got shape {a.shape}")
            if kind == "kernel":
                if tuple(a.shape) != tuple(shape):
                    raise ValueError(f"TorchProgram: arrays[{k}] (a kernel) must have shape {shape}, got {a.shape}")
                t = torch.from_numpy(np.ascontiguousarray(a.transpose(3, 2, 0, 1)))  # (cout, cin, kh, kw)
            else:
                t = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # (n|1, c|1, H|1, W|1)
            self.arrays.append(t.to(self.device, self.dtype).contiguous(memory_format=self.memory_format))
        self._plan()

    # -- planning: dead steps, bias fusion, last uses
    def _plan(self):
        sp = self.spec
        steps = list(sp.steps)
        writers = [st.out for st in steps]
        prunable = len(set(writers)) == len(writers)  # each buffer written once (what the lowering emits)

        def reads(st):
            a = st.attrs
            if st.kind in ("binary",):
                return [i for kind, i in (a["a"], a["b"]) if kind == "buffer"]
            if st.kind == "concat":
                return [i for kind, i in a["parts"] if kind == "buffer"]
            return [a["in"]]

        if prunable:
            needed, keep = {sp.head["buffer"]}, []
            for st in reversed(steps):
                if st.out in needed:
                    keep.append(st)
                    needed.update(reads(st))
            steps = keep[::-1]
        self.skipped_steps = len(sp.steps) - len(steps)
        readers = {}
        for st in steps:
            for b in reads(st):
                readers[b] = readers.get(b, 0) + 1
        ops, fused, k = [], 0, 0
        while k < len(steps):
            st = steps[k]
            nxt = steps[k + 1] if k + 1 < len(steps) else None
            bias = None
            if (st.kind == "conv" and nxt is not None and nxt.kind == "binary" and nxt.attrs["fn"] == "add"
                    and readers.get(st.out, 0) == 1 and st.out != sp.head["buffer"]):
                ops_ = (nxt.attrs["a"], nxt.attrs["b"])
                const = [i for kind, i in ops_ if kind == "input"]
                if ("buffer", st.out) in ops_ and len(const) == 1:
                    c = self.arrays[const[0]]
                    cout = sp.buffer_channels[st.out]
                    if tuple(c.shape) in ((1, cout, 1, 1),) and sp.buffer_channels[nxt.out] == cout:
                        bias = c.reshape(cout).contiguous()
            if bias is not None:
                ops.append(("conv", st, nxt.out, bias))
                fused += 1
                k += 2
            else:
                ops.append((st.kind, st, st.out, None))
                k += 1
        self.fused_biases = fused
        last_use = {}
        for idx, (_, st, _, _) in enumerate(ops):
            for b in reads(st):
                last_use[b] = idx
        self._free_after = [[b for b, last in last_use.items() if last == idx and b not in (0, sp.head["buffer"])]
                            for idx in range(len(ops))]
        self._ops = ops
        self.num_ops = len(ops)
        self._gather_index = {id(st): torch.as_tensor(st.attrs["channels"], dtype=torch.long, device=self.device)
                              for kind, st, _, _ in ops if kind == "gather"}

    # -- operands
    def _const(self, k, n, h, w):
        c = self.arrays[k]
        if c.shape[2] > 1 and c.shape[2] != h:
            c = c[:, :, :h]
        return c

    def forward(self, image):
        """Head buffer (n, Ch, h, W) for an image tensor (n, C, h, W), h <= H (a crop of the first rows)."""
        sp = self.spec
        n, c, h, w = image.shape
        if c != self.channels or w != self.width or not 1 <= h <= self.height:
            raise ValueError(f"TorchProgram.forward: image must be (n, {self.channels}, h <= {self.height}, "
                             f"{self.width}), got {tuple(image.shape)}")
        buf = {0: image}
        for idx, (kind, st, out, bias) in enumerate(self._ops):
            a = st.attrs
            if kind == "conv":
                x = buf[a["in"]]
                wt = self.arrays[a["kernel"]]
                kh, kw = wt.shape[2], wt.shape[3]
                dil = (a["dh"], a["dw"])
                if a["padding"] == "valid":
                    y = F.conv2d(x, wt, bias, dilation=dil)
                else:
                    pt, pb = _same_pads(kh, a["dh"])
                    pl, pr = _same_pads(kw, a["dw"])
                    if pt == pb and pl == pr:
                        y = F.conv2d(x, wt, bias, padding=(pt, pl), dilation=dil)
                    else:
                        y = F.conv2d(F.pad(x, (pl, pr, pt, pb)), wt, bias, dilation=dil)
            elif kind == "binary":
                opnd = [buf[i] if which == "buffer" else self._const(i, n, h, w) for which, i in (a["a"], a["b"])]
                y = _BINARY[a["fn"]](opnd[0], opnd[1])
                cout = sp.buffer_channels[out]
                if y.shape[1] != cout:
                    y = y.expand(y.shape[0], cout, y.shape[2], y.shape[3])
                if y.shape[0] != n or y.shape[2] != h or y.shape[3] != w:
                    y = y.expand(n, y.shape[1], h, w)
            elif kind == "act":
                y = _ACTS[a["fn"]](buf[a["in"]], a["alpha"])
            elif kind == "concat":
                parts = []
                for which, i in a["parts"]:
                    t = buf[i] if which == "buffer" else self._const(i, n, h, w)
                    parts.append(t.expand(n, t.shape[1], h, w))
                y = torch.cat(parts, dim=1)
            elif kind == "gather":
                y = buf[a["in"]].index_select(1, self._gather_index[id(st)])
            elif kind == "softmax":
                x = buf[a["in"]]
                g = a["group"]
                xs = x.reshape(n, x.shape[1] // g, g, h, w)
                y = (F.log_softmax(xs, dim=2) if a["log"] else F.softmax(xs, dim=2)).reshape(n, x.shape[1], h, w)
            elif kind == "reduce":
                x = buf[a["in"]]
                fn = a["fn"]
                y = (x.sum(1, keepdim=True) if fn == "sum" else x.mean(1, keepdim=True) if fn == "mean"
                     else x.amax(1, keepdim=True) if fn == "max" else x.amin(1, keepdim=True))
            else:  # pragma: no cover - parse_spec knows no other kind
                raise AssertionError(kind)
            buf[out] = y
            for b in self._free_after[idx]:
                buf.pop(b, None)
        return buf[sp.head["buffer"]]

    # -- conveniences
    def to_input(self, image_nhwc):
        """A numpy (n, H, W, C) image as this program's input tensor (n, C, H, W) on its device."""
        t = torch.as_tensor(np.asarray(image_nhwc, np.float32)).permute(0, 3, 1, 2)
        return t.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)

    def teacher_forced(self, image_nhwc):
        """numpy (n, H, W, head channels): one full forward pass, as ColumnProgram.teacher_forced."""
        with torch.no_grad():
            out = self.forward(self.to_input(image_nhwc))
        return out.permute(0, 2, 3, 1).to("cpu", torch.float32).numpy()


# ----------------------------------------------------------------------------- naive loops

@dataclasses.dataclass
class NaiveResult:
    """As pixelcnn_fast.naive.NaiveResult: levels int32 (n, H, W, C) (-1 where not reached), margins float32 (NaN
    there), images (n, H, W, C) the input at the end, steps_run / steps_total forwards, seconds the loop's wall
    time EXCLUDING warm_seconds (first run of each new input shape, cuDNN autotuning), mode "full" or "rows"."""
    levels: np.ndarray
    margins: np.ndarray
    images: np.ndarray
    steps_run: int
    steps_total: int
    seconds: float
    warm_seconds: float
    mode: str

    @property
    def complete(self):
        return self.steps_run == self.steps_total


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_sample(program, n, seed=0, temperature=1.0, mode="full", positions=None, image=None, max_steps=None,
                 image_offset=0):
    """Samples n images by re-running program.forward once per pixel and image channel (module docstring).

    positions: [(i, j)] to visit (default: every pixel in raster order); image: the starting content
    (n, H, W, C) float32 (default zeros); max_steps: stop after that many forwards. Image b uses Philox image
    index image_offset + b, as the C++ and CUDA samplers do."""
    if mode not in ("full", "rows"):
        raise ValueError(f"naive_sample: mode must be 'full' or 'rows', got {mode!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"naive_sample: n must be an int >= 1, got {n!r}")
    h, w, c = program.height, program.width, program.channels
    head = program.head
    kind, per = head["kind"], head["levels"]
    if program.head_channels != c * per:
        raise ValueError(f"naive_sample: the head buffer has {program.head_channels} channels, not {c} x {per}")
    t32 = float(np.float32(temperature))
    if not (t32 > 0 and math.isfinite(t32)):
        raise ValueError(f"naive_sample: temperature must be a positive finite float32, got {temperature!r}")
    dev = program.device
    scale = torch.tensor(np.float32(head["scale"]), device=dev)
    offset = torch.tensor(np.float32(head["offset"]), device=dev)
    u = rng.uniform_grid(seed, n, h, w, c, image_offset)  # host float32: the draws run there
    if image is None:
        x = torch.zeros((n, c, h, w), dtype=program.dtype, device=dev).contiguous(memory_format=program.memory_format)
    else:
        if tuple(np.shape(image)) != (n, h, w, c):
            raise ValueError(f"naive_sample: image must have shape {(n, h, w, c)}, got {np.shape(image)}")
        x = program.to_input(image)
    if positions is None:
        positions = [(i, j) for i in range(h) for j in range(w)]
    steps_total = len(positions) * c
    limit = steps_total if max_steps is None else min(int(max_steps), steps_total)
    levels = torch.full((n, h, w, c), -1, dtype=torch.int32, device=dev)
    margins = torch.full((n, h, w, c), float("nan"), dtype=torch.float32, device=dev)
    warmed, warm = set(), 0.0

    def run(crop):
        nonlocal warm
        key = tuple(crop.shape)
        if key not in warmed:  # first run of this shape (cuDNN autotuning): outside the timed loop
            _sync(dev)
            t0 = time.perf_counter()
            program.forward(crop)
            _sync(dev)
            warm += time.perf_counter() - t0
            warmed.add(key)
        return program.forward(crop)

    steps = 0
    with torch.no_grad():
        if mode == "full":
            run(x)  # warm before the clock starts
        _sync(dev)
        start = time.perf_counter()
        warm_before = warm
        for i, j in positions:
            for ch in range(c):
                if steps >= limit:
                    break
                out = run(x if mode == "full" else x[:, :, :i + 1])
                vals = out[:, ch * per:(ch + 1) * per, i, j]
                lv, mg = draw_levels(vals.float(), kind, t32, u[:, i, j, ch])
                levels[:, i, j, ch] = lv
                margins[:, i, j, ch] = mg
                x[:, ch, i, j] = (lv.to(torch.float32) * scale + offset).to(program.dtype)
                steps += 1
            if steps >= limit:
                break
        _sync(dev)
        seconds = time.perf_counter() - start - (warm - warm_before)
    images = x.permute(0, 2, 3, 1).to("cpu", torch.float32).numpy()
    return NaiveResult(levels=levels.cpu().numpy(), margins=margins.cpu().numpy(), images=images, steps_run=steps,
                       steps_total=steps_total, seconds=seconds, warm_seconds=warm, mode=mode)


def naive_sample_full(program, n, seed=0, temperature=1.0, **kwargs):
    """The full-image repredict loop: one forward of the whole image per pixel and image channel."""
    return naive_sample(program, n, seed, temperature, mode="full", **kwargs)


def naive_sample_rows(program, n, seed=0, temperature=1.0, **kwargs):
    """The row-cropped loop: at row i one forward of rows 0..i per pixel and image channel."""
    return naive_sample(program, n, seed, temperature, mode="rows", **kwargs)


def rows_seconds_estimate(program, n, rows, steps_per_row, image=None, seed=0, temperature=1.0):
    """pixelcnn_fast.naive.rows_seconds_estimate on this loop: the rows loop's own steps timed at `rows`
    (steps_per_row columns each, spread over the row, from `image`), the cost per step interpolated linearly in
    the row and summed over every row and channel. Returns (estimate seconds, [seconds per step at each row])."""
    h, w, c = program.height, program.width, program.channels
    columns = [int(j) for j in np.linspace(0, w - 1, min(steps_per_row, w)).round()]
    costs = []
    for r in rows:
        res = naive_sample(program, n, seed, temperature, mode="rows", positions=[(r, j) for j in columns],
                           image=image)
        costs.append(res.seconds / res.steps_run)
    return float(w * c * np.interp(np.arange(h), list(rows), costs).sum()), costs


def first_disagreements(levels_a, margins_a, levels_b, margins_b, n_levels):
    """tests/sampling_checks.first_disagreements on arrays: per image the first raster-order draw where a and b
    differ, [(image, (row, col, channel), margin)]; raises AssertionError when its margin is at or above
    rng.boundary_tolerance (a real disagreement, not float rounding at a CDF boundary). Positions a did not reach
    (level -1) are ignored."""
    tol = rng.boundary_tolerance(n_levels)
    found = []
    for k in range(levels_a.shape[0]):
        la, lb = levels_a[k].ravel(), levels_b[k].ravel()
        reached = la >= 0
        diff = np.flatnonzero(reached & (la != lb))
        if diff.size == 0:
            continue
        idx = int(diff[0])
        margin = float(min(margins_a[k].ravel()[idx], margins_b[k].ravel()[idx]))
        where = tuple(int(v) for v in np.unravel_index(idx, levels_a.shape[1:]))
        assert margin < tol, (f"image {k}, (row, col, channel) {where}: levels {la[idx]} vs {lb[idx]} with margin "
                              f"{margin:.3e} >= boundary tolerance {tol:.3e}")
        found.append((k, where, margin))
    return found
