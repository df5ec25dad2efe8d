"""Python front end + core executor: the cached sampler. Teacher forcing (the cached path's head values
at every position equal one full forward pass) on every causal seed fixture, odd sizes and batch 1;
determinism; bad input refused with clear errors."""

import numpy as np
import pytest
import tensorflow as tf
import keras
from keras import layers

from fixtures import seed_models
from pixelcnn_fast import MaskedConv2D
from pixelcnn_fast.program.ir import NotCausalError
from pixelcnn_fast.program.tf_executor import run_program
from pixelcnn_fast.sampler import Sampler
from pixelcnn_fast._ext import core

CAUSAL = ["keras_io", "book", "categorical4", "categorical256_logits", "rgb_3x256", "rgb_3x256_fast",
          "conditional", "fast_keras_io"]


def make_sampler(sm):
    declared = getattr(sm.model, "inputs", None)
    return Sampler(sm.model, head=sm.head, value_map=None if sm.head == "bernoulli" else sm.value_map,
                   image_shape=None if declared else sm.image_shape)


def full_pass_head(sampler, image, conditions):
    """The head values of one full forward pass (the pure-TF program executor, which
    test_lowering_seeds shows equals the model itself)."""
    p = sampler.program
    consts = p.evaluate_consts(image.shape[0], [tf.convert_to_tensor(c) for c in conditions])
    return run_program(p, consts, image)[p.logits_buffer].numpy()


@pytest.mark.parametrize("name", CAUSAL)
def test_teacher_forcing_equals_full_pass(name, rng):
    sm = getattr(seed_models, name)()
    sampler = make_sampler(sm)
    inputs = seed_models.example_inputs(sm, 3, rng)
    inputs = inputs if isinstance(inputs, list) else [inputs]
    got = sampler.teacher_forced(inputs[0], inputs[1:] or None)
    want = full_pass_head(sampler, inputs[0], inputs[1:])
    # float32 sums in a different order over at most a few thousand terms per value.
    err = np.abs(got - want).max() / (np.abs(want).max() + 1e-30)
    assert err < 1e-5, f"{name}: max relative error {err:.2e}"


@pytest.mark.parametrize("shape", [(13, 17), (1, 9), (7, 1), (1, 1)])
def test_teacher_forcing_odd_sizes_batch_one(shape, rng):
    h, w = shape
    sm = seed_models.keras_io(height=h, width=w, filters=8, blocks=1)
    sampler = make_sampler(sm)
    image = (rng.random((1, h, w, 1)) < 0.5).astype(np.float32)
    got = sampler.teacher_forced(image)
    want = full_pass_head(sampler, image, [])
    assert np.abs(got - want).max() <= 1e-5 * (np.abs(want).max() + 1.0)


def test_dilated_masked_layers_and_rgb_groups_teacher_forced(rng):
    inp = keras.Input((9, 10, 3))
    x = MaskedConv2D(12, 5, mask_type="A", color_groups=3, activation="relu")(inp)
    x = MaskedConv2D(12, 3, mask_type="B", color_groups=3, dilation_rate=2, activation="relu")(x)
    x = MaskedConv2D(12, 3, mask_type="B", color_groups=3, dilation_rate=(1, 3), activation="elu")(x)
    out = layers.Reshape((9, 10, 3, 4))(MaskedConv2D(12, 1, mask_type="B", color_groups=3)(x))
    model = keras.Model(inp, layers.Softmax()(out))
    sampler = Sampler(model, value_map="level/(N-1)")
    image = rng.integers(0, 4, (2, 9, 10, 3)).astype(np.float32) / 3
    got = sampler.teacher_forced(image)
    want = full_pass_head(sampler, image, [])
    assert np.abs(got - want).max() <= 1e-5 * (np.abs(want).max() + 1.0)


def test_sampling_is_deterministic_per_seed_and_image_index():
    sm = seed_models.categorical4(height=6, width=7)
    sampler = make_sampler(sm)
    a = sampler.sample(3, seed=5)
    assert a.shape == (3, 6, 7, 1) and a.dtype == np.int32 and a.min() >= 0 and a.max() < 4
    assert np.array_equal(a, sampler.sample(3, seed=5))
    assert not np.array_equal(a, sampler.sample(3, seed=6))
    # Image k's random numbers are keyed by k, so a smaller batch reproduces the first images.
    assert np.array_equal(a[:2], sampler.sample(2, seed=5))
    assert not np.array_equal(a, sampler.sample(3, seed=5, temperature=0.5))


