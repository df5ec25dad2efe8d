"""Python front end: `convert(model)`, rebuilding a Keras PixelCNN with pixelcnn_fast.MaskedConv2D.

Masked convolutions are found through the lowering (pixelcnn_fast.lowering), not by class name: a
conv step whose effective kernel (after whatever masking mechanism the layer uses: assign in call,
multiply in call, a kernel constraint) has exact zeros wherever a PixelCNN mask A or B (colour groups
1 or 3, pixelcnn_fast.masks.make_mask) has them. The functional graph is then cloned layer by layer
(keras.models.clone_model), each masked layer replaced by a MaskedConv2D carrying the effective
kernel and the bias, every other layer re-created from its config with its weights copied.

Supported: functional and Sequential models (nested ones too) whose masked convolutions are
  * a layer of their own: a custom layer that computes conv [+ bias] [+ activation] and nothing else,
    through one inner Conv2D (keras.io's PixelConvLayer) or a kernel variable (multiply-in-call);
  * a plain keras.layers.Conv2D whose kernel holds a non-trivial mask's zeros (a masking constraint);
  * MaskedConv2D already (re-created from its config).
  * a sub-layer of a custom layer that also does other work (keras.io's subclassed ResidualBlock,
    whose `self.pixel_conv` is a PixelConvLayer): the custom layer is re-created from its
    get_config() (Keras 3 records the constructor's arguments), the masked sub-layer's attribute is
    pointed at a MaskedConv2D, and every other variable of the layer is copied. Its call() is not
    touched: it calls `self.pixel_conv(x)` as before, now a MaskedConv2D.
Refused, with a ValueError naming the layer and what to change: subclassed models, and masked
convolutions that are not a sub-layer of their own (conv code inline in a custom layer's call()):
that call() cannot be rewritten without guessing. The model must lower: an op the lowering does not know
on the image's path is refused with its LoweringError (naming op, layer and class).
"""

import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from pixelcnn_fast.layers import MaskedConv2D
from pixelcnn_fast.lowering import conv_kernel_4d, lower
from pixelcnn_fast.masks import make_mask

__all__ = ["convert", "find_mask"]

# Most restrictive first: a mask-A kernel also fits B (B's zeros are a subset of A's), so the first
# fit is the mask that was applied (assuming no live weight is exactly 0, true of any trained or
# randomly initialised kernel).
_CANDIDATES = (("A", 1), ("A", 3), ("B", 3), ("B", 1))

# Lowering activation names -> Keras activation names (those a MaskedConv2D can carry).
_ACTIVATIONS = {"relu": "relu", "relu6": "relu6", "elu": "elu", "selu": "selu", "tanh": "tanh",
                "sigmoid": "sigmoid", "softplus": "softplus", "softsign": "softsign",
                "exp": "exponential"}

# Safety net after conversion: a misread mask or layer changes outputs by O(1) of their scale, a
# different float32 summation order (the fast op's GEMM vs oneDNN's conv) by ~1e-7 of it per layer.
_VERIFY_RTOL = 1e-4


