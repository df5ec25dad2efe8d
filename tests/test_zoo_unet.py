"""Test fixtures: the multi-resolution zoo (tests/fixtures/zoo_unet.py: the full PixelCNN++ U-net and TFP's
PixelCNN) runs and is causal by the structural perturbation check (fixtures/perturbation.py), and the
non-causal twin is not: written before the sampler is asked to take these models (issue 16)."""

import numpy as np
import pytest
import tensorflow as tf

from fixtures import zoo_models, zoo_unet
from fixtures.perturbation import raster_violations


@pytest.mark.parametrize("name,size", [("pixelcnn_pp_unet_rgb", (16, 16)), ("pixelcnn_pp_unet_grey", (12, 8)),
                                       ("pixelcnn_pp_unet_grey", (28, 28))])
def test_unet_runs_and_is_causal(name, size, rng):
    h, w = size
    zm = zoo_models.build(name, height=h, width=w)
    out = zm.model(zoo_models.example_inputs(zm, 2, rng), training=False).numpy()
    assert out.shape == (2, h, w, (10 if zm.image_shape[-1] == 3 else 3) * zm.nr_mix)
    assert np.all(np.isfinite(out))
    # three resolutions really are in the graph: two stride-2 convs per stream and two transposed convs
    layers = {layer.name for layer in zm.model.get_layer("unet")._flatten_layers()}
    assert {"downsample0_u", "downsample1_ul", "upsample0_u", "upsample1_ul"} <= layers
    violations, reaches_later = raster_violations(zm, rng)
    assert not violations, f"{name}: outputs at p <= q change with the pixel at q: (q, p) = {violations[:5]}"
    assert reaches_later


def test_unet_twin_without_up_shift_sees_the_future(rng):
    zm = zoo_models.build("pixelcnn_pp_unet_rgb_no_up_shift", height=8, width=8)
    assert not zm.causal and zm.bad_layer == "unet/upsample0_u"
    violations, _ = raster_violations(zm, rng)
    assert violations, "the up-sampled u stream cropped from the wrong side must read rows below"


def test_unet_refuses_sizes_its_resolutions_do_not_divide():
    with pytest.raises(ValueError, match="13x17 does not divide by 4"):
        zoo_unet.pixelcnn_pp_unet(height=13, width=17)


def _tfp_violations(size, conditional, rng, constrained=True):
    why = zoo_unet.tfp_available()
    if why:
        pytest.skip(why)
    h, w, c = size
    model = zoo_unet.tfp_pixelcnn(h, w, c, conditional=conditional, constrained=constrained)

    class _View:  # what raster_violations needs from a zoo model
        image_shape, input_dtype, levels, num_classes, value_map = (h, w, c), "float32", 256, 0, "identity"

    label = np.eye(10, dtype=np.float32)[[3]] if conditional else None

    def outputs(_, images, __):
        cond = None if label is None else np.repeat(label, len(images), axis=0)
        parts = model.network_outputs(np.round(images), cond)
        return np.concatenate([tf.reshape(p, [len(images), h, w, -1]).numpy() for p in parts], axis=-1)

    return model, raster_violations(_View, rng, outputs=outputs)


@pytest.mark.parametrize("size,conditional", [((8, 8, 1), False), ((8, 8, 3), True), ((16, 16, 1), True)])
def test_tfp_pixelcnn_network_is_causal(size, conditional, rng):
    model, (violations, reaches_later) = _tfp_violations(size, conditional, rng)
    assert not violations, f"{model.name}: (q, p) = {violations[:5]}"
    assert reaches_later


def test_tfp_pixelcnn_untrained_network_is_not_causal(rng):
    """What the sampler will meet: before its first optimizer step a tfd.PixelCNN's kernel constraints have
    not been applied, so its network reads the pixels it predicts (the kernel's zeros are the mask: a model
    taken as it is must be refused naming the layer, not sampled)."""
    model, (violations, _) = _tfp_violations((8, 8, 1), False, rng, constrained=False)
    assert violations


def test_sampler_takes_the_distribution_not_its_network():
    """A tfd.PixelCNN's network (a tf-keras layer of TFP's) is refused with a TypeError pointing to
    Sampler(dist), which adapts it (tests/test_tfp_sampler.py)."""
    why = zoo_unet.tfp_available()
    if why:
        pytest.skip(why)
    import pixelcnn_fast

    model = zoo_unet.tfp_pixelcnn(8, 8, 1)
    with pytest.raises(TypeError, match=r"Keras 3 model .*tensorflow_probability.*pixelcnn_fast\.Sampler\(dist\)"):
        pixelcnn_fast.Sampler(model.dist.network)
    with pytest.raises(TypeError, match="got builtins.object"):
        pixelcnn_fast.check(object())


