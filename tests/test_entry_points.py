"""Every registered variant through the entry points users call: the model builds of
tflite/convert.py and training/train.py, from their own flags to the built model.

Building only: the conversions and training runs themselves are costly and are sampled in
tests/test_export.py and tests/test_training.py.
"""

import keras
import numpy as np
import pytest

import keras_ghost
from helpers import load_script, registry_sweep

CONVERT = load_script("tflite/convert.py")
TRAIN = load_script("training/train.py")
CONVERT_SIZE = 64  # above every variant's minimum (32 at most), and cheap to build
CIFAR10_CLASSES = 10  # the dataset of train.py's default recipe
DROPOUT = 0.1


def check_convert_build(name):
    """convert.py --include-preprocessing: raw pixels in, normalized with the variant's
    mean/std inside the graph, logits out."""
    spec = keras_ghost.get_spec(name)
    args = CONVERT.parse_args(["--int8", "--model", name, "--input-size", str(CONVERT_SIZE),
                               "--include-preprocessing"])
    _, input_shape, model = CONVERT.build_model(args)
    assert model.name == name
    assert input_shape == model.input_shape[1:] == (CONVERT_SIZE, CONVERT_SIZE, 3)
    config = model.get_layer("preprocess").get_config()
    np.testing.assert_allclose(config["mean"], 255 * np.array(spec.mean), rtol=1e-6)
    np.testing.assert_allclose(config["variance"], (255 * np.array(spec.std)) ** 2, rtol=1e-6)
    assert model.layers[-1].get_config()["activation"] == "linear"


def check_train_build(name):
    """train.py with its defaults (the cifar10 recipe) and --dropout: the model_fn the
    trainer calls gives logits for the dataset's classes, with the dropout before them."""
    args = TRAIN.parse_args(["--model", name, "--dropout", str(DROPOUT)])
    _, recipe, image_size = TRAIN.load_config(args)
    model = TRAIN.model_builder(args, image_size)(recipe, CIFAR10_CLASSES)
    assert model.name == name
    assert model.input_shape == (None, image_size, image_size, 3)
    assert model.output_shape == (None, CIFAR10_CLASSES)
    dropout, classifier = model.layers[-2:]
    assert isinstance(dropout, keras.layers.Dropout) and dropout.rate == DROPOUT
    assert isinstance(classifier, keras.layers.Dense)
    assert classifier.get_config()["activation"] == "linear"


@pytest.mark.parametrize("name", registry_sweep())
def test_cli_model_builds(name):
    check_convert_build(name)
    check_train_build(name)
    keras.backend.clear_session()  # ~40 models in one process: free each one's graph state
