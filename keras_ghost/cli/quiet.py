"""Quiet TensorFlow for the command-line tools: its C++ log lines and library warnings.

Self-contained on purpose (nothing from keras_ghost, no TensorFlow): `keras_ghost_cli.py`,
the console script's entry, loads this file by path before `keras_ghost` (whose
`__init__` imports TensorFlow) is imported, because TensorFlow's C++ side prints its lines
(CUDA, oneDNN, absl) at import, before any log level applies.
"""

import contextlib
import io
import os
import sys
import tempfile
import warnings


@contextlib.contextmanager
def native_stderr_hidden(enabled=True):
    """Sends what C/C++ code writes to file descriptor 2 (TensorFlow's absl lines before
    absl::InitializeLog, XNNPACK's and the converter's INFO lines) to a temporary file for
    the block, while Python's own stderr writes (progress, errors, tracebacks) still reach
    the terminal. Nested uses are harmless."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        python_on_fd2 = False  # e.g. pytest's capsys: Python's writes never reach fd 2
    saved = os.dup(2)
    log = tempfile.TemporaryFile()
    os.dup2(log.fileno(), 2)
    previous = sys.stderr
    if python_on_fd2:
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb"), encoding="utf-8",
                                      errors="replace", line_buffering=True, write_through=True)
    try:
        yield
    finally:
        if python_on_fd2:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)
        log.close()


def quiet_python_logs(verbose=False):
    """TensorFlow's C++ log level (before its import) and the UserWarnings Keras and
    TensorFlow raise about their own internals; absl's Python log once it is imported.
    `verbose` leaves everything as it is."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    for module in ("keras", "tensorflow", "tf_keras", "absl", "tensorflow_datasets", "h5py"):
        warnings.filterwarnings("ignore", module=module)
    if "absl.logging" in sys.modules:
        sys.modules["absl.logging"].set_verbosity("error")
