#!/usr/bin/env python
"""`keras-ghost qat` from a source checkout; the code is keras_ghost/cli/qat.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's keras_ghost

from keras_ghost.cli.qat import *  # noqa: E402,F401,F403  (its functions, for tests and scripts)
from keras_ghost.cli.qat import main  # noqa: E402

if __name__ == "__main__":
    main()
