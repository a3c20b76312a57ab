"""Input preprocessing of the reference weights (keras.applications style)."""

import numpy as np

from keras_ghost.models.registry import get_spec


def preprocess_input(x, model_name="ghostnet_100"):
    """Maps RGB pixels in [0, 255] to the normalization the variant was trained with
    (ImageNet mean/std of the reference weights). Not needed for models built with
    `include_preprocessing=True`, which do this inside the graph."""
    spec = get_spec(model_name)
    x = np.asarray(x, dtype="float32")
    return (x / 255.0 - np.asarray(spec.mean, "float32")) / np.asarray(spec.std, "float32")