def find_mask(kernel):
    """(mask_type, color_groups, nontrivial) of the most restrictive PixelCNN mask whose zeros the
    kernel (kh, kw, cin, cout) has (nontrivial: the mask zeroes something; a 1x1 mask B does not);
    None when none fits."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        return None
    kh, kw, cin, cout = kernel.shape
    # An all-zero kernel (a zeros initializer) fits every mask: which one was meant cannot be told.
    if kh % 2 == 0 or kw % 2 == 0 or not kernel.any():
        return None
    for mask_type, groups in _CANDIDATES:
        if cin % groups or cout % groups:
            continue
        mask = make_mask(kh, kw, cin, cout, mask_type, groups)
        if not np.any(kernel[mask == 0]):
            return mask_type, groups, bool((mask == 0).any())
    return None


def _is_model(layer):
    return isinstance(layer, (keras.Sequential, keras.Model)) and _is_graph_model(layer)


def _is_graph_model(model):
    # A Functional or Sequential model has a layer graph clone_model can replay; a subclassed
    # keras.Model has only its call() code.
    functional = getattr(keras.src.models.functional, "Functional", None)
    return isinstance(model, keras.Sequential) or (functional is not None and isinstance(model, functional))


def _is_keras_builtin(layer):
    return type(layer).__module__.startswith("keras.")


def _resolve(model, op_name):
    """[(layer, name scope of that call)] enclosing a traced op, outermost first.

    As pixelcnn_fast.lowering names layers: Keras opens a layer's scope as its name and TF
    uniquifies a reused scope with '_N', so a component matches the child named like it without
    that suffix, else the child named exactly like it. The scope tells two calls of a shared layer
    apart."""
    parts = op_name.split("/")[:-1]
    out, current = [], model
    for i, comp in enumerate(parts[1:], start=1):
        kids = {k.name: k for k in current._flatten_layers(include_self=False, recursive=False)}
        child = kids.get(re.sub(r"_\d+$", "", comp)) or kids.get(comp)
        if child is None:
            continue
        current = child
        out.append((child, "/".join(parts[:i + 1])))
    return out


def _owner(chain):
    """(layer, call scope) clone_model hands to the clone function: the outermost layer that is
    not a graph model (those are cloned recursively)."""
    for layer, scope in chain:
        if not _is_model(layer):
            return layer, scope
    return None, None


class _Plan:
    """What the lowering says about one call of a layer: its steps, and its masked conv steps."""

    def __init__(self, layer):
        self.layer = layer
        self.steps = []      # (step, chain of (layer, scope))
        self.masked = []     # (step, chain, mask_type, groups, nontrivial)


def _chain(plan, consts):
    """For a layer that is one masked convolution: (step, kernel, bias or None, activation name);
    None if its steps are anything else than conv [-> + per-channel bias] [-> activation]."""
    steps = [s for s, _ in plan.steps]
    if not steps or steps[0].kind != "conv" or steps[0].attrs.get("matmul"):
        return None
    conv = steps[0]
    kernel = conv_kernel_4d(conv, consts[conv.consts[0]])
    cout = kernel.shape[-1]
    bias, act, last = None, None, conv.out
    rest = steps[1:]
    if rest and rest[0].kind == "binary" and rest[0].attrs["fn"] == "add" and len(rest[0].ins) == 1 \
            and rest[0].ins[0] == last:
        b = np.asarray(consts[rest[0].consts[0]])
        if b.size == cout and (b.ndim == 1 or all(d == 1 for d in b.shape[:-1])):
            bias, last, rest = b.reshape(cout), rest[0].out, rest[1:]
    if rest and rest[0].kind == "act" and rest[0].ins == [last]:
        fn = rest[0].attrs["fn"]
        if fn == "leaky_relu" and np.isclose(rest[0].attrs.get("alpha", 0.2), 0.2):
            act = "leaky_relu"  # Keras 3's default negative_slope is 0.2
        elif fn in _ACTIVATIONS:
            act = _ACTIVATIONS[fn]
        else:
            return None
        rest = rest[1:]
    if rest:
        return None
    return conv, kernel, bias, act


def _signature(decision):
    (_, _, mask_type, groups, _), (step, kernel, bias, act) = decision
    return mask_type, groups, kernel.shape, bias is None, act, step.attrs["dh"], step.attrs["dw"]


def _decide(plan, consts, sub_plans):
    """None to keep the layer; (masked entry, chain) to replace it by a MaskedConv2D; an _Inner to
    keep its class and replace masked sub-layers; raises for a masked convolution computed inline
    in a layer's call()."""
    layer = plan.layer
    if isinstance(layer, MaskedConv2D):
        return None
    if _is_keras_builtin(layer) and not isinstance(layer, keras.layers.Conv2D):
        return None  # Dense, Add, ...: no masked convolution of their own
    nontrivial = [m for m in plan.masked if m[4]]
    if not plan.masked or (_is_keras_builtin(layer) and not nontrivial):
        return None  # no mask, or a standard 1x1 Conv2D (its "mask B" zeroes nothing)
    simple = _chain(plan, consts)
    if simple is not None and len(plan.masked) == 1 and plan.masked[0][0] is simple[0]:
        return plan.masked[0], simple
    if not nontrivial:
        return None  # only 1x1 convolutions inside, whose "mask B" zeroes nothing: keep it
    units = []
    for entry in plan.masked:
        step, chain, mask_type, groups, real = entry
        unit = _masked_unit(layer, entry, sub_plans, consts)
        if unit is None:
            if real:
                _refuse_inline(layer, entry, consts)
            continue  # a 1x1 "mask B" conv inline in call(): nothing masked, nothing to replace
        path, simple = unit
        if not real and _is_keras_builtin(_follow(layer, path)):
            continue  # a standard 1x1 Conv2D sub-layer, whose "mask B" zeroes nothing: keep it
        units.append((path, entry, simple))
    return _Inner(units)


