"""The GhostNet paper's C-Ghost plug-in experiments (section 4.1), as registered models.

ResNet-56 and VGG-16 for CIFAR-10 and ResNet-50 for ImageNet, plain and with their
convolutions swapped for ghost modules by `keras_ghost.ghostify` (s=2, d=3 for CIFAR;
s=2 and s=4 for ResNet-50): the plug-in builds every ghost variant, so these models are
also its end-to-end test.
"""

from typing import NamedTuple

import keras
from keras import layers

from keras_ghost.layers.common import BN_EPSILON, BN_MOMENTUM, conv_bn
from keras_ghost.layers.residual import basic_block
from keras_ghost.models import base, features
from keras_ghost.models.ghostify import ghostify
from keras_ghost.models.registry import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD,
                                         find_spec, register)
from keras_ghost.weights import load_weights


class ResNetStage(NamedTuple):
    channels: int
    blocks: int  # basic blocks (two 3x3 convs each)
    stride: int  # of the first block


class VGGStage(NamedTuple):
    channels: int
    convs: int  # 3x3 conv + BN + ReLU each, then a 2x2 max pool


# He et al. 2016, section 4.2: 6n + 2 layers with n = 9.
RESNET56_STAGES = (ResNetStage(16, 9, 1), ResNetStage(32, 9, 2), ResNetStage(64, 9, 2))
RESNET_STEM_CHANNELS = 16
# The CIFAR VGG-16 of Li et al. 2017 (15.0M params, 313M MACs), which the paper uses.
VGG16_STAGES = (VGGStage(64, 2), VGGStage(128, 2), VGGStage(256, 3), VGGStage(512, 3),
                VGGStage(512, 3))
VGG_HIDDEN = 512
RESNET50_MIN_SIZE = 32  # keras.applications' minimum (it downsamples by 32)


def _cifar_model(builder, trunk_fn, *, ghost_ratio, ghost_dw_size, include_top, weights,
                 input_shape, input_tensor, pooling, classes, classifier_activation,
                 dropout_rate, include_preprocessing, name, min_size, trunk, features_only,
                 feature_levels, output_stride, hidden=None):
    fargs = features.feature_args(features_only, feature_levels, output_stride, pooling=pooling)
    include_top = include_top and not features_only
    spec = find_spec(builder, ghost_ratio=ghost_ratio)
    base.check_top_args(include_top, weights, classes, pooling, spec)
    if ghost_ratio is not None and (not isinstance(ghost_ratio, int) or ghost_ratio < 2):
        raise ValueError(f"ghost_ratio must be None (plain convs) or an integer >= 2, got "
                         f"{ghost_ratio!r}.")
    suffix = f"_ghost_s{ghost_ratio}" if ghost_ratio else ""
    name = name or (spec.name if spec else f"{builder.__name__.lower()}{suffix}")
    inputs, x = base.model_inputs(input_shape, input_tensor, (32, 32, 3), min_size, name)
    if include_preprocessing:
        x = base.preprocessing_layer(CIFAR10_MEAN, CIFAR10_STD)(x)
    x = trunk_fn(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
        if hidden:
            x = layers.Dense(hidden, name="head_fc")(x)
            x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                          name="head_bn")(x)
            x = layers.Activation("relu", name="head_relu")(x)
    x = base.classifier_top(x, include_top, pooling, classes, classifier_activation, dropout_rate)
    model = keras.Model(inputs, x, name=name)
    if ghost_ratio:
        # Every conv, the first included, as in the paper's Ghost-VGG-16 / Ghost-ResNet-56.
        model = ghostify(model, ghost_ratio, ghost_dw_size, skip_first=False, verbose=False,
                         name=name)
    if weights is not None:
        load_weights(model, weights, spec=spec)
    taps = features.FeatureTaps({"default": features.last_at_each_stride(trunk)})
    return features.finish(model, taps, fargs)


