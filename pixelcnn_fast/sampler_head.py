"""Python front end: the sampler's head -- how the model's output is drawn (bernoulli or categorical, logits
or probabilities, levels) and how a drawn level goes back into the model input (the value map).

`resolve_head` infers what the program says (a final sigmoid / softmax, the output's channels) and checks the
user's arguments against it, with errors naming the argument; Sampler keeps the result.
"""

import dataclasses

from pixelcnn_fast.rng import MIXTURE_LAYOUTS

__all__ = ["VALUE_MAPS", "HEADS", "Head", "resolve_head"]

# Named value maps: sampled level -> model input, as (scale(levels), offset).
VALUE_MAPS = {
    "identity": lambda n: (1.0, 0.0),
    "level/N": lambda n: (1.0 / n, 0.0),
    "level/(N-1)": lambda n: (1.0 / max(1, n - 1), 0.0),
    "level/255": lambda n: (1.0 / 255.0, 0.0),
    "level/127.5-1": lambda n: (1.0 / 127.5, -1.0),  # PixelCNN++'s [-1, 1] inputs (a mixture head's default)
}
HEADS = ("bernoulli", "categorical", "logistic_mixture")
MIXTURE_LEVELS = 256  # docs/SEMANTICS.md, "Logistic-mixture heads": discretised to 256 levels unless levels= says


@dataclasses.dataclass(frozen=True)
class Head:
    head: str            # "bernoulli", "categorical" or "logistic_mixture"
    kind: str            # the spec's head kind: "bernoulli", "logits", "probs" or "logistic_mixture"
    levels: int          # levels per image channel (2 for bernoulli)
    head_levels: int     # head values per image channel (1 for bernoulli: the logit); a mixture: levels drawn
    value_scale: float   # model input = level * value_scale + value_offset
    value_offset: float
    components: int = 0  # a logistic mixture's K
    mixture_layout: str = "pixelcnn_pp"  # and its parameter layout: "pixelcnn_pp" or "tfp" (philox.h)


def resolve_head(program, model_name, head=None, levels=None, value_map=None, output="logits",
                 mixture_layout="pixelcnn_pp"):
    """The Head of a lowered program for Sampler's head / levels / value_map / output / mixture_layout
    arguments."""
    p = program
    h, w, c = p.image_shape
    head_channels = p.buffer_channels[p.logits_buffer]
    if head is None:
        if p.final_activation == "sigmoid":
            head = "bernoulli"
        elif p.final_activation == "softmax":
            head = "categorical"
        else:
            raise ValueError(
                f"Sampler: cannot infer the head of model '{model_name}': its output is not a sigmoid "
                f"or a softmax; pass head='bernoulli' or head='categorical' (and output='logits' or "
                f"'probs' for what the model's values are)")
    if head not in HEADS:
        raise ValueError(f"Sampler: head must be 'bernoulli', 'categorical' or 'logistic_mixture', got {head!r}")
    if output not in ("logits", "probs"):
        raise ValueError(f"Sampler: output must be 'logits' or 'probs', got {output!r}")
    if mixture_layout not in MIXTURE_LAYOUTS:
        raise ValueError(f"Sampler: mixture_layout must be one of {MIXTURE_LAYOUTS}, got {mixture_layout!r}")
    if head == "logistic_mixture":
        return _mixture_head(p, model_name, levels, value_map, output, mixture_layout)
    if mixture_layout != "pixelcnn_pp":
        raise ValueError(f"Sampler: mixture_layout={mixture_layout!r} is for head='logistic_mixture', got "
                         f"head={head!r}")
    if head == "bernoulli":
        inferred = 1
        kind = "bernoulli"
        if p.final_activation == "" and output == "probs":
            raise ValueError("Sampler: a bernoulli head needs the model's logits or a final sigmoid; "
                             "got output='probs' without a sigmoid")
    else:
        inferred = head_channels // c
        kind = "logits" if p.final_activation == "softmax" or output == "logits" else "probs"
    if levels is not None and int(levels) != (2 if head == "bernoulli" else inferred):
        raise ValueError(f"Sampler: levels={levels} does not match the model's output: "
                         f"{head_channels} values per pixel for {c} image channel(s)")
    if head_channels != c * inferred:
        raise ValueError(f"Sampler: the model's output has {head_channels} values per pixel, not a "
                         f"multiple of its {c} image channel(s)")
    n_levels = 2 if head == "bernoulli" else inferred
    if p.codes:
        # docs/SEMANTICS.md, "Integer inputs": the model takes the codes themselves, so a drawn level goes back as
        # it is; any other map would feed the model codes it never saw.
        if value_map not in (None, "identity", (1, 0), (1.0, 0.0)):
            raise ValueError(f"Sampler: model '{model_name}' takes integer codes ({p.input_dtype}): a drawn "
                             f"level is fed back as the code itself, so value_map must be 'identity' or "
                             f"left out, got {value_map!r}")
        value_map = "identity"
    if value_map is None:
        if head == "categorical":
            raise ValueError(
                "Sampler: value_map= is required for a categorical head: say how level k goes back "
                f"into the model input, one of {sorted(VALUE_MAPS)} or a (scale, offset) pair")
        value_map = "identity"
    scale, offset = _value_pair(value_map, n_levels)
    return Head(head=head, kind=kind, levels=n_levels, head_levels=1 if head == "bernoulli" else inferred,
                value_scale=scale, value_offset=offset)


