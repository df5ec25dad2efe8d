"""Python front end: `convert(model)`, rebuilding a Keras PixelCNN with pixelcnn_fast.MaskedConv2D.

Masked convolutions are found through the lowering (pixelcnn_fast.program), not by class name (that
search is conversion_plan.py; this file rebuilds the model from its plan and verifies the result): a
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

import warnings

import keras
import numpy as np
import tensorflow as tf

from pixelcnn_fast.conversion_plan import (SublayerReplacement, find_mask, follow_path, is_graph_model,
                                           plan_replacements)
from pixelcnn_fast.layers import MaskedConv2D
from pixelcnn_fast.program.lower import lower

__all__ = ["convert", "find_mask"]

# Safety net after conversion: a misread mask or layer changes outputs by O(1) of their scale, a
# different float32 summation order (the fast op's GEMM vs oneDNN's conv) by ~1e-7 of it per layer.
_VERIFY_RTOL = 1e-4


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
    if not is_graph_model(model):
        _refuse_subclassed(model)
    if not model.inputs:
        raise ValueError(f"convert: model '{model.name}' has no declared inputs: build it on "
                         "keras.Input((H, W, C)) first")

    program = lower(model)
    conditions = [tf.zeros([1] + [d or 1 for d in s.shape[1:]], s.dtype) for s in program.cond_specs]
    # The effective kernels as the model computes them now (after assign / multiply / constraint).
    consts = program.evaluate_consts(1, conditions)

    replacements = plan_replacements(model, program, consts)

    pairs = []  # (old layer, new layer, weights to set or None to copy)

    def clone(layer):
        decision = replacements.get(id(layer), (None, None))[1]
        if isinstance(decision, SublayerReplacement):
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
    if any(follow_path(new, path) is None for path, _, _ in decision.units) and not new.built:
        new.build_from_config(layer.get_build_config() or {})  # sub-layers created in build()
    olds, news = [], []
    for path, entry, simple in decision.units:
        old_unit, parent = follow_path(layer, path), follow_path(new, path[:-1])
        if follow_path(new, path) is None or type(follow_path(new, path)) is not type(old_unit):
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