@base.public_builder
def CifarResNet56(ghost_ratio=None, ghost_dw_size=3, include_top=True, weights=None,
                  input_shape=None, input_tensor=None, pooling=None, classes=10,
                  classifier_activation="softmax", dropout_rate=0.0, include_preprocessing=False,
                  name=None, features_only=False, feature_levels=None, output_stride=32):
    """ResNet-56 for 32x32 CIFAR images (He et al. 2016), or Ghost-ResNet-56 with
    `ghost_ratio` (s) and `ghost_dw_size` (d): every conv a ghost module.

    Other arguments as in keras.applications; `input_shape` defaults to (32, 32, 3).
    `features_only`, `feature_levels`, `output_stride`: as for `GhostNet`; the levels are
    P1 (end of the stride-2 stage) and P2 (stride 4): a CIFAR net downsamples by 4.
    """
    trunk, stride = [], 1
    for s, stage in enumerate(RESNET56_STAGES):
        stride *= stage.stride
        trunk.append((f"stage{s}_block{stage.blocks - 1}_relu", stride))

    def trunk_fn(x):
        x = conv_bn(x, RESNET_STEM_CHANNELS, 3, activation="relu", name="stem")
        for s, stage in enumerate(RESNET56_STAGES):
            for b in range(stage.blocks):
                x = basic_block(x, stage.channels, stage.stride if b == 0 else 1,
                                shortcut="zero_pad", name=f"stage{s}_block{b}")
        return x

    return _cifar_model(CifarResNet56, trunk_fn, ghost_ratio=ghost_ratio,
                        ghost_dw_size=ghost_dw_size, include_top=include_top, weights=weights,
                        input_shape=input_shape, input_tensor=input_tensor, pooling=pooling,
                        classes=classes, classifier_activation=classifier_activation,
                        dropout_rate=dropout_rate, include_preprocessing=include_preprocessing,
                        name=name, min_size=4, trunk=trunk, features_only=features_only,
                        feature_levels=feature_levels, output_stride=output_stride)


@base.public_builder
def CifarVGG16(ghost_ratio=None, ghost_dw_size=3, include_top=True, weights=None,
               input_shape=None, input_tensor=None, pooling=None, classes=10,
               classifier_activation="softmax", dropout_rate=0.5, include_preprocessing=False,
               name=None, features_only=False, feature_levels=None, output_stride=32):
    """VGG-16 for 32x32 CIFAR images (with BN and a 512-wide hidden layer, Li et al. 2017),
    or Ghost-VGG-16 with `ghost_ratio` (s) and `ghost_dw_size` (d).

    Other arguments as in keras.applications; `input_shape` defaults to (32, 32, 3).
    `features_only`, `feature_levels`, `output_stride`: as for `GhostNet` (P1..P5, each the
    last conv before a pool, P5 the last pool; P5 is 1x1 at 32x32). Pools have no
    dilation, so only output_stride=16 dilates (stage 4 runs at stride 16).
    """
    trunk = [(f"stage{s}_conv{stage.convs - 1}_relu", 2 ** s)
             for s, stage in enumerate(VGG16_STAGES)]
    trunk.append((f"stage{len(VGG16_STAGES) - 1}_pool", 2 ** len(VGG16_STAGES)))

    def trunk_fn(x):
        for s, stage in enumerate(VGG16_STAGES):
            for c in range(stage.convs):
                x = conv_bn(x, stage.channels, 3, activation="relu", name=f"stage{s}_conv{c}")
            x = layers.MaxPooling2D(2, name=f"stage{s}_pool")(x)
        return x

    return _cifar_model(CifarVGG16, trunk_fn, ghost_ratio=ghost_ratio,
                        ghost_dw_size=ghost_dw_size, include_top=include_top, weights=weights,
                        input_shape=input_shape, input_tensor=input_tensor, pooling=pooling,
                        classes=classes, classifier_activation=classifier_activation,
                        dropout_rate=dropout_rate, include_preprocessing=include_preprocessing,
                        name=name, min_size=32, trunk=trunk, features_only=features_only,
                        feature_levels=feature_levels, output_stride=output_stride,
                        hidden=VGG_HIDDEN)