def test_conditions_change_the_images():
    sm = seed_models.conditional()
    sampler = make_sampler(sm)
    labels = np.eye(sm.num_classes, dtype=np.float32)[[0, 0]]
    other = np.eye(sm.num_classes, dtype=np.float32)[[1, 1]]
    a = sampler.sample(2, seed=0, conditions=[labels])
    assert np.array_equal(a, sampler.sample(2, seed=0, conditions=[labels]))
    # The label changes the model's predictions, so the images differ (same random numbers).
    assert not np.array_equal(a, sampler.sample(2, seed=0, conditions=[other]))


def test_bad_input_is_refused_with_clear_errors():
    sm = seed_models.keras_io()
    sampler = make_sampler(sm)
    with pytest.raises(ValueError, match=r"Sampler.sample: n must be an integer in \[1, 2\*\*32\), got 0"):
        sampler.sample(0)
    with pytest.raises(ValueError, match=r"Sampler.sample: temperature must be a positive finite float32, got 0.0"):
        sampler.sample(1, temperature=0)
    with pytest.raises(ValueError, match=r"Sampler.sample: temperature must be a positive finite float32, got -1.0"):
        sampler.sample(1, temperature=-1.0)
    with pytest.raises(ValueError, match=r"takes 0 condition input\(s\) besides the image, got 1"):
        sampler.sample(1, conditions=[np.zeros((1, 10), np.float32)])
    cond = seed_models.conditional()
    cs = make_sampler(cond)
    with pytest.raises(ValueError, match=r"conditions\[0\] must have shape \(2, 10\)"):
        cs.sample(2, conditions=[np.zeros((3, 10), np.float32)])
    with pytest.raises(ValueError, match=r"takes 1 condition input\(s\) besides the image, got 0"):
        cs.sample(2)
    with pytest.raises(ValueError, match=r"backend must be 'cpu'"):
        Sampler(sm.model, backend="tpu")


def test_head_and_value_map_must_be_known():
    sm = seed_models.categorical256_logits()
    with pytest.raises(ValueError, match=r"cannot infer the head .* pass head='bernoulli' or "
                                         r"head='categorical'"):
        Sampler(sm.model)
    with pytest.raises(ValueError, match=r"value_map= is required for a categorical head"):
        Sampler(sm.model, head="categorical")
    with pytest.raises(ValueError, match=r"levels=10 does not match"):
        Sampler(sm.model, head="categorical", levels=10, value_map="identity")


def test_non_causal_model_is_refused_naming_the_layer():
    sm = seed_models.notebook_plain_residual()
    with pytest.raises(NotCausalError, match=rf"layer '{sm.bad_layer}'"):
        Sampler(sm.model, head="categorical", value_map="identity")


def test_model_without_image_input_is_refused():
    inp = keras.Input((4,))
    model = keras.Model(inp, layers.Dense(2)(inp))
    with pytest.raises(ValueError, match=r"the image input must be \(batch, H, W, C\)"):
        Sampler(model)


# ------------------------------------------------------------------- cached == naive, same seed
NAIVE_CASES = [("keras_io", dict(height=6, width=7)), ("categorical4", dict(height=5, width=6)),
               ("categorical256_logits", dict(height=5, width=5)), ("rgb_3x256", dict(height=3, width=4)),
               ("conditional", dict(height=5, width=6)), ("book", dict(height=5, width=6))]


