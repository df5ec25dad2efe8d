"""Python front end (program IR): the program's text spec (csrc/core/program_spec.h, version 1) -- its one
writer and a NumPy reader.

The writer turns a Sampler's lowered program into the text the C++ executor, the CUDA program and the TF op
build from, plus the list of arrays (effective kernels, broadcast constants) they take as inputs. The reader
parses that text back into Python records, as strictly as the C++ parser (csrc/core/program_spec.cc) does,
for tools that run a program without the C++ core (benchmarks/torch_program.py). NumPy only: no TensorFlow.
"""

import dataclasses
import math

import numpy as np

from pixelcnn_fast.program.causality import analyse_causality, channel_phase_runs, step_delays, step_phase
from pixelcnn_fast.program.ir import (ACT_FNS, BINARY_FNS, MIXTURE_HEAD_KIND, REDUCE_FNS, SPEC_HEAD_KINDS, LoweringError,
                                      conv_kernel_4d)

__all__ = ["SPEC_MAGIC", "MAGIC", "VERSION", "program_spec", "spec_with_recipes", "recipe_array", "const_4d",
           "parse_spec", "Spec", "SpecStep", "SpecError", "STEP_KEYS"]

MAGIC = "pixelcnn_fast.column_program"
VERSION = 1
SPEC_MAGIC = f"{MAGIC} {VERSION}"


# ----------------------------------------------------------------------------------- writer
def _f32(x):
    # "%.9g" of the float32 value: exact for float32 and byte-identical to the C++ writer's output.
    return "%.9g" % float(np.float32(x))


def _encode_name(name):
    out = []
    for b in name.encode("utf-8"):
        out.append("%%%02X" % b if b <= 0x20 or b >= 0x7F or b == 0x25 else chr(b))
    return "".join(out)


def const_4d(value):
    """A constant operand as (n or 1, H or 1, W or 1, C or 1) float32, C-contiguous."""
    v = np.asarray(value, np.float32)
    if v.ndim < 4:
        v = v.reshape((1,) * (4 - v.ndim) + v.shape)
    return np.ascontiguousarray(v)


def _grids_line(program, on_grids):
    """The spec's `grids` statement (docs/SEMANTICS.md, "Grids"): each buffer's fy, fx, ny, nx; none without grids."""
    if not on_grids:
        return []
    grids = [program.grid(b) for b in range(len(program.buffer_channels))]
    return ["grids " + " ".join(f"{key}=" + ",".join(str(int(g[f])) for g in grids)
                                for f, key in enumerate(("fy", "fx", "ny", "nx")))]