# ------------------------------------------------------------------------------------ the U-net sampled (issue 16)
# Buffers on coarse grids (docs/SEMANTICS.md, "Grids"): each coarse position computed once, at its ready raster
# step, from per-grid ring caches; the transposed convs' fine positions read the coarse caches.
UNET_CASES = [("pixelcnn_pp_unet_grey", (8, 8), 3, 2), ("pixelcnn_pp_unet_rgb", (8, 12), 2, 2),
              ("pixelcnn_pp_unet_grey", (4, 8), 3, 1)]


@pytest.mark.parametrize("name,size,hierarchies,n", UNET_CASES)
def test_unet_samples_the_naive_loops_images(name, size, hierarchies, n, rng):
    """Teacher forcing through the cached path equals one forward pass; the naive graph loop (the model's own
    forward per pixel: the U-net's fixed sizes rule out the row-cropped loop) and the cached sampler draw the same
    images for a seed (rounding-decided draws detected as in tests/test_mixture_sampler.py), as does the TF op."""
    from test_mixture_sampler import assert_same_draws

    import pixelcnn_fast
    from pixelcnn_fast import naive, tf_sampler

    h, w = size
    zm = zoo_models.build(name, height=h, width=w, hierarchies=hierarchies, seed=int(rng.integers(1 << 16)))
    sampler = pixelcnn_fast.Sampler(zm.model, head="logistic_mixture")
    x = zoo_models.example_inputs(zm, n, rng)
    want = zm.model(tf.constant(x), training=False).numpy()
    err = float(np.abs(sampler.teacher_forced(x) - want).max() / np.abs(want).max())
    print(f"{name} {h}x{w}, {hierarchies} resolutions: cached teacher forcing, max relative error {err:.2e}")
    assert err < 1e-5
    seed = int(rng.integers(1 << 31))
    ref = naive.sample(zm.model, n, mode="graph", head="logistic_mixture", levels=256, value_map="level/127.5-1",
                       seed=seed, temperature=0.9)
    levels, margins = sampler.sample(n, seed=seed, temperature=0.9, return_margins=True)
    assert levels.shape == (n, h, w, zm.image_shape[2])
    diverged = assert_same_draws(ref.levels, ref.margins, levels, margins, "naive graph vs cached")
    print(f"seed {seed}: {diverged} of {n} images diverge at a rounding-decided draw")
    assert (ref.levels == levels).mean() > 0.5
    np.testing.assert_array_equal(tf_sampler.sample_op(sampler, n, seed=seed, temperature=0.9).numpy(), levels)


@pytest.mark.parametrize("name,size,hierarchies,n", [("pixelcnn_pp_unet_grey", (8, 8), 3, 2),
                                                       ("pixelcnn_pp_unet_rgb", (6, 4), 2, 1)])
