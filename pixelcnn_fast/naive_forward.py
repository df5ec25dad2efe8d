"""Python front end: the naive loops' traced forwards (naive.py runs them): tf.function forwards of the model
that return one pixel's outputs, the output-shape rule, and what the traced graph says the output is."""

# Output probabilities vs logits (argument `output`).  The draws are defined on logits (bernoulli: u <
# sigmoid(z / T); categorical: softmax(z / T)) or on probabilities (categorical: p ** (1/T), renormalised).
# Guessing from the values (all in [0, 1], summing to 1) is fragile: a logit head can emit such values, and a
# sigmoid head's values never sum to anything in particular.  So output="auto" reads the model's LAST OP from
# one trace of the model (cheap: a tf.function trace, no execution): looking through shape-only ops (Reshape,
# Identity, Cast, Transpose, slicing, concat), a Sigmoid or Softmax op means "probs"; a convolution, matmul,
# BiasAdd or LogSoftmax means "logits", and so does a sum of such terms, plus image-independent ones (a label
# bias), or one scaled by an image-independent factor.  Anything else (arithmetic on a sigmoid/softmax, a
# product of two image-dependent tensors, an Exp, a clip, a custom normalisation ...) is ambiguous and
# output="auto" raises ValueError asking for output="probs" or output="logits".

import time

import numpy as np
import tensorflow as tf

WHERE = "naive.sample"  # how naive.sample's errors begin (naive.complete's too, with its own name)


class OwnArgumentError(ValueError):
    """An error about sample()'s arguments found while tracing: never taken for a model refusing a crop."""


class RowsPaddingError(ValueError):
    """mode='rows' on a model that takes only some heights (a U-net: multiples of its total stride) pads the first
    rows up to one; refused when the outputs above the padding then differ from one full forward pass."""


def _expected_output_shapes(n, rows, width, channels, head, levels):
    lead = (n, rows, width)
    if head == "bernoulli":
        return [lead + (channels,)]
    if head == "logistic_mixture":  # levels: the head's values per pixel, 3K (grey) or 10K (RGB)
        return [lead + (levels,)]
    return [lead + (channels * levels,), lead + (channels, levels)]


def _output_shape_ok(shape, n, rows, width, channels, head, levels):
    shape = tuple(None if d is None else int(d) for d in shape)
    return shape in _expected_output_shapes(n, rows, width, channels, head, levels)


def check_output_shape(shape, n, rows, width, channels, head, levels):
    """Raises OwnArgumentError (a ValueError) unless the model output's shape fits the head and the image."""
    shape = tuple(None if d is None else int(d) for d in shape)
    expected = _expected_output_shapes(n, rows, width, channels, head, levels)
    if shape not in expected:
        what = ("(n, H, W, C)" if head == "bernoulli" else "(n, H, W, 3K or 10K)" if head == "logistic_mixture"
                else "(n, H, W, C*levels) or (n, H, W, C, levels)")
        raise OwnArgumentError(
            f"{WHERE}: the model output must have shape {what} = "
            f"{' or '.join(str(e) for e in expected)} for head={head!r}"
            + (f" with levels={levels}" if head == "categorical" else "")
            + f" (C = {channels} image channels), got {shape}")


# --------------------------------------------------------------------------- output kind from the graph

_PROB_OPS = {"Sigmoid", "Softmax"}
# Ops whose output is an affine function of features: what a logits head ends in.
_LOGIT_OPS = {"Conv2D", "Conv3D", "DepthwiseConv2dNative", "PixelcnnFastMaskedConv2D", "MatMul",
              "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "BiasAdd", "LogSoftmax",
              "BatchToSpaceND"}
# Ops that move or select values without changing what they are.
_TRANSPARENT = {"Identity", "IdentityN", "Reshape", "Cast", "EnsureShape", "Transpose", "ExpandDims", "Squeeze",
                "StridedSlice", "Slice", "GatherV2", "ConcatV2", "Pack", "Split", "SplitV", "Unpack",
                "StopGradient", "Snapshot", "PreventGradient"}
# Adding or subtracting terms, or scaling by image-independent factors, keeps logits logits (not probs).
_AFFINE = {"AddV2", "Add", "Sub", "Mul", "RealDiv", "AddN", "Neg"}