@pytest.mark.parametrize("name,size", NAIVE_CASES, ids=[c[0] for c in NAIVE_CASES])
def test_cached_sampler_draws_the_naive_loops_images(name, size):
    import types

    from pixelcnn_fast import naive
    from sampling_checks import assert_same_images

    sm = getattr(seed_models, name)(**size)
    sampler = make_sampler(sm)
    conditions = None
    if sm.conditional:
        conditions = [np.eye(sm.num_classes, dtype=np.float32)[[2, 5]]]
    declared = getattr(sm.model, "inputs", None)
    ref = naive.sample(sm.model, 2, mode="rows", head=sm.head, levels=sm.levels, value_map=sm.value_map,
                       seed=3, temperature=0.8, conditions=conditions,
                       image_shape=None if declared else sm.image_shape)
    levels, margins = sampler.sample(2, seed=3, temperature=0.8, conditions=conditions, return_margins=True)
    cached = types.SimpleNamespace(levels=levels, margins=margins, mode="cached")
    assert_same_images(ref, cached, sm.levels)
    # The images must mostly agree exactly: a divergence is only legitimate at a boundary draw.
    assert (ref.levels == levels).mean() > 0.5


def test_progress_reports_rows_without_changing_the_images(capsys):
    import pixelcnn_fast

    sm = seed_models.keras_io(height=5, width=6)
    sampler = pixelcnn_fast.Sampler(sm.model)
    quiet = sampler.sample(2, seed=9)
    loud = sampler.sample(2, seed=9, progress=True)
    assert np.array_equal(quiet, loud)
    err = capsys.readouterr().err
    assert "row 5/5" in err and "pixels/s" in err


def test_built_program_is_reused_only_while_the_weights_are_the_same():
    # Sampler keeps its C++ build (lowered program, causality, spec, packed weights) and reuses it while
    # every variable the constants read and the conditions are unchanged; a weight change (training,
    # set_weights, assign) must be seen by the very next call.
    sm = seed_models.keras_io(height=6, width=5, filters=8, blocks=1, seed=3)
    sampler = Sampler(sm.model)
    first = sampler.sample(3, seed=11)
    builds = sampler.build_count
    exe = sampler.executor(3, [])
    assert sampler.executor(3, []) is exe                  # same weights, same n: reused
    assert sampler.executor(2, []) is exe                  # no constant has a batch dimension: any n
    assert sampler.build_count == builds                   # nothing was built again
    np.testing.assert_array_equal(sampler.sample(3, seed=11), first)
    weights = sm.model.get_weights()
    sm.model.set_weights([w * 1.5 + 0.3 for w in weights])
    changed = sampler.sample(3, seed=11)
    assert sampler.build_count == builds + 1
    np.testing.assert_array_equal(changed, Sampler(sm.model).sample(3, seed=11))
    assert not np.array_equal(changed, first)
    sm.model.set_weights(weights)
    np.testing.assert_array_equal(sampler.sample(3, seed=11), first)


def test_a_change_to_one_weight_in_place_invalidates_the_build():
    # In-place changes (an optimizer's assign_sub, a variable's assign) keep the variable objects: the
    # cache compares values, so one changed bias entry is enough to rebuild.
    sm = seed_models.keras_io(height=5, width=6, filters=8, blocks=1, seed=4)
    sampler = Sampler(sm.model)
    first = sampler.teacher_forced(np.ones((1, 5, 6, 1), np.float32))
    bias = [v for v in sm.model.weights if len(v.shape) == 1][-1]
    bias.assign(bias.numpy() + np.float32(3.0))   # the head's bias: every logit moves by 3
    moved = sampler.teacher_forced(np.ones((1, 5, 6, 1), np.float32))
    np.testing.assert_allclose(moved, first + 3.0, rtol=1e-5, atol=1e-5)
    # A few steps of training change the weights in place too.
    x = (np.random.default_rng(0).random((4, 5, 6, 1)) > 0.5).astype(np.float32)
    sm.model.compile(optimizer="adam", loss="binary_crossentropy")
    untrained = sampler.teacher_forced(x)
    sm.model.fit(x, x, epochs=2, verbose=0)
    trained = sampler.teacher_forced(x)
    assert not np.array_equal(trained, untrained)
    np.testing.assert_array_equal(trained, Sampler(sm.model).teacher_forced(x))
    np.testing.assert_array_equal(sampler.sample(2, seed=1), Sampler(sm.model).sample(2, seed=1))


