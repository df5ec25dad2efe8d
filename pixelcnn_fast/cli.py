"""Python front end: the `pixelcnn-fast` command line (sample, complete, generate, check, bench, train).

Every failure a user can cause (a missing or corrupt model file, a bad --n / --temperature / --seed, an
unwritable --out, a non-causal or unsupported model) ends as ONE line on stderr, `pixelcnn-fast
<command>: error: ...`, and a non-zero exit; no traceback. Cheap argument checks run before TensorFlow
work starts (loading a model, lowering it), so a typo costs no waiting. The flags and help texts are
cli_parser.py's; models load through pixelcnn_fast.models.
"""

import math
import os
import sys
import tempfile
import time

from pixelcnn_fast.cli_parser import BEAM_INSTALL, PROG, build_parser

_TRACEBACK_ENV = "PIXELCNN_FAST_TRACEBACK"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _one_line(exc):
    """checks.one_line, imported when an error is reported (it brings NumPy; `--help` stays light)."""
    from pixelcnn_fast.checks import one_line

    return one_line(exc)


# ----------------------------------------------------------------------------------- shared helpers

def _model_path(path):
    if path is not None:
        return path
    from pixelcnn_fast.models import bundled_model_path

    bundled = bundled_model_path()
    if not os.path.isfile(bundled):
        raise CliError(f"the bundled model is not installed ({bundled} does not exist): pass --model "
                       f"PATH.keras, or train one with '{PROG} train --out {bundled}'")
    return bundled


def _load_model(path):
    """models.load_model, its ModelLoadError ("cannot load model 'path': ...") as a CliError; the file is
    checked before Keras is imported (a mistyped path fails at once)."""
    from pixelcnn_fast.checks import ModelLoadError, check_model_file

    try:
        check_model_file(path)
        from pixelcnn_fast.models import load_model

        return load_model(path)
    except ModelLoadError as exc:
        raise CliError(str(exc)) from exc


def _cli_check(check, value, flag):
    """A rule of pixelcnn_fast.checks (the one every front door uses), its message naming the flag."""
    from pixelcnn_fast import checks

    try:
        return getattr(checks, check)(value, None, flag)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _check_count(n):
    return _cli_check("check_count", n, "--n")


def _check_seed(seed):
    return _cli_check("check_seed", seed, "--seed")


def _check_temperature(t):
    return _cli_check("check_temperature", t, "--temperature")


def _check_writable(out):
    """Refuses an --out that cannot be written, BEFORE sampling (minutes of work must not be lost)."""
    directory = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        raise CliError(f"cannot write --out '{out}': it is a directory")
    if not os.path.isdir(directory):
        raise CliError(f"cannot write --out '{out}': directory '{directory}' does not exist")
    try:
        # Create-and-remove a file rather than os.access: access() says yes to root on a read-only mount
        # and ignores ACLs; an actual create is the test that matches the later write.
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".pixelcnn-fast-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CliError(f"cannot write --out '{out}': directory '{directory}' is not writable "
                       f"({exc.strerror or exc})") from exc
    if os.path.exists(out) and not os.access(out, os.W_OK):
        raise CliError(f"cannot write --out '{out}': the existing file is not writable")


def value_map_option(text):
    """--value-map as Sampler's value_map (checks.parse_value_map: a name in VALUE_MAPS or 'SCALE,OFFSET'),
    None when not given; CliError naming --value-map when malformed."""
    return _cli_check("parse_value_map", text, "--value-map")


def _make_sampler(model, args):
    from pixelcnn_fast.sampler import Sampler

    kwargs = {"head": args.head, "value_map": value_map_option(args.value_map), "backend": args.backend}
    if args.output is not None:
        kwargs["output"] = args.output
    try:
        return Sampler(model, **kwargs)
    except ValueError as exc:  # NotCausalError and LoweringError are ValueErrors too
        msg = _one_line(exc)
        if "head" in msg or "value_map" in msg or "output=" in msg:
            msg += " (command line: --head, --value-map, --output)"
        raise CliError(msg) from exc


