#!/usr/bin/env python
"""`keras-ghost predict` from a source checkout; the code is keras_ghost/cli/predict.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's keras_ghost

if __name__ == "__main__":  # before keras_ghost (and TensorFlow) are imported
    import keras_ghost_cli

    sys.exit(keras_ghost_cli.main(["predict", *sys.argv[1:]]))

from keras_ghost.cli.predict import *  # noqa: E402,F401,F403  (its functions, for tests and scripts)
from keras_ghost.cli.predict import main  # noqa: E402,F401
