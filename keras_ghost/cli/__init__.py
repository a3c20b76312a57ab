"""The command-line tools, installed as `keras-ghost <command>` with the package.

    keras-ghost convert --int8                 # keras_ghost/cli/convert.py
    keras-ghost benchmark out/*.tflite         # keras_ghost/cli/benchmark.py
    keras-ghost compare | quality-gate | train | qat | predict ...

From a source checkout, `python tflite/convert.py ...` (and the other scripts in tflite/
and training/) run the same code. Each command's `main(argv)` can also be called in
Python; a user error raises SystemExit(2) after printing its one `error: ...` line.
"""

import importlib
import sys

from keras_ghost.cli import common

# command -> (module under keras_ghost.cli, one-line summary)
COMMANDS = {
    "convert": ("convert", "convert a model to .tflite (fp32, fp16, dynamic, int8) with a report"),
    "benchmark": ("benchmark", "time .tflite files (LiteRT, adb phone, logs) or count ARM "
                               "instructions"),
    "compare": ("compare", "convert our models and their peers alike and time them side by side"),
    "quality-gate": ("quality_gate", "train or load a CIFAR-10 model and gate int8 against float"),
    "train": ("train", "train a registered model from a recipe"),
    "qat": ("qat", "quantization-aware fine-tune (and pruning) to an int8 .tflite"),
    "predict": ("predict", "classify images with a trained .keras or .tflite model (top-k)"),
}


def usage():
    width = max(map(len, COMMANDS))
    lines = ["usage: keras-ghost <command> [options]   (keras-ghost <command> --help)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    """The `keras-ghost` console script: dispatches to a command's `main`; returns 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        common.fail("give a command (one of " + ", ".join(COMMANDS) + ")")
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"keras-ghost {version('keras-ghost')}")
        except PackageNotFoundError:
            print("keras-ghost (not installed: a source checkout)")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        common.fail(f"unknown command {command!r}{hint} (commands: {', '.join(COMMANDS)})")
    module = importlib.import_module(f"keras_ghost.cli.{COMMANDS[command][0]}")
    module.main(argv[1:])
    return 0
