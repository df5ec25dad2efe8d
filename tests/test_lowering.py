"""Python front end: lowering a traced Keras model into the column program, and causality analysis.

The program run by the pure-TF executor must reproduce the model exactly; frontiers must be the
exact latest dependency; non-causal models are refused naming the first layer that sees the future."""

import numpy as np
import pytest
import tensorflow as tf
import keras
from keras import layers

from pixelcnn_fast import MaskedConv2D, check
from pixelcnn_fast.program.causality import analyse_causality, decode_frontier
from pixelcnn_fast.program.ir import LoweringError, NotCausalError
from pixelcnn_fast.program.lower import lower
from pixelcnn_fast.program.tf_executor import run_program


class AssignMaskedConv(layers.Layer):
    """keras.io-style masking: the wrapped Conv2D's kernel variable is overwritten by kernel*mask."""

    def __init__(self, mask_type, **conv_kwargs):
        super().__init__(name=conv_kwargs.pop("layer_name", None))
        self.mask_type = mask_type
        self.conv = layers.Conv2D(**conv_kwargs)

    def build(self, input_shape):
        self.conv.build(input_shape)
        kh, kw = self.conv.kernel.shape[:2]
        mask = np.zeros(self.conv.kernel.shape, np.float32)
        mask[:kh // 2] = 1
        mask[kh // 2, :kw // 2] = 1
        if self.mask_type == "B":
            mask[kh // 2, kw // 2] = 1
        self.mask = mask

    def call(self, x):
        self.conv.kernel.assign(self.conv.kernel * self.mask)
        return self.conv(x)


class Block(layers.Layer):
    """Subclassed residual block (opaque to a layer list, visible in the graph)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.c1 = layers.Conv2D(filters, 1, activation="relu")
        self.pc = AssignMaskedConv("B", filters=filters // 2, kernel_size=3, padding="same",
                                   activation="relu")
        self.c2 = layers.Conv2D(filters, 1, activation="relu")

    def call(self, x):
        return layers.add([x, self.c2(self.pc(self.c1(x)))])


def keras_io_like(h=9, w=11, filters=16):
    inp = keras.Input((h, w, 1))
    x = AssignMaskedConv("A", filters=filters, kernel_size=7, padding="same", activation="relu")(inp)
    x = Block(filters, name="block")(x)
    x = AssignMaskedConv("B", filters=filters, kernel_size=1, padding="valid", activation="relu")(x)
    return keras.Model(inp, layers.Conv2D(1, 1, activation="sigmoid")(x))


def run_and_compare(model, inputs, n):
    program = lower(model)
    consts = program.evaluate_consts(n, inputs[1:])
    bufs = run_program(program, consts, inputs[0])
    tensors = [tf.convert_to_tensor(t) for t in inputs]
    want = model(tensors if len(tensors) > 1 else tensors[0])
    got = tf.reshape(bufs[program.output_buffer], want.shape)
    return program, consts, float(tf.reduce_max(tf.abs(got - want)))


def test_keras_io_like_program_reproduces_model(rng):
    model = keras_io_like()
    x = rng.random((3, 9, 11, 1)).astype(np.float32)
    program, consts, err = run_and_compare(model, [x], 3)
    assert err <= 1e-6
    assert program.final_activation == "sigmoid"
    assert sum(s.kind == "conv" for s in program.steps) == 6
    keys = analyse_causality(program, consts)
    # 7x7 mask A reaches the left neighbour (0, -1); mask B and 1x1 layers never reach further.
    assert decode_frontier(keys[program.logits_buffer].max()) == (0, -1, 0)
    report = check(model)
    assert report.causal and report.conv_steps == 6
    assert 0 < report.live_tap_fraction < 1
    assert "causal: yes" in str(report)


def test_rich_model_with_condition_dense_slices_and_softmax_head(rng):
    inp = keras.Input((6, 7, 3))
    label = keras.Input((), dtype="int32")
    x = MaskedConv2D(12, 3, mask_type="A", color_groups=3, name="first")(inp)
    emb = layers.Reshape((1, 1, 12))(layers.Embedding(10, 12)(label))
    x = layers.Add()([x, emb])
    x = layers.Dense(12, activation="elu", name="mixer")(x)  # mixes colour blocks at the centre
    gated = layers.Multiply()([layers.Activation("tanh")(x[..., :6]),
                               layers.Activation("sigmoid")(x[..., 6:])])
    x = layers.Concatenate()([gated, gated])
    x = layers.Reshape((6, 7, 3, 4))(layers.Conv2D(12, 1)(x))
    model = keras.Model([inp, label], layers.Softmax()(x))
    x_img = rng.random((2, 6, 7, 3)).astype(np.float32)
    labels = tf.constant([3, 7], tf.int32)
    program, consts, err = run_and_compare(model, [x_img, labels], 2)
    assert err <= 1e-6
    assert program.final_activation == "softmax" and program.output_levels == 4
    kinds = [s.kind for s in program.steps]
    assert kinds.count("gather") == 2 and "concat" in kinds
    # The label embedding is evaluated per call: different labels give different constants.
    other = program.evaluate_consts(2, [tf.constant([1, 1], tf.int32)])
    assert any(not np.array_equal(a, b) for a, b in zip(consts, other))
    # The Dense layer feeds the G and B blocks' centre-tap values into the R prediction.
    with pytest.raises(NotCausalError, match=r"layer 'mixer' \(Dense\).*image channel 1, into "
                                             r"channels that predict image channel 0"):
        analyse_causality(program, consts)


def test_plain_conv_in_block_is_refused_naming_it():
    inp = keras.Input((8, 8, 1))
    x = MaskedConv2D(8, 7, mask_type="A")(inp)
    x = layers.Conv2D(8, 3, padding="same", name="leaky_conv")(x)
    model = keras.Model(inp, layers.Conv2D(1, 1, activation="sigmoid")(x))
    with pytest.raises(NotCausalError, match=r"layer 'leaky_conv' \(Conv2D\) reads the pixel at "
                                             r"offset \(\+1, \+0\): the model sees the future"):
        check(model)
    report = check(model, raise_if_not_causal=False)
    assert not report.causal


def test_mask_b_first_layer_sees_the_pixel_it_predicts():
    inp = keras.Input((5, 5, 1))
    x = MaskedConv2D(4, 3, mask_type="B", name="first_b")(inp)
    model = keras.Model(inp, layers.Conv2D(1, 1, activation="sigmoid")(x))
    with pytest.raises(NotCausalError, match=r"layer 'first_b' \(MaskedConv2D\) reads the pixel at "
                                             r"offset \(\+0, \+0\)"):
        check(model)


def test_nested_layer_is_named_by_path():
    inp = keras.Input((6, 6, 1))
    x = MaskedConv2D(4, 3, mask_type="A")(inp)

    class Leaky(layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.inner = layers.Conv2D(4, 3, padding="same", name="inner_conv")

        def call(self, t):
            return self.inner(t)

    x = Leaky(name="outer")(x)
    model = keras.Model(inp, layers.Conv2D(1, 1)(x))
    with pytest.raises(NotCausalError, match=r"layer 'outer/inner_conv' \(Conv2D\)"):
        check(model)


def test_unsupported_op_is_named_with_layer_and_class():
    class Shift(layers.Layer):
        def call(self, t):
            return tf.roll(t, shift=1, axis=2)

    inp = keras.Input((5, 5, 1))
    x = Shift(name="roller")(MaskedConv2D(4, 3, mask_type="A")(inp))
    model = keras.Model(inp, layers.Conv2D(1, 1)(x))
    with pytest.raises(LoweringError, match=r"op '.*roller.*' \(Roll\) of layer 'roller' \(Shift\)"):
        check(model)


def test_reshape_that_moves_values_between_pixels_is_refused():
    inp = keras.Input((4, 4, 2))
    x = MaskedConv2D(2, 3, mask_type="A")(inp)
    x = layers.Reshape((2, 8, 2), name="scramble")(x)
    model = keras.Model(inp, x)
    with pytest.raises(LoweringError, match=r"'scramble' \(Reshape\).*moves values between pixels"):
        check(model)


def test_subclassed_model_needs_image_shape():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__(name="tiny")
            self.conv = MaskedConv2D(2, 3, mask_type="A")
            self.head = layers.Conv2D(1, 1, activation="sigmoid")

        def call(self, t):
            return self.head(self.conv(t))

    model = Tiny()
    model(np.zeros((1, 5, 5, 1), np.float32))
    with pytest.raises(ValueError, match=r"model 'tiny' \(Tiny\) has no declared inputs .* "
                                         r"pass image_shape=\(H, W, C\)"):
        check(model)
    report = check(model, image_shape=(5, 5, 1))
    assert report.causal and report.conv_steps == 2


class _DilatedConv(layers.Layer):
    """A masked dilated conv written the two ways TF graphs carry one: `tf.nn.conv2d(dilations=...)`
    (one Conv2D op with a dilations attribute) or `tf.nn.convolution(dilations=...)` (SpaceToBatchND ->
    Conv2D -> BatchToSpaceND, what Keras' Conv2D and our reference path emit). Which kernels TF runs for
    them depends on oneDNN (TF_ENABLE_ONEDNN_OPTS); the traced graph and so the lowering must not."""

    def __init__(self, filters, kernel_size, mask_type, dilation, form, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.k, self.mask_type, self.dilation, self.form = (
            filters, kernel_size, mask_type, dilation, form)

    def build(self, input_shape):
        from pixelcnn_fast.masks import make_mask

        shape = (self.k, self.k, int(input_shape[-1]), self.filters)
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="kernel")
        self.mask = make_mask(*shape, self.mask_type).astype(np.float32)

    def call(self, x):
        kernel = self.kernel * self.mask
        if self.form == "conv2d":
            return tf.nn.conv2d(x, kernel, 1, "SAME", dilations=[1, *self.dilation, 1])
        return tf.nn.convolution(x, kernel, padding="SAME", dilations=list(self.dilation))


@pytest.mark.parametrize("form,ops", [("conv2d", {"Conv2D"}),
                                      ("convolution", {"SpaceToBatchND", "Conv2D", "BatchToSpaceND"})])
def test_both_dilated_conv_forms_lower_and_teacher_force(form, ops, rng):
    # The two graph forms of a dilated conv, checked present in the trace, each lowered to one dilated
    # conv step whose cached executor reproduces the model (CI runs this file with oneDNN on and off).
    from pixelcnn_fast.sampler import Sampler

    h, w = 9, 11
    inp = keras.Input((h, w, 1))
    x = MaskedConv2D(8, 5, mask_type="A", activation="relu")(inp)
    x = _DilatedConv(8, 3, "B", (2, 3), form, name="dilated_b")(x)
    x = layers.Activation("relu")(x)
    model = keras.Model(inp, layers.Conv2D(1, 1, activation="sigmoid")(x))
    graph_ops = {op.type for op in tf.function(model).get_concrete_function(
        tf.TensorSpec((None, h, w, 1), tf.float32)).graph.get_operations()}
    assert ops <= graph_ops, f"{form}: expected {ops} in the traced graph, got {sorted(graph_ops)}"
    if form == "conv2d":
        assert "SpaceToBatchND" not in graph_ops
    image = (rng.random((2, h, w, 1)) < 0.5).astype(np.float32)
    program, consts, err = run_and_compare(model, [image], 2)
    assert err <= 1e-6
    convs = [s for s in program.steps if s.kind == "conv"]
    assert [(s.attrs["dh"], s.attrs["dw"], s.attrs["padding"]) for s in convs] == [
        (1, 1, "SAME"), (2, 3, "SAME"), (1, 1, "VALID")]
    sampler = Sampler(model)
    got = sampler.teacher_forced(image)
    want = model(image).numpy().reshape(got.shape)
    # got is the sigmoid head's logits: compare probabilities, float32 sums in another order.
    assert np.abs(tf.sigmoid(got).numpy() - want).max() <= 1e-5
    assert check(model).causal