def spec_with_recipes(sampler, consts):
    """(spec text, recipes): recipes[k] says how op input k is made from the constant slots:
    ("const", slot, None) a broadcast constant as rank 4; ("kernel", slot, step) a conv's kernel as
    (kh, kw, cin, cout). sampler: a Sampler (its program and head: kind, head_levels, value_scale,
    value_offset); consts: the program's constant slots. Raises NotCausalError naming the layer."""
    p = sampler.program
    mixture = sampler.kind == MIXTURE_HEAD_KIND
    keys = analyse_causality(p, consts, mixture=mixture)  # raises NotCausalError naming the layer
    on_grids = bool(p.grid_steps)
    # On grids the C++ executor schedules every phase-0 step at its positions' ready steps itself (docs/
    # SEMANTICS.md, "Grids"); otherwise the delays (raises LoweringError when the prediction would come late).
    delays = [(0, 0)] * len(p.steps) if on_grids else step_delays(p, consts)
    recipes, index = [], {}

    def use(kind, slot, step=None):
        key = (kind, slot) if kind == "const" else (kind, slot, id(step))
        if key not in index:
            index[key] = len(recipes)
            recipes.append((kind, slot, step))
        return index[key]

    lines = []
    for st, delay in zip(p.steps, delays):
        # A delayed step runs before the colour passes (every image value it reads is drawn): phase 0.
        phase, name = step_phase(keys[st.out]) if delay == (0, 0) else 0, f"{st.layer} ({st.op_type} {st.op_name})"
        if st.kind in ("conv", "conv_transpose"):
            k = use("kernel", st.consts[0], st)
            a = st.attrs
            pad = a.get("padding", "OFFSET")
            args = (f"in={st.ins[0]} kernel={k} dh={a.get('dh', 1)} dw={a.get('dw', 1)} padding="
                    + ({"SAME": "same", "VALID": "valid"}.get(pad) or f"offset oy={a['oy']} ox={a['ox']}"))
            if (a.get("sy", 1), a.get("sx", 1)) != (1, 1):
                args += f" stride={a['sy']},{a['sx']}"
            if st.kind == "conv_transpose":
                args += " transpose=1"
        elif st.kind == "shift":
            args = f"in={st.ins[0]} dy={st.attrs['dy']} dx={st.attrs['dx']}"
        elif st.kind == "binary":
            if len(st.ins) == 2:
                a, b = f"b{st.ins[0]}", f"b{st.ins[1]}"
            else:
                c = f"i{use('const', st.consts[0])}"
                a, b = (c, f"b{st.ins[0]}") if st.attrs["const_first"] else (f"b{st.ins[0]}", c)
            args = f"fn={st.attrs['fn']} a={a} b={b}"
        elif st.kind == "act":
            args = f"in={st.ins[0]} fn={st.attrs['fn']} alpha={_f32(st.attrs.get('alpha', 0.2))}"
        elif st.kind == "concat":
            parts = [f"b{st.ins[i]}" if kind == "buf" else f"i{use('const', st.consts[i])}"
                     for kind, i in st.attrs["order"]]
            args = "parts=" + ",".join(parts)
        elif st.kind == "gather":
            args = f"in={st.ins[0]} channels=" + ",".join(str(int(c)) for c in st.attrs["channels"])
        elif st.kind == "softmax":
            args = f"in={st.ins[0]} group={st.attrs['group']} log={int(bool(st.attrs['log']))}"
        elif st.kind == "reduce":
            args = f"in={st.ins[0]} fn={st.attrs['fn']}"
        else:  # pragma: no cover - lowering emits only the kinds above
            raise AssertionError(st.kind)
        runs = channel_phase_runs(keys[st.out], phase) if delay == (0, 0) else None
        phases = "" if runs is None else " phases=" + ",".join(str(v) for v in runs)
        late = f" delay={delay[0]},{delay[1]}" if delay != (0, 0) else ""
        kind = "conv" if st.kind == "conv_transpose" else st.kind  # a conv line with transpose=1
        lines.append(f"{kind} out={st.out} {args} phase={phase}{late}{phases} name={_encode_name(name)}")
    h, w, c = p.image_shape
    head = (f"head kind={sampler.kind} buffer={p.logits_buffer} levels={sampler.head_levels} "
            f"scale={_f32(sampler.value_scale)} offset={_f32(sampler.value_offset)}"
            + (f" components={sampler.components}" if mixture else "")
            + (" layout=1" if mixture and sampler.mixture_layout == "tfp" else ""))
    inputs = []
    for k, (kind, slot, step) in enumerate(recipes):
        if kind == "const":
            inputs.append(f"input index={k} kind=const")
        else:
            shape = conv_kernel_4d(step, consts[slot]).shape
            inputs.append(f"input index={k} kind=kernel shape=" + ",".join(str(int(d)) for d in shape))
    text = "\n".join([SPEC_MAGIC, f"image height={h} width={w} channels={c}",
                      "buffers channels=" + ",".join(str(int(b)) for b in p.buffer_channels),
                      *_grids_line(p, on_grids), *inputs, *lines, head, "end"]) + "\n"
    return text, recipes


def recipe_array(recipe, consts):
    """Op input array of one recipe of spec_with_recipes, float32 rank 4 (NumPy)."""
    kind, slot, step = recipe
    if kind == "const":
        return const_4d(consts[slot])
    return np.ascontiguousarray(conv_kernel_4d(step, consts[slot]), np.float32)


def program_spec(sampler, consts):
    """(spec text, arrays) for the op: consts are the program's constant slots as numpy arrays
    (`sampler.program.evaluate_consts(n, conditions)`); arrays[k] is op input k, float32 rank 4."""
    text, recipes = spec_with_recipes(sampler, consts)
    return text, [recipe_array(r, consts) for r in recipes]


# ----------------------------------------------------------------------------------- reader
STEP_KEYS = {
    "conv": ("out", "in", "kernel", "dh", "dw", "padding", "phase"),
    "binary": ("out", "fn", "a", "b", "phase"),
    "act": ("out", "in", "fn", "alpha", "phase"),
    "concat": ("out", "parts", "phase"),
    "gather": ("out", "in", "channels", "phase"),
    "softmax": ("out", "in", "group", "log", "phase"),
    "reduce": ("out", "in", "fn", "phase"),
    "shift": ("out", "in", "dy", "dx", "phase"),
}


