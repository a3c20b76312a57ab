"""GhostNet (CVPR 2020), GhostNetV2 (NeurIPS 2022) and GhostNetV3 (Liu et al., 2024:
"GhostNetV3: Exploring the Training Strategies for Compact Models") as Keras 3 functional
models.

Faithful to the reference PyTorch code (huawei-noah Efficient-AI-Backbones, timm's
`ghostnet.py` 1.0.31): same block table, channel rounding, padding and BN epsilon, so
reference checkpoints load and give the same logits. GhostNetV3 is GhostNetV2 in a
re-parameterizable training form (`ghost_bottleneck(branches=3)`);
`keras_ghost.reparameterize(model)` gives timm's `convert_to_deploy()` form, and the
TFLite export applies it by default.
"""

from typing import NamedTuple

import keras
from keras import layers

from keras_ghost.layers.common import conv_bn, scale_channels
from keras_ghost.layers.ghost import V3_BRANCHES, ghost_bottleneck
from keras_ghost.models import base, features
from keras_ghost.models.registry import find_spec, register
from keras_ghost.weights import load_weights


class GhostBlock(NamedTuple):
    kernel: int  # depthwise kernel of the stride-2 conv and of the shortcut
    mid: int  # expanded channels (output of ghost1), before width scaling
    out: int  # output channels, before width scaling
    se_ratio: float  # squeeze-excite ratio on `mid`; 0 = no SE
    stride: int


# Grouped as in the reference code (its `blocks.{stage}.{block}` keys follow this nesting).
GHOSTNET_STAGES = (
    (GhostBlock(3, 16, 16, 0, 1),),
    (GhostBlock(3, 48, 24, 0, 2),),
    (GhostBlock(3, 72, 24, 0, 1),),
    (GhostBlock(5, 72, 40, 0.25, 2),),
    (GhostBlock(5, 120, 40, 0.25, 1),),
    (GhostBlock(3, 240, 80, 0, 2),),
    (GhostBlock(3, 200, 80, 0, 1), GhostBlock(3, 184, 80, 0, 1), GhostBlock(3, 184, 80, 0, 1),
     GhostBlock(3, 480, 112, 0.25, 1), GhostBlock(3, 672, 112, 0.25, 1)),
    (GhostBlock(5, 672, 160, 0.25, 2),),
    (GhostBlock(5, 960, 160, 0, 1), GhostBlock(5, 960, 160, 0.25, 1), GhostBlock(5, 960, 160, 0, 1),
     GhostBlock(5, 960, 160, 0.25, 1)),
)
STEM_CHANNELS = 16
FEATURE_CHANNELS = 960
HEAD_CHANNELS = 1280  # not width-scaled, as in the reference
MIN_INPUT_SIZE = 32


def torch_name_rules(num_stages=len(GHOSTNET_STAGES)):
    """(regex, replacement) pairs that map reference PyTorch module paths to layer names."""
    last = rf"^blocks\.{num_stages}\.0\."
    return (
        (r"^conv_stem$", "stem.conv"),
        (r"^bn1$", "stem.bn"),
        (last + r"conv$", "features.conv"),
        (last + r"bn1$", "features.bn"),
        (r"^blocks\.(\d+)\.(\d+)\.", r"stage\1.block\2."),
        (r"\.primary_conv\.0$", ".primary.conv"),
        (r"\.primary_conv\.1$", ".primary.bn"),
        (r"\.cheap_operation\.0$", ".cheap.conv"),
        (r"\.cheap_operation\.1$", ".cheap.bn"),
        (r"\.short_conv\.0$", ".dfc.conv"),
        (r"\.short_conv\.1$", ".dfc.bn"),
        (r"\.short_conv\.2$", ".dfc.horizontal.conv"),
        (r"\.short_conv\.3$", ".dfc.horizontal.bn"),
        (r"\.short_conv\.4$", ".dfc.vertical.conv"),
        (r"\.short_conv\.5$", ".dfc.vertical.bn"),
        (r"\.conv_dw$", ".dw.conv"),
        (r"\.bn_dw$", ".dw.bn"),
        (r"\.se\.conv_reduce$", ".se.reduce"),
        (r"\.se\.conv_expand$", ".se.expand"),
        (r"\.shortcut\.0$", ".shortcut.dw.conv"),
        (r"\.shortcut\.1$", ".shortcut.dw.bn"),
        (r"\.shortcut\.2$", ".shortcut.pw.conv"),
        (r"\.shortcut\.3$", ".shortcut.pw.bn"),
        (r"^conv_head$", "head.conv"),
        (r"^classifier$", "head.classifier"),
    )


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


