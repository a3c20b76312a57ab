"""`python -m keras_ghost.cli <command> ...`: the same as the `keras-ghost` script."""

import sys

from keras_ghost.cli import main

sys.exit(main())
