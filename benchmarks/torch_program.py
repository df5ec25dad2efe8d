# Benchmarks (GPU baseline, no TF): a column-program spec run as full-image PyTorch ops, and the naive repredict sampling loops on it.
"""A column program (csrc/core/program_spec.h, version 1: the text + arrays that sampler.program_spec writes and
scripts/export_program.py saves) executed as ordinary full-image PyTorch ops, for the GPU benchmarks
(benchmarks/bench_cuda.py): the baseline a PyTorch user gets, cuDNN convolutions on the dense masked kernels
(zeros multiplied), re-run over the whole image once per pixel.

Needs numpy and torch only (no TensorFlow, no numba, no pixelcnn_fast): the GPU machine has no TF.

* ``parse_spec(text)``: the spec as a Python object (a small parser of the format; strict about the statements
  and keys it reads, like the C++ one).
* ``TorchProgram(spec, arrays, device, layout="nchw"|"nhwc", dtype)``: ``forward(image)`` on an (n, C, h, W)
  tensor (h <= H: a row-cropped image) returns the head buffer (n, head channels, h, W). Convs are F.conv2d with
  the kernel (kh, kw, cin, cout) as (cout, cin, kh, kw) and TF's 'same' padding (pad (extent - 1) // 2 before,
  the rest after, extent = (k - 1) * d + 1; asymmetric padding through F.pad), 'valid' only for 1x1 kernels as
  the C++ executor requires; a conv whose output only feeds an add of a per-channel constant gets it as
  F.conv2d's bias (what a PyTorch user writes: one cuDNN call, not two kernels); steps the head does not read
  (the keras.io model's final sigmoid) are skipped; buffers are freed after their last reader. layout "nhwc"
  keeps every tensor in torch.channels_last memory format (logical shapes stay NCHW).
* Randomness: ``philox_uniform_grid`` is csrc/core/philox.h's Philox4x32-10 uniform, vectorised in numpy
  (integer arithmetic: bit-identical to the C++ and CUDA sampler); ``draw_levels`` the inverse-CDF draws in torch
  float32 on the device (exp may differ from CUDA's/libm's in the last ulp: a level can then differ only where
  the uniform lies within rounding of a CDF boundary, which the returned margins tell).
* ``naive_sample(program, n, seed, temperature, mode)``: mode "full" re-runs ``forward`` on the whole image once
  per pixel and image channel (H*W*C forwards); mode "rows" on rows 0..i only (pixelcnn_fast/naive.py's "rows":
  for a causal model the outputs in row i depend only on rows <= i, so the crop gives the same values).
  ``naive_sample_full`` / ``naive_sample_rows`` are the two modes. Everything stays on the device between steps
  (no host copy per pixel); each new input shape (every crop height in "rows") is run once before its first
  timed use (cuDNN's autotuner with cudnn.benchmark; pixelcnn_fast.naive excludes tf.function tracing the same
  way) and that time is reported apart (warm_seconds). ``rows_seconds_estimate`` is naive.rows_seconds_estimate
  on this loop.
"""

import dataclasses
import math
import time

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - the parser and Philox work without torch; the executor needs it
    torch = None
    F = None

__all__ = ["parse_spec", "Spec", "TorchProgram", "philox_uniform_grid", "draw_levels", "boundary_tolerance",
           "naive_sample", "naive_sample_full", "naive_sample_rows", "rows_seconds_estimate", "NaiveResult",
           "first_disagreements", "macs_per_position"]

MAGIC = "pixelcnn_fast.column_program"
VERSION = 1
BINARY_FNS = ("add", "sub", "mul", "div", "max", "min")
ACT_FNS = ("relu", "relu6", "elu", "selu", "tanh", "sigmoid", "softplus", "softsign", "leaky_relu", "neg", "exp",
           "square", "abs", "erf")
REDUCE_FNS = ("sum", "mean", "max", "min")
HEAD_KINDS = ("bernoulli", "logits", "probs")
STEP_KEYS = {
    "conv": ("out", "in", "kernel", "dh", "dw", "padding", "phase"),
    "binary": ("out", "fn", "a", "b", "phase"),
    "act": ("out", "in", "fn", "alpha", "phase"),
    "concat": ("out", "parts", "phase"),
    "gather": ("out", "in", "channels", "phase"),
    "softmax": ("out", "in", "group", "log", "phase"),
    "reduce": ("out", "in", "fn", "phase"),
}


# ----------------------------------------------------------------------------- the spec

class SpecError(ValueError):
    pass


@dataclasses.dataclass
class Step:
    kind: str
    out: int
    phase: int
    line: int
    name: str = ""
    attrs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Spec:
    height: int
    width: int
    channels: int
    buffer_channels: list
    inputs: list  # [("const", None) | ("kernel", (kh, kw, cin, cout))]
    steps: list
    head: dict  # kind, buffer, levels, scale, offset


