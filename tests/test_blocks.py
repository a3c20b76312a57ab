"""The public blocks work on any Keras tensor inside a user's functional model."""

import keras
import numpy as np
import pytest

from keras_ghost import layers as ghost_layers
from helpers import run_save_load


def test_blocks_compose_in_a_user_model(tmp_path):
    inputs = keras.Input((30, 22, 5))
    x = ghost_layers.ghost_module(inputs, 13, ratio=3, dw_size=5, name="g")
    x = ghost_layers.ghost_bottleneck(x, 24, 12, kernel_size=5, strides=2, se_ratio=0.25, dfc=True,
                                      name="b1")
    x = ghost_layers.ghost_bottleneck(x, 36, 12, name="b2")
    x = ghost_layers.squeeze_excite(x, 0.5, name="se")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    assert model.get_layer("g_concat").output.shape[-1] == 13
    assert model.get_layer("b1_add").output.shape[1:] == (15, 11, 12)
    assert model.get_layer("b2_add").input[1] is model.get_layer("b1_add").output  # identity
    assert model.get_layer("se_reduce").filters == 8  # make_divisible(12 * 0.5, 4)
    run_save_load(model, tmp_path)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 9), (8, 8)])
def test_dfc_gate_handles_small_and_odd_maps(shape):
    inputs = keras.Input((*shape, 4))
    out = ghost_layers.ghost_module(inputs, 8, dfc=True, name="m")
    model = keras.Model(inputs, out)
    y = model.predict(np.random.rand(2, *shape, 4).astype("float32"), verbose=0)
    assert y.shape == (2, *shape, 8) and np.isfinite(y).all()


def test_resize_nearest_like_follows_pytorch_rule():
    # PyTorch nearest: row i reads floor(i * in / out); 3 -> 7 gives 0 0 0 1 1 2 2.
    x = np.arange(3, dtype="float32").reshape(1, 3, 1, 1)
    like = np.zeros((1, 7, 1, 1), "float32")
    y = ghost_layers.ResizeNearestLike()([x, like])
    assert keras.ops.convert_to_numpy(y).ravel().tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_make_divisible_rule():
    assert ghost_layers.make_divisible(16 * 0.5) == 8
    assert ghost_layers.make_divisible(72 * 1.3) == 92  # 93.6 -> nearest multiple of 4
    assert ghost_layers.make_divisible(1) == 4  # at least the divisor
    assert ghost_layers.make_divisible(10, 8) == 16  # 8 would drop below 90% of 10
