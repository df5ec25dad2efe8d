"""Python front end (program IR): `check(model)`, the lowering and causality report (`pixelcnn-fast check`).

Lowers the model, evaluates its constants once and analyses causality; reports the program's size, its
live-tap fraction (the multiply-adds the masked kernels' zeros save) and its head.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from pixelcnn_fast.program.causality import analyse_causality
from pixelcnn_fast.program.ir import NotCausalError, Program, conv_kernel_4d
from pixelcnn_fast.program.lower import lower

__all__ = ["CheckReport", "check"]


@dataclasses.dataclass
class CheckReport:
    """What `check(model)` found: the lowered program's size, its sparsity and its causality."""
    model: str
    image_shape: tuple
    steps: int
    conv_steps: int
    live_macs_per_pixel: int
    dense_macs_per_pixel: int
    head: str
    causal: bool
    program: Program = dataclasses.field(repr=False, default=None)

    @property
    def live_tap_fraction(self):
        return self.live_macs_per_pixel / max(1, self.dense_macs_per_pixel)

    @property
    def grids(self):
        """The grids its buffers live on, finest first: (fy, fx, ny, nx) (docs/SEMANTICS.md, "Grids")."""
        if self.program is None:
            return []
        return sorted({self.program.grid(b) for b in range(len(self.program.buffer_channels))})

    def __str__(self):
        grids = self.grids
        on_grids = "" if len(grids) < 2 else (
            ", on grids " + ", ".join(f"{g[2]}x{g[3]}" for g in grids) + " (multiply-adds counted as if every "
            "conv ran at every pixel)")
        return (f"model '{self.model}': image {self.image_shape}, {self.steps} steps "
                f"({self.conv_steps} convolutions), live-tap fraction {self.live_tap_fraction:.3f} "
                f"({self.live_macs_per_pixel} of {self.dense_macs_per_pixel} multiply-adds per pixel){on_grids}, "
                f"output {self.head}, causal: {'yes' if self.causal else 'no'}")


def check(model, image_shape=None, condition_specs=None, raise_if_not_causal=True, head=None):
    """Lowers `model` and checks its causality (docs/SEMANTICS.md). Returns a CheckReport; raises
    NotCausalError naming the first layer that sees the future (unless raise_if_not_causal=False),
    LoweringError naming an unsupported op, its layer and class. head="logistic_mixture" checks the stricter
    rule of a mixture head (no head value sees any channel of its own pixel); any other head is checked per
    image channel."""
    mixture = head == "logistic_mixture"
    program = lower(model, image_shape, condition_specs)
    n = 1
    conditions = [tf.zeros([n] + [d or 1 for d in s.shape[1:]], s.dtype) for s in program.cond_specs]
    consts = program.evaluate_consts(n, conditions)
    causal = True
    try:
        analyse_causality(program, consts, mixture=mixture)
    except NotCausalError:
        if raise_if_not_causal:
            raise
        causal = False
    live = dense = convs = 0
    for step in program.steps:
        if step.kind == "conv":
            k = conv_kernel_4d(step, consts[step.consts[0]])
            convs += 1
            live += int(np.count_nonzero(k))
            dense += int(k.size)
    head = {"sigmoid": "sigmoid (bernoulli)", "softmax": "softmax (categorical)"}.get(
        program.final_activation, "raw values")
    if mixture:
        head = f"logistic mixture ({program.buffer_channels[program.logits_buffer]} values per pixel)"
    elif program.output_levels > 1:
        head += f", {program.buffer_channels[program.output_buffer] // program.output_levels} x " \
                f"{program.output_levels} levels"
    return CheckReport(model.name, program.image_shape, len(program.steps), convs, live, dense,
                       head, causal, program)