def _decode_name(s, fail):
    out, k = bytearray(), 0
    raw = s.encode("utf-8")
    while k < len(raw):
        if raw[k:k + 1] == b"%":
            hx = raw[k + 1:k + 3].decode("ascii", "replace")
            if len(hx) != 2 or any(c not in "0123456789abcdefABCDEF" for c in hx):
                fail(f"bad %XX escape '%{hx}'")
            out.append(int(hx, 16))
            k += 3
        else:
            out.append(raw[k])
            k += 1
    return out.decode("utf-8", "replace")


def parse_spec(text):
    """Spec of a program text; SpecError "program spec line N, token 'T': what" on anything malformed."""
    lines = [(no, ln.split()) for no, ln in enumerate(text.splitlines(), 1)]
    lines = [(no, toks) for no, toks in lines if toks and not toks[0].startswith("#")]
    if not lines:
        raise SpecError(f"program spec is empty (expected '{MAGIC} {VERSION}')")
    no, toks = lines[0]
    if toks[0] != MAGIC or len(toks) != 2:
        raise SpecError(f"program spec line {no}, token '{toks[0]}': expected '{MAGIC} {VERSION}' first")
    if toks[1] != str(VERSION):
        raise SpecError(f"program spec line {no}, token '{toks[1]}': unsupported version (this parser reads {VERSION})")
    image = buffers = head = None
    inputs, steps, ended = [], [], False

    for no, toks in lines[1:]:
        kw = toks[0]

        def fail(what, tok=kw, no=no):
            raise SpecError(f"program spec line {no}, token '{tok}': {what}")

        kv = {}
        for t in toks[1:]:
            key, eq, value = t.partition("=")
            if not eq or not key:
                fail("expected key=value", t)
            if key in kv:
                fail(f"key '{key}' given twice", t)
            kv[key] = value

        def take(key):
            if key not in kv:
                fail(f"'{kw}' needs {key}=")
            return kv.pop(key)

        def take_int(key, lo=0):
            v = take(key)
            try:
                x = int(v)
            except ValueError:
                fail(f"expected an integer, got '{v}'", f"{key}={v}")
            if x < lo:
                fail(f"{x} is below {lo}", f"{key}={v}")
            return x

        def take_ints(key, lo=0):
            v = take(key)
            try:
                xs = [int(x) for x in v.split(",")]
            except ValueError:
                fail("expected comma-separated integers", f"{key}={v}")
            if any(x < lo for x in xs):
                fail(f"values below {lo}", f"{key}={v}")
            return xs

        def take_float(key):
            v = take(key)
            try:
                x = float(v)
            except ValueError:
                fail("expected a finite number", f"{key}={v}")
            if not math.isfinite(x):
                fail("expected a finite number", f"{key}={v}")
            return x

        def take_enum(key, names):
            v = take(key)
            if v not in names:
                fail(f"unknown {key} '{v}' (expected one of {', '.join(names)})", f"{key}={v}")
            return v

        def operand(v, tok):
            if len(v) < 2 or v[0] not in "bi" or not v[1:].isdigit():
                fail(f"an operand is b<buffer> or i<input>, got '{v}'", tok)
            return ("input" if v[0] == "i" else "buffer", int(v[1:]))

        def done():
            if kv:
                fail(f"unknown key for '{kw}'", next(iter(kv)) + "=" + kv[next(iter(kv))])

        if ended:
            fail("statement after 'end'")
        if kw == "end":
            done()
            ended = True
            continue
        if kw == "image":
            if image is not None:
                fail("'image' given twice")
            image = (take_int("height", 1), take_int("width", 1), take_int("channels", 1))
            done()
            continue
        if image is None:
            fail("'image' must come right after the version line")
        if kw == "buffers":
            if buffers is not None:
                fail("'buffers' given twice")
            buffers = take_ints("channels", 1)
            if buffers[0] != image[2]:
                fail(f"buffer 0 is the image and must have {image[2]} channels")
            done()
            continue
        if buffers is None:
            fail("'buffers' must come right after 'image'")
        if kw == "input":
            if steps:
                fail("inputs must be declared before the steps")
            idx = take_int("index")
            if idx != len(inputs):
                fail(f"inputs must be declared in order; expected index={len(inputs)}")
            kind = take_enum("kind", ("const", "kernel"))
            if kind == "kernel":
                shape = take_ints("shape", 1)
                if len(shape) != 4:
                    fail("a kernel shape is kh,kw,cin,cout")
                inputs.append(("kernel", tuple(shape)))
            else:
                inputs.append(("const", None))
            done()
            continue
        if kw == "head":
            if head is not None:
                fail("'head' given twice")
            head = dict(kind=take_enum("kind", HEAD_KINDS), buffer=take_int("buffer"), levels=take_int("levels", 1),
                        scale=take_float("scale"), offset=take_float("offset"))
            if head["buffer"] >= len(buffers):
                fail(f"buffer {head['buffer']} does not exist", f"buffer={head['buffer']}")
            done()
            continue
        if kw not in STEP_KEYS:
            fail("unknown statement (expected input, a step kind, head or end)")
        if head is not None:
            fail("steps must come before 'head'")
        nb = len(buffers)

        def buffer(key):
            b = take_int(key)
            if b >= nb:
                fail(f"buffer {b} does not exist", f"{key}={b}")
            return b

        def check_input(op, want, tok):
            if op[0] == "input":
                if op[1] >= len(inputs):
                    fail(f"input {op[1]} is not declared", tok)
                if inputs[op[1]][0] != want:
                    fail(f"input {op[1]} is declared as a {inputs[op[1]][0]}, used as a {want}", tok)
            elif op[1] >= nb:
                fail(f"buffer {op[1]} does not exist", tok)
            return op

        out = buffer("out")
        if out == 0:
            fail("buffer 0 is the image: never written", f"out={out}")
        attrs = {}
        if kw == "conv":
            attrs["in"] = buffer("in")
            attrs["kernel"] = take_int("kernel")
            check_input(("input", attrs["kernel"]), "kernel", f"kernel={attrs['kernel']}")
            attrs["dh"], attrs["dw"] = take_int("dh", 1), take_int("dw", 1)
            attrs["padding"] = take_enum("padding", ("same", "valid"))
            kh, kw_, cin, cout = inputs[attrs["kernel"]][1]
            if cin != buffers[attrs["in"]] or cout != buffers[out]:
                fail(f"kernel shape {(kh, kw_, cin, cout)} does not map buffer {attrs['in']} ({buffers[attrs['in']]} "
                     f"channels) to buffer {out} ({buffers[out]} channels)", f"kernel={attrs['kernel']}")
            if attrs["padding"] == "valid" and (kh, kw_) != (1, 1):
                fail("padding=valid is supported for 1x1 kernels only (the output keeps the image size)")
        elif kw == "binary":
            attrs["fn"] = take_enum("fn", BINARY_FNS)
            a, b = take("a"), take("b")
            attrs["a"] = check_input(operand(a, f"a={a}"), "const", f"a={a}")
            attrs["b"] = check_input(operand(b, f"b={b}"), "const", f"b={b}")
            if attrs["a"][0] == "input" and attrs["b"][0] == "input":
                fail("a binary step reads at least one buffer", f"b={b}")
        elif kw == "act":
            attrs["in"] = buffer("in")
            attrs["fn"] = take_enum("fn", ACT_FNS)
            attrs["alpha"] = take_float("alpha")
        elif kw == "concat":
            v = take("parts")
            attrs["parts"] = [check_input(operand(p, f"parts={v}"), "const", f"parts={v}") for p in v.split(",")]
        elif kw == "gather":
            attrs["in"] = buffer("in")
            attrs["channels"] = take_ints("channels")
            if any(c >= buffers[attrs["in"]] for c in attrs["channels"]):
                fail(f"a channel is out of range for buffer {attrs['in']}")
        elif kw == "softmax":
            attrs["in"] = buffer("in")
            attrs["group"] = take_int("group", 1)
            attrs["log"] = take_int("log") != 0
            if buffers[out] % attrs["group"]:
                fail(f"softmax groups of {attrs['group']} do not tile {buffers[out]} channels")
        elif kw == "reduce":
            attrs["in"] = buffer("in")
            attrs["fn"] = take_enum("fn", REDUCE_FNS)
        phase = take_int("phase")
        # Optional per-channel phases (phase, count) runs: which colour pass computes each channel in the
        # cached executor; this full-image executor needs none of it, but the key belongs to the format.
        attrs["phases"] = take_ints("phases") if "phases" in kv else None
        name = _decode_name(kv.pop("name"), fail) if "name" in kv else ""
        done()
        steps.append(Step(kind=kw, out=out, phase=phase, line=no, name=name, attrs=attrs))

    last = lines[-1][0]
    for cond, what in ((image is not None, "no 'image' statement"), (buffers is not None, "no 'buffers' statement"),
                       (head is not None, "no 'head' statement"),
                       (ended, "the spec does not end with 'end' (truncated?)")):
        if not cond:
            raise SpecError(f"program spec line {last}: {what}")
    return Spec(height=image[0], width=image[1], channels=image[2], buffer_channels=buffers, inputs=inputs,
                steps=steps, head=head)


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


