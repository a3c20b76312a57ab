"""Deploy-time graph optimization: same outputs, the promised rewrites, on every variant."""

import numpy as np
import pytest

import keras
from keras import layers

import keras_ghost
from keras_ghost.export.optimize import check_equivalent, optimize_for_inference
from helpers import randomize_bn, registry_sweep



def _kinds(model):
    kinds = {}
    for layer in model.layers:
        kinds[type(layer).__name__] = kinds.get(type(layer).__name__, 0) + 1
    return kinds


def _max_diff(a, b, shape, seed=1):
    x = np.random.default_rng(seed).standard_normal((2, *shape)).astype("float32")
    return float(np.abs(np.asarray(a(x)) - np.asarray(b(x))).max())


@pytest.mark.parametrize("name", registry_sweep(everything=False))
def test_every_variant_keeps_its_outputs(name):
    # Odd and even sizes: the DFC gate's resize and the stride-2 paddings differ on them.
    shape = (57, 64, 3)
    model = randomize_bn(keras_ghost.create_model(name, input_shape=shape))
    optimized = optimize_for_inference(model, merge_ghost_min_size=16, verify=False)
    assert _max_diff(model, optimized, shape) < 1e-4
    kinds = _kinds(optimized)
    assert "BatchNormalization" not in kinds and "Dropout" not in kinds
    assert "AveragePooling2D" not in kinds and "ResizeNearestLike" not in kinds
    family = keras_ghost.get_spec(name).family
    if family in ("GhostNet", "GhostNetV2"):
        assert kinds.get("Concatenate", 0) < _kinds(model)["Concatenate"]  # merged modules
    if family in ("GhostNet", "GhostNetV2", "AsymmNetLarge", "AsymmNetSmall"):
        # Strided depthwise convs after a ghost / reuse concat run per part, the concat
        # after them.
        assert any(l.name.endswith("_dw_conv_part1") for l in optimized.layers)
    if family in ("AsymmNetLarge", "AsymmNetSmall"):
        # Hard-swish split into 1x1 depthwise conv + MUL (XNNPACK runs no int8 HARD_SWISH).
        assert not any(isinstance(l, layers.Activation) and l.activation.__name__ == "hard_silu"
                       for l in optimized.layers)
    # No standalone ReLU after a concat (XNNPACK runs no int8 RELU): fused into a conv.
    relus = [l for l in optimized.layers if isinstance(l, (layers.ReLU, layers.Activation))]
    assert not any(isinstance(l.input._keras_history.operation, layers.Concatenate)
                   for l in relus)


def test_remove_pad_option_is_exact_on_odd_and_even_sizes():
    for shape in [(64, 64, 3), (65, 63, 3)]:
        model = randomize_bn(keras_ghost.GhostNet(width=0.5, input_shape=shape))
        optimized = optimize_for_inference(model, remove_pad=True, verify=False)
        assert "ZeroPadding2D" not in _kinds(optimized)
        assert _max_diff(model, optimized, shape) < 1e-4


def test_default_removes_only_the_pads_that_cost_nothing():
    # 65 -> 33 -> 17 -> 9 -> 5: every stride-2 conv sees an odd size, where "same" pads
    # symmetrically; on 64 every one would need a grown kernel, so all PADs stay.
    odd = randomize_bn(keras_ghost.GhostNet(width=0.5, input_shape=(65, 65, 3)))
    optimized = optimize_for_inference(odd, verify=False)
    assert "ZeroPadding2D" not in _kinds(optimized)
    assert _max_diff(odd, optimized, (65, 65, 3)) < 1e-4
    even = keras_ghost.GhostNet(width=0.5, input_shape=(64, 64, 3))
    kept = {l.name.split("_part")[0] for l in optimize_for_inference(even).layers
            if isinstance(l, layers.ZeroPadding2D)}  # split depthwise convs pad each part
    assert kept == {l.name for l in even.layers if isinstance(l, layers.ZeroPadding2D)}
    assert "ZeroPadding2D" in _kinds(optimize_for_inference(odd, remove_pad=False))


def test_hard_sigmoid_gate_scale_moves_into_the_convs():
    model = keras_ghost.GhostNet(width=0.5, input_shape=(64, 64, 3))
    optimized = optimize_for_inference(randomize_bn(model))
    gates = [l for l in optimized.layers if l.name.endswith("_se_gate")]
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
    return randomize_bn(keras.Model(inputs, out))


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


def test_relu_after_concat_and_bn_after_dense():
    inputs = keras.Input((12, 12, 4))
    a = layers.Conv2D(6, 3, padding="same")(inputs)
    b = layers.DepthwiseConv2D(3, padding="same")(a)
    x = layers.ReLU(name="after_concat")(layers.Concatenate()([a, b]))  # nothing to fuse into
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.BatchNormalization()(layers.Dense(5)(x))
    model = randomize_bn(keras.Model(inputs, layers.Dense(3)(x)))
    optimized = optimize_for_inference(model)
    kinds = _kinds(optimized)
    assert "BatchNormalization" not in kinds and "ReLU" not in kinds
    assert isinstance(optimized.get_layer("after_concat"), layers.DepthwiseConv2D)
    assert _max_diff(model, optimized, (12, 12, 4)) < 1e-5
    from keras_ghost import export

    calibration = np.random.default_rng(0).standard_normal((8, 12, 12, 4)).astype("float32")
    content = export.convert(model, "int8", calibration=calibration)
    assert "RELU" not in export.op_histogram(content)
    assert export.op_histogram(content, xnnpack=True)["DELEGATE"] == 1
