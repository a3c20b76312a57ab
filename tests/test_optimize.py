"""Deploy-time graph optimization: same outputs, the promised rewrites, on every variant."""

import numpy as np
import pytest

import keras
from keras import layers

import keras_ghost
from keras_ghost.export.optimize import check_equivalent, optimize_for_inference


def _randomize_bn(model, seed=0):
    """BN statistics away from the identity, so a wrong fold shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2.0, var.shape)])
    return model


def _kinds(model):
    kinds = {}
    for layer in model.layers:
        kinds[type(layer).__name__] = kinds.get(type(layer).__name__, 0) + 1
    return kinds


def _max_diff(a, b, shape, seed=1):
    x = np.random.default_rng(seed).standard_normal((2, *shape)).astype("float32")
    return float(np.abs(np.asarray(a(x)) - np.asarray(b(x))).max())


@pytest.mark.parametrize("name", keras_ghost.list_models())
def test_every_variant_keeps_its_outputs(name):
    # Odd and even sizes: the DFC gate's resize and the stride-2 paddings differ on them.
    shape = (57, 64, 3)
    model = _randomize_bn(keras_ghost.create_model(name, input_shape=shape))
    optimized = optimize_for_inference(model, merge_ghost_min_size=16, verify=False)
    assert _max_diff(model, optimized, shape) < 1e-4
    kinds = _kinds(optimized)
    assert "BatchNormalization" not in kinds and "Dropout" not in kinds
    assert "AveragePooling2D" not in kinds and "ResizeNearestLike" not in kinds
    assert kinds.get("Concatenate", 0) < _kinds(model)["Concatenate"]  # merged ghost modules
    # Strided depthwise convs after a ghost concat run per part, the concat after them.
    assert any(l.name.endswith(".dw.conv.part1") for l in optimized.layers)
    assert optimized.count_params() < model.count_params()


def test_remove_pad_option_is_exact_on_odd_and_even_sizes():
    for shape in [(64, 64, 3), (65, 63, 3)]:
        model = _randomize_bn(keras_ghost.GhostNet(width=0.5, input_shape=shape))
        optimized = optimize_for_inference(model, remove_pad=True, verify=False)
        assert "ZeroPadding2D" not in _kinds(optimized)
        assert _max_diff(model, optimized, shape) < 1e-4


def test_default_removes_only_the_pads_that_cost_nothing():
    # 65 -> 33 -> 17 -> 9 -> 5: every stride-2 conv sees an odd size, where "same" pads
    # symmetrically; on 64 every one would need a grown kernel, so all PADs stay.
    odd = _randomize_bn(keras_ghost.GhostNet(width=0.5, input_shape=(65, 65, 3)))
    optimized = optimize_for_inference(odd, verify=False)
    assert "ZeroPadding2D" not in _kinds(optimized)
    assert _max_diff(odd, optimized, (65, 65, 3)) < 1e-4
    even = keras_ghost.GhostNet(width=0.5, input_shape=(64, 64, 3))
    kept = {l.name.split(".part")[0] for l in optimize_for_inference(even).layers
            if isinstance(l, layers.ZeroPadding2D)}  # split depthwise convs pad each part
    assert kept == {l.name for l in even.layers if isinstance(l, layers.ZeroPadding2D)}
    assert "ZeroPadding2D" in _kinds(optimize_for_inference(odd, remove_pad=False))


def test_hard_sigmoid_gate_scale_moves_into_the_convs():
    model = keras_ghost.GhostNet(width=0.5, input_shape=(64, 64, 3))
    optimized = optimize_for_inference(_randomize_bn(model))
    gates = [l for l in optimized.layers if l.name.endswith(".se.gate")]
    assert gates and all(isinstance(g, layers.ReLU) and g.max_value == 6.0 for g in gates)


def _user_model():
    """A user graph: the folds must apply only where they are valid."""
    x = inputs = keras.Input((20, 20, 4))
    y = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    bn = layers.BatchNormalization()(y)
    z = layers.Activation("relu")(bn)
    side = layers.Conv2D(8, 1)(y)                  # the conv output has two users: no fold
    z = layers.Add()([z, side])
    gate = layers.GlobalAveragePooling2D(keepdims=True)(z)
    gate = layers.Activation("hard_sigmoid")(layers.Conv2D(8, 1)(gate))
    z = layers.Multiply()([z, gate])
    out = layers.Dense(3)(layers.Flatten()(z))     # gate feeds a Flatten: no /6 fold
    return _randomize_bn(keras.Model(inputs, out))


def test_user_model_folds_only_where_valid():
    model = _user_model()
    optimized = optimize_for_inference(model)
    assert "BatchNormalization" in _kinds(optimized)
    assert any(isinstance(l, layers.Activation) and l.activation.__name__ == "hard_sigmoid"
               for l in optimized.layers)
    assert _max_diff(model, optimized, (20, 20, 4)) < 1e-5


def test_check_equivalent_catches_a_wrong_graph():
    model = _user_model()
    other = keras.models.clone_model(model)  # fresh random weights
    with pytest.raises(AssertionError, match="changed the outputs"):
        check_equivalent(model, other)


def test_rejects_subclassed_models():
    class Tiny(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional"):
        optimize_for_inference(Tiny())
