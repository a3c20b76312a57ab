"""`keras_ghost.reparameterize` as a general rewrite: users' own RepVGG / MobileOne-style
functional models built from plain Keras layers fuse to single convs with the same outputs;
what does not match is left alone."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_ghost
from keras_ghost.reparam import fusable_sums
from helpers import randomize_bn


def _bn(x, name):
    return layers.BatchNormalization(name=name)(x)


def repvgg_block(x, filters, strides, name):
    """RepVGG (Ding et al. 2021): 3x3 conv + BN, 1x1 conv + BN, BN identity where shapes
    allow, summed, ReLU; Keras "same" padding (asymmetric at stride 2 on even sizes)."""
    parts = [_bn(layers.Conv2D(filters, 3, strides, padding="same", use_bias=False,
                               name=f"{name}_3x3")(x), f"{name}_3x3_bn"),
             _bn(layers.Conv2D(filters, 1, strides, padding="same", use_bias=False,
                               name=f"{name}_1x1")(x), f"{name}_1x1_bn")]
    if strides == 1 and x.shape[-1] == filters:
        parts.append(_bn(x, f"{name}_id"))
    y = layers.Add(name=f"{name}_add")(parts)
    return layers.ReLU(name=f"{name}_relu")(y)


def mobileone_depthwise(x, k, branches, name):
    """MobileOne's depthwise stage: `branches` k x k depthwise conv + BN, a 1x1 depthwise
    scale branch, a BN skip; written as nested two-input Adds, PyTorch-style padding."""
    padded = [layers.ZeroPadding2D(k // 2, name=f"{name}_pad{i}")(x) for i in range(branches)]
    parts = [_bn(layers.DepthwiseConv2D(k, name=f"{name}_dw{i}", use_bias=False)(p),
                 f"{name}_dw{i}_bn") for i, p in enumerate(padded)]
    parts.append(_bn(layers.DepthwiseConv2D(1, use_bias=False, name=f"{name}_scale")(x),
                     f"{name}_scale_bn"))
    parts.append(_bn(x, f"{name}_skip"))
    y = parts[0]
    for i, p in enumerate(parts[1:]):
        y = layers.Add(name=f"{name}_sum{i}")([y, p])
    return layers.Activation("relu", name=f"{name}_relu")(y)


def user_model(size):
    inputs = keras.Input((*size, 3))
    x = repvgg_block(inputs, 16, 2, "s1")      # stride 2, no identity
    x = repvgg_block(x, 16, 1, "s2")           # with the BN identity
    x = mobileone_depthwise(x, 3, 2, "dw")
    # A grouped conv with bias next to a plain identity (no BN) and a 1x1 with bias.
    g = layers.Conv2D(16, 3, padding="same", groups=4, name="g_3x3")(x)
    p = layers.Conv2D(16, 1, groups=4, name="g_1x1")(x)
    x = layers.Add(name="g_add")([g, p, x])
    # A residual: its branches are not of one input, so it stays.
    r = layers.Conv2D(16, 3, padding="same", name="res_conv")(x)
    r = _bn(r, "res_bn")
    x = layers.Add(name="res_add")([layers.ReLU(name="res_relu")(r), x])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(5, name="logits")(x), name="user_repvgg")


@pytest.mark.parametrize("size", [(32, 32), (33, 27)])
def test_user_repvgg_mobileone_model_fuses(size):
    keras.utils.set_random_seed(1)
    model = randomize_bn(user_model(size))
    assert fusable_sums(model) == ["s1_add", "s2_add", "dw_sum2", "g_add"]
    deployed = keras_ghost.reparameterize(model)
    kinds = [type(layer).__name__ for layer in deployed.layers]
    # Left: the residual's Add and BN only.
    assert kinds.count("Add") == 1 and kinds.count("BatchNormalization") == 1
    names = {layer.name for layer in deployed.layers}
    assert {"s1_conv", "s2_conv", "g_conv", "res_conv", "res_bn"} <= names
    assert "dw_sum2_conv" in names  # a sum not named `X_add` gives `{name}_conv`
    x = np.random.default_rng(0).standard_normal((3, *size, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    actual = np.asarray(deployed(x, training=False))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(actual, expected, atol=1e-5 * np.abs(expected).max(), rtol=0)
    # Fewer parameters: each sum is one kernel and one bias now.
    assert keras_ghost.profile(deployed).params < keras_ghost.profile(model).params


def test_any_size_model_with_stride_one_branches():
    """"same" stride-1 padding does not depend on the size: fusable without a shape."""
    inputs = keras.Input((None, None, 8))
    y = repvgg_block(inputs, 8, 1, "b")
    model = randomize_bn(keras.Model(inputs, y))
    deployed = keras_ghost.reparameterize(model)
    assert [type(layer).__name__ for layer in deployed.layers] == ["InputLayer", "Conv2D", "ReLU"]
    x = np.random.default_rng(1).standard_normal((1, 13, 9, 8)).astype("float32")
    np.testing.assert_allclose(deployed.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


def test_what_does_not_match_is_left_alone():
    inputs = keras.Input((16, 16, 4))
    # Different strides; a branch used elsewhere too; kernels that do not nest ((1, 3) vs
    # (3, 1)) are not summed into one.
    a = layers.Add(name="strides_add")([layers.Conv2D(4, 3, 2, padding="same")(inputs),
                                        layers.Conv2D(4, 3, 2, padding="same")(inputs)])
    shared = layers.Conv2D(4, 1, name="shared")(inputs)
    b = layers.Add(name="shared_add")([shared, layers.Conv2D(4, 3, padding="same")(inputs)])
    c = layers.Add(name="cross_add")([layers.Conv2D(4, (1, 3), padding="same")(inputs),
                                      layers.Conv2D(4, (3, 1), padding="same")(inputs)])
    d = layers.Add(name="act_add")([layers.Conv2D(4, 1, activation="relu")(inputs),
                                    inputs])
    model = keras.Model(inputs, [a, layers.Concatenate()([b, shared, c, d])])
    # Only the stride-2 pair fuses (equal strides, nested kernels); the rest stay.
    assert fusable_sums(model) == ["strides_add"]
    deployed = keras_ghost.reparameterize(model)
    assert {"shared_add", "cross_add", "act_add"} <= {layer.name for layer in deployed.layers}


def test_model_without_sums_is_an_equal_copy():
    model = keras_ghost.GhostNet(width=0.5, input_shape=(32, 32, 3), classes=3)
    assert fusable_sums(model) == []
    copy = keras_ghost.reparameterize(model)
    assert copy is not model and len(copy.layers) == len(model.layers)


def test_not_a_functional_model():
    with pytest.raises(TypeError, match="functional Keras model"):
        keras_ghost.reparameterize(keras.Sequential([layers.Dense(2)]))


def test_ghostnetv3_deployed_form_equals_training_form():
    """Inference mode, randomized BN, an odd non-square size (stride-2 dw branches pad
    like PyTorch: the 1x1 stride-2 branch reads the centre tap)."""
    keras.utils.set_random_seed(0)
    model = randomize_bn(keras_ghost.GhostNetV3(width=0.5, input_shape=(67, 45, 3),
                                                classifier_activation=None))
    assert len(fusable_sums(model)) == 16 * 2 * 2 + 4  # primary + cheap per module, 4 dw
    deployed = keras_ghost.reparameterize(model)
    x = np.random.default_rng(2).standard_normal((2, 67, 45, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(deployed(x, training=False)), expected,
                               atol=1e-5 * np.abs(expected).max(), rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in keras_ghost.list_models()
                                  if keras_ghost.get_spec(n).family != "GhostNetV3"])
def test_other_families_have_no_fusable_sums(name):
    """The export applies reparameterize to every model: only GhostNetV3 changes (the
    residual adds of the other families have branches of different tensors)."""
    model = keras_ghost.create_model(name, input_shape=(32, 32, 3), classes=10)
    assert fusable_sums(model) == []


def test_export_fuses_by_default_and_opts_out():
    """`export.convert` re-parameterizes first (fewer convs, same outputs);
    `reparameterize=False` exports the branches as they are."""
    from keras_ghost import export

    keras.utils.set_random_seed(3)
    model = randomize_bn(user_model((32, 32)))
    x = np.random.default_rng(4).standard_normal((2, 32, 32, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    counts = {}
    for fuse in (True, False):
        content = export.convert(model, "fp32", reparameterize=fuse)
        ops = export.op_histogram(content)
        counts[fuse] = ops.get("CONV_2D", 0) + ops.get("DEPTHWISE_CONV_2D", 0)
        np.testing.assert_allclose(export.run(content, x), expected,
                                   atol=1e-4 * np.abs(expected).max())
    # 4 sums of 2-5 convs each -> 4 convs; the residual's conv stays.
    assert counts[True] == 5 and counts[False] > counts[True]