def test_unet_rows_loop_pads_to_its_stride_and_draws_the_cached_images(name, size, hierarchies, n, rng):
    """The naive rows loop on a U-net (issue 16's baseline): the model takes only heights that its total stride
    divides, so rows 0..i run padded with zeros to the next multiple (the smallest height it takes, found by
    tracing), each padded crop checked against one full forward pass; its draws equal the cached sampler's."""
    from test_mixture_sampler import assert_same_draws

    import pixelcnn_fast
    from pixelcnn_fast import naive
    from pixelcnn_fast.naive_forward import PixelTracer, pad_rows, trace_first_rows

    h, w = size
    zm = zoo_models.build(name, height=h, width=w, hierarchies=hierarchies, seed=int(rng.integers(1 << 16)))
    c = zm.image_shape[2]
    tracer = PixelTracer(zm.model, n, (h, w, c), [], "logistic_mixture", (10 if c == 3 else 3) * zm.nr_mix)
    _, _, multiple = trace_first_rows(tracer)
    assert multiple == 2 ** (hierarchies - 1)
    assert [pad_rows(r, multiple, h) for r in range(1, h + 1)] == [min(h, -(-r // multiple) * multiple)
                                                                   for r in range(1, h + 1)]
    seed = int(rng.integers(1 << 31))
    ref = naive.sample(zm.model, n, mode="rows", head="logistic_mixture", levels=256, value_map="level/127.5-1",
                       seed=seed, temperature=0.9)
    assert ref.complete
    sampler = pixelcnn_fast.Sampler(zm.model, head="logistic_mixture")
    levels, margins = sampler.sample(n, seed=seed, temperature=0.9, return_margins=True)
    diverged = assert_same_draws(ref.levels, ref.margins, levels, margins, "naive padded rows vs cached")
    print(f"{name} {h}x{w}, seed {seed}: {diverged} of {n} images diverge at a rounding-decided draw")
    assert (ref.levels == levels).mean() > 0.5


def test_unet_rows_loop_refuses_the_twin_that_reads_rows_below():
    """The non-causal twin (u stream up-sampled with the crop from the wrong side) takes the same padded crops,
    but its outputs above the padding change with it: RowsPaddingError naming the rows, not silently other
    images."""
    from pixelcnn_fast import naive

    zm = zoo_models.build("pixelcnn_pp_unet_rgb_no_up_shift", height=8, width=8)
    # fine row 1 of the up-sampled u stream reads coarse row 1, which holds image row 2: the crop of rows 0..1
    # padded to 4 rows is the first to change an output above the padding
    with pytest.raises(naive.RowsPaddingError, match=r"mode='rows' pads the first 2 rows of the image with zeros to "
                                                     r"4 rows .*outputs at rows < 2 then differ from one forward "
                                                     r"pass .*at row 1, .*on 3 random images.*Use mode='graph'"):
        naive.sample(zm.model, 1, mode="rows", head="logistic_mixture", levels=256, value_map="level/127.5-1")


@pytest.mark.parametrize("channels", [1, 3])
def test_unet_draws_are_calibrated(channels, rng):
    """KS over >= 500 draws of the randomised PIT under the U-net's own mixture conditionals (float64 from one
    forward pass of the drawn images: tests/test_mixture_sampler.py's oracle), threshold 1e-4; negative control:
    T = 0.6 draws against the T = 1 conditionals."""
    from sampling_checks import assert_calibrated, randomised_pit
    from test_mixture_sampler import _mixture_cdfs

    import pixelcnn_fast

    name = "pixelcnn_pp_unet_grey" if channels == 1 else "pixelcnn_pp_unet_rgb"
    zm = zoo_models.build(name, height=8, width=8)
    sampler = pixelcnn_fast.Sampler(zm.model, head="logistic_mixture")

    def pit(levels, temperature):
        out = zm.model(tf.constant(levels / 127.5 - 1.0, tf.float32), training=False).numpy()
        return randomised_pit(*_mixture_cdfs(out, levels, channels, temperature), rng)

    n = 16 if channels == 1 else 6  # >= 1000 draws: the T = 0.6 control's KS (~0.12) well over its 1e-4 bound (~0.07)
    assert_calibrated(name, lambda n, seed, t: sampler.sample(n, seed=seed, temperature=t), pit, n,
                      int(rng.integers(2 ** 63)), cold_temperature=0.6)


@pytest.mark.parametrize("name,size", [("pixelcnn_pp_unet_rgb", (16, 16)), ("pixelcnn_pp_unet_grey", (28, 28))])
def test_unet_computes_each_coarse_position_once(name, size):
    """Executed multiply-adds per image within 1.2x of the model's per-position MACs summed over each grid's
    positions (a transposed conv's over its input grid, as TF computes it), and the cache per image is a few rows
    per buffer: nothing computed per fine position that lives on a coarse grid."""
    import pixelcnn_fast

    h, w = size
    zm = zoo_models.build(name, height=h, width=w)
    sampler = pixelcnn_fast.Sampler(zm.model, head="logistic_mixture")
    exe = sampler.executor(1, sampler.zero_conditions(1))
    executed, model = exe.executed_macs_per_image(), exe.model_macs_per_image()
    every_position = exe.macs_per_position() * h * w  # as if every conv ran at every fine position
    program = sampler.program
    activations = sum(program.grid(b)[2] * program.grid(b)[3] * c for b, c in enumerate(program.buffer_channels))
    print(f"{name} {h}x{w}: executed {executed} MACs per image, model {model} ({executed / model:.3f}x), "
          f"{every_position} if every step ran per fine position; cache {sampler.cache_floats_per_image} floats "
          f"per image ({activations} in all the activations)")
    assert 0.8 * model <= executed <= 1.2 * model
    assert executed < 0.75 * every_position
    assert sampler.cache_floats_per_image < 0.5 * activations


def test_flat_program_refuses_the_unet_naming_its_first_grid_step():
    """The GPU flat program (flatten.cc) does not take grids yet: a typed error naming the construct and the layer,
    from the host emulation the CUDA sampler shares."""
    import pixelcnn_fast
    from pixelcnn_fast import _core

    zm = zoo_models.build("pixelcnn_pp_unet_grey", height=8, width=8)
    spec, arrays = pixelcnn_fast.Sampler(zm.model, head="logistic_mixture").last_spec
    with pytest.raises(ValueError, match=r"flatten: step 'unet/downsample0_u .*' is a strided conv \(onto a 4x4 "
                                         r"grid, 1/2 x 1/2 of the image\): the GPU flat program does not take grids"):
        _core.testing.EmulatedGpuProgram.from_spec(spec, arrays, 1)
