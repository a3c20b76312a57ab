"""Quantization-aware training and pruning with tfmot, isolated in a worker process.

tfmot 0.8 works on tf_keras (Keras 2) models only and switches the whole process to
tf_keras when imported. So the public functions here hand the Keras 3 model to
`python -m keras_ghost.quantization.worker`, which translates it to tf_keras (same
graph and weights), quantizes, prunes, trains and converts there; the caller's process
never imports tfmot or tf_keras. The layer rules are in `rules.py`.
"""

from keras_ghost.quantization.api import (QATError, check_translation, finetune,
                                          quantize_aware, run_worker)
from keras_ghost.quantization.rules import UnsupportedLayerError, check_supported

__all__ = ["QATError", "UnsupportedLayerError", "check_supported", "check_translation",
           "finetune", "quantize_aware", "run_worker"]
