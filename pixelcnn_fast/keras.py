"""Python front end: Keras integration — `SampleCallback`, sample grids written during `fit`.

The usual habit (a Keras callback that re-runs `model.predict` on the whole image once per pixel at
every epoch end) costs O((H·W)²) work per grid; this callback draws the same kind of grid with the
cached Sampler (pixelcnn_fast.sampler), whose C++ executor computes each pixel once.

This module is named `keras`; `import keras` below still loads the real Keras because Python 3
imports are absolute (the package is `pixelcnn_fast.keras`, never a top-level `keras`).
"""

import numbers
import os

import keras

from pixelcnn_fast.checks import check_count, check_seed, check_temperature
from pixelcnn_fast.png import image_grid, write_png
from pixelcnn_fast.sampler import Sampler

__all__ = ["SampleCallback"]


class SampleCallback(keras.callbacks.Callback):
    """Samples `n` images at the end of every `every` epochs and writes them as one PNG grid.

    Args:
      n: images per grid.
      every: sample after epochs every, 2*every, ... (1-based, as Keras counts epochs in logs).
      out_dir: folder of the PNG files (created if missing).
      filename: file name pattern; `{epoch}` is the 1-based epoch number (as in ModelCheckpoint).
      seed: the sampler's seed. The same seed every epoch, so successive grids differ only by
        what the model learned, not by the draw.
      temperature: sampling temperature (> 0).
      conditions: the model's further inputs (class labels ...), one row per image, or None.
      head, levels, value_map, image_shape: passed to pixelcnn_fast.Sampler (see there); a
        categorical head needs value_map.

    After each grid: `self.paths` lists the files written so far, `self.images` holds the last
    sampled integer levels (n, H, W, C).
    """

    def __init__(self, n=16, every=1, out_dir=".", filename="samples_epoch_{epoch:03d}.png", seed=0,
                 temperature=1.0, conditions=None, head=None, levels=None, value_map=None,
                 image_shape=None):
        super().__init__()
        # The sampler's rules (pixelcnn_fast.checks), refused now rather than at the first epoch's end.
        n = check_count(n, "SampleCallback")
        seed = check_seed(seed, "SampleCallback")
        temperature = float(check_temperature(temperature, "SampleCallback"))
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"SampleCallback: every must be an int >= 1, got {every!r}")
        try:
            filename.format(epoch=1)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"SampleCallback: filename must be a format string using only {{epoch}}, "
                             f"got {filename!r} ({type(exc).__name__}: {exc})") from None
        self.n, self.every, self.out_dir, self.filename = int(n), int(every), out_dir, filename
        self.seed, self.temperature, self.conditions = seed, temperature, conditions
        self._sampler_args = dict(head=head, levels=levels, value_map=value_map, image_shape=image_shape)
        self._sampler = None
        self.paths = []
        self.images = None

    @property
    def sampler(self):
        """The Sampler of self.model, built on first use. Lowering traces the model once; each
        sample() call re-evaluates the kernels and biases from the variables, so the cached
        program follows training without being rebuilt."""
        if self._sampler is None or self._sampler.model is not self.model:
            self._sampler = Sampler(self.model, **self._sampler_args)
        return self._sampler

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        sampler = self.sampler
        self.images = sampler.sample(self.n, seed=self.seed, temperature=self.temperature,
                                     conditions=self.conditions)
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, self.filename.format(epoch=epoch + 1))
        write_png(path, image_grid(self.images, sampler.levels, pad=2))
        self.paths.append(path)