@base.public_builder
def GhostResNet50(ghost_ratio=2, ghost_dw_size=3, include_top=True, weights=None,
                  input_shape=None, input_tensor=None, pooling=None, classes=1000,
                  classifier_activation="softmax", dropout_rate=0.0, include_preprocessing=False,
                  name=None, features_only=False, feature_levels=None, output_stride=32):
    """Ghost-ResNet-50: keras.applications ResNet50 with every conv but the stem a ghost
    module (`ghost_ratio` s, `ghost_dw_size` d). Starts from fresh weights (there are no
    reference ones); `weights` takes a file saved from the same configuration. Other
    arguments as in keras.applications; `include_preprocessing` normalizes with the
    ImageNet mean/std, `dropout_rate` drops before the classifier; `features_only`,
    `feature_levels`, `output_stride` as for `GhostNet` (keras.applications' stage ends)."""
    fargs = features.feature_args(features_only, feature_levels, output_stride, pooling=pooling)
    include_top = include_top and not features_only
    spec = find_spec(GhostResNet50, ghost_ratio=ghost_ratio)
    base.check_top_args(include_top, weights, classes, pooling, spec)
    name = name or (spec.name if spec else f"ghost_resnet50_s{ghost_ratio}")
    default_shape = spec.input_size if spec else (224, 224, 3)
    inputs, x = base.model_inputs(input_shape, input_tensor, default_shape, RESNET50_MIN_SIZE,
                                  name)
    if include_preprocessing:
        x = base.preprocessing_layer(IMAGENET_MEAN, IMAGENET_STD)(x)
    # Built on our tensor, so the preprocessing is part of its graph. Keras' own head
    # cannot take a dropout; ours keeps its layer names (avg_pool, predictions).
    plain = keras.applications.ResNet50(include_top=False, weights=None, input_tensor=x,
                                        pooling="avg" if include_top else pooling)
    x = plain.output
    if include_top:
        x = base.classifier(x, classes, classifier_activation, dropout_rate, name="predictions",
                            dropout_name="dropout")
    model = ghostify(keras.Model(inputs, x), ghost_ratio, ghost_dw_size, verbose=False,
                     name=name)
    if weights is not None:
        load_weights(model, weights, spec=spec)
    return features.finish(model, RESNET50_TAPS, fargs)


# keras.applications.ResNet50's stage ends (as keras-hub's ResNet taps them).
RESNET50_TAPS = features.FeatureTaps({"default": {
    "P1": "conv1_relu", "P2": "conv2_block3_out", "P3": "conv3_block4_out",
    "P4": "conv4_block6_out", "P5": "conv5_block3_out"}})

_CIFAR = dict(input_size=(32, 32, 3), mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0,
              interpolation="bilinear", dataset="cifar10")
# Accuracies: the GhostNet paper, Tables 3 and 4 (CIFAR-10 top-1; ImageNet top-1).
register("resnet56_cifar", CifarResNet56, kwargs=dict(ghost_ratio=None), top1=93.0, **_CIFAR)
register("ghost_resnet56_cifar", CifarResNet56, kwargs=dict(ghost_ratio=2), top1=92.7,
         **_CIFAR)
register("vgg16_cifar", CifarVGG16, kwargs=dict(ghost_ratio=None), top1=93.6, **_CIFAR)
register("ghost_vgg16_cifar", CifarVGG16, kwargs=dict(ghost_ratio=2), top1=93.7, **_CIFAR)
register("ghost_resnet50_s2", GhostResNet50, kwargs=dict(ghost_ratio=2), top1=75.0)
register("ghost_resnet50_s4", GhostResNet50, kwargs=dict(ghost_ratio=4), top1=74.1)
