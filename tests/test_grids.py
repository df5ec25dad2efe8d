"""Tests: buffers on coarse grids (docs/SEMANTICS.md, "Grids"; issue 16) -- strided and transposed convs lowered
to steps between grids, causality through them, and the pure-TF executor against the Keras model: the full
PixelCNN++ U-net (tests/fixtures/zoo_unet.py) and small one-stride models at sizes the stride does not divide."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import pixelcnn_fast
from fixtures import zoo_models
from pixelcnn_fast.program.causality import analyse_causality
from pixelcnn_fast.program.lower import lower
from pixelcnn_fast.program.tf_executor import run_program


def _max_rel_error(program, model, images):
    consts = program.evaluate_consts(len(images))
    got = run_program(program, consts, images)[program.output_buffer].numpy()
    want = np.asarray(model(images, training=False))
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


@pytest.mark.parametrize("name,size,hierarchies", [
    ("pixelcnn_pp_unet_rgb", (16, 16), 3), ("pixelcnn_pp_unet_rgb", (8, 12), 2),
    ("pixelcnn_pp_unet_grey", (28, 28), 3), ("pixelcnn_pp_unet_grey", (6, 10), 2)])
def test_unet_lowered_on_grids_equals_the_model(name, size, hierarchies, rng):
    """Teacher forcing through the pure-TF executor of the lowered U-net equals the Keras model (fresh random
    images), and the lowering found the resolutions: one grid per level, each coarse step on its own."""
    h, w = size
    zm = zoo_models.build(name, height=h, width=w, hierarchies=hierarchies, seed=int(rng.integers(1 << 16)))
    program = lower(zm.model)
    grids = sorted(set(program.buffer_grids))
    assert grids == [(2 ** r, 2 ** r, h >> r, w >> r) for r in range(hierarchies)]
    strided = [s for s in program.grid_steps if s.kind == "conv"]
    transposed = [s for s in program.grid_steps if s.kind == "conv_transpose"]
    assert [s.layer for s in strided] == [f"unet/downsample{r}_{t}" for r in range(hierarchies - 1) for t in "u ul".split()]
    assert [s.layer for s in transposed] == [f"unet/upsample{r}_{t}" for r in range(hierarchies - 1) for t in "u ul".split()]
    # openai's crops: 'down' keeps the centred columns, 'down_right' the first ones (docs/SEMANTICS.md, "Grids")
    assert [(s.attrs["oy"], s.attrs["ox"]) for s in transposed] == [(0, 1), (0, 0)] * (hierarchies - 1)
    analyse_causality(program, program.evaluate_consts(1), mixture=True)  # causal: no raise
    err = _max_rel_error(program, zm.model, zoo_models.example_inputs(zm, 2, rng))
    print(f"{name} {h}x{w}, {hierarchies} resolutions: max relative error {err:.2e}")
    assert err < 1e-5


def test_unet_twin_refused_naming_its_upsampling():
    """The non-causal twin (u stream up-sampled with the crop from the wrong side) is refused by the sampler,
    naming the transposed conv, not the first layer of its stream."""
    zm = zoo_models.build("pixelcnn_pp_unet_rgb_no_up_shift", height=8, width=8)
    with pytest.raises(pixelcnn_fast.NotCausalError, match=r"layer 'unet/upsample0_u' \(WeightNormDeconv\) up-samples"):
        pixelcnn_fast.Sampler(zm.model, head="logistic_mixture")
    report = pixelcnn_fast.check(zm.model, head="logistic_mixture", raise_if_not_causal=False)
    assert not report.causal
    assert report.grids == [(1, 1, 8, 8), (2, 2, 4, 4), (4, 4, 2, 2)]
    assert "on grids 8x8, 4x4, 2x2" in str(report)


def _one_stride_model(h, w, padding, transpose_padding, crop, seed, pad=None):
    """x -> Conv2D(stride 2) -> relu -> Conv2DTranspose(stride 2) [-> crop back to h x w] + a 1x1 skip."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((h, w, 2))
    down = keras.layers.Conv2D(4, 3, strides=2, padding=padding, name="down")(x)
    up = keras.layers.Conv2DTranspose(3, 3, strides=2, padding=transpose_padding, name="up")(
        keras.layers.ReLU()(down))
    if crop:
        (top, bottom), (left, right) = crop
        up = keras.layers.Cropping2D(((top, bottom), (left, right)), name="crop")(up)
    if pad:
        up = keras.layers.ZeroPadding2D(((0, pad[0]), (0, pad[1])), name="pad")(up)
    skip = keras.layers.Conv2D(3, 1, name="skip")(x)
    return keras.Model(x, keras.layers.Add()([up, skip]))


