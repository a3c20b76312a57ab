"""The GhostNet paper's plug-in models: CIFAR ResNet-56 / VGG-16 and Ghost-ResNet-50."""

import numpy as np
import pytest

import keras
from keras import layers

import keras_ghost
from keras_ghost.layers.residual import basic_block

# GhostNet paper, Tables 3 and 4: params (M, as printed) and MACs (M) of the CIFAR-10 models.
PAPER_CIFAR = {
    "resnet56_cifar": (0.85, 125),
    "ghost_resnet56_cifar": (0.43, 63),
    "vgg16_cifar": (15.0, 313),
    "ghost_vgg16_cifar": (7.7, 158),
}


@pytest.mark.parametrize("name", sorted(PAPER_CIFAR))
def test_cifar_models_match_the_paper(name):
    params, macs = PAPER_CIFAR[name]
    profile = keras_ghost.profile(keras_ghost.create_model(name))
    # Ghost-ResNet-56 is 2-3% over the paper's figures (0.438M vs 0.43M, 65.1M vs 63M
    # MACs: half the convs plus the cheap depthwise ops); the others agree within 0.7%.
    assert abs(profile.params / 1e6 - params) / params < 0.025, profile.params
    assert abs(profile.macs / 1e6 - macs) / macs < 0.04, profile.macs


@pytest.mark.parametrize("plain, ghost", [("resnet56_cifar", "ghost_resnet56_cifar"),
                                          ("vgg16_cifar", "ghost_vgg16_cifar")])
def test_ghost_cifar_models_replace_every_conv(plain, ghost):
    model = keras_ghost.create_model(ghost)
    kinds = [type(l).__name__ for l in model.layers]
    plain_convs = sum(type(l) is layers.Conv2D and l.trainable
                      for l in keras_ghost.create_model(plain).layers)
    primaries = [l for l in model.layers if l.name.endswith("_ghost_primary_conv")]
    assert len(primaries) == plain_convs  # the stem too, as in the paper
    # Only the frozen option-A shortcut convs (fixed channel-padding maps) stay convs.
    assert all("_ghost_" in l.name or not l.trainable
               for l in model.layers if type(l) is layers.Conv2D)
    # Each ghost module replaced conv + BN; no BN is left over right after a module.
    assert kinds.count("BatchNormalization") == 2 * plain_convs + (1 if "vgg" in plain else 0)
    assert kinds.count("ZeroPadding2D") == sum(l.strides != (1, 1) for l in primaries)


@pytest.mark.parametrize("ratio, lo, hi, paper_macs", [(2, 0.45, 0.6, 2.2e9), (4, 0.25, 0.35, 1.2e9)])
def test_ghost_resnet50_macs(ratio, lo, hi, paper_macs):
    plain = keras_ghost.profile(keras.applications.ResNet50(weights=None))
    ghost = keras_ghost.profile(keras_ghost.create_model(f"ghost_resnet50_s{ratio}"))
    assert lo < ghost.macs / plain.macs < hi
    # Paper: 2.2 / 1.2 GMACs; ours 2.03 / 1.12 (the paper does not say which convs it kept).
    assert abs(ghost.macs - paper_macs) / paper_macs < 0.1


def test_option_a_shortcut_subsamples_and_zero_pads():
    inputs = keras.Input((9, 10, 4))
    block = keras.Model(inputs, basic_block(inputs, 8, strides=2, shortcut="zero_pad", name="b"))
    shortcut = keras.Model(inputs, block.get_layer("b_shortcut_pad").output)
    x = np.random.default_rng(0).standard_normal((2, 9, 10, 4)).astype("float32")
    y = shortcut.predict(x, verbose=0)
    assert y.shape == (2, 5, 5, 8)
    np.testing.assert_array_equal(y[..., 2:6], x[:, ::2, ::2])  # PyTorch's x[:, :, ::2, ::2]
    assert not y[..., :2].any() and not y[..., 6:].any()
    assert not block.get_layer("b_shortcut_pad").trainable_weights
    # The fixed map survives serialization (its initializer is registered).
    clone = keras.Model.from_config(shortcut.get_config())
    np.testing.assert_array_equal(clone.predict(x, verbose=0), y)


def test_ghost_ratio_is_checked():
    with pytest.raises(ValueError, match="ghost_ratio"):
        keras_ghost.CifarResNet56(ghost_ratio=1)

