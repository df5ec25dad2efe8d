"""Python front end: what convert() replaces -- the masked convolutions of a lowered Keras model, found by
their kernels' zeros and traced back to the layers (and sub-layers) that compute them (conversion.py rebuilds
the model from this plan)."""

import re

import keras
import numpy as np

from pixelcnn_fast.layers import MaskedConv2D
from pixelcnn_fast.program.ir import conv_kernel_4d
from pixelcnn_fast.masks import make_mask

# Most restrictive first: a mask-A kernel also fits B (B's zeros are a subset of A's), so the first
# fit is the mask that was applied (assuming no live weight is exactly 0, true of any trained or
# randomly initialised kernel).
_CANDIDATES = (("A", 1), ("A", 3), ("B", 3), ("B", 1))

# Lowering activation names -> Keras activation names (those a MaskedConv2D can carry).
ACTIVATIONS = {"relu": "relu", "relu6": "relu6", "elu": "elu", "selu": "selu", "tanh": "tanh",
               "sigmoid": "sigmoid", "softplus": "softplus", "softsign": "softsign",
               "exp": "exponential"}


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
    return isinstance(layer, (keras.Sequential, keras.Model)) and is_graph_model(layer)


def is_graph_model(model):
    # A Functional or Sequential model has a layer graph clone_model can replay; a subclassed
    # keras.Model has only its call() code.
    functional = getattr(keras.src.models.functional, "Functional", None)
    return isinstance(model, keras.Sequential) or (functional is not None and isinstance(model, functional))


def _is_keras_builtin(layer):
    return type(layer).__module__.startswith("keras.")


def _resolve(model, op_name):
    """[(layer, name scope of that call)] enclosing a traced op, outermost first.

    As pixelcnn_fast.program.lower names layers: Keras opens a layer's scope as its name and TF
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
        elif fn in ACTIVATIONS:
            act = ACTIVATIONS[fn]
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
    """None to keep the layer; (masked entry, chain) to replace it by a MaskedConv2D; a SublayerReplacement to
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
        if not real and _is_keras_builtin(follow_path(layer, path)):
            continue  # a standard 1x1 Conv2D sub-layer, whose "mask B" zeroes nothing: keep it
        units.append((path, entry, simple))
    return SublayerReplacement(units)


class SublayerReplacement:
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


def follow_path(layer, path):
    """The sub-layer at attribute path `path` (hops as _attr_hop gives them) from `layer`; None if absent."""
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


def plan_replacements(model, program, consts):
    """{id(layer): (signature, decision)} of the layers convert() replaces: a decision is (masked entry, chain)
    for a layer that is one masked convolution (it becomes a MaskedConv2D), or a SublayerReplacement for a
    custom layer that keeps its class. `program` is lower(model), `consts` its evaluated constants (the
    effective kernels). ValueError for a masked convolution computed inline in a call(), or a shared layer
    whose calls compute different masked convolutions."""
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
        if decision is None or (isinstance(decision, SublayerReplacement) and not decision.units):
            continue
        key = id(plan.layer)
        # Every call of a shared layer must read the same way (same variables, same code).
        sig = decision.signature() if isinstance(decision, SublayerReplacement) else _signature(decision)
        if key in replacements and replacements[key][0] != sig:
            raise ValueError(f"convert: layer '{plan.layer.name}' ({type(plan.layer).__name__}) "
                             "computes a different masked convolution at each of its calls")
        replacements.setdefault(key, (sig, decision))
    return replacements