def _describe(model, sampler):
    h, w, c = sampler.program.image_shape
    return f"model '{model.name}' ({h}x{w}x{c}, {sampler.head} head, {sampler.levels} levels)"


# ----------------------------------------------------------------------------------- subcommands

def cmd_sample(args):
    from pixelcnn_fast.png import grid_shape, image_grid, write_png

    _check_count(args.n)
    _check_seed(args.seed)
    _check_temperature(args.temperature)
    _check_writable(args.out)
    value_map_option(args.value_map)  # refuse a malformed --value-map before loading the model
    path = _model_path(args.model)
    model = _load_model(path)
    sampler = _make_sampler(model, args)
    channels = sampler.program.image_shape[2]
    if channels not in (1, 3):
        raise CliError(f"{_describe(model, sampler)}: a PNG grid needs 1 (grey) or 3 (RGB) image channels, "
                       f"the model has {channels}")
    start = time.perf_counter()
    levels = sampler.sample(args.n, seed=args.seed, temperature=args.temperature,
                            progress=not args.quiet)
    seconds = time.perf_counter() - start
    write_png(args.out, image_grid(levels, sampler.levels))
    rows, cols = grid_shape(args.n)
    print(f"wrote {args.n} sample{'s' if args.n != 1 else ''} ({rows}x{cols} grid) to {args.out} "
          f"(sampling took {seconds:.3f} s)")
    return 0


def _image_levels(path, sampler):
    """--image as the model's levels (1, H, W, C): a grey PNG for one channel, RGB for three; pixel p becomes
    level round(p * (L - 1) / 255) (for a bernoulli model: p >= 128 is 1)."""
    import numpy as np

    from pixelcnn_fast.png import read_png

    h, w, c = sampler.program.image_shape
    if not os.path.isfile(path):
        raise CliError(f"cannot read --image '{path}': no such file")
    try:
        pixels = read_png(path)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read --image '{path}': {_one_line(exc)}") from exc
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if pixels.shape != (h, w, c):
        raise CliError(f"--image '{path}' is {'x'.join(map(str, pixels.shape))}, the model takes {h}x{w}x{c} "
                       f"({'a grey' if c == 1 else 'an RGB'} PNG of that size)")
    top = sampler.levels - 1
    return np.rint(pixels.astype(np.float64) * (top / 255.0)).astype(np.int32)[None]


def cmd_complete(args):
    import numpy as np

    from pixelcnn_fast.png import grid_shape, image_grid, write_png

    _check_count(args.n)
    _check_seed(args.seed)
    _check_temperature(args.temperature)
    _check_writable(args.out)
    value_map_option(args.value_map)
    model = _load_model(_model_path(args.model))
    sampler = _make_sampler(model, args)
    h, w, c = sampler.program.image_shape
    if c not in (1, 3):
        raise CliError(f"{_describe(model, sampler)}: a PNG needs 1 (grey) or 3 (RGB) image channels, the model "
                       f"has {c}")
    given = _image_levels(args.image, sampler)
    keep = h // 2 if args.keep_rows is None else args.keep_rows
    if not 0 <= keep <= h:
        raise CliError(f"--keep-rows must be in [0, {h}] for the model's {h} rows, got {keep}")
    known = np.zeros((h, w), bool)
    known[:keep] = True
    images = np.repeat(given, args.n, axis=0)
    start = time.perf_counter()
    levels = sampler.complete(images, known, seed=args.seed, temperature=args.temperature)
    seconds = time.perf_counter() - start
    # Tile 0: the given part, the rows to complete grey; then the completions.
    grid = image_grid(np.concatenate([given, levels]), sampler.levels)
    pad = 2  # image_grid's default: tile 0 starts at (pad, pad)
    grid[pad + keep:pad + h, pad:pad + w] = 128
    write_png(args.out, grid)
    rows, cols = grid_shape(args.n + 1)
    print(f"kept rows 0-{keep - 1} of {args.image} and completed rows {keep}-{h - 1} {args.n} time(s); wrote the "
          f"given part and the completions ({rows}x{cols} grid) to {args.out} (completion took {seconds:.3f} s)")
    return 0