def _value_pair(value_map, n_levels):
    """(scale, offset) of a value map: a name in VALUE_MAPS or a (scale, offset) pair."""
    if isinstance(value_map, str):
        if value_map not in VALUE_MAPS:
            raise ValueError(f"Sampler: value_map must be one of {sorted(VALUE_MAPS)} or a (scale, "
                             f"offset) pair, got {value_map!r}")
        return VALUE_MAPS[value_map](n_levels)
    return tuple(float(v) for v in value_map)


def _mixture_head(p, model_name, levels, value_map, output, mixture_layout):
    """docs/SEMANTICS.md, "Logistic-mixture heads": K from the output's channels in PixelCNN++'s layout (3K values
    per pixel for grey images, 10K for RGB), levels 256 unless said, fed back as level / 127.5 - 1 unless said."""
    h, w, c = p.image_shape
    values = p.buffer_channels[p.logits_buffer]
    if c not in (1, 3):
        raise ValueError(f"Sampler: head='logistic_mixture' draws grey (1 image channel) or RGB (3) images; model "
                         f"'{model_name}' has {c} image channels")
    per = 3 if c == 1 else 10
    layout = ("TFP's layout: K blocks of [logit, locs(C), scales(C), coefficients(C(C-1)/2)]"
              if mixture_layout == "tfp" else
              "PixelCNN++'s layout, grey: [logits(K), means(K), log_scales(K)]" if c == 1 else
              "PixelCNN++'s layout, RGB: [logits(K), then per channel means(K), log_scales(K), coeffs(K)]")
    if values % per or values == 0:
        raise ValueError(f"Sampler: head='logistic_mixture' over {c} image channel(s) needs {per}K values per pixel "
                         f"({layout}); model '{model_name}' outputs {values}")
    if output != "logits" or p.final_activation:
        raise ValueError(f"Sampler: head='logistic_mixture' reads the mixture's raw parameters (a linear output); "
                         f"model '{model_name}' ends in {p.final_activation or 'probabilities (output=probs)'}")
    if p.codes:
        raise ValueError(f"Sampler: head='logistic_mixture' draws image levels, but model '{model_name}' takes "
                         f"integer codes ({p.input_dtype}); use head='categorical'")
    n_levels = MIXTURE_LEVELS if levels is None else levels
    if isinstance(n_levels, bool) or not isinstance(n_levels, int) or not 2 <= n_levels <= 65536:
        raise ValueError(f"Sampler: levels must be an integer in [2, 65536] for head='logistic_mixture', got "
                         f"{levels!r}")
    # level / 127.5 - 1 at 256 levels: [-1, 1]
    scale, offset = (2.0 / (n_levels - 1), -1.0) if value_map is None else _value_pair(value_map, n_levels)
    return Head(head="logistic_mixture", kind="logistic_mixture", levels=n_levels, head_levels=n_levels,
                value_scale=scale, value_offset=offset, components=values // per, mixture_layout=mixture_layout)