@pytest.mark.parametrize("path", ["op", "concrete function"])
def test_the_weight_check_sees_graph_assigns_and_compares_bits(path):
    # The cache's check (sampler_cache.py) compares the variables' bytes, in place by the TF op
    # PixelcnnFastSameVariables, or read in one concrete-function call (its fallback): an assign inside a
    # tf.function (no Python code runs per call) is seen; assigning the same bits reuses the build; a NaN weight
    # equals itself (bits), while -0.0 differs from 0.0 (then the constants are compared).
    sm = seed_models.keras_io(height=5, width=5, filters=8, blocks=1, seed=5)
    sampler = Sampler(sm.model)
    if path == "op":
        assert sampler._programs.use_same_variables_op()  # a CPU Keras model's variables: the op's path
    else:
        sampler._programs.stop_same_variables_op()
    first = sampler.sample(2, seed=3)
    assert (sampler._programs.builds[None]["snapshot_t"] is not None) == (path == "op")
    builds = sampler.build_count
    bias = [v for v in sm.model.weights if len(v.shape) == 1][-1]
    before = bias.numpy()
    bias.assign(before.copy())
    np.testing.assert_array_equal(sampler.sample(2, seed=3), first)
    assert sampler.build_count == builds  # the same bits: reused

    @tf.function
    def shift(delta):
        bias.assign_add(delta)

    shift(tf.fill(bias.shape, 2.0))
    moved = sampler.teacher_forced(np.ones((1, 5, 5, 1), np.float32))
    assert sampler.build_count == builds + 1
    np.testing.assert_array_equal(moved, Sampler(sm.model).teacher_forced(np.ones((1, 5, 5, 1), np.float32)))
    zero = np.zeros_like(before)
    bias.assign(zero)
    want = sampler.sample(1, seed=0)
    n_zero = sampler.build_count
    # -0.0: other bits, so the constants are evaluated again; they equal the build's as values, which is reused.
    bias.assign(-zero)
    np.testing.assert_array_equal(sampler.sample(1, seed=0), want)
    assert sampler.build_count == n_zero
    nan = before.copy()
    nan[0] = np.nan
    bias.assign(nan)
    sampler.teacher_forced(np.ones((1, 5, 5, 1), np.float32))
    n_nan = sampler.build_count
    sampler.teacher_forced(np.ones((1, 5, 5, 1), np.float32))
    assert sampler.build_count == n_nan  # NaN compares equal to itself bit for bit: reused


def test_same_variables_op_compares_dtype_shape_and_bits():
    # csrc/tf/variables_op.cc directly: each variable against its snapshot, under the variable's lock.
    from pixelcnn_fast._ext import tf_ops

    op = tf_ops().pixelcnn_fast_same_variables
    a = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = tf.Variable(np.array([1, 2], np.int32), shape=tf.TensorShape(None))
    snaps = [tf.constant(a.numpy()), tf.constant(b.numpy())]

    def same(s=snaps, vs=(a, b)):
        return bool(op(variables=[v.handle for v in vs], snapshots=s))

    assert same() and bool(op(variables=[], snapshots=[]))
    a.assign(np.nextafter(a.numpy(), np.float32(np.inf)) * np.float32(1))  # every element's last bit
    assert not same()
    a.assign(snaps[0])
    assert same()
    b.assign(np.array([1, 2, 3], np.int32))              # a variable of unknown shape: now another shape
    assert not same()
    b.assign(snaps[1])
    assert not same([snaps[0], tf.constant([1.0, 2.0])])  # another dtype
    z = tf.Variable(np.zeros(2, np.float32))
    assert not same([tf.constant(-np.zeros(2, np.float32))], [z])  # -0.0 is not 0.0
    n = tf.Variable(np.full(2, np.nan, np.float32))
    assert same([tf.constant(np.full(2, np.nan, np.float32))], [n])  # a NaN equals itself
    with pytest.raises(tf.errors.InvalidArgumentError, match="snapshot 0 has dtype string"):
        op(variables=[tf.Variable(["x"]).handle], snapshots=[tf.constant(["x"])])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        op(variables=[a.handle, b.handle], snapshots=snaps[:1])