class _Inner:
    """Decision for a custom layer that keeps its class: replace these sub-layers (attribute paths
    from the layer) by MaskedConv2D."""

    def __init__(self, units):
        self.units = units  # [(path, masked entry, simple chain)]

    def signature(self):
        return tuple((path, _signature((entry, simple))) for path, entry, simple in self.units)


def _attr_hop(parent, child):
    """How `parent` holds `child`: an attribute name, or (name, index) for a list of layers."""
    for name, value in vars(parent).items():
        if name.startswith("_"):
            continue  # Keras's own bookkeeping (_layers, _tracker): the user's attribute names it
        if value is child:
            return name
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if v is child:
                    return (name, i)
    return None


def _follow(layer, path):
    for hop in path:
        if layer is None:
            return None
        if isinstance(hop, tuple):
            seq = getattr(layer, hop[0], None)
            layer = seq[hop[1]] if isinstance(seq, (list, tuple)) and hop[1] < len(seq) else None
        else:
            layer = getattr(layer, hop, None)
    return layer


def _masked_unit(owner, entry, sub_plans, consts):
    """(attribute path from owner, simple chain) of the outermost sub-layer of `owner` that is this
    masked convolution and nothing else; None when there is none (conv code inline in a call())."""
    step, chain = entry[0], entry[1]
    o = next((i for i, (l, _) in enumerate(chain) if l is owner), None)
    if o is None:
        return None
    path = []
    for i in range(o + 1, len(chain)):
        hop = _attr_hop(chain[i - 1][0], chain[i][0])
        if hop is None:
            return None
        path.append(hop)
        sub = sub_plans.get((id(chain[i][0]), chain[i][1]))
        simple = _chain(sub, consts) if sub is not None else None
        if simple is not None and simple[0] is step and len(sub.masked) == 1:
            return tuple(path), simple
    return None


def _refuse_inline(layer, entry, consts):
    step, chain, mask_type, groups, _ = entry
    kernel = conv_kernel_4d(step, consts[step.consts[0]])
    # Name the masked layer the user wrote: the innermost custom layer around the conv.
    custom = [i for i, (l, _) in enumerate(chain) if not _is_keras_builtin(l)]
    inner = chain[custom[-1] if custom else -1][0]
    path = "/".join(l.name for l, _ in chain[:(custom[-1] if custom else len(chain) - 1) + 1])
    kh, kw, _, cout = kernel.shape
    raise ValueError(
        f"convert: layer '{layer.name}' ({type(layer).__name__}) computes a masked convolution "
        f"inline in its call() ('{path}' ({type(inner).__name__}), {kh}x{kw} mask {mask_type}"
        f"{f', color_groups={groups}' if groups != 1 else ''}), not through a sub-layer that is "
        f"that convolution and nothing else, so it cannot be replaced without rewriting call(). "
        f"Change: build it with pixelcnn_fast.MaskedConv2D in its __init__ (MaskedConv2D({cout}, "
        f"({kh}, {kw}), mask_type='{mask_type}', color_groups={groups}, ...), called in place of "
        f"the masked convolution) and copy the weights with set_weights([kernel * mask, bias]); "
        f"convert() then keeps '{layer.name}' as it is.")


