"""Entry point of the `keras-ghost` console script (and of the scripts in tflite/ and
training/), kept outside the `keras_ghost` package on purpose: importing `keras_ghost`
imports TensorFlow, whose C++ side prints its log lines (CUDA, oneDNN, absl) before any
log level applies, so they must be redirected before that import. This module loads
`keras_ghost/cli/quiet.py` by path (finding the package does not run its `__init__`),
quiets the logs, then imports and runs `keras_ghost.cli`.
"""

import importlib.util
import sys
from pathlib import Path


def _quiet():
    """keras_ghost/cli/quiet.py as a module of its own, without importing keras_ghost."""
    package = importlib.util.find_spec("keras_ghost")
    path = Path(next(iter(package.submodule_search_locations))) / "cli" / "quiet.py"
    spec = importlib.util.spec_from_file_location("_keras_ghost_quiet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    """`keras-ghost <command> ...`; returns the exit status (0, or raises SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    quiet = _quiet()
    quiet.quiet_python_logs(verbose)
    with quiet.native_stderr_hidden(not verbose):
        from keras_ghost.cli import main as dispatch

        return dispatch(argv)


if __name__ == "__main__":
    sys.exit(main())