def cmd_generate(args):
    from pixelcnn_fast import generate

    _check_count(args.n)
    _check_seed(args.seed)
    _check_temperature(args.temperature)
    if args.shard_size < 1:
        raise CliError(f"--shard-size must be a positive integer, got {args.shard_size}")
    if args.workers < 1:
        raise CliError(f"--workers must be a positive integer, got {args.workers}")
    beam_args = list(args.beam_args)
    if args.local and (beam_args or args.workers != 1):
        raise CliError("--local writes the shards in this process: it takes no --workers and no Beam options")
    run_beam = None
    if not args.local:
        try:
            from pixelcnn_fast import beam as run_beam
        except ImportError as exc:
            raise CliError(f"pixelcnn-fast generate runs on Apache Beam, which is not installed ({BEAM_INSTALL}); "
                           f"or pass --local to write the same shards in this process without it") from exc
        if not any(a.startswith("--runner") for a in beam_args):
            mode = "multi_processing" if args.workers > 1 else "in_memory"
            beam_args = ["--direct_num_workers", str(args.workers), "--direct_running_mode", mode] + beam_args
    path = _model_path(args.model)
    model = _load_model(path)  # a missing or corrupt model file: one line here, not a worker's traceback
    try:
        job = generate.Job(path, args.out, args.n, args.seed, args.temperature, args.shard_size)
        job.prepare()
    except (ValueError, OSError) as exc:
        raise CliError(_one_line(exc)) from exc
    start = time.perf_counter()
    if args.local:
        from pixelcnn_fast.sampler import Sampler

        manifest = generate.run_local(job, Sampler(model))
    else:
        manifest = run_beam.run(job, beam_args)
    seconds = time.perf_counter() - start
    counts = manifest["counts"]
    print(f"{counts['images']} images in {counts['shards']} shard(s) of {args.shard_size} in {job.out_dir} "
          f"({counts['written_this_run']} shard(s) written now, the rest complete already; "
          f"{generate.MANIFEST_FILE} lists them) in {seconds:.1f} s, "
          f"{'this process' if args.local else f'Beam, {args.workers} worker(s)'}")
    return 0


def cmd_check(args):
    from pixelcnn_fast.program.ir import LoweringError, NotCausalError
    from pixelcnn_fast.program.report import check

    path = _model_path(args.model)
    model = _load_model(path)
    try:
        report = check(model)
    except NotCausalError as exc:
        raise CliError(f"model '{path}' is not causal: {_one_line(exc)}") from exc
    except LoweringError as exc:
        raise CliError(f"model '{path}' cannot be lowered for sampling: {_one_line(exc)}") from exc
    print(report)
    return 0