def feature_taps(stages=GHOSTNET_STAGES):
    """Default taps: the last layer at each stride (the stem, the end of the stage before
    each strided one, the 1x1 `features` conv). timm's taps: the stem conv before its BN
    and the strided stages (`blocks.1/3/5/7` of timm, 24/40/80/160 channels at 1.0x)."""
    trunk, timm, stride = [("stem_relu", 2)], {"P1": "stem_conv"}, 2
    for s, stage in enumerate(stages):
        end = f"stage{s}_block{len(stage) - 1}_add"
        if stage[0].stride > 1:
            stride *= stage[0].stride
            timm[features.level(stride)] = end
        trunk.append((end, stride))
    trunk.append(("features_relu", stride))
    return features.FeatureTaps({"default": features.last_at_each_stride(trunk), "timm": timm})


def _ghostnet(builder, version, *, width, include_top, weights, input_shape, input_tensor, pooling,
              classes, classifier_activation, dropout_rate, include_preprocessing, name,
              features_only, feature_levels, output_stride, feature_taps, branches=0):
    fargs = features.feature_args(features_only, feature_levels, output_stride, feature_taps,
                                  pooling)
    include_top = include_top and not features_only
    width = base.check_width(width)
    # GhostNetV3's registered variants are the released 3-branch models.
    spec = find_spec(builder, width=width) if version < 3 or branches == V3_BRANCHES else None
    base.check_top_args(include_top, weights, classes, pooling, spec)
    suffix = f"_b{branches}" if version == 3 and branches != V3_BRANCHES else ""
    name = name or (spec.name if spec else f"{builder.__name__.lower()}_w{width:g}{suffix}")
    default_shape = spec.input_size if spec else (224, 224, 3)
    inputs, x = base.model_inputs(input_shape, input_tensor, default_shape, MIN_INPUT_SIZE, name)
    if include_preprocessing:
        reference = spec or find_spec(builder, width=1.0)
        x = base.preprocessing_layer(reference.mean, reference.std)(x)

    x = conv_bn(x, scale_channels(STEM_CHANNELS, width), 3, 2, activation="relu", name="stem")
    block_index = 0
    for stage_index, stage in enumerate(GHOSTNET_STAGES):
        for index_in_stage, block in enumerate(stage):
            x = ghost_bottleneck(
                x,
                mid_channels=scale_channels(block.mid, width),
                out_channels=scale_channels(block.out, width),
                kernel_size=block.kernel,
                strides=block.stride,
                se_ratio=block.se_ratio,
                # GhostNetV2 / V3: DFC attention everywhere but in the first two blocks.
                dfc=version >= 2 and block_index > 1,
                branches=branches,
                name=f"stage{stage_index}_block{index_in_stage}",
            )
            block_index += 1
    x = conv_bn(x, scale_channels(FEATURE_CHANNELS, width), 1, activation="relu", name="features")

    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="head_pool")(x)
        x = layers.Conv2D(HEAD_CHANNELS, 1, name="head_conv")(x)
        x = layers.Activation("relu", name="head_relu")(x)
        x = layers.Flatten(name="head_flatten")(x)
    x = base.classifier_top(x, include_top, pooling, classes, classifier_activation, dropout_rate)

    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        rules = v3_torch_name_rules() if version == 3 else torch_name_rules()
        load_weights(model, weights, spec=spec, torch_rules=rules)
    return features.finish(model, FEATURE_TAPS, fargs)


@base.builder_doc
@base.public_builder
def GhostNet(width=1.0, include_top=True, weights=None, input_shape=None, input_tensor=None,
             pooling=None, classes=1000, classifier_activation="softmax", dropout_rate=0.2,
             include_preprocessing=False, name=None, features_only=False, feature_levels=None,
             output_stride=32, feature_taps="default"):
    """GhostNet (C-Ghost bottlenecks), keras.applications style.

    Args:
        width: width multiplier (0.5, 1.0, 1.3 are registered; any positive value builds).
        include_top: include the 1280-wide head and the classifier.
        weights: None, "imagenet" (reference checkpoint), or a path to a Keras weights file
            (`.weights.h5`, `.keras`) or a reference PyTorch checkpoint (`.pth`, `.pth.tar`,
            `.safetensors`; timm or official key names).
        {application_args}
        feature_taps: with features_only, "default" (the last layer at each stride) or
            "timm" (timm's features_only taps: the stem conv before its BN, then the
            strided stages; equal to timm's maps with the same weights).
    """
    return _ghostnet(GhostNet, 1, width=width, include_top=include_top, weights=weights,
                     input_shape=input_shape, input_tensor=input_tensor, pooling=pooling,
                     classes=classes, classifier_activation=classifier_activation,
                     dropout_rate=dropout_rate, include_preprocessing=include_preprocessing,
                     name=name, features_only=features_only, feature_levels=feature_levels,
                     output_stride=output_stride, feature_taps=feature_taps)