# ----------------------------------------------------------------------------- randomness (philox.h)

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)


def philox_uniform_grid(seed, n, h, w, c, image_offset=0):
    """float32 (n, h, w, c): uniform01(seed, image_offset + b, i * w + j, ch) of csrc/core/philox.h, bit for bit:
    Philox4x32-10 with key (seed mod 2**32, seed div 2**32), counter (image, position, channel, 0), first output
    word >> 8 times 2**-24."""
    seed = int(seed)
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"philox_uniform_grid: seed must be an integer in [0, 2**64), got {seed}")
    img, pos, ch = np.meshgrid(np.arange(image_offset, image_offset + n, dtype=np.uint64),
                               np.arange(h * w, dtype=np.uint64), np.arange(c, dtype=np.uint64), indexing="ij")
    x0, x1, x2 = img.ravel(), pos.ravel(), ch.ravel()
    x3 = np.zeros_like(x0)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    with np.errstate(over="ignore"):
        for r in range(10):
            if r > 0:
                k0 = (k0 + _W0) & _MASK32
                k1 = (k1 + _W1) & _MASK32
            p0 = _M0 * x0  # < 2**64: exact in uint64
            p1 = _M1 * x2
            x0, x1, x2, x3 = (p1 >> np.uint64(32)) ^ x1 ^ k0, p1 & _MASK32, (p0 >> np.uint64(32)) ^ x3 ^ k1, p0 & _MASK32
    u = (x0 >> np.uint64(8)).astype(np.float32) * np.float32(2.0 ** -24)
    return u.reshape(n, h, w, c)