def test_the_weight_check_falls_back_when_the_op_fails():
    # An op error (a variable it cannot see) switches the cache to the concrete-function check for good: the
    # answer is still right and the build is still reused.
    sm = seed_models.keras_io(height=5, width=5, filters=8, blocks=1, seed=6)
    sampler = Sampler(sm.model)
    first = sampler.sample(1, seed=2)
    cache, builds = sampler._programs, sampler.build_count

    def fails(snapshots):
        raise tf.errors.InvalidArgumentError(None, None, "resource on another device")

    cache.same_variables_op = fails
    np.testing.assert_array_equal(sampler.sample(1, seed=2), first)
    assert sampler.build_count == builds and cache.same_variables_op is False
    bias = [v for v in sm.model.weights if len(v.shape) == 1][-1]
    bias.assign(bias.numpy() + np.float32(1.0))
    sampler.sample(1, seed=2)
    assert sampler.build_count == builds + 1


def test_same_bytes_compares_shapes_formats_and_bits():
    # The weight check's comparison (_core.same_bytes, one memcmp per array over the buffers as they are).
    c = core()
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert c.same_bytes([a, a[0]], [a.copy(), a[0].copy()])
    assert not c.same_bytes([a], [a.astype(np.int32)])          # same bytes count, other format
    assert not c.same_bytes([a], [a.reshape(3, 2).copy()])      # other shape
    assert not c.same_bytes([a], []) and not c.same_bytes([], [a])
    changed = a.copy()
    changed[1, 2] = np.nextafter(changed[1, 2], np.float32(np.inf))  # the last element's last bit
    assert not c.same_bytes([a], [changed])
    zero = np.zeros(3, np.float32)
    assert not c.same_bytes([zero], [-zero])                     # bits: -0.0 is not 0.0
    nan = np.full(2, np.nan, np.float32)
    assert c.same_bytes([nan], [nan.copy()])                     # a NaN equals itself
    assert c.same_bytes([np.array(3.0, np.float32), np.zeros((0, 4), np.float32)],
                        [np.array(3.0, np.float32), np.zeros((0, 4), np.float32)])
    with pytest.raises(ValueError, match="array 0 is not C-contiguous"):
        c.same_bytes([a[:, ::2]], [a[:, ::2].copy()])


def test_weight_check_compares_string_variables_by_value():
    # same_bytes needs plain buffers; a tf.string variable reads as NumPy objects and is compared by value instead.
    from pixelcnn_fast.sampler_cache import ProgramCache

    cache = ProgramCache(program=None, write_spec=None)
    words = np.array([b"a", b"bc"], dtype=object)
    weights = np.arange(3, dtype=np.float32)
    build = dict(conds=[], snapshot=[words.copy(), weights.copy()])
    cache.read_variables = lambda: [words, weights]
    assert cache.same_inputs(build, [])
    words[1] = b"bd"
    assert not cache.same_inputs(build, [])
    words[1] = b"bc"
    weights[2] = -weights[2]
    assert not cache.same_inputs(build, [])
    cache.read_variables = lambda: [words]
    assert not cache.same_inputs(build, [])  # a variable fewer


def test_build_cache_follows_the_conditions_and_n():
    # A class-conditional model's constants have a batch dimension (an embedding per image): its build
    # is per n and per condition values.
    sm = seed_models.conditional(height=5, width=5)
    sampler = make_sampler(sm)
    labels = np.eye(sm.num_classes, dtype=np.float32)[[2, 7]]
    a = sampler.sample(2, seed=4, conditions=[labels])
    exe = sampler.executor(2, sampler.check_conditions(2, [labels]))
    other = np.eye(sm.num_classes, dtype=np.float32)[[7, 2]]
    assert sampler.executor(2, sampler.check_conditions(2, [other])) is not exe
    b = sampler.sample(2, seed=4, conditions=[other])
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(sampler.sample(2, seed=4, conditions=[labels]), a)
    np.testing.assert_array_equal(sampler.sample(1, seed=4, conditions=[labels[:1]]), a[:1])
    np.testing.assert_array_equal(sampler.sample(2, seed=4, conditions=[labels]), a)