def classify_output(out_tensor, image_tensor):
    """'probs', 'logits' or None (ambiguous) for the traced model output; also the op that decided."""
    depends = {}

    def image_dependent(t):
        # Memoised walk: does tensor t depend on the image placeholder?  Captured variables, constants and
        # condition inputs do not; their contributions are neutral for the classification.
        key = t.ref()
        if key in depends:
            return depends[key]
        stack = [t]
        while stack:
            u = stack.pop()
            if u.ref() in depends:
                continue
            pending = [v for v in u.op.inputs if v.ref() not in depends]
            if pending:
                stack.append(u)
                stack.extend(pending)
                continue
            depends[u.ref()] = (u.ref() == image_tensor.ref()
                                or any(depends[v.ref()] for v in u.op.inputs))
        return depends[key]

    def classify(t, depth):
        if depth > 64:
            return None, t.op
        op = t.op
        kind = op.type
        if kind in _PROB_OPS:
            return "probs", op
        if kind in _LOGIT_OPS:
            return "logits", op
        if kind in _TRANSPARENT or kind in _AFFINE:
            found = [classify(v, depth + 1) for v in op.inputs if v.dtype.is_floating and image_dependent(v)]
            kinds = {k for k, _ in found}
            if not found:
                return None, op
            if kind in _TRANSPARENT:
                return (found[0] if len(kinds) == 1 else (None, op))
            # Affine: logits plus image-independent terms (a label bias), logits plus logits, logits times a
            # constant (a temperature): still logits.  Probs through arithmetic, or a product of two
            # image-dependent tensors: no longer a declared head.
            if kinds == {"logits"} and not (kind in ("Mul", "RealDiv") and len(found) > 1):
                return "logits", found[0][1]
            return None, op
        return None, op

    return classify(out_tensor, 0)


# --------------------------------------------------------------------------- traced forwards

def _call_model(model, args, use_call):
    if use_call:
        # Functional models check their declared input shape in __call__; Model.call runs the same layer
        # graph without that check, so an image cropped to its first rows goes through (see trace_rows).
        return model.call(args, training=False)
    try:
        return model(args, training=False)
    except TypeError:  # a model that overrides __call__ without a training argument (the CIFAR blog's)
        return model(args)


class PixelTracer:
    """tf.function forwards of the model that return only the outputs of one pixel, (n, C, L) float32.

    Selecting the pixel in the graph keeps the device->host copy per step at n*C*L values instead of the
    whole output: the strongest version of the naive loop a user could write without caching.
    """

    def __init__(self, model, n, image_shape, conditions, head, levels, code_input=None):
        self.model = model
        self.code_input = code_input
        self.n = n
        self.h, self.w, self.c = image_shape
        self.cond_specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)) for a in conditions]
        self.head = head
        self.levels = levels
        self.per_channel = 1 if head == "bernoulli" else levels
        # A mixture head is one set of values per pixel (levels: how many), for all its channels.
        self.pixel_rows = 1 if head == "logistic_mixture" else self.c
        self.trace_seconds = 0.0
        self.out_tensor = None
        self.image_tensor = None

    def concrete(self, rows, use_call=False):
        """The concrete function for images cropped to `rows` rows: f(image, *conditions, row, col)."""
        n, w, c, model = self.n, self.w, self.c, self.model

        def forward(image, *rest):
            conditions, row, col = rest[:-2], rest[-2], rest[-1]
            args = [image, *conditions] if conditions else image
            out = _call_model(model, args, use_call)
            # Errors about the output are raised after tracing, outside TF's "in user code" wrapping.
            self.out_tensor, self.image_tensor = out, image
            if isinstance(out, (list, tuple, dict)) or not _output_shape_ok(out.shape, n, rows, w, c, self.head,
                                                                            self.levels):
                return tf.zeros((n, self.pixel_rows, self.per_channel), tf.float32)
            pixel = out[:, row, col]
            return tf.cast(tf.reshape(pixel, (n, self.pixel_rows, self.per_channel)), tf.float32)

        image_spec = tf.TensorSpec((n, rows, w, c), tf.float32) if self.code_input is None else \
            tf.TensorSpec((n, rows, w) + ((c,) if self.code_input[1] == 4 else ()), self.code_input[0])
        specs = [image_spec, *self.cond_specs,
                 tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int32)]
        start = time.perf_counter()
        fn = tf.function(forward, autograph=False).get_concrete_function(*specs)
        self.trace_seconds += time.perf_counter() - start
        out = self.out_tensor
        if isinstance(out, (list, tuple, dict)):
            raise OwnArgumentError(f"{WHERE}: the model must return one output tensor, got {type(out).__name__}")
        check_output_shape(out.shape, n, rows, w, c, self.head, self.levels)
        return fn


