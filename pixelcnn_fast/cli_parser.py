"""Python front end: the `pixelcnn-fast` argument parser -- its subcommands, flags and help texts (cli.py runs
the commands). A usage error is one line and exit status 2."""

import argparse

PROG = "pixelcnn-fast"
BEAM_INSTALL = 'pip install "pixelcnn-fast[beam]"'


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse's message plus a --help pointer) and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_sampler_flags(p):
    p.add_argument("--model", metavar="PATH.keras", default=None,
                   help="a saved Keras model (default: the bundled MNIST model)")
    p.add_argument("--backend", default="cpu", choices=["cpu", "cuda"],
                   help="sampler backend: cpu, or cuda (the GPU kernel; needs a CUDA build and CuPy) (default: cpu)")
    p.add_argument("--head", choices=["bernoulli", "categorical", "logistic_mixture"], default=None,
                   help="for a model without a final sigmoid/softmax: how its output is drawn (logistic_mixture: "
                        "PixelCNN++'s 3K / 10K head, 256 levels fed back as level/127.5-1 unless --value-map says)")
    p.add_argument("--value-map", default=None, metavar="MAP",
                   help="categorical heads: how a sampled level goes back into the model input: identity, "
                        "level/N, level/(N-1), level/255 or SCALE,OFFSET")
    p.add_argument("--output", choices=["logits", "probs"], default=None,
                   help="for a model without a final sigmoid/softmax: what its values are (default: logits)")


def _add_draw_flags(p, n_default, n_help, out_default, quiet_help):
    """--n, --seed, --temperature, --out (a PNG) and --quiet of the commands that draw a PNG grid."""
    p.add_argument("--n", type=int, default=n_default, help=f"{n_help} (default: {n_default})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; divides the logits (default: 1.0)")
    p.add_argument("--out", default=out_default, help=f"PNG file to write (default: {out_default})")
    p.add_argument("--quiet", action="store_true", help=quiet_help)


def build_parser(handlers):
    """The argparse parser of every subcommand; `handlers` maps a subcommand's name to its function (set as
    args.func). `train` is listed for --help only: cli.main hands `train ...` to pixelcnn_fast.train."""
    parser = OneLineErrorParser(prog=PROG, description="Fast PixelCNN sampling: draw digits to a PNG, check a "
                                                       "model's causality, time the cached sampler, train the "
                                                       "bundled model.")
    from pixelcnn_fast._version import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sample", help="draw images and write them as a PNG grid",
                       description="Draw images with the cached sampler and write them as a near-square PNG "
                                   "grid (grey padding; level 0 black, the top level white).")
    _add_sampler_flags(p)
    _add_draw_flags(p, 16, "number of images", "samples.png", "no progress bar")
    p.set_defaults(func=handlers["sample"])

    p = sub.add_parser("complete", help="complete the lower part of an image (keep its top rows)",
                       description="Keep the top --keep-rows rows of --image and sample the rest --n times with the "
                                   "cached sampler (Sampler.complete). Writes a PNG grid: first the given part "
                                   "(the rows to complete in grey), then the completions.")
    _add_sampler_flags(p)
    p.add_argument("--image", required=True, metavar="PATH.png",
                   help="8-bit PNG of the model's size: grey for 1 channel, RGB for 3 (pixel p -> level "
                        "round(p * (levels - 1) / 255))")
    p.add_argument("--keep-rows", type=int, default=None, help="rows kept from the top (default: half)")
    _add_draw_flags(p, 8, "number of completions", "completions.png", "print nothing but the result line")
    p.set_defaults(func=handlers["complete"])

    p = sub.add_parser("generate", help="sample a dataset in shards (TFRecord + manifest) with Apache Beam",
                       description="Sample --n images in shards of --shard-size, each shard drawn by global image "
                                   "index (the same images whatever the number of workers), written as TFRecord "
                                   "files of tf.train.Example (levels, PNG bytes) plus manifest.json. A re-run "
                                   "skips complete shards. Runs on Apache Beam (DirectRunner with --workers "
                                   "processes; other runners through Beam options after '--', e.g. -- --runner "
                                   f"DataflowRunner ...); needs {BEAM_INSTALL}, or --local for this process "
                                   "without Beam.")
    p.add_argument("--model", metavar="PATH.keras", default=None,
                   help="a saved Keras model (default: the bundled MNIST model)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; divides the logits (default: 1.0)")
    p.add_argument("--workers", type=int, default=1,
                   help="DirectRunner worker processes (multi_processing when > 1) (default: 1)")
    p.add_argument("--local", action="store_true", help="no Beam: write the shards one by one in this process")
    p.set_defaults(func=handlers["generate"], beam_args=[])

    p = sub.add_parser("check", help="lower a model and check its causality",
                       description="Lower a saved model for the cached sampler and check that it is causal: no "
                                   "prediction sees its own or a later pixel. Exit status 1 names the offending layer.")
    p.add_argument("model", nargs="?", default=None, metavar="PATH.keras",
                   help="a saved Keras model (default: the bundled MNIST model)")
    p.set_defaults(func=handlers["check"])

    p = sub.add_parser("bench", help="quick speed ratio: cached sampler vs the naive rows loop",
                       description="Time the cached sampler on the full image against the naive 'rows' "
                                   "loop (pixelcnn_fast.naive): row 0 by the real loop, three deeper rows "
                                   "over --steps steps each, the cost per step interpolated over the rows "
                                   "and extrapolated to the full image (said so in the output). Under a "
                                   "minute for the bundled model at batch 16.")
    _add_sampler_flags(p)
    p.add_argument("--n", type=int, default=16, help="batch size (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--steps", type=int, default=8,
                   help="naive steps timed at each deeper row (default: 8)")
    p.add_argument("--repeats", type=int, default=3, help="cached sampler timings, best taken (default: 3)")
    p.set_defaults(func=handlers["bench"])

    # Listed for --help only: cli.main hands `train ...` to pixelcnn_fast.train.main, which owns its flags.
    sub.add_parser("train", add_help=False, help="train the keras.io PixelCNN on binarized MNIST "
                                                 f"('{PROG} train --help' for its flags)")
    return parser
