"""What every command-line tool shares: one error wrapper, argument checks, quiet logs and
stage progress.

A user mistake ends in one `error: ...` line on stderr and exit status 2 (argparse's
usage-error status), without a traceback; Ctrl-C in one `interrupted` line and status 130.
Importing this module does not import TensorFlow; the checks run before the long work.
"""

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

from keras_ghost.cli.quiet import native_stderr_hidden, quiet_python_logs  # noqa: F401

USAGE_ERROR = 2
INTERRUPTED = 130


class UsageError(ValueError):
    """A bad argument or input file; the message names it and the fix."""


class CLIExit(SystemExit):
    """SystemExit with a status code and the one line already printed as its text, so a
    caller of `main(argv)` in the same process sees the message too."""

    def __init__(self, code, message):
        super().__init__(code)
        self.message = message

    def __str__(self):
        return self.message


def fail(message, code=USAGE_ERROR):
    """Prints `error: message` (one line) to stderr and exits with `code`."""
    line = f"error: {message}"
    print(line, file=sys.stderr, flush=True)
    raise CLIExit(code, line)


def failure_types():
    """Failures of the work itself that carry their own explanation (e.g. the QAT
    worker's error and log tail): reported without a traceback, exit status 1."""
    module = sys.modules.get("keras_ghost.quantization.api")
    return (module.QATError,) if module is not None else ()


def user_error_types():
    """The exceptions that mean bad input (reported in one line), not a bug."""
    types = [ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
             PermissionError]
    # Imported only where their modules already are: no TensorFlow import for this.
    for module, name in (("keras_ghost.weights.loading", "WeightsDownloadError"),
                         ("keras_ghost.export.arm.environment", "ArmSetupError")):
        if module in sys.modules:
            types.append(getattr(sys.modules[module], name))
    return tuple(types)


class Parser(argparse.ArgumentParser):
    """argparse with the tools' error form: one `error: ...` line, status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)")

    def add_logging_flags(self):
        """--verbose / --quiet: TensorFlow's log and the stage progress."""
        group = self.add_mutually_exclusive_group()
        group.add_argument("--verbose", action="store_true",
                           help="show TensorFlow's, absl's and Keras' log lines (hidden by default)")
        group.add_argument("--quiet", action="store_true",
                           help="print only the results, no stage progress")


def run(main, argv=None):
    """Runs `main(argv)` as a command: user errors and Ctrl-C end in one line; TF's
    native log is hidden unless `--verbose` is among the arguments. Returns main's result."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    quiet_python_logs(verbose)
    try:
        with native_stderr_hidden(not verbose):
            return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise CLIExit(INTERRUPTED, "interrupted") from None
    except CLIExit:
        raise
    except user_error_types() as e:
        fail(one_line(e))
    except failure_types() as e:
        fail(str(e), code=1)


def one_line(error):
    """An exception's message on one line (the library's messages are one sentence or two)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text


# ------------------------------------------------------------------------------ progress