def test_executed_macs_count_the_colour_passes():
    # A grey model runs each step once per position. A colour-group model's spec gives every channel its
    # own phase (phases=), so each channel block is computed once, in the pass of the channels it depends
    # on: executed == counted. The same spec without phases= runs a step whole in every pass 0..phase.
    grey = Sampler(seed_models.keras_io(height=5, width=6, filters=8, blocks=1).model).executor(1, [])
    assert grey.executed_macs_per_position() == grey.macs_per_position()
    sm = seed_models.rgb_3x256(height=5, width=6, hidden_dim=2, out_dim=4, n_layers=1)
    sampler = Sampler(sm.model, head="categorical", levels=256, value_map="level/255", image_shape=sm.image_shape)
    rgb = sampler.executor(1, [])
    assert rgb.executed_macs_per_position() == rgb.macs_per_position()
    spec, arrays = sampler.last_spec
    assert " phases=0," in spec
    whole = _core().ColumnProgram.from_spec(_without_channel_phases(spec), arrays, 0)
    assert whole.macs_per_position() == rgb.macs_per_position()
    assert rgb.macs_per_position() < whole.executed_macs_per_position() <= 4 * rgb.macs_per_position()


def _core():
    from pixelcnn_fast._ext import core

    return core()


def _without_channel_phases(spec):
    return "\n".join(" ".join(t for t in line.split(" ") if not t.startswith("phases=")) for line in spec.split("\n"))


@pytest.mark.parametrize("model", ["rgb_3x256", "rgb_groups"])
def test_channel_phases_draw_the_same_images_bit_for_bit(model, rng):
    # Computing each channel block once (phases=) against the whole step in every pass: the same
    # arithmetic on the same inputs, so the same logits and levels, bit for bit, at batch 1, 2 and 5.
    if model == "rgb_3x256":
        sm = seed_models.rgb_3x256(height=5, width=7, hidden_dim=4, out_dim=8, n_layers=2, seed=2)
        sampler = Sampler(sm.model, head="categorical", levels=256, value_map="level/255",
                          image_shape=sm.image_shape)
    else:
        sampler = Sampler(_rgb_groups_model(), head="categorical", levels=4, value_map="level/(N-1)")
    h, w, c = sampler.program.image_shape
    for n in (1, 2, 5):
        fast = sampler.executor(n, sampler.zero_conditions(n))
        spec, arrays = sampler.last_spec
        whole = _core().ColumnProgram.from_spec(_without_channel_phases(spec), arrays, 0)
        assert fast.executed_macs_per_position() < whole.executed_macs_per_position()
        for seed in (0, 3):
            a = _sample_with(sampler, fast, n, seed)
            b = _sample_with(sampler, whole, n, seed)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        image = rng.random((n, h, w, c)).astype(np.float32)
        np.testing.assert_array_equal(fast.teacher_forced(image), whole.teacher_forced(image))


def _sample_with(sampler, exe, n, seed):
    """(levels, margins) of Sampler.sample run on the given C++ build."""
    built = sampler.executor
    sampler.executor = lambda n_, conds: exe
    try:
        return sampler.sample(n, seed=seed, return_margins=True)
    finally:
        sampler.executor = built


def _rgb_groups_model():
    # Colour groups through MaskedConv2D, a residual add and a 1x1 head with 4 levels per channel; the
    # blocks have unequal roles (the head's 12 channels: 4 levels per image channel, block by block).
    inp = keras.Input((6, 5, 3))
    x = MaskedConv2D(9, 5, mask_type="A", color_groups=3, activation="relu")(inp)
    y = MaskedConv2D(9, 3, mask_type="B", color_groups=3, activation="relu")(x)
    x = layers.Add()([x, y])
    x = MaskedConv2D(12, 1, mask_type="B", color_groups=3)(x)
    out = layers.Softmax()(layers.Reshape((6, 5, 3, 4))(x))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(5)
    model.set_weights([w + rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in model.get_weights()])
    return model


@pytest.mark.parametrize("phases, message", [
    ("0,2", "covers 2 channels"),
    ("0,3,1", "pairs"),
    ("0,4", "largest channel phase"),
    ("0,2,2,2", "exceeds the step's phase"),
    ("0,0,1,4", "no channel"),
])
def test_bad_channel_phases_are_refused(phases, message):
    spec = ("pixelcnn_fast.column_program 1\nimage height=2 width=2 channels=1\nbuffers channels=1,4\n"
            f"act out=1 in=0 fn=relu alpha=0.2 phase=1 phases={phases}\n"
            "head kind=bernoulli buffer=1 levels=4 scale=1 offset=0\nend\n")
    with pytest.raises(ValueError, match=message):
        _core().ColumnProgram.from_spec(spec, [], 1)
