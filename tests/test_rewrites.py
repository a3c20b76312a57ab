"""Each deploy-time rewrite alone: it replaces its pattern, leaves near misses alone, and
keeps the outputs. The pipeline's order and settings are checked at the end."""

import numpy as np
import pytest

import keras
from keras import layers

from keras_ghost.export import apply_rewrites, deploy_pipeline, optimize_for_inference, rewrites
from keras_ghost.layers.shape_ops import ChannelSlice, ResizeNearestLike, UpsampledMultiply
from helpers import randomize_bn


def _kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def _check(rewrite, model, atol=1e-5):
    """Applies `rewrite` alone; returns the new model after checking it kept the outputs."""
    shape = model.inputs[0].shape[1:]
    x = np.random.default_rng(3).standard_normal((2, *shape)).astype("float32")
    new = rewrite(model)
    assert new is not model, f"{rewrite!r} matched nothing"
    np.testing.assert_allclose(np.asarray(new(x)), np.asarray(model(x)), atol=atol, rtol=1e-5)
    return new


def _model(build, shape=(12, 12, 4)):
    inputs = keras.Input(shape)
    return randomize_bn(keras.Model(inputs, build(inputs)))


def test_drop_training_layers():
    model = _model(lambda x: layers.Dropout(0.5)(layers.GaussianNoise(1.0)(layers.Conv2D(3, 1)(x))))
    new = _check(rewrites.DropTrainingLayers(), model)
    assert _kinds(new) == ["InputLayer", "Conv2D"]


@pytest.mark.parametrize("conv", [lambda: layers.Conv2D(6, 3, use_bias=False),
                                  lambda: layers.DepthwiseConv2D(3, depth_multiplier=2),
                                  lambda: layers.Dense(6)])
def test_fold_batch_norm(conv):
    model = _model(lambda x: layers.ReLU()(layers.BatchNormalization()(conv()(x))))
    new = _check(rewrites.FoldBatchNorm(), model)
    assert "BatchNormalization" not in _kinds(new)


def test_fold_batch_norm_near_misses():
    def build(x):
        a = layers.Conv2D(6, 3, activation="relu")(x)  # an activation before the BN
        b = layers.Conv2D(6, 3)(x)
        side = layers.Conv2D(6, 1)(b)                    # a second user of b
        return layers.Add()([layers.BatchNormalization()(a), layers.BatchNormalization()(b), side])

    model = _model(build)
    assert rewrites.FoldBatchNorm()(model) is model


@pytest.mark.parametrize("size, grow, absorbed", [(13, False, True), (12, False, False),
                                                  (12, True, True)])
def test_absorb_padding(size, grow, absorbed):
    model = _model(lambda x: layers.Conv2D(4, 3, strides=2)(layers.ZeroPadding2D(1)(x)),
                   shape=(size, size, 3))
    rewrite = rewrites.AbsorbPadding(grow_kernels=grow)
    if not absorbed:  # stride 2 on an even size needs a grown kernel
        assert rewrite(model) is model
        return
    new = _check(rewrite, model)
    assert "ZeroPadding2D" not in _kinds(new)
    assert new.layers[-1].kernel_size == ((4, 4) if size % 2 == 0 else (3, 3))


def _se_gate(x, activation="hard_sigmoid"):
    gate = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Activation(activation)(layers.Conv2D(x.shape[-1], 1)(gate))
    return layers.Multiply()([x, gate])


def test_fold_hard_sigmoid():
    model = _model(lambda x: layers.Conv2D(5, 1)(_se_gate(layers.Conv2D(6, 3)(x))))
    new = _check(rewrites.FoldHardSigmoid(), model)
    relu6 = [l for l in new.layers if isinstance(l, layers.ReLU)]
    assert len(relu6) == 1 and relu6[0].max_value == 6.0


def test_fold_hard_sigmoid_needs_convs_after_the_gate():
    model = _model(lambda x: layers.Flatten()(_se_gate(layers.Conv2D(6, 3)(x))))
    assert rewrites.FoldHardSigmoid()(model) is model


def test_split_hard_swish_folds_into_the_readers():
    def build(x):
        y = layers.Activation("hard_silu")(layers.Conv2D(6, 3, padding="same")(x))
        y = layers.Concatenate()([y, layers.Conv2D(2, 1)(x)])  # the / 6 on 6 of 8 channels
        return layers.Dense(3)(layers.GlobalAveragePooling2D()(layers.MaxPooling2D()(y)))

    new = _check(rewrites.SplitHardSwish(), _model(build))
    assert not any(getattr(l, "activation", None) is not None
                   and l.activation.__name__ == "hard_silu" for l in new.layers)
    assert not any(l.name.endswith("_div6") for l in new.layers)


def test_split_hard_swish_keeps_a_constant_scale_before_an_add():
    def build(x):
        y = layers.Conv2D(4, 1)(x)
        return layers.Add()([layers.Activation("hard_silu")(y), x])

    new = _check(rewrites.SplitHardSwish(), _model(build))
    assert any(l.name.endswith("_div6") for l in new.layers)


