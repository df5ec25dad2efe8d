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
    Sampler(dist), which adapts it (tests/test_tfp_sampler.py); with two hierarchies the adapted network is
    refused at its first stride-2 conv until coarse grids land."""
    why = zoo_unet.tfp_available()
    if why:
        pytest.skip(why)
    import pixelcnn_fast

    model = zoo_unet.tfp_pixelcnn(8, 8, 1)
    with pytest.raises(TypeError, match=r"Keras 3 model .*tensorflow_probability.*pixelcnn_fast\.Sampler\(dist\)"):
        pixelcnn_fast.Sampler(model.dist.network)
    with pytest.raises(pixelcnn_fast.LoweringError, match=r"\(Conv2D\) of layer '.*' .*strides must be 1"):
        pixelcnn_fast.Sampler(model.dist)
    with pytest.raises(TypeError, match="got builtins.object"):
        pixelcnn_fast.check(object())


def test_sampler_refuses_the_unet_naming_its_first_strided_conv():
    """Until the multi-resolution issue lands, the U-net is refused with a LoweringError naming the first
    stride-2 conv's op, layer and class (its shifts and single-resolution blocks are taken)."""
    import pixelcnn_fast

    zm = zoo_models.build("pixelcnn_pp_unet_rgb", height=8, width=8)
    with pytest.raises(pixelcnn_fast.LoweringError,
                       match=r"\(Conv2D\) of layer 'unet/downsample0_u' \(WeightNormConv\): strides must be 1"):
        pixelcnn_fast.Sampler(zm.model, head="logistic_mixture")
