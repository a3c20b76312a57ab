"""C-Ghost plug-in: ghostify swaps convs for ghost modules on any functional model."""

import numpy as np
import pytest

import keras
from keras import layers

import keras_ghost
from keras_ghost import profile


@pytest.fixture(scope="module")
def resnet50():
    return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)


def test_resnet50_halves_params_and_macs(resnet50, capsys):
    ghosted = keras_ghost.ghostify(resnet50, ratio=2)
    assert ghosted.output.shape == resnet50.output.shape
    convs = [l.name for l in resnet50.layers if type(l) is layers.Conv2D]
    kept = [l.name for l in ghosted.layers if type(l) is layers.Conv2D and l.name in convs]
    assert kept == ["conv1_conv"]  # the stem; ResNet50's classifier is a Dense
    before, after = profile(resnet50), profile(ghosted)
    # Convs are ~all of ResNet50's MACs; s=2 halves them, plus the small cheap ops.
    assert 0.45 < after.macs / before.macs < 0.6
    assert 0.45 < after.params / before.params < 0.65
    assert "ghostify 'resnet50'" in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")
    assert np.isfinite(ghosted.predict(x, verbose=0)).all()


def test_untouched_layers_keep_their_weights(resnet50):
    ghosted = keras_ghost.ghostify(resnet50, verbose=False)
    for name in ("conv1_conv", "predictions", "conv1_bn"):
        for a, b in zip(resnet50.get_layer(name).get_weights(),
                        ghosted.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_ratio_4_and_skip_patterns(resnet50):
    ghosted = keras_ghost.ghostify(resnet50, ratio=4, skip=["conv5_*"], verbose=False)
    names = {l.name for l in ghosted.layers}
    assert "conv5_block1_1_conv" in names and "conv4_block1_1_conv" not in names
    assert "conv4_block1_1_conv_ghost_primary_conv" in names
    assert profile(ghosted).macs < profile(keras_ghost.ghostify(resnet50, verbose=False)).macs


def test_user_model_keeps_activation_and_skips_valid_convs():
    x = inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(x)
    x = layers.Conv2D(12, 3, padding="same", activation="relu", name="mid")(x)
    x = layers.Conv2D(12, 3, padding="valid", name="valid3x3")(x)  # would change the size
    x = layers.Conv2D(7, 1, strides=2, name="proj")(x)             # odd width is fine
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    outputs = layers.Conv2D(5, 1, name="classifier")(x)
    model = keras.Model(inputs, outputs)
    ghosted = keras_ghost.ghostify(model, skip_last=True, verbose=False)
    names = {l.name for l in ghosted.layers}
    assert {"stem", "valid3x3", "classifier"} <= names           # first, ineligible, last
    assert "mid_act" in names and "proj_ghost_concat" in names
    assert ghosted.get_layer("proj_ghost_concat").output.shape[-1] == 7
    assert ghosted.output.shape == model.output.shape
    loaded = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ghosted))
    assert len(loaded.layers) == len(ghosted.layers)


def test_clear_errors():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional"):
        keras_ghost.ghostify(Sub())
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, padding="same")])
    with pytest.raises(TypeError, match="functional"):
        keras_ghost.ghostify(model)
    inputs = keras.Input((8, 8, 3))
    tiny = keras.Model(inputs, layers.Conv2D(4, 3, padding="same")(inputs))  # only a stem
    with pytest.raises(ValueError, match="no Conv2D to replace"):
        keras_ghost.ghostify(tiny)
    with pytest.raises(ValueError, match="ratio >= 2"):
        keras_ghost.ghostify(tiny, ratio=1)