def boundary_tolerance(n_levels, ulps=4.0):
    """pixelcnn_fast.rng.boundary_tolerance: below this margin two correct float32 draws may differ."""
    return float((2 * n_levels + 2 * ulps + 4) * 2.0 ** -24)


def draw_levels(values, kind, temperature, u):
    """(levels int32 (M,), margins float32 (M,)) on values' device: philox.h's draws, vectorised over M rows.

    values (M, L) float32 head values (bernoulli: L == 1, the logit); u (M,) float32 uniforms. Margins are each
    uniform's distance to the nearest CDF boundary around the drawn level."""
    # Python floats, not device tensors: a scalar argument costs no host-to-device copy (and no stream sync) per
    # step; the float32 temperature is exact as a Python float and the ops run in float32.
    t = float(np.float32(temperature))
    if kind == "bernoulli":
        p = 1.0 / (1.0 + torch.exp(-values[:, 0] / t))
        margin = torch.where(torch.isnan(p), torch.zeros_like(p), (u - p).abs())
        return (u < p).to(torch.int32), margin
    if kind == "logits":
        z = values / t
        m = z.amax(dim=1, keepdim=True)
        e = torch.where(z == m, torch.ones_like(z), torch.exp(z - m))
    else:  # probs: p ** (1/T) (p itself at T == 1); rows whose weights all vanish: divided by their max first
        power = t != 1.0
        inv_t = float(np.float32(1.0) / np.float32(t))
        e = values ** inv_t if power else values
        zero = ~(e.sum(dim=1) > 0)  # computed for every row: no data-dependent branch (a host sync per step)
        pmax = values.amax(dim=1, keepdim=True)
        x = torch.where(values == pmax, torch.ones_like(values), values / pmax)
        x = torch.where(pmax > 0, x, torch.ones_like(x))
        e = torch.where(zero[:, None], x ** inv_t if power else x, e)
    s = e.sum(dim=1, keepdim=True)
    cdf = torch.cumsum(e / s, dim=1)
    levels_n = e.shape[1]
    k = (cdf <= u[:, None]).sum(dim=1)  # smallest k with u < c_k (c non-decreasing)
    positive = torch.arange(levels_n, device=e.device).expand_as(e).masked_fill(~(e > 0), -1)
    last_positive = positive.amax(dim=1).clamp(min=0)
    fell_off = k >= levels_n
    level = torch.where(fell_off, last_positive, k.clamp(max=levels_n - 1))
    kk = k.clamp(max=levels_n - 1)
    above = cdf.gather(1, kk[:, None])[:, 0]
    below = torch.where(kk > 0, cdf.gather(1, (kk - 1).clamp(min=0)[:, None])[:, 0], torch.zeros_like(above))
    d = above - u
    d = torch.where((below > 0) & (u - below < d), u - below, d)
    d = torch.where(fell_off, u - cdf[:, -1], d)
    bad = ~((s[:, 0] > 0) & torch.isfinite(s[:, 0]))
    return (torch.where(bad, torch.zeros_like(level), level).to(torch.int32),
            torch.where(bad, torch.zeros_like(d), d))


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
    u = torch.from_numpy(philox_uniform_grid(seed, n, h, w, c, image_offset)).to(dev)
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
    boundary_tolerance (a real disagreement, not float rounding at a CDF boundary). Positions a did not reach
    (level -1) are ignored."""
    tol = boundary_tolerance(n_levels)
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