@base.public_builder
def GhostNetV2(width=1.0, include_top=True, weights=None, input_shape=None, input_tensor=None,
               pooling=None, classes=1000, classifier_activation="softmax", dropout_rate=0.2,
               include_preprocessing=False, name=None, features_only=False, feature_levels=None,
               output_stride=32, feature_taps="default"):
    """GhostNetV2 (GhostNet with DFC attention), keras.applications style.

    Same arguments as `GhostNet`; registered widths are 1.0, 1.3 and 1.6.
    """
    return _ghostnet(GhostNetV2, 2, width=width, include_top=include_top, weights=weights,
                     input_shape=input_shape, input_tensor=input_tensor, pooling=pooling,
                     classes=classes, classifier_activation=classifier_activation,
                     dropout_rate=dropout_rate, include_preprocessing=include_preprocessing,
                     name=name, features_only=features_only, feature_levels=feature_levels,
                     output_stride=output_stride, feature_taps=feature_taps)


@base.builder_doc
@base.public_builder
def GhostNetV3(width=1.0, include_top=True, weights=None, input_shape=None, input_tensor=None,
               pooling=None, classes=1000, classifier_activation="softmax", dropout_rate=0.2,
               include_preprocessing=False, name=None, branches=V3_BRANCHES,
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
        feature_taps: as for `GhostNet` (the layer names are GhostNet's, so are the taps).
    """
    if not isinstance(branches, int) or isinstance(branches, bool) or branches < 1:
        raise ValueError(f"branches must be a positive integer (3 in the released models), "
                         f"got {branches!r}.")
    return _ghostnet(GhostNetV3, 3, width=width, include_top=include_top, weights=weights,
                     input_shape=input_shape, input_tensor=input_tensor, pooling=pooling,
                     classes=classes, classifier_activation=classifier_activation,
                     dropout_rate=dropout_rate, include_preprocessing=include_preprocessing,
                     name=name, features_only=features_only, feature_levels=feature_levels,
                     output_stride=output_stride, feature_taps=feature_taps,
                     branches=branches)


FEATURE_TAPS = feature_taps()

_V1_URL = "https://github.com/huawei-noah/CV-backbones/releases/download/ghostnet_pth/"
_V2_URL = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/GhostNetV2/"

register("ghostnet_050", GhostNet, kwargs=dict(width=0.5), top1=66.2)
register("ghostnet_100", GhostNet, kwargs=dict(width=1.0), top1=73.98,
         weights_url=_V1_URL + "ghostnet_1x.pth")
register("ghostnet_130", GhostNet, kwargs=dict(width=1.3), top1=75.7)
register("ghostnetv2_100", GhostNetV2, kwargs=dict(width=1.0), top1=75.3,
         weights_url=_V2_URL + "ck_ghostnetv2_10.pth.tar")
register("ghostnetv2_130", GhostNetV2, kwargs=dict(width=1.3), top1=76.9,
         weights_url=_V2_URL + "ck_ghostnetv2_13.pth.tar")
register("ghostnetv2_160", GhostNetV2, kwargs=dict(width=1.6), top1=77.8,
         weights_url=_V2_URL + "ck_ghostnetv2_16.pth.tar")

_V3_URL = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/GhostNetV3/"

# timm's ghostnet.py names ghostnetv3_100.in1k (official weights; the commented url in its
# default_cfgs) and the other widths `.untrained`. 76.94: timm's eval of ghostnetv3_100
# (../shared/reference/ARCHITECTURES.md); timm publishes no top-1 for the others.
register("ghostnetv3_050", GhostNetV3, kwargs=dict(width=0.5))
register("ghostnetv3_100", GhostNetV3, kwargs=dict(width=1.0), top1=76.94,
         weights_url=_V3_URL + "ghostnetv3-1.0.pth.tar")
register("ghostnetv3_130", GhostNetV3, kwargs=dict(width=1.3))
register("ghostnetv3_160", GhostNetV3, kwargs=dict(width=1.6))