class SpecError(ValueError):
    """A malformed spec: "program spec line N, token 'T': what", as the C++ parser words it."""


@dataclasses.dataclass
class SpecStep:
    """One step line: kind, buffer written, phase, line number, decoded name and the kind's keys."""
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
    steps: list   # [SpecStep]
    head: dict    # kind, buffer, levels, scale, offset (+ components for a logistic mixture)
    buffer_grids: list = None  # [(fy, fx, ny, nx)] per buffer from the `grids` statement; None: the image's


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


class _Line:
    """The key=value tokens of one statement, taken one by one; fail() raises SpecError naming the line."""

    def __init__(self, no, toks):
        self.no, self.kw, self.kv = no, toks[0], {}
        for t in toks[1:]:
            key, eq, value = t.partition("=")
            if not eq or not key:
                self.fail("expected key=value", t)
            if key in self.kv:
                self.fail(f"key '{key}' given twice", t)
            self.kv[key] = value

    def fail(self, what, tok=None):
        raise SpecError(f"program spec line {self.no}, token '{self.kw if tok is None else tok}': {what}")

    def take(self, key):
        if key not in self.kv:
            self.fail(f"'{self.kw}' needs {key}=")
        return self.kv.pop(key)

    def take_int(self, key, lo=0):
        v = self.take(key)
        try:
            x = int(v)
        except ValueError:
            self.fail(f"expected an integer, got '{v}'", f"{key}={v}")
        if x < lo:
            self.fail(f"{x} is below {lo}", f"{key}={v}")
        return x

    def take_ints(self, key, lo=0):
        v = self.take(key)
        try:
            xs = [int(x) for x in v.split(",")]
        except ValueError:
            self.fail("expected comma-separated integers", f"{key}={v}")
        if any(x < lo for x in xs):
            self.fail(f"values below {lo}", f"{key}={v}")
        return xs

    def take_float(self, key):
        v = self.take(key)
        try:
            x = float(v)
        except ValueError:
            self.fail("expected a finite number", f"{key}={v}")
        if not math.isfinite(x):
            self.fail("expected a finite number", f"{key}={v}")
        return x

    def take_enum(self, key, names):
        v = self.take(key)
        if v not in names:
            self.fail(f"unknown {key} '{v}' (expected one of {', '.join(names)})", f"{key}={v}")
        return v

    def operand(self, v, tok):
        if len(v) < 2 or v[0] not in "bi" or not v[1:].isdigit():
            self.fail(f"an operand is b<buffer> or i<input>, got '{v}'", tok)
        return ("input" if v[0] == "i" else "buffer", int(v[1:]))

    def done(self):
        if self.kv:
            key = next(iter(self.kv))
            self.fail(f"unknown key for '{self.kw}'", key + "=" + self.kv[key])


