"""The `tf-distill` command. It parses, calls the public API and prints."""

import argparse
import contextlib
import os
import sys

# Nothing heavy is imported before the arguments are parsed: `--help`, a usage
# error, `tf-distill losses` and `tf-distill losses NAME` answer without
# loading TensorFlow.
from tf_distill import catalog
from tf_distill import console

# An error is one line on stderr, at most this long: a message never grows with
# its input (a huge config value, a long environment variable).
MAX_ERROR_CHARS = 2000


def _error(prefix, error):
    """Prints `error` as one bounded line on stderr."""
    text = " ".join(str(error).split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    print(f"tf-distill: {prefix}: {text}", file=sys.stderr)


def _print_table(results):
    from tf_distill.commands.language_report import LANGUAGE_COLUMNS
    from tf_distill.commands.report import markdown_table
    from tf_distill.commands.report import result_columns

    print()
    if results.get("task") == "language":
        columns = LANGUAGE_COLUMNS
    else:
        columns = result_columns(results["models"])
    print(markdown_table(results["models"], columns))
    if results.get("summary"):
        print()
        print(results["summary"])


def _written(folder, report_files):
    """The files a run wrote, grouped: models, results, report."""
    names = sorted(
        name for name in os.listdir(folder)
        if not name.startswith(".") and os.path.isfile(os.path.join(folder, name))
    )
    groups = {
        "models": [n for n in names if n.endswith((".keras", ".tflite"))],
        "results": [n for n in names if n.endswith(".json")],
        "report": [n for n in names if n in report_files or n == "export.md"],
    }
    listed = {n for group in groups.values() for n in group}
    groups["other"] = [n for n in names if n not in listed]
    lines = [f"  {kind}: {', '.join(files)}" for kind, files in groups.items() if files]
    from tf_distill.commands.common import TENSORBOARD_FOLDER

    tensorboard = os.path.join(folder, TENSORBOARD_FOLDER)
    if os.path.isdir(tensorboard):
        lines.append(f"  TensorBoard logs: {TENSORBOARD_FOLDER}/ "
                     f"(tensorboard --logdir {tensorboard})")
    return "\n".join(lines)


def _run(args):
    from tf_distill.commands import config as config_lib
    from tf_distill.commands import run
    from tf_distill.commands.run import interrupted_message

    config = config_lib.load(args.config) if args.command == "run" else config_lib.default()
    if args.output:
        config["output"] = args.output
    if getattr(args, "unsafe", False):
        config["unsafe"] = True
    if config.get("task") == "language":
        from tf_distill.commands import language_run as run
    try:
        results = run.run(config, verbose=_progress(args),
                          restart=getattr(args, "restart", False))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(interrupted_message(config["output"])) from None
    _print_table(results)
    print(f"\nWrote {config['output']}/:\n{_written(config['output'], results['files'])}")
    return 0


def _loss_details(name):
    import inspect

    import yaml

    # The catalog, not the registry: a built-in loss's details need no TensorFlow.
    loss = catalog.describe_loss(name)
    print(f"{loss['name']} ({loss['class_name']}): {loss['summary']}")
    print(f"  {loss['description']}")
    print(f"\nPaper: {loss['paper'] or 'none (not from a paper)'}")
    print("\nArguments (default):")
    width = max((len(argument) for argument in loss["arguments"]), default=0)
    for argument, default in loss["arguments"].items():
        shown = "required" if default is inspect.Parameter.empty else repr(default)
        print(f"  {argument:<{width}}  {shown}")
    example = yaml.safe_dump({"distillation": {"losses": [loss["example"]]}}, sort_keys=False)
    print(f"\nIn a config:\n{example.rstrip()}")
    if loss["recipe"] is None:
        print("\nRecipe: no recipe yet.")
    else:
        print(f"\nRecipe: {loss['recipe']}\n{loss['recipe_text'].rstrip()}")
    return 0


def _progress(args):
    """Keras's `verbose`: a live bar on a terminal, one line per epoch in a log."""
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _losses(args):
    if args.name:
        return _loss_details(args.name)
    # The catalog, not the registry: listing needs no TensorFlow.
    rows = catalog.describe_losses()
    width = max(len(name) for name, _, _ in rows)
    for name, class_name, summary in rows:
        print(f"{name:<{width}}  {summary} ({class_name})")
    return 0


def _export(args):
    from tf_distill import saving
    from tf_distill.commands.export import export_data
    from tf_distill.commands.export import export_inputs
    from tf_distill.commands.export import export_language
    from tf_distill.export import export_litert
    from tf_distill.export.language import is_causal_lm

    model_path, data_config, origin = export_inputs(args.model, args.data, args.seed)
    model = saving.load_model(model_path, unsafe=args.unsafe)
    print(f"Model: {model_path}\nData: {origin}")
    if is_causal_lm(model):
        output = args.output or f"{os.path.splitext(model_path)[0]}_{args.quantization}.litertlm"
        report = export_language(model, model_path, output, data_config, args.quantization,
                                 latency_runs=args.latency_runs)
        print(report.to_markdown())
        print(f"\nWrote {output}")
        return 0
    representative_data, validation_data = export_data(
        model, data_config, args.representative_size)
    output = args.output or os.path.splitext(model_path)[0] + f"_{args.quantization}.tflite"
    report = export_litert(
        model,
        output,
        quantization=args.quantization,
        representative_data=representative_data,
        validation_data=validation_data,
        max_accuracy_drop=args.max_accuracy_drop,
        int8_io=args.int8_io,
        allow_tf_ops=args.allow_tf_ops,
        latency_runs=args.latency_runs,
        report_path=os.path.splitext(output)[0] + ".md",
        per_channel=not args.per_tensor,
        verbose=_progress(args),
    )
    print(report.to_markdown())
    print(f"\nWrote {output}")
    return 0


def _tune(args):
    from tf_distill.commands import config as config_lib
    from tf_distill.commands import tune as tuning
    from tf_distill.commands.common import TENSORBOARD_FOLDER

    config = config_lib.load(args.config)
    if config.get("task") == "language":
        raise config_lib.ConfigError("`tf-distill tune` searches classifier runs; a "
                                     "`task: language` config runs with `tf-distill run`.")
    output = args.output or config["output"]
    if args.unsafe:
        config["unsafe"] = True
    results = tuning.run_from_config(
        config, output, verbose=_progress(args), role=args.role
    )
    if results["role"] == "worker":
        print(f"Worker {results['tuner_id']} ran trials {results['trials_run']}.")
        return 0
    with open(os.path.join(output, "trials.md"), encoding="utf-8") as handle:
        print("\n" + handle.read())
    _print_table(results)
    print(
        f"\nWrote {output}/: student.keras, best_hyperparameters.json, trials.md, "
        "trials.csv, search.png, tuning.json, and each trial's TensorBoard logs and "
        f"hyperparameters (tensorboard --logdir {os.path.join(output, TENSORBOARD_FOLDER)})"
    )
    return 0


# What each quantization mode does, in a few words, for `tf-distill export --help`.
QUANTIZATION_HELP = {
    "float32": "no quantization",
    "dynamic": "int8 weights, float activations",
    "float16": "half-precision weights",
    "int8": "full integer: int8 weights and activations, calibrated on training data "
            "(a language run's .litertlm: int8 weights, one scale per channel)",
    "int4": "a language run's .litertlm only: int4 weights, one scale per 32 values",
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tf-distill",
        description="Knowledge distillation for Keras: train a small student from a teacher.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    # `--verbose` belongs to every command: `tf-distill run job.yaml --verbose`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose",
        action="store_true",
        help="let TensorFlow's, absl's and the converter's log lines through",
    )

    run = commands.add_parser(
        "run", parents=[common], help="run a whole job from a YAML config")
    run.add_argument("config", help="the YAML config file")
    demo = commands.add_parser(
        "demo", parents=[common], help="the main job on the embedded digits data")
    for sub in (run, demo):
        sub.add_argument("--output", help="the output folder (overrides the config's)")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--unsafe", action="store_true",
                     help="trust model files and code: allow Lambda layers, .h5 files "
                     "and `builder: package.module:function` models")
    run.add_argument("--restart", action="store_true",
                     help="start over in an output folder that holds a run of another "
                     "config or other data (default: refuse)")
    run.set_defaults(handler=_run)
    demo.set_defaults(handler=_run)

    listing = commands.add_parser(
        "losses",
        parents=[common],
        help="list the distillation losses, or show one: arguments, paper, recipe",
    )
    listing.add_argument("name", nargs="?", help="a loss to show in full (e.g. kd)")
    listing.set_defaults(handler=_losses)

    modes = "\n".join(f"  {mode:<8} {text}" for mode, text in QUANTIZATION_HELP.items())
    export = commands.add_parser(
        "export",
        parents=[common],
        help="export a student to LiteRT, verified",
        description="Convert a student to LiteRT (.tflite), quantized, and verify it\n"
        "against the Keras model on held-out data before writing it. The student of a\n"
        "`task: language` run becomes a .litertlm for the LiteRT-LM runtime, its\n"
        "tokenizer packed in, checked in that runtime too.",
        epilog=f"quantization modes:\n{modes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "model",
        help="a `tf-distill run` output folder (its student and its data), or a "
        "student .keras file",
    )
    export.add_argument("--quantization", default="int8",
                        choices=[*catalog.QUANTIZATION_MODES, "int4"],
                        help="the quantization mode, listed below (default: %(default)s)")
    export.add_argument(
        "--data",
        help="data for calibration and verification, as a config's `data.source` "
        "(default: the run's data, from its config.yaml; else digits)",
    )
    export.add_argument("--seed", type=int,
                        help="the seed whose student to export, for a run trained over "
                        "several (default: the run's first seed)")
    export.add_argument("--output", help="the .tflite file (default: beside the model, "
                        "MODEL_QUANTIZATION.tflite; .litertlm for a language run)")
    export.add_argument("--max-accuracy-drop", type=float, default=1.0,
                        help="refuse the export if accuracy drops more, in percentage "
                        "points (default: %(default)s)")
    export.add_argument("--int8-io", action="store_true",
                        help="int8 inputs and outputs, int8 mode only (default: off)")
    export.add_argument(
        "--per-tensor",
        action="store_true",
        help="one weight scale per tensor (int8, dynamic): smaller files for small "
        "models (default: off, one scale per channel)",
    )
    export.add_argument("--allow-tf-ops", action="store_true",
                        help="fall back to TensorFlow ops for unsupported ones; the file "
                        "is then written unverified (default: off)")
    export.add_argument("--latency-runs", type=int, default=200,
                        help="interpreter calls to time, 0 for none (default: %(default)s)")
    export.add_argument("--representative-size", type=int, default=200,
                        help="training examples to calibrate int8 on (default: %(default)s)")
    export.add_argument("--quiet", action="store_true",
                        help="no progress bar of the verification (default: off)")
    export.add_argument("--unsafe", action="store_true",
                        help="trust the model file: allow Lambda layers and .h5 files "
                        "(default: off)")
    export.set_defaults(handler=_export)

    tune = commands.add_parser(
        "tune", parents=[common], help="search temperature and α with Keras Tuner")
    tune.add_argument("config", help="a run config with a `tuning:` section")
    tune.add_argument("--output", help="the search folder (the same for chief and workers)")
    tune.add_argument("--quiet", action="store_true", help="no progress bars")
    tune.add_argument(
        "--role",
        choices=["chief", "worker"],
        default=None,
        help="distributed search role; default: from KERASTUNER_TUNER_ID, "
        "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT",
    )
    tune.add_argument("--unsafe", action="store_true", help="trust model files")
    tune.set_defaults(handler=_tune)
    return parser


