#!/usr/bin/env python
"""`keras-ghost quality-gate` from a source checkout; the code is keras_ghost/cli/quality_gate.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's keras_ghost

if __name__ == "__main__":  # before keras_ghost (and TensorFlow) are imported
    import keras_ghost_cli

    sys.exit(keras_ghost_cli.main(["quality-gate", *sys.argv[1:]]))

from keras_ghost.cli.quality_gate import *  # noqa: E402,F401,F403  (its functions, for tests and scripts)
from keras_ghost.cli.quality_gate import main  # noqa: E402,F401
