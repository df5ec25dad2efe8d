"""Python front end: `tfp.distributions.PixelCNN` as a sampler model (docs/SEMANTICS.md, "TFP's PixelCNN").

A tfd.PixelCNN is a distribution, not a Keras model: its network (`dist.network`, a tf-keras model) ends in a
weight-normalised Dense whose K x (1 + 2C + C(C-1)/2) values per pixel TFP reshapes, splits and turns into a
mixture of discretised logistics. The adapter cuts the network at that Dense and hands the sampler the rest as
a known head: a logistic mixture in TFP's layout (philox.h's MixtureLayout::kTfp: component-major blocks, scale
softplus(r) + exp(-7), raw colour coefficients), L = high - low + 1 levels, a drawn level fed back as TFP feeds
an image, 2 level / (L - 1) - 1. Nothing is guessed from channel counts: every number comes from the
distribution's own parameters.

Two things of TFP's are read as they are, not repaired:
- Weight norm (tfp.layers.WeightNorm) computes its kernel in a tf.function with a data-dependent
  initialisation under a tf.cond; the trace runs each layer's own `_compute_weights` and inner layer instead
  (what that call computes once initialised), and a network whose weight norm was never initialised (no
  log_prob or training step yet) is refused.
- The masks are Keras kernel constraints, which tf-keras applies after each optimizer step, not at build: an
  untrained network still reads the pixels it predicts. The sampler does not apply them behind the user's back
  (the model would then differ from the one `dist.log_prob` evaluates); the causality check refuses such a
  network naming the layer, and the message says how to apply the constraints.
"""

import contextlib

__all__ = ["is_tfp_pixelcnn", "TfpNetwork"]


def is_tfp_pixelcnn(obj):
    """True for a tfd.PixelCNN (or subclass), without importing TFP when the caller never passed one."""
    return any(f"{c.__module__}.{c.__qualname__}" == "tensorflow_probability.python.distributions.pixel_cnn.PixelCNN"
               for c in type(obj).__mro__)


def _params_layer(network):
    """The layer whose output TFP reshapes into the mixture's parameters: walked back from the network's first
    output (the component logits) through TFP's squeeze, split and reshape to the first Dense (or WeightNorm)."""
    t = network.outputs[0]
    for _ in range(16):
        layer = t._keras_history.layer
        if type(layer).__name__ in ("WeightNorm", "Dense"):
            return layer, t
        node = layer._inbound_nodes[t._keras_history.node_index]
        t = node.keras_inputs[0]
    raise TypeError(f"Sampler: the network of this tfd.PixelCNN does not end in TFP's Dense + reshape + split "
                    f"(walked back from {network.outputs[0].name}); it is not a layout the sampler knows")


class TfpNetwork:
    """What the sampler needs from a tfd.PixelCNN: `model` (a tf-keras model from the image (and conditional
    input) to the mixture's raw parameters), `sampler_args` (head, levels, value map, layout, image shape),
    `lower(image_shape)` (the program, traced with weight norm unwrapped) and `low` (level k is value low + k)."""

    def __init__(self, dist):
        import tf_keras
        from tensorflow_probability.python.layers import weight_norm

        network = dist.network._network
        layer, params = _params_layer(network)
        c = int(dist.image_shape[-1])
        k = int(dist._num_logistic_mix)
        per_component = 1 + 2 * c + c * (c - 1) // 2
        if params.shape[-1] != k * per_component:
            raise TypeError(f"Sampler: layer '{layer.name}' of this tfd.PixelCNN outputs {params.shape[-1]} values "
                            f"per pixel, expected K x (1 + 2C + C(C-1)/2) = {k * per_component} for K = {k}, C = {c}")
        if c not in (1, 3):
            raise ValueError(f"Sampler: a tfd.PixelCNN over {c} image channels is not taken: the mixture draw "
                             f"couples grey (1) or RGB (3) images")
        low, high = float(dist._low.numpy()), float(dist._high.numpy())
        if low != int(low) or high != int(high) or not 1 <= high - low <= 65535:
            raise ValueError(f"Sampler: a tfd.PixelCNN's low and high must be integers 1 to 65535 apart, got "
                             f"low={low}, high={high}")
        self.low, levels = int(low), int(high - low) + 1
        self.weight_norms = [lay for lay in network.layers if isinstance(lay, weight_norm.WeightNorm)]
        for wn in self.weight_norms:
            if not bool(wn.initialized.numpy()):
                raise ValueError(
                    f"Sampler: weight norm layer '{wn.name}' of this tfd.PixelCNN is not initialised yet (TFP "
                    f"initialises it from the first batch it sees): call dist.log_prob(images) on training data "
                    f"(or train it) before sampling")
        self.model = tf_keras.Model(network.inputs, params, name=f"{dist.name}_network")
        self.image_shape = tuple(int(s) for s in dist.image_shape)
        self.sampler_args = dict(head="logistic_mixture", levels=levels, value_map=(2.0 / (levels - 1), -1.0),
                                 mixture_layout="tfp")

    @contextlib.contextmanager
    def _weight_norm_unwrapped(self):
        """Each WeightNorm calls `_compute_weights()` and its inner layer directly (what its tf.function call does
        once initialised), so the traced graph holds the conv, not a function call the lowering cannot see into."""
        def plain(wn):
            def call(inputs, *args, **kwargs):
                wn._compute_weights()
                return wn.layer(inputs)
            return call

        for wn in self.weight_norms:
            wn.call = plain(wn)
        try:
            yield
        finally:
            for wn in self.weight_norms:
                del wn.call  # back to the class's tf.function

    def lower(self, image_shape=None):
        from pixelcnn_fast.program.lower import lower

        with self._weight_norm_unwrapped():
            return lower(self.model, image_shape or self.image_shape, accept_tf_keras=True)