class Progress:
    """Stage lines with their elapsed time on stderr (`convert ... 41.3 s`) and a
    progress bar for counted work; silent with `enabled=False` (--quiet)."""

    def __init__(self, enabled=True, stream=None):
        self.enabled = enabled
        self._stream = stream
        self._open = None  # the stage whose line waits for its time

    @property
    def stream(self):
        return self._stream or sys.stderr  # the current one: run() may have swapped it

    def _print(self, text, end="\n"):
        if self.enabled:
            self.stream.write(text + end)
            self.stream.flush()

    @contextlib.contextmanager
    def stage(self, name, detail="", prints=False):
        """A block of work: `name detail ...` when it starts, the seconds when it ends
        (on the same line unless something was printed in between; `prints`: the work
        prints its own lines, e.g. Keras' fit progress)."""
        start = time.perf_counter()
        self._print(f"{name:<9} {detail}".rstrip() + " ...", end="\n" if prints else "")
        self._open = None if prints else name
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            if self._open == name:  # nothing printed since: finish the same line
                self._print(f" {seconds:.1f} s")
            else:
                self._print(f"{name:<9} done in {seconds:.1f} s")
            self._open = None

    def bar(self, label, width=30):
        """A `callback(done, total)` drawing `label [=====>    ] done/total`; on a
        terminal it redraws in place, elsewhere it prints at each quarter."""
        state = {"quarter": -1, "start": time.perf_counter()}
        tty = self.enabled and getattr(self.stream, "isatty", lambda: False)()

        def update(done, total):
            if not self.enabled or total <= 0:
                return
            if self._open:
                self._print("")
                self._open = None
            filled = int(width * done / total)
            arrow = ">" if filled < width else ""
            line = (f"  {label} [{'=' * filled}{arrow}{' ' * (width - filled - len(arrow))}] "
                    f"{done}/{total} {time.perf_counter() - state['start']:.1f} s")
            if tty:
                self._print("\r" + line, end="\n" if done >= total else "")
                return
            quarter = math.floor(4 * done / total)
            if quarter > state["quarter"] and (quarter > 0 or done == 0):
                state["quarter"] = quarter
                self._print(line)

        return update


# ---------------------------------------------------------------------- argument checks

def int_at_least(minimum):
    """An argparse type: a whole number >= `minimum`."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def number_in(low, high, low_open=False, high_open=False, example=None):
    """An argparse type: a number in [low, high] (an open end excludes its bound)."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or value > high or (
                low_open and value == low) or (high_open and value == high):
            span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            hint = f" (e.g. {example})" if example is not None else ""
            raise argparse.ArgumentTypeError(f"must be in {span}{hint}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
fraction = number_in(0.0, 1.0, example=0.98)


def positive_number(text):
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number (e.g. 0.5), got {text}")
    return value


def check_output_file(path, flag, suffixes=None):
    """`path` as a Path if a file can be written there: not a folder, the right suffix,
    its folder creatable and writable. Raises UsageError naming `flag`."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file path inside it "
                         f"(e.g. {path / ('model' + (suffixes[0] if suffixes else ''))})")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)} "
                         f"(e.g. {path.with_suffix(suffixes[0]).name})")
    check_output_dir(path.parent, flag, of=path)
    return path


def check_output_dir(folder, flag, of=None):
    """`folder` as a Path if it is, or can be made, a writable folder; raises UsageError."""
    folder = Path(folder)
    name = f"{flag} {of if of is not None else folder}"
    existing = folder.absolute()
    while not existing.exists():  # the first part of the path that is already there
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{name}: {existing} is a file, not a folder; choose a path "
                         "whose folders are folders")
    try:  # a real write: os.access says yes to root on a mount that takes no files
        with tempfile.TemporaryFile(dir=existing, prefix=".keras_ghost_write_check."):
            pass
    except OSError as e:
        raise UsageError(f"{name}: cannot write in {existing} ({e.strerror}); choose a "
                         "folder you can write to") from None
    return folder


def check_input_file(path, flag, suffixes=None):
    """`path` as a Path if it is an existing file (with one of `suffixes`)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise UsageError(f"{flag} {path} is not a file")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: expected a {' or '.join(suffixes)} file")
    return path


def check_model_name(name, flag="--model", extra=()):
    """A registered variant (or one of `extra`); raises UsageError with close names."""
    import difflib

    from keras_ghost.models.registry import list_models

    names = list(list_models()) + list(extra)
    if name in names:
        return name
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"{flag} {name}: unknown model{hint} (keras_ghost.list_models() lists "
                     f"the {len(names)} names)")


def default_data_dir():
    """TFDS data dir default: `shared/tfds` beside a source checkout when it is there
    (this project's layout), else TFDS' own default (None)."""
    root = Path(__file__).resolve().parents[2]
    candidate = root.parent / "shared" / "tfds"
    if (root / "pyproject.toml").is_file() and candidate.is_dir():
        return candidate
    return None