def _step_attrs(ln, kw, out, buffers, inputs, grids=None):
    """The keys of one step line, checked against the buffers and inputs declared before it."""
    nb = len(buffers)

    def buffer(key):
        b = ln.take_int(key)
        if b >= nb:
            ln.fail(f"buffer {b} does not exist", f"{key}={b}")
        return b

    def check_input(op, want, tok):
        if op[0] == "input":
            if op[1] >= len(inputs):
                ln.fail(f"input {op[1]} is not declared", tok)
            if inputs[op[1]][0] != want:
                ln.fail(f"input {op[1]} is declared as a {inputs[op[1]][0]}, used as a {want}", tok)
        elif op[1] >= nb:
            ln.fail(f"buffer {op[1]} does not exist", tok)
        return op

    attrs = {}
    if kw == "conv":
        attrs["in"] = buffer("in")
        attrs["kernel"] = ln.take_int("kernel")
        check_input(("input", attrs["kernel"]), "kernel", f"kernel={attrs['kernel']}")
        attrs["dh"], attrs["dw"] = ln.take_int("dh", 1), ln.take_int("dw", 1)
        attrs["padding"] = ln.take_enum("padding", ("same", "valid", "offset"))
        if attrs["padding"] == "offset":  # a pad + VALID conv: the top-left tap's offset
            attrs["oy"], attrs["ox"] = ln.take_int("oy", -(1 << 15)), ln.take_int("ox", -(1 << 15))
        # Grids: a strided conv (stride=sy,sx) or a transposed conv (transpose=1), padding=offset only.
        attrs["stride"] = tuple(ln.take_ints("stride", 1)) if "stride" in ln.kv else (1, 1)
        attrs["transpose"] = ln.take_int("transpose") != 0 if "transpose" in ln.kv else False
        if len(attrs["stride"]) != 2:
            ln.fail("stride= is sy,sx")
        if (attrs["stride"] != (1, 1) or attrs["transpose"]) and (attrs["padding"] != "offset" or not grids):
            ln.fail("a strided or transposed conv has padding=offset and needs the 'grids' statement")
        kh, kw_, cin, cout = inputs[attrs["kernel"]][1]
        if cin != buffers[attrs["in"]] or cout != buffers[out]:
            ln.fail(f"kernel shape {(kh, kw_, cin, cout)} does not map buffer {attrs['in']} ({buffers[attrs['in']]} "
                    f"channels) to buffer {out} ({buffers[out]} channels)", f"kernel={attrs['kernel']}")
        if attrs["padding"] == "valid" and (kh, kw_) != (1, 1):
            ln.fail("padding=valid is supported for 1x1 kernels only (the output keeps the image size)")
    elif kw == "binary":
        attrs["fn"] = ln.take_enum("fn", BINARY_FNS)
        a, b = ln.take("a"), ln.take("b")
        attrs["a"] = check_input(ln.operand(a, f"a={a}"), "const", f"a={a}")
        attrs["b"] = check_input(ln.operand(b, f"b={b}"), "const", f"b={b}")
        if attrs["a"][0] == "input" and attrs["b"][0] == "input":
            ln.fail("a binary step reads at least one buffer", f"b={b}")
    elif kw == "act":
        attrs["in"] = buffer("in")
        attrs["fn"] = ln.take_enum("fn", ACT_FNS)
        attrs["alpha"] = ln.take_float("alpha")
    elif kw == "concat":
        v = ln.take("parts")
        attrs["parts"] = [check_input(ln.operand(p, f"parts={v}"), "const", f"parts={v}") for p in v.split(",")]
    elif kw == "gather":
        attrs["in"] = buffer("in")
        attrs["channels"] = ln.take_ints("channels")
        if any(c >= buffers[attrs["in"]] for c in attrs["channels"]):
            ln.fail(f"a channel is out of range for buffer {attrs['in']}")
    elif kw == "softmax":
        attrs["in"] = buffer("in")
        attrs["group"] = ln.take_int("group", 1)
        attrs["log"] = ln.take_int("log") != 0
        if buffers[out] % attrs["group"]:
            ln.fail(f"softmax groups of {attrs['group']} do not tile {buffers[out]} channels")
    elif kw == "reduce":
        attrs["in"] = buffer("in")
        attrs["fn"] = ln.take_enum("fn", REDUCE_FNS)
    elif kw == "shift":
        attrs["in"] = buffer("in")
        attrs["dy"], attrs["dx"] = ln.take_int("dy", -(1 << 15)), ln.take_int("dx", -(1 << 15))
        if buffers[attrs["in"]] != buffers[out]:
            ln.fail("a shift changes the channel count")
    return attrs