def main(argv=None):
    """Entry point of `tf-distill`; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not args.verbose:
        console.quiet_logs()
    if args.handler is _losses:
        try:
            return _losses(args)
        except ValueError as error:  # an unknown loss name
            _error("error", error)
            return 2
    filtered = contextlib.nullcontext() if args.verbose else console.filtered_stderr()
    with filtered:
        return _handle(args)


def _handle(args):
    from tf_distill.backend import check_safe_keras

    try:
        check_safe_keras()
    except RuntimeError as error:
        _error("error", error)
        return 2
    from tf_distill.callbacks import TrainingDivergedError
    from tf_distill.commands.config import ConfigError
    from tf_distill.distribute import ClusterError
    from tf_distill.export import ExportError
    from tf_distill.saving import ModelFileError

    try:
        return args.handler(args)
    except (ConfigError, ModelFileError, ClusterError, ValueError) as error:
        _error("error", error)
        return 2
    except ExportError as error:
        _error("export refused", error)
        return 4
    except TrainingDivergedError as error:
        _error("error", error)
        return 3
    except OSError as error:
        # A file or folder the user named: unreadable, unwritable, full disk.
        where = f"{error.filename!r}: " if getattr(error, "filename", None) else ""
        _error("error", f"{where}{error.strerror or error}")
        return 2
    except KeyboardInterrupt as interrupt:
        # A command that can say what an interruption leaves says it (`_run`).
        print(f"tf-distill: {str(interrupt) or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