def cmd_bench(args):
    import numpy as np

    from pixelcnn_fast import naive

    _check_count(args.n)
    _check_seed(args.seed)
    if args.steps < 1:
        raise CliError(f"--steps must be a positive integer, got {args.steps}")
    path = _model_path(args.model)
    model = _load_model(path)
    sampler = _make_sampler(model, args)
    h, w, c = sampler.program.image_shape
    print(f"{_describe(model, sampler)} from {path}; batch {args.n}, seed {args.seed}, "
          f"{os.cpu_count()} CPU core(s)", flush=True)

    # Cached sampler: one untimed call (first-call costs: constants, building the C++ program's caches),
    # then the best of --repeats full-image calls.
    levels = sampler.sample(args.n, seed=args.seed)
    best = math.inf
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        sampler.sample(args.n, seed=args.seed)
        best = min(best, time.perf_counter() - start)
    print(f"cached sampler: {best * 1e3:.1f} ms for the full {h}x{w} image (best of {max(1, args.repeats)})",
          flush=True)

    # The naive `rows` loop: row 0 through the real loop (its draws must equal the cached sampler's; its
    # trace time is excluded, as a long run amortises it), deeper rows timed step by step. Its cost per
    # step grows with the row, so row 0 alone would underestimate it several-fold: the cost is
    # interpolated between the timed rows and summed over every row.
    vm = value_map_option(args.value_map) or ("level/127.5-1" if sampler.head == "logistic_mixture" else "identity")
    if not isinstance(vm, str):  # a SCALE,OFFSET pair; a name goes through naive's own float32 table
        vm = (lambda scale, offset: lambda k: k * scale + offset)(*vm)
    first = naive.sample(model, args.n, mode="rows", head=sampler.head, levels=sampler.levels,
                         value_map=vm, seed=args.seed, output=args.output or "auto", max_steps=w * c)
    deeper = sorted({int(round(r)) for r in np.linspace(0, h - 1, 4)[1:]} - {0})
    image = levels.astype(np.float32) * sampler.value_scale + sampler.value_offset  # realistic content
    # Deeper rows through the loop's own steps at those rows (naive.rows_seconds_estimate), from row 0's
    # measured cost and theirs, interpolated over every row.
    _, deep_costs = naive.rows_seconds_estimate(
        model, args.n, rows=deeper, steps_per_row=args.steps, image=image, head=sampler.head,
        levels=sampler.levels, value_map=vm, seed=args.seed, output=first.output)
    costs = [first.seconds / first.steps_run] + deep_costs
    timed_rows = [0] + deeper
    estimate = float(w * c * np.interp(np.arange(h), timed_rows, costs).sum())
    print(f"naive rows loop: {', '.join(f'row {r} {t * 1e3:.1f}' for r, t in zip(timed_rows, costs))} ms "
          f"per step (row 0: the real loop, {first.steps_run} steps; the others: {min(args.steps, w)} steps "
          f"each); EXTRAPOLATED to all {first.steps_total} steps, interpolated over the rows: {estimate:.1f} s",
          flush=True)
    reached = first.levels >= 0
    same = int(np.count_nonzero(first.levels[reached] == levels[reached]))
    print(f"ratio: {estimate / best:,.0f}x faster than the naive rows loop (extrapolated, not a full naive "
          f"run; the same machine and process)")
    print(f"same draws as the naive loop on row 0: {same} of {int(reached.sum())} (a difference is possible "
          f"only within float rounding of a CDF boundary)")
    return 0


def cmd_train(argv):
    from pixelcnn_fast import train

    train.main(argv)
    return 0


# Subcommand -> handler (`train` is handed its argv whole: pixelcnn_fast.train owns its flags).
COMMANDS = {"sample": cmd_sample, "complete": cmd_complete, "generate": cmd_generate, "check": cmd_check,
            "bench": cmd_bench}


def _fail(command, message):
    print(f"{PROG}{' ' + command if command else ''}: error: {message}", file=sys.stderr)
    return 1


def main(argv=None):
    """Entry point of the `pixelcnn-fast` script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    try:
        if command == "train":
            return cmd_train(argv[1:])
        beam_args = []
        if command == "generate" and "--" in argv:  # what follows '--' is Beam's (runner options)
            cut = argv.index("--")
            argv, beam_args = argv[:cut], argv[cut + 1:]
        args = build_parser(COMMANDS).parse_args(argv)
        if beam_args:
            args.beam_args = beam_args
        if args.command is None:
            build_parser(COMMANDS).print_help()
            return 2
        return args.func(args)
    except CliError as exc:
        return _fail(command, str(exc))
    except KeyboardInterrupt:
        return _fail(command, "interrupted")
    except (ValueError, OSError) as exc:  # our own checks deeper down (naive, png, train) raise these
        return _fail(command, _one_line(exc))
    except Exception as exc:
        if os.environ.get(_TRACEBACK_ENV):
            raise
        return _fail(command, f"unexpected {type(exc).__name__}: {_one_line(exc)} (set {_TRACEBACK_ENV}=1 "
                              f"for the traceback)")


if __name__ == "__main__":
    sys.exit(main())