def parse_spec(text):
    """Spec of a program text; SpecError "program spec line N, token 'T': what" on anything malformed."""
    lines = [(no, ln.split()) for no, ln in enumerate(text.splitlines(), 1)]
    lines = [(no, toks) for no, toks in lines if toks and not toks[0].startswith("#")]
    if not lines:
        raise SpecError(f"program spec is empty (expected '{SPEC_MAGIC}')")
    no, toks = lines[0]
    if toks[0] != MAGIC or len(toks) != 2:
        raise SpecError(f"program spec line {no}, token '{toks[0]}': expected '{SPEC_MAGIC}' first")
    if toks[1] != str(VERSION):
        raise SpecError(f"program spec line {no}, token '{toks[1]}': unsupported version (this parser reads {VERSION})")
    image = buffers = head = grids = None
    inputs, steps, ended = [], [], False

    for no, toks in lines[1:]:
        ln = _Line(no, toks)
        kw = ln.kw
        if ended:
            ln.fail("statement after 'end'")
        if kw == "end":
            ln.done()
            ended = True
            continue
        if kw == "image":
            if image is not None:
                ln.fail("'image' given twice")
            image = (ln.take_int("height", 1), ln.take_int("width", 1), ln.take_int("channels", 1))
            ln.done()
            continue
        if image is None:
            ln.fail("'image' must come right after the version line")
        if kw == "buffers":
            if buffers is not None:
                ln.fail("'buffers' given twice")
            buffers = ln.take_ints("channels", 1)
            if buffers[0] != image[2]:
                ln.fail(f"buffer 0 is the image and must have {image[2]} channels")
            ln.done()
            continue
        if buffers is None:
            ln.fail("'buffers' must come right after 'image'")
        if kw == "grids":  # docs/SEMANTICS.md, "Grids": fy, fx, ny, nx per buffer
            if grids is not None or inputs or steps:
                ln.fail("'grids' must come once, right after 'buffers'")
            cols = [ln.take_ints(key, 1) for key in ("fy", "fx", "ny", "nx")]
            if any(len(c) != len(buffers) for c in cols):
                ln.fail(f"fy=, fx=, ny=, nx= need one value per buffer ({len(buffers)})")
            grids = list(zip(*cols))
            if grids[0] != (1, 1, image[0], image[1]):
                ln.fail(f"buffer 0 is the image: its grid is 1,1,{image[0]},{image[1]}")
            ln.done()
            continue
        if kw == "input":
            if steps:
                ln.fail("inputs must be declared before the steps")
            idx = ln.take_int("index")
            if idx != len(inputs):
                ln.fail(f"inputs must be declared in order; expected index={len(inputs)}")
            kind = ln.take_enum("kind", ("const", "kernel"))
            if kind == "kernel":
                shape = ln.take_ints("shape", 1)
                if len(shape) != 4:
                    ln.fail("a kernel shape is kh,kw,cin,cout")
                inputs.append(("kernel", tuple(shape)))
            else:
                inputs.append(("const", None))
            ln.done()
            continue
        if kw == "head":
            if head is not None:
                ln.fail("'head' given twice")
            head = dict(kind=ln.take_enum("kind", SPEC_HEAD_KINDS), buffer=ln.take_int("buffer"),
                        levels=ln.take_int("levels", 1), scale=ln.take_float("scale"), offset=ln.take_float("offset"))
            if head["kind"] == MIXTURE_HEAD_KIND:  # K components; no other head has the key
                head["components"] = ln.take_int("components", 1)
            if head["buffer"] >= len(buffers):
                ln.fail(f"buffer {head['buffer']} does not exist", f"buffer={head['buffer']}")
            ln.done()
            continue
        if kw not in STEP_KEYS:
            ln.fail("unknown statement (expected input, a step kind, head or end)")
        if head is not None:
            ln.fail("steps must come before 'head'")
        out = ln.take_int("out")
        if out >= len(buffers):
            ln.fail(f"buffer {out} does not exist", f"out={out}")
        if out == 0:
            ln.fail("buffer 0 is the image: never written", f"out={out}")
        attrs = _step_attrs(ln, kw, out, buffers, inputs, grids)
        phase = ln.take_int("phase")
        # Optional per-channel phases (phase, count) runs: which colour pass computes each channel in the
        # cached executor; a full-image executor needs none of it, but the key belongs to the format.
        attrs["phases"] = ln.take_ints("phases") if "phases" in ln.kv else None
        # Optional delay dy,dx (docs/SEMANTICS.md, "Delays"): (0, 0) when absent.
        delay = ln.take_ints("delay", -(1 << 40)) if "delay" in ln.kv else [0, 0]
        if len(delay) != 2:
            ln.fail("delay= is dy,dx", "delay=" + ",".join(str(v) for v in delay))
        attrs["delay"] = tuple(delay)
        name = _decode_name(ln.kv.pop("name"), ln.fail) if "name" in ln.kv else ""
        ln.done()
        steps.append(SpecStep(kind=kw, out=out, phase=phase, line=no, name=name, attrs=attrs))

    last = lines[-1][0]
    for cond, what in ((image is not None, "no 'image' statement"), (buffers is not None, "no 'buffers' statement"),
                       (head is not None, "no 'head' statement"),
                       (ended, "the spec does not end with 'end' (truncated?)")):
        if not cond:
            raise SpecError(f"program spec line {last}: {what}")
    return Spec(height=image[0], width=image[1], channels=image[2], buffer_channels=buffers, inputs=inputs,
                steps=steps, head=head, buffer_grids=grids)