def trace_rows(tracer, rows, use_call):
    """(concrete function, use_call) for `rows`: the model's own __call__ first, Model.call if it refuses."""
    if use_call is None:
        try:
            return tracer.concrete(rows, False), False
        except OwnArgumentError:
            raise
        except ValueError as first:  # Keras' input-shape check (functional models)
            try:
                return tracer.concrete(rows, True), True
            except OwnArgumentError:
                raise
            except Exception as second:
                raise _rows_error(tracer, rows, second) from first
    try:
        return tracer.concrete(rows, use_call), use_call
    except OwnArgumentError:
        raise
    except Exception as exc:
        raise _rows_error(tracer, rows, exc) from exc


def trace_first_rows(tracer):
    """(concrete function, use_call, multiple) for the rows loop's first row: the crop to 1 row, or, where the model
    refuses it, the smallest height m < H it takes (a U-net's skips need every resolution to halve: m is its total
    stride); every later crop is then padded up to a multiple of m (pad_rows). A model that takes no height below
    H (a fixed-height reshape) is refused as before, naming the 1-row crop."""
    try:
        fn, use_call = trace_rows(tracer, 1, None)
        return fn, use_call, 1
    except OwnArgumentError:
        raise
    except ValueError as refused:
        for m in range(2, tracer.h):
            try:
                fn, use_call = trace_rows(tracer, m, None)
            except ValueError:
                continue
            return fn, use_call, m
        raise refused


def pad_rows(rows, multiple, h):
    """The height a crop of `rows` rows is padded to: the next multiple of `multiple`, at most H."""
    return min(h, -(-rows // multiple) * multiple)


def check_padded_rows(tracer, use_call, rows, height, images, conditions, model_image, full_outputs):
    """Refuses (RowsPaddingError) a padded crop whose outputs at rows < `rows` differ from the full forward's.

    images: float32 (k, H, W, C) random model inputs, k a multiple of the loop's n (its conditions' batch);
    conditions: the loop's condition tensors; model_image: the loop's image -> model input map; full_outputs: a
    list, the model's outputs on `images` appended on the first call (one full forward, reused for every row
    count). The crop keeps rows 0..rows-1 and zeros below, so a read of a row below shows as a difference (the
    tolerance allows only the float rounding of another conv shape)."""
    n = tracer.n

    def forward(batch):
        x = tf.constant(model_image(batch))
        return np.asarray(_call_model(tracer.model, [x, *conditions] if conditions else x, use_call), np.float64)

    if not full_outputs:
        full_outputs.append(np.concatenate([forward(images[b:b + n]) for b in range(0, len(images), n)]))
    for b in range(0, len(images), n):
        crop = np.zeros((n, height) + images.shape[2:], np.float32)
        crop[:, :rows] = images[b:b + n, :rows]
        got = forward(crop)[:, :rows]
        want = full_outputs[0][b:b + n, :rows]
        scale = float(np.abs(want).max())
        diff = np.abs(got - want)
        if not diff.max() <= 1e-4 * max(scale, 1e-6):
            at = np.unravel_index(int(np.argmax(diff)), diff.shape)
            raise RowsPaddingError(
                f"{WHERE}: mode='rows' pads the first {rows} rows of the image with zeros to {height} rows (model "
                f"'{tracer.model.name}' takes no crop of fewer rows), but its outputs at rows < {rows} then differ "
                f"from one forward pass of the full image (max |difference| {diff.max():.3g} at row {at[1]}, "
                f"column {at[2]}, outputs up to {scale:.3g}, on {len(images)} random images): they read the rows "
                f"below, so the padded crops would not draw the model's images. Use mode='graph'.")


def _rows_error(tracer, rows, exc):
    msg = str(exc).strip().splitlines()
    return ValueError(
        f"{WHERE}: mode='rows' runs the model on the image cropped to its first r+1 rows and needs a model "
        f"that accepts shape (n, r+1, W, C); model '{tracer.model.name}' refused (n, {rows}, {tracer.w}, "
        f"{tracer.c}) (expected a model without fixed-height reshapes), got: {msg[-1] if msg else exc!r}. "
        f"Use mode='graph'.")