def _crop_to(h, w, up_h, up_w, side):
    extra_h, extra_w = up_h - h, up_w - w
    return ((0, extra_h), (0, extra_w)) if side == "first" else ((extra_h, 0), (extra_w, 0))


@pytest.mark.parametrize("size", [(13, 17), (7, 7), (8, 6), (1, 5)])
@pytest.mark.parametrize("padding,transpose_padding", [("same", "same"), ("valid", "valid"), ("same", "valid")])
def test_odd_sizes_follow_tensorflows_padding(size, padding, transpose_padding, rng):
    """Sizes the stride does not divide: TF's SAME (ceil(n/2) outputs, the padding's smaller half first, which
    for a stride-2 3-tap conv is 1 row on odd sizes and 0 on even ones) and VALID ((n - 3) // 2 + 1) rules, and a
    transposed conv cropped back from either side, equal the Keras model."""
    h, w = size
    coarse = [(-(-n // 2)) if padding == "same" else (n - 3) // 2 + 1 for n in (h, w)]
    if min(coarse) < 1:
        with pytest.raises(Exception):
            _one_stride_model(h, w, padding, transpose_padding, None, 0)
        return
    up = [c * 2 if transpose_padding == "same" else (c - 1) * 2 + 3 for c in coarse]
    if up[0] < h or up[1] < w:  # zero-padding it back to the image would put zeros inside the image: refused
        model = _one_stride_model(h, w, padding, transpose_padding, None, 0, pad=(h - up[0], w - up[1]))
        with pytest.raises(pixelcnn_fast.LoweringError, match=rf"of layer 'pad' .*pads zeros into the image \(the "
                                                              rf"tensor is a {up[0]}x{up[1]} crop"):
            lower(model)
        return
    for side in ("first", "last"):
        crop = _crop_to(h, w, up[0], up[1], side)
        model = _one_stride_model(h, w, padding, transpose_padding, crop if crop != ((0, 0), (0, 0)) else None,
                                  int(rng.integers(1 << 16)))
        program = lower(model)
        assert (2, 2, coarse[0], coarse[1]) in program.buffer_grids
        images = rng.standard_normal((2, h, w, 2)).astype(np.float32)
        err = _max_rel_error(program, model, images)
        assert err < 1e-5, f"{padding}/{transpose_padding} {h}x{w} crop {crop}: {err}"


def test_strided_conv_after_a_shift_keeps_the_pad(rng):
    """A strided VALID conv on a padded tensor reads the pad as offset taps; a SAME strided conv whose padding
    would fall inside the grid (after a crop and a pad) gets a shift step first; both equal the model."""
    keras.utils.set_random_seed(int(rng.integers(1 << 16)))
    x = keras.Input((9, 11, 1))
    a = keras.layers.ZeroPadding2D(((1, 0), (2, 0)))(x)
    a = keras.layers.Conv2D(3, (2, 3), strides=2, padding="valid")(a)  # 5x6
    b = keras.layers.Cropping2D(((1, 0), (0, 1)))(x)
    b = keras.layers.ZeroPadding2D(((0, 1), (1, 0)))(b)
    b = keras.layers.Conv2D(3, 3, strides=2, padding="same")(b)  # 5x6
    up = keras.layers.Conv2DTranspose(2, 2, strides=2)(keras.layers.Concatenate()([a, b]))  # 10x12
    model = keras.Model(x, keras.layers.Cropping2D(((0, 1), (0, 1)))(up))
    program = lower(model)
    assert sorted(set(program.buffer_grids)) == [(1, 1, 9, 11), (2, 2, 5, 6)]
    assert any(s.kind == "shift" and program.grid(s.out) == (1, 1, 9, 11) for s in program.steps)
    err = _max_rel_error(program, model, rng.standard_normal((2, 9, 11, 1)).astype(np.float32))
    assert err < 1e-5


def test_a_model_that_ends_on_a_coarse_grid_is_refused():
    x = keras.Input((8, 8, 1))
    model = keras.Model(x, keras.layers.Conv2D(2, 3, strides=2, padding="same")(x))
    with pytest.raises(pixelcnn_fast.LoweringError, match=r"is on a 4x4 grid \(1/2 x 1/2 of the image\)"):
        lower(model)


class _DownUp(keras.layers.Layer):
    """A causal one-stride PixelCNN++-style block at any size: u = down_shift(down-shifted 2x3 conv of x); a
    stride-2 down-shifted 2x3 conv of u (padding `padding`: openai's pad + VALID, or SAME after a second down_shift);
    a stride-2 VALID 2x3 transposed conv back, cropped to the image from the top rows and the centred columns
    (openai's down_shifted_deconv2d); the head reads concat(u, up)."""

    def __init__(self, padding, strides=(2, 2), **kwargs):
        super().__init__(**kwargs)
        self.padding = padding
        self.u_conv = keras.layers.Conv2D(6, (2, 3), name="u_conv")
        self.down = keras.layers.Conv2D(6, (2, 3), strides=strides, padding=padding, name="down")
        self.up = keras.layers.Conv2DTranspose(6, (2, 3), strides=strides, name="up")
        self.head = keras.layers.Conv2D(6, 1, name="head")

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        u = self.u_conv(tf.pad(x, [[0, 0], [1, 0], [1, 1], [0, 0]]))
        u = tf.concat([tf.zeros_like(u[:, :1]), u[:, :-1]], axis=1)  # down_shift
        if self.padding == "valid":
            coarse = self.down(tf.pad(u, [[0, 0], [1, 0], [1, 1], [0, 0]]))
        else:  # another down_shift, then SAME's placement (on odd sizes its padding lands in the image: a shift step)
            coarse = self.down(tf.concat([tf.zeros_like(u[:, :1]), u[:, :-1]], axis=1))
        up = self.up(tf.nn.elu(coarse))[:, :h, 1:1 + w]
        return self.head(tf.nn.elu(tf.concat([u, up], axis=-1)))


def _down_up_model(h, w, padding, seed, strides=(2, 2)):
    keras.utils.set_random_seed(seed)
    x = keras.Input((h, w, 1))
    return keras.Model(x, _DownUp(padding, strides, name="down_up")(x))


# (a one-row image with the SAME variant: its stride-2 conv's tap one row below reads only the zeros past the
# border, so the frontiers, clipped at the border like the executor's schedule, do not see the future)
@pytest.mark.parametrize("size,padding,strides", [
    ((13, 17), "valid", (2, 2)), ((7, 7), "valid", (2, 2)), ((1, 5), "valid", (2, 2)), ((6, 3), "valid", (2, 2)),
    ((13, 17), "same", (2, 2)), ((7, 7), "same", (2, 2)), ((6, 3), "same", (2, 2)), ((2, 5), "same", (2, 2)),
    ((1, 5), "same", (2, 2)), ((1, 6), "same", (2, 2)),
    ((7, 5), "valid", (2, 1)), ((5, 7), "same", (1, 2)), ((7, 8), "valid", (3, 3))])
def test_odd_sizes_sample_through_the_cached_executor(size, padding, strides, rng):
    """Sizes a stride-2 layer does not divide work end to end (TF's SAME/VALID rules as the model applies them):
    teacher forcing through the cached path equals the model, and the naive graph loop draws the same images."""
    from test_mixture_sampler import assert_same_draws

    from pixelcnn_fast import naive

    h, w = size
    model = _down_up_model(h, w, padding, int(rng.integers(1 << 16)), strides)
    program = lower(model)
    sampler = pixelcnn_fast.Sampler(model, head="logistic_mixture")
    images = rng.integers(0, 256, (2, h, w, 1)) / 127.5 - 1.0
    want = np.asarray(model(images.astype(np.float32), training=False))
    # (a one-row image's prediction is all zeros: its down-shifted stream is)
    err = float(np.abs(sampler.teacher_forced(images) - want).max() / max(np.abs(want).max(), 1e-3))
    assert err < 1e-5, err
    assert any(g[:2] == strides for g in program.buffer_grids)
    if h * w <= 50:
        ref = naive.sample(model, 2, mode="graph", head="logistic_mixture", levels=256, value_map="level/127.5-1",
                           seed=5)
        levels, margins = sampler.sample(2, seed=5, return_margins=True)
        assert_same_draws(ref.levels, ref.margins, levels, margins, f"{h}x{w} naive graph vs cached")


def test_mutated_grid_specs_build_or_fail_typed(rng):
    """A U-net spec (grids statement, strided and transposed conv lines) mutated at random either builds and runs or
    is refused with a typed error: never a crash (a grid, a stride or an offset that does not fit the buffers)."""
    import fuzz_core

    from pixelcnn_fast import _core

    zm = zoo_models.build("pixelcnn_pp_unet_grey", height=8, width=4, hierarchies=2, filters=4)
    spec, arrays = pixelcnn_fast.Sampler(zm.model, head="logistic_mixture").last_spec
    assert "\ngrids fy=" in spec and " stride=2,2" in spec and " transpose=1" in spec
    seed = int(rng.integers(2 ** 31))
    print(f"grid spec fuzz seed {seed}")
    local = np.random.default_rng(seed)
    built = 0
    grid_lines = [k for k, ln in enumerate(spec.split("\n")) if "stride=" in ln or ln.startswith("grids")]
    for case in range(150):
        lines = spec.split("\n")
        if case % 2:  # aim at the new statements: a changed number on a grids or strided/transposed conv line
            k = int(local.choice(grid_lines))
            toks = lines[k].split(" ")
            t = int(local.integers(1, len(toks)))
            key, _, value = toks[t].partition("=")
            parts = value.split(",")
            parts[int(local.integers(0, len(parts)))] = str(int(local.integers(-3, 12)))
            toks[t] = key + "=" + ",".join(parts)
            lines[k] = " ".join(toks)
            text = "\n".join(lines)
        else:
            text = fuzz_core.mutate_text(local, spec)
        built += fuzz_core.build_and_run_mutant(_core, text, arrays, case)
    assert built > 0


@pytest.mark.parametrize("strides", [(1, 2), (2, 1), (3, 2)])
def test_strides_per_axis(strides, rng):
    """A stride per axis makes a grid coarser along that axis only (fy != fx), and the transposed conv with the
    same strides comes back: the pure-TF executor equals the model at a size no stride divides."""
    keras.utils.set_random_seed(int(rng.integers(1 << 16)))
    h, w = 11, 13
    x = keras.Input((h, w, 2))
    down = keras.layers.Conv2D(3, 3, strides=strides, padding="same", name="down")(x)
    up = keras.layers.Conv2DTranspose(2, 3, strides=strides, padding="same", name="up")(down)
    extra = (up.shape[1] - h, up.shape[2] - w)
    model = keras.Model(x, keras.layers.Cropping2D(((0, extra[0]), (0, extra[1])))(up))
    program = lower(model)
    coarse = (-(-h // strides[0]), -(-w // strides[1]))
    assert (strides[0], strides[1]) + coarse in program.buffer_grids
    assert _max_rel_error(program, model, rng.standard_normal((2, h, w, 2)).astype(np.float32)) < 1e-5


@pytest.mark.parametrize("layer,why", [
    (lambda: keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="up"),
     r"it up-samples a 8x8 grid \(1/1 x 1/1 of the image\) by 2x2: finer than the image"),
    (lambda: keras.layers.Conv2DTranspose(4, 3, dilation_rate=2, padding="same", name="up"),
     r"dilations must be 1, got \[1, 2, 2, 1\]"),
])
def test_unsupported_transposed_conv_forms_are_refused_naming_the_layer(layer, why):
    """The forms a transposed conv may take that the grids do not: up-sampling past the image, dilation. Each is a
    LoweringError naming the op, its layer and class, and why."""
    inp = keras.Input((8, 8, 1))
    out = keras.layers.Conv2D(2, 1, name="head")(layer()(inp))
    with pytest.raises(pixelcnn_fast.LoweringError,
                       match=r"\(Conv2DBackpropInput\) of layer 'up' \(Conv2DTranspose\): " + why):
        pixelcnn_fast.check(keras.Model(inp, out))
