"""GhostNetV3 (Liu et al., 2024: "GhostNetV3: Exploring the Training Strategies for Compact
Models") as a Keras 3 functional model, in its training form.

Exact to timm's `ghostnet.py` (`ghostnetv3_*`, 1.0.31) and the official
`ghostnetv3_pytorch`: GhostNetV2's table, stem, head, SE and DFC gates, with
re-parameterizable ghost modules and strided depthwise convs (`keras_ghost.layers.ghost_v3`).
timm state_dicts (`...primary_rpr_conv.0.bn1`) and official ones (`...bn`) both load through
`weights=`. `keras_ghost.reparameterize(model)` gives the deployed form (timm's
`convert_to_deploy()`); the TFLite export applies it by default.
"""

import keras
from keras import layers

from keras_ghost.layers.common import conv_bn, scale_channels
from keras_ghost.layers.ghost_v3 import NUM_BRANCHES, ghost_bottleneck_v3
from keras_ghost.models import base, features
from keras_ghost.models.ghostnet import (FEATURE_CHANNELS, FEATURE_TAPS, GHOSTNET_STAGES,
                                         HEAD_CHANNELS, MIN_INPUT_SIZE, STEM_CHANNELS,
                                         torch_name_rules)
from keras_ghost.models.registry import find_spec, register
from keras_ghost.weights import load_weights

# The re-parameterizable branches, applied before GhostNet's rules. timm names a branch's
# BN `bn1` (its ConvBnAct), the official code `bn`.
V3_RULES = (
    (r"\.primary_rpr_conv\.(\d+)\.", r".primary.branch\1."),
    (r"\.primary_rpr_scale\.", ".primary.scale."),
    (r"\.primary_rpr_skip$", ".primary.skip"),
    (r"\.cheap_rpr_conv\.(\d+)\.", r".cheap.branch\1."),
    (r"\.cheap_rpr_scale\.", ".cheap.scale."),
    (r"\.cheap_rpr_skip$", ".cheap.skip"),
    (r"\.dw_rpr_conv\.(\d+)\.", r".dw.branch\1."),
    (r"\.dw_rpr_scale\.", ".dw.scale."),
    (r"\.(primary|cheap|dw)\.(branch\d+|scale)\.bn1?$", r".\1.\2.bn"),
)


def v3_torch_name_rules():
    """(regex, replacement) pairs that map timm's and the official module paths to layer
    names."""
    return V3_RULES + torch_name_rules()


@base.builder_doc
def GhostNetV3(width=1.0, include_top=True, weights=None, input_shape=None, input_tensor=None,
               pooling=None, classes=1000, classifier_activation="softmax", dropout_rate=0.2,
               include_preprocessing=False, name=None, branches=NUM_BRANCHES,
               features_only=False, feature_levels=None, output_stride=32,
               feature_taps="default"):
    """GhostNetV3 (re-parameterizable ghost modules + DFC attention) in training form,
    keras.applications style.

    Args:
        width: width multiplier (0.5, 1.0, 1.3, 1.6 are registered; any positive value builds).
        include_top: include the 1280-wide head and the classifier.
        weights: None, "imagenet" (the official 1.0x checkpoint), or a path to a Keras
            weights file (`.weights.h5`, `.keras`) or a PyTorch checkpoint (`.pth`,
            `.pth.tar`, `.safetensors`; timm or official key names).
        {application_args}
        branches: parallel conv + BN branches per re-parameterizable op (3 in the
            released models).
        feature_taps: with features_only, "default" (the last layer at each stride) or
            "timm" (timm's features_only taps: the stem conv before its BN, then the
            strided stages); the layer names are GhostNet's, so are the taps.
    """
    fargs = features.feature_args(features_only, feature_levels, output_stride, feature_taps,
                                  pooling)
    include_top = include_top and not features_only
    width = base.check_width(width)
    # Registered variants are the released 3-branch models.
    spec = find_spec(GhostNetV3, width=width) if branches == NUM_BRANCHES else None
    base.check_top_args(include_top, weights, classes, pooling, spec)
    if name is None:
        suffix = "" if branches == NUM_BRANCHES else f"_b{branches}"
        name = spec.name if spec else f"ghostnetv3_w{width:g}{suffix}"
    default_shape = spec.input_size if spec else (224, 224, 3)
    inputs, x = base.model_inputs(input_shape, input_tensor, default_shape, MIN_INPUT_SIZE, name)
    if include_preprocessing:
        reference = spec or find_spec(GhostNetV3, width=1.0)
        x = base.preprocessing_layer(reference.mean, reference.std)(x)

    x = conv_bn(x, scale_channels(STEM_CHANNELS, width), 3, 2, activation="relu", name="stem")
    block_index = 0
    for stage_index, stage in enumerate(GHOSTNET_STAGES):
        for index_in_stage, block in enumerate(stage):
            x = ghost_bottleneck_v3(
                x,
                mid_channels=scale_channels(block.mid, width),
                out_channels=scale_channels(block.out, width),
                kernel_size=block.kernel,
                strides=block.stride,
                se_ratio=block.se_ratio,
                # As in GhostNetV2: DFC attention everywhere but in the first two blocks.
                dfc=block_index > 1,
                branches=branches,
                name=f"stage{stage_index}.block{index_in_stage}",
            )
            block_index += 1
    x = conv_bn(x, scale_channels(FEATURE_CHANNELS, width), 1, activation="relu", name="features")

    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="head.pool")(x)
        x = layers.Conv2D(HEAD_CHANNELS, 1, name="head.conv")(x)
        x = layers.Activation("relu", name="head.relu")(x)
        x = layers.Flatten(name="head.flatten")(x)
    x = base.classifier_top(x, include_top, pooling, classes, classifier_activation, dropout_rate)

    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights, spec=spec, torch_rules=v3_torch_name_rules())
    return features.finish(model, FEATURE_TAPS, fargs)


_V3_URL = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/GhostNetV3/"

# timm's ghostnet.py names ghostnetv3_100.in1k (official weights; the commented url in its
# default_cfgs) and the other widths `.untrained`. 76.94: timm's eval of ghostnetv3_100
# (../shared/reference/ARCHITECTURES.md); timm publishes no top-1 for the others.
register("ghostnetv3_050", GhostNetV3, kwargs=dict(width=0.5))
register("ghostnetv3_100", GhostNetV3, kwargs=dict(width=1.0), top1=76.94,
         weights_url=_V3_URL + "ghostnetv3-1.0.pth.tar")
register("ghostnetv3_130", GhostNetV3, kwargs=dict(width=1.3))
register("ghostnetv3_160", GhostNetV3, kwargs=dict(width=1.6))