def test_upsampled_gate_multiply_and_pool_as_depthwise():
    def build(x):
        gate = layers.AveragePooling2D(2)(x)
        gate = layers.Activation("sigmoid")(layers.Conv2D(4, 1)(gate))
        return layers.Multiply()([x, ResizeNearestLike()([gate, x])])

    model = _model(build, shape=(13, 12, 4))
    new = _check(rewrites.UpsampledGateMultiply(), model)
    assert "ResizeNearestLike" not in _kinds(new)
    assert any(isinstance(l, UpsampledMultiply) for l in new.layers)
    new = _check(rewrites.PoolAsDepthwise(), new)
    assert "AveragePooling2D" not in _kinds(new)


def test_pool_as_depthwise_leaves_overlapping_pools():
    model = _model(lambda x: layers.AveragePooling2D(3, strides=2)(x))
    assert rewrites.PoolAsDepthwise()(model) is model


def test_move_concat_after_depthwise():
    def build(x):
        y = layers.Concatenate()([layers.Conv2D(3, 1)(x), layers.Conv2D(5, 1)(x)])
        y = layers.DepthwiseConv2D(3, strides=2)(layers.ZeroPadding2D(1)(y))
        return layers.ReLU()(y)

    new = _check(rewrites.MoveConcatAfterDepthwise(), _model(build))
    assert [l.name.split("_")[-1] for l in new.layers if "_part" in l.name].count("part1") == 3
    assert isinstance(new.layers[-1], layers.Concatenate)  # last, on the small map


def test_move_concat_needs_a_strided_depthwise_conv():
    def build(x):
        y = layers.Concatenate()([layers.Conv2D(3, 1)(x), layers.Conv2D(5, 1)(x)])
        return layers.DepthwiseConv2D(3, padding="same")(y)

    model = _model(build)
    assert rewrites.MoveConcatAfterDepthwise()(model) is model


def _ghost_module(x, out=10, init=6):
    primary = layers.ReLU()(layers.Conv2D(init, 1)(x))
    cheap = layers.ReLU()(layers.DepthwiseConv2D(3, padding="same")(primary))
    return layers.Concatenate()([primary, ChannelSlice(out - init)(cheap)])


@pytest.mark.parametrize("size, merged", [(16, True), (15, False)])
def test_merge_ghost_concat(size, merged):
    model = _model(_ghost_module, shape=(size, size, 4))
    rewrite = rewrites.MergeGhostConcat(min_size=16)
    if not merged:
        assert rewrite(model) is model
        return
    new = _check(rewrite, model)
    assert "Concatenate" not in _kinds(new) and "ChannelSlice" not in _kinds(new)
    assert new.layers[1].filters == 10  # the primary conv emits the copies too


def test_merge_ghost_concat_needs_the_same_activation_on_both_halves():
    def build(x):
        primary = layers.ReLU()(layers.Conv2D(6, 1)(x))
        cheap = layers.DepthwiseConv2D(3, padding="same")(primary)
        return layers.Concatenate()([primary, cheap])

    model = _model(build, shape=(16, 16, 4))
    assert rewrites.MergeGhostConcat(min_size=1)(model) is model


def test_fuse_relu_after_concat():
    def build(x):
        y = layers.Concatenate()([layers.Conv2D(3, 1)(x), x])
        return layers.ReLU(6.0, name="after")(y)

    new = _check(rewrites.FuseReluAfterConcat(), _model(build))
    after = new.get_layer("after")
    assert isinstance(after, layers.DepthwiseConv2D) and after.activation.__name__ == "relu6"


def test_pipeline_order_and_settings():
    names = [type(step).__name__ for step in deploy_pipeline()]
    assert names == ["DropTrainingLayers", "FuseParallelBranches", "FoldBatchNorm", "AbsorbPadding", "FoldHardSigmoid",
                     "SplitHardSwish", "UpsampledGateMultiply", "PoolAsDepthwise",
                     "MoveConcatAfterDepthwise", "MergeGhostConcat", "FuseReluAfterConcat"]
    off = [type(step).__name__ for step in deploy_pipeline(
        remove_pad=False, merge_ghost_min_size=None, split_hard_swish=False,
        fold_hard_sigmoid=False, move_concat=False, reparameterize=False)]
    assert off == ["DropTrainingLayers", "FoldBatchNorm", "UpsampledGateMultiply",
                   "PoolAsDepthwise", "FuseReluAfterConcat"]
    assert deploy_pipeline(remove_pad=True)[3] == rewrites.AbsorbPadding(grow_kernels=True)


def test_apply_rewrites_names_a_rewrite_that_breaks_the_model():
    class Broken(rewrites.Rewrite):
        def find(self, graph):
            def double(layer, x):
                return layers.Rescaling(2.0, name=layer.name)(x)
            return {layer.name: double for layer in graph.layers("ReLU")}

    model = _model(lambda x: layers.ReLU()(layers.Conv2D(3, 1)(x)))
    with pytest.raises(AssertionError, match="Broken"):
        apply_rewrites(model, [rewrites.FoldBatchNorm(), Broken()], verify_each=True)


def test_optimize_copies_a_model_with_nothing_to_rewrite():
    model = _model(lambda x: layers.Conv2D(3, 1)(x))
    optimized = optimize_for_inference(model)
    assert optimized is not model and optimized.layers[1] is not model.layers[1]
    optimized.layers[1].kernel.assign(np.zeros(optimized.layers[1].kernel.shape))
    assert np.abs(model.layers[1].get_weights()[0]).max() > 0
