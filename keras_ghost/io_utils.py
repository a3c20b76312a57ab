"""Atomic file output: a reader never sees a half-written model, report or cache."""

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside `path` to write to; renames it to `path` when the
    block succeeds and deletes it when the block fails. `suffix` is for writers that
    insist on a file extension (e.g. `model.save` wants `.keras`, `np.savez` adds `.npz`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(data, path):
    """Writes bytes, text or a JSON-able object to `path` atomically; returns the path."""
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, (bytes, bytearray)):
        data = (json.dumps(data, indent=2) + "\n").encode()
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