def _refuse_subclassed(model):
    raise ValueError(
        f"convert: model '{model.name}' ({type(model).__name__}) is a subclassed keras.Model: it has "
        "no layer graph to rebuild, and rewriting its call() would be a guess. Change: build the same "
        "architecture as a functional model (inputs = keras.Input((H, W, C)); x = "
        "pixelcnn_fast.MaskedConv2D(filters, kernel_size, mask_type='A')(inputs); ... "
        "keras.Model(inputs, outputs)) or create pixelcnn_fast.MaskedConv2D layers in its __init__ "
        "instead of the masked ones, and copy the weights with set_weights([kernel * mask, bias]). "
        "Sampling needs no conversion: pixelcnn_fast.Sampler(model, image_shape=(H, W, C)) samples "
        "a subclassed model as it is.")


def _random_inputs(model, batch, rng):
    values = []
    for t in model.inputs:
        shape = (batch,) + tuple(d if d is not None else 1 for d in t.shape[1:])
        dtype = keras.backend.standardize_dtype(t.dtype)
        if "int" in dtype:
            values.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            values.append(rng.uniform(0.0, 1.0, size=shape).astype(dtype))
    return values if len(values) > 1 else values[0]


def convert(model, implementation="fast", verify=True):
    """Returns a functional (or, for a Sequential input, Sequential) Keras model computing what
    `model` computes, with every masked convolution a pixelcnn_fast.MaskedConv2D (same name,
    effective kernel and bias, the activation it applied).

    Args:
      model: a functional or Sequential Keras model (declared inputs). Subclassed models are
        refused (ValueError saying what to change); so are masked convolutions computed inline in
        a custom layer's call(). A custom layer holding a masked conv as a sub-layer (keras.io's
        ResidualBlock) keeps its class, with that sub-layer replaced (a warning says so: its
        __init__ still builds the old sub-layer, which matters to model.save()).
      implementation: the MaskedConv2D implementation, "fast" or "reference".
      verify: run both models on random inputs and raise RuntimeError if the outputs differ by
        more than float32 summation-order rounding allows (1e-4 of the output scale; a misread
        mask or layer is O(1)). The tests hold small models to max |diff| <= 1e-6.

    The original model is not modified (a layer that assigns kernel * mask to its variable in
    call does so once more while the model is traced, as any forward pass would). Other layers
    are re-created from get_config() with their weights copied; a layer that cannot be
    re-created that way is shared with the original model (a warning says so). The returned
    model is not compiled.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"convert: expected a keras.Model, got {type(model).__name__}")
    if not _is_graph_model(model):
        _refuse_subclassed(model)
    if not model.inputs:
        raise ValueError(f"convert: model '{model.name}' has no declared inputs: build it on "
                         "keras.Input((H, W, C)) first")

    program = lower(model)
    conditions = [tf.zeros([1] + [d or 1 for d in s.shape[1:]], s.dtype) for s in program.cond_specs]
    # The effective kernels as the model computes them now (after assign / multiply / constraint).
    consts = program.evaluate_consts(1, conditions)

    # One plan per layer call (a shared layer is called more than once): for the layers clone_model
    # hands to the clone function, and for every layer inside them (sub-layer replacement).
    plans, sub_plans = {}, {}
    for step in program.steps:
        chain = _resolve(model, step.op_name)
        owner, scope = _owner(chain)
        if owner is None:
            continue
        inside = chain[next(i for i, (l, _) in enumerate(chain) if l is owner):]
        touched = [plans.setdefault((id(owner), scope), _Plan(owner))]
        touched += [sub_plans.setdefault((id(l), sc), _Plan(l)) for l, sc in inside]
        found = None
        if step.kind == "conv" and not step.attrs.get("matmul") and not isinstance(chain[-1][0], MaskedConv2D):
            found = find_mask(conv_kernel_4d(step, consts[step.consts[0]]))
        for plan in touched:
            plan.steps.append((step, chain))
            if found is not None:
                plan.masked.append((step, chain) + found)

    replacements = {}
    for plan in plans.values():
        decision = _decide(plan, consts, sub_plans)
        if decision is None or (isinstance(decision, _Inner) and not decision.units):
            continue
        key = id(plan.layer)
        # Every call of a shared layer must read the same way (same variables, same code).
        sig = decision.signature() if isinstance(decision, _Inner) else _signature(decision)
        if key in replacements and replacements[key][0] != sig:
            raise ValueError(f"convert: layer '{plan.layer.name}' ({type(plan.layer).__name__}) "
                             "computes a different masked convolution at each of its calls")
        replacements.setdefault(key, (sig, decision))

    pairs = []  # (old layer, new layer, weights to set or None to copy)

    def clone(layer):
        decision = replacements.get(id(layer), (None, None))[1]
        if isinstance(decision, _Inner):
            return _clone_with_masked_sublayers(layer, decision, implementation, pairs)
        if decision is not None:
            new, weights = _masked_conv2d(layer, decision, implementation)
            pairs.append((layer, new, weights))
            return new
        if isinstance(layer, MaskedConv2D):
            config = layer.get_config()
            config["implementation"] = implementation
            new = MaskedConv2D.from_config(config)
            pairs.append((layer, new, None))
            return new
        try:
            new = layer.__class__.from_config(layer.get_config())
        except Exception as exc:  # a custom layer without a complete get_config()
            if getattr(layer, "weights", None):
                warnings.warn(f"convert: layer '{layer.name}' ({type(layer).__name__}) cannot be "
                              f"re-created from get_config() ({type(exc).__name__}: {exc}); the "
                              "converted model shares it (and its weights) with the original")
            return layer
        pairs.append((layer, new, None))
        return new

    converted = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new, weights in pairs:
        if isinstance(weights, _KeepOthers):
            weights.copy(old, new)
        else:
            new.set_weights(old.get_weights() if weights is None else weights)

    if verify:
        _verify(model, converted)
    return converted


def _masked_conv2d(layer, decision, implementation):
    """(MaskedConv2D computing what `layer` computes, its weights)."""
    (_, _, mask_type, groups, _), (step, kernel, bias, act) = decision
    config = {}
    inner = [l for l in layer._flatten_layers(include_self=False, recursive=True)
             if isinstance(l, keras.layers.Conv2D)]
    base = layer if isinstance(layer, keras.layers.Conv2D) else (inner[0] if len(inner) == 1 else None)
    if base is not None:
        # The wrapped conv's training configuration travels along (initializers,
        # regularizers, constraints); the structure comes from what the graph computes.
        c = base.get_config()
        config = {k: c[k] for k in ("kernel_initializer", "bias_initializer",
                                    "kernel_regularizer", "bias_regularizer",
                                    "activity_regularizer", "kernel_constraint",
                                    "bias_constraint") if k in c}
    new = MaskedConv2D(
        int(kernel.shape[-1]), tuple(int(d) for d in kernel.shape[:2]), mask_type=mask_type,
        color_groups=groups, dilation_rate=(step.attrs["dh"], step.attrs["dw"]),
        padding=step.attrs["padding"].lower(), activation=act, use_bias=bias is not None,
        implementation=implementation, name=layer.name, dtype=layer.dtype_policy, **config)
    weights = [np.asarray(kernel, np.float32)] + ([np.asarray(bias, np.float32)] if bias is not None else [])
    return new, weights


def _swap(parent, hop, new):
    """Points `parent`'s attribute (or list slot) `hop` at `new`, and Keras's tracking with it."""
    old = getattr(parent, hop) if isinstance(hop, str) else getattr(parent, hop[0])[hop[1]]
    tracker = getattr(parent, "_tracker", None)
    locked = getattr(tracker, "locked", False)
    if tracker is not None:
        tracker.unlock()  # a built layer's tracker refuses new sub-layers; this one replaces one
        tracker.untrack(old)
    try:
        if isinstance(hop, str):
            object.__delattr__(parent, hop)
            setattr(parent, hop, new)
        else:
            getattr(parent, hop[0])[hop[1]] = new
            if tracker is not None:
                tracker.track(new)
    finally:
        if tracker is not None and locked:
            tracker.lock()


def _clone_with_masked_sublayers(layer, decision, implementation, pairs):
    """A new instance of `layer`'s own class (from its config), whose masked sub-layers are
    MaskedConv2D; their weights and every other variable are set after clone_model built it."""
    paths = ", ".join(".".join(h if isinstance(h, str) else f"{h[0]}[{h[1]}]" for h in path)
                      for path, _, _ in decision.units)
    try:
        new = layer.__class__.from_config(layer.get_config())
    except Exception as exc:
        raise ValueError(
            f"convert: layer '{layer.name}' ({type(layer).__name__}) holds masked convolutions "
            f"({paths}) that convert would replace by MaskedConv2D, but it cannot be re-created "
            f"from get_config() ({type(exc).__name__}: {exc}). Change: give it a get_config() "
            f"returning its constructor's arguments, or build it with pixelcnn_fast.MaskedConv2D "
            f"in its __init__") from None
    if any(_follow(new, path) is None for path, _, _ in decision.units) and not new.built:
        new.build_from_config(layer.get_build_config() or {})  # sub-layers created in build()
    olds, news = [], []
    for path, entry, simple in decision.units:
        old_unit, parent = _follow(layer, path), _follow(new, path[:-1])
        if _follow(new, path) is None or type(_follow(new, path)) is not type(old_unit):
            raise ValueError(f"convert: layer '{layer.name}' ({type(layer).__name__}) re-created "
                             f"from get_config() has no {type(old_unit).__name__} at '{paths}'")
        unit, weights = _masked_conv2d(old_unit, (entry, simple), implementation)
        _swap(parent, path[-1], unit)
        pairs.append((old_unit, unit, weights))
        olds.append(old_unit)
        news.append(unit)
    pairs.append((layer, new, _KeepOthers(olds, news)))
    warnings.warn(
        f"convert: layer '{layer.name}' ({type(layer).__name__}) keeps its class and calls "
        f"MaskedConv2D as {paths}; its __init__ still builds {type(olds[0]).__name__}, so a "
        f"model.save() of the converted model reloads with the old sub-layer. To save it, create "
        f"pixelcnn_fast.MaskedConv2D in {type(layer).__name__}.__init__ (or save_weights()).")
    return new


class _KeepOthers:
    """Copies every variable of a re-created custom layer except those of the replaced sub-layers
    (set on their own): layer by layer, in tracking order, checked by type and shape."""

    def __init__(self, old_units, new_units):
        self.old_units, self.new_units = old_units, new_units

    @staticmethod
    def _outside(root, units):
        skip = {id(l) for u in units for l in u._flatten_layers(include_self=True, recursive=True)}
        return [l for l in root._flatten_layers(include_self=True, recursive=True) if id(l) not in skip]

    def copy(self, old, new):
        a, b = self._outside(old, self.old_units), self._outside(new, self.new_units)
        if [type(l) for l in a] != [type(l) for l in b]:
            raise ValueError(f"convert: layer '{old.name}' ({type(old).__name__}) re-created from "
                             "get_config() does not have the original's sub-layers")
        for la, lb in zip(a, b):
            va = list(la._trainable_variables) + list(la._non_trainable_variables)
            vb = list(lb._trainable_variables) + list(lb._non_trainable_variables)
            if [tuple(v.shape) for v in va] != [tuple(v.shape) for v in vb]:
                raise ValueError(f"convert: layer '{old.name}/{la.name}' re-created from get_config() "
                                 "has variables of other shapes than the original's")
            for x, y in zip(va, vb):
                y.assign(x)


def _verify(model, converted, batch=2, seed=0):
    x = _random_inputs(model, batch, np.random.default_rng(seed))
    a = np.asarray(model(x, training=False), np.float64)
    b = np.asarray(converted(x, training=False), np.float64)
    err = float(np.max(np.abs(a - b), initial=0.0))
    scale = max(1.0, float(np.max(np.abs(a), initial=0.0)))
    if not err <= _VERIFY_RTOL * scale:
        raise RuntimeError(
            f"convert: the converted model's outputs differ from model '{model.name}''s by up to "
            f"{err:.3g} (output scale {scale:.3g}); please report this model")
