"""G-GhostNet (IJCV 2022): G-Ghost RegNetX and G-Ghost ResNet34, with their plain baselines.

`GGhostRegNet` is faithful to the released `g_ghost_regnet.py` (huawei-noah
Efficient-AI-Backbones): same configs, split rounding, padding and BN epsilon, so its
checkpoints load and give the same logits. `RegNetX` and `ResNet34` are the same code
path with the G-Ghost stages off, for side-by-side benchmarks.
"""

import functools
from typing import NamedTuple, Tuple

import keras
from keras import layers

from keras_ghost.layers.common import conv_bn
from keras_ghost.layers.g_ghost import g_ghost_stage
from keras_ghost.layers.residual import basic_block, x_block
from keras_ghost.models import base, features
from keras_ghost.models.registry import IMAGENET_MEAN, IMAGENET_STD, find_spec, register
from keras_ghost.weights import load_weights


class Stage(NamedTuple):
    depth: int  # blocks of the plain stage
    filters: int  # output channels


class RegNetXConfig(NamedTuple):
    group_width: int  # channels per group of the 3x3 grouped convs
    stages: Tuple[Stage, ...]  # four stages; the first block of each strides 2


def _regnetx(group_width, *stages):
    return RegNetXConfig(group_width, tuple(Stage(depth, filters) for depth, filters in stages))


# The RegNetX-200MF ... 32GF configs of the released code (= keras.applications.RegNetX*).
REGNETX_CONFIGS = {
    "002": _regnetx(8, (1, 24), (1, 56), (4, 152), (7, 368)),
    "004": _regnetx(16, (1, 32), (2, 64), (7, 160), (12, 384)),
    "006": _regnetx(24, (1, 48), (3, 96), (5, 240), (7, 528)),
    "008": _regnetx(16, (1, 64), (3, 128), (7, 288), (5, 672)),
    "016": _regnetx(24, (2, 72), (4, 168), (10, 408), (2, 912)),
    "032": _regnetx(48, (2, 96), (6, 192), (15, 432), (2, 1008)),
    "040": _regnetx(40, (2, 80), (5, 240), (14, 560), (2, 1360)),
    "064": _regnetx(56, (2, 168), (4, 392), (10, 784), (1, 1624)),
    "080": _regnetx(120, (2, 80), (5, 240), (15, 720), (1, 1920)),
    "120": _regnetx(112, (2, 224), (5, 448), (11, 896), (1, 2240)),
    "160": _regnetx(128, (2, 256), (6, 512), (13, 896), (1, 2048)),
    "320": _regnetx(168, (2, 336), (7, 672), (13, 1344), (1, 2520)),
}
REGNET_STEM_CHANNELS = 32
# torchvision's resnet34: 7x7/2 stem and 3x3/2 max pool, first stage without stride.
RESNET34_STAGES = (Stage(3, 64), Stage(4, 128), Stage(6, 256), Stage(3, 512))
RESNET_STEM_CHANNELS = 64
CHEAP_RATIO = 0.5  # the released models' lambda
MIN_INPUT_SIZE = 32


def torch_name_rules():
    """(regex, replacement) pairs that map reference PyTorch module paths to layer names:
    the released G-Ghost RegNet keys and torchvision's ResNet keys."""
    return (
        (r"^conv1$", "stem.conv"),
        (r"^bn1$", "stem.bn"),
        (r"^layer(\d)\.base\.", r"stage\1.first."),
        (r"^layer(\d)\.end\.", r"stage\1.last."),
        (r"^layer(\d)\.layers\.(\d+)\.", r"stage\1.complex.block\2."),
        (r"^layer(\d)\.merge\.1$", r"stage\1.mix.reduce.conv"),
        (r"^layer(\d)\.merge\.2$", r"stage\1.mix.reduce.bn"),
        (r"^layer(\d)\.merge\.4$", r"stage\1.mix.expand.conv"),
        (r"^layer(\d)\.merge\.5$", r"stage\1.mix.expand.bn"),
        (r"^layer(\d)\.cheap\.0$", r"stage\1.cheap.conv"),
        (r"^layer(\d)\.cheap\.1$", r"stage\1.cheap.bn"),
        (r"^layer(\d)\.(\d+)\.", r"stage\1.block\2."),
        (r"\.conv(\d)$", r".conv\1.conv"),
        (r"\.bn(\d)$", r".conv\1.bn"),
        (r"\.downsample\.0$", ".shortcut.conv"),
        (r"\.downsample\.1$", ".shortcut.bn"),
        (r"^fc$", "head.classifier"),
    )


def _stages(x, stages, block, g_ghost, mix, cheap_ratio, group_width, first_stride):
    """Plain or G-Ghost stages `stage1`..`stage4`. As in the released code, the first stage
    and stages of at most 2 blocks stay plain (a G-Ghost stage needs a complex path)."""
    block_kwargs = {} if group_width is None else {"group_width": group_width}
    for index, stage in enumerate(stages, start=1):
        strides = first_stride if index == 1 else 2
        name = f"stage{index}"
        if g_ghost and index > 1 and stage.depth > 2:
            x = g_ghost_stage(x, block, stage.filters, stage.depth, strides=strides,
                              cheap_ratio=cheap_ratio, mix=mix, group_width=group_width,
                              name=name)
            continue
        for block_index in range(stage.depth):
            x = block(x, stage.filters, strides=strides if block_index == 0 else 1,
                      name=f"{name}_block{block_index}", **block_kwargs)
    return x


def _build(spec, stem, stages_fn, taps, *, include_top, weights, input_shape, input_tensor,
           pooling, classes, classifier_activation, dropout_rate, include_preprocessing,
           name, features_only, feature_levels, output_stride):
    fargs = features.feature_args(features_only, feature_levels, output_stride, pooling=pooling)
    include_top = include_top and not features_only
    base.check_top_args(include_top, weights, classes, pooling, spec)
    default_shape = spec.input_size if spec else (224, 224, 3)
    inputs, x = base.model_inputs(input_shape, input_tensor, default_shape, MIN_INPUT_SIZE, name)
    if include_preprocessing:
        x = base.preprocessing_layer(IMAGENET_MEAN, IMAGENET_STD)(x)
    x = stem(x)
    x = stages_fn(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = base.classifier_top(x, include_top, pooling, classes, classifier_activation, dropout_rate)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights, spec=spec, torch_rules=torch_name_rules())
    return features.finish(model, taps, fargs)


def _stage_end(index, stage, g_ghost):
    if g_ghost and index > 1 and stage.depth > 2:
        return f"stage{index}_last_relu"
    return f"stage{index}_block{stage.depth - 1}_relu"


def feature_taps(stages, g_ghost, stem_stride):
    """The last layer at each stride: the stem conv's ReLU, then each stage's last block
    (ResNet34's first stage, after the stem pool, ends stride 4)."""
    trunk, stride = [("stem_relu", 2)], stem_stride
    for index, stage in enumerate(stages, start=1):
        stride *= 2 if index > 1 or stem_stride == 2 else 1
        trunk.append((_stage_end(index, stage, g_ghost), stride))
    return features.FeatureTaps({"default": features.last_at_each_stride(trunk)})


def _check_cheap_ratio(cheap_ratio):
    if isinstance(cheap_ratio, bool) or not isinstance(cheap_ratio, (int, float)) or not (
            0 < cheap_ratio < 1):
        raise ValueError(f"cheap_ratio must be a number in (0, 1) (0.5 in the paper), got "
                         f"{cheap_ratio!r}.")


def _regnet(builder, variant, g_ghost, mix, cheap_ratio, name, **kwargs):
    if variant not in REGNETX_CONFIGS:
        raise ValueError(f"Unknown RegNetX variant {variant!r}; choose one of "
                         f"{', '.join(REGNETX_CONFIGS)} (e.g. '032' for RegNetX-3.2GF).")
    _check_cheap_ratio(cheap_ratio)
    config = REGNETX_CONFIGS[variant]
    reference = not g_ghost or (mix and cheap_ratio == CHEAP_RATIO)
    spec = find_spec(builder, variant=variant) if reference else None
    if name is None and spec is not None:
        name = spec.name
    elif name is None:
        prefix = "g_ghost_regnetx" if g_ghost else "regnetx"
        suffix = ("" if mix else "_nomix") + (
            "" if cheap_ratio == CHEAP_RATIO or not g_ghost else f"_r{cheap_ratio:g}")
        name = f"{prefix}_{variant}{suffix}"

    def stem(x):
        return conv_bn(x, REGNET_STEM_CHANNELS, 3, 2, activation="relu", name="stem")

    stages_fn = functools.partial(_stages, stages=config.stages, block=x_block, g_ghost=g_ghost,
                                  mix=mix, cheap_ratio=cheap_ratio,
                                  group_width=config.group_width, first_stride=2)
    taps = feature_taps(config.stages, g_ghost, stem_stride=2)
    return _build(spec, stem, stages_fn, taps, name=name, **kwargs)


def _resnet34(builder, g_ghost, mix, cheap_ratio, name, **kwargs):
    _check_cheap_ratio(cheap_ratio)
    spec = None
    if not g_ghost or cheap_ratio == CHEAP_RATIO:
        spec = find_spec(builder, mix=mix) if g_ghost else find_spec(builder)
    if name is None and spec is not None:
        name = spec.name
    elif name is None:
        name = f"g_ghost_resnet34{'' if mix else '_nomix'}_r{cheap_ratio:g}"

    def stem(x):
        x = conv_bn(x, RESNET_STEM_CHANNELS, 7, 2, activation="relu", name="stem")
        # Zero padding equals PyTorch's -inf padding here: the input is post-ReLU (>= 0).
        x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        return layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)

    stages_fn = functools.partial(_stages, stages=RESNET34_STAGES, block=basic_block,
                                  g_ghost=g_ghost, mix=mix, cheap_ratio=cheap_ratio,
                                  group_width=None, first_stride=1)
    taps = feature_taps(RESNET34_STAGES, g_ghost, stem_stride=4)
    return _build(spec, stem, stages_fn, taps, name=name, **kwargs)


@base.builder_doc
@base.public_builder
def GGhostRegNet(variant="032", mix=True, cheap_ratio=CHEAP_RATIO, include_top=True,
                 weights=None, input_shape=None, input_tensor=None, pooling=None, classes=1000,
                 classifier_activation="softmax", dropout_rate=0.2, include_preprocessing=False,
                 name=None, features_only=False,
                 feature_levels=None, output_stride=32):
    """G-Ghost RegNetX (the released G-GhostNet models), keras.applications style.

    Args:
        variant: RegNetX config, "002" (200MF) ... "320" (32GF); there is no width multiplier.
        mix: add the mix of intermediate features to the cheap features (paper default).
        cheap_ratio: share of each G-Ghost stage's channels made by the cheap op.
        include_top: include the global pool and the classifier.
        weights: None, "imagenet" (released checkpoint: 032, 040, 080, 160), or a path to a
            Keras weights file (`.weights.h5`, `.keras`) or a PyTorch checkpoint with the
            reference key names (`.pth`, `.pth.tar`, `.safetensors`).
        {application_args}
    """
    return _regnet(GGhostRegNet, variant, True, mix, cheap_ratio, name, include_top=include_top,
                   weights=weights, input_shape=input_shape, input_tensor=input_tensor,
                   pooling=pooling, classes=classes, classifier_activation=classifier_activation,
                   dropout_rate=dropout_rate, include_preprocessing=include_preprocessing,
                   features_only=features_only, feature_levels=feature_levels,
                   output_stride=output_stride)


@base.public_builder
def RegNetX(variant="032", include_top=True, weights=None, input_shape=None, input_tensor=None,
            pooling=None, classes=1000, classifier_activation="softmax", dropout_rate=0.2,
            include_preprocessing=False, name=None, features_only=False,
            feature_levels=None, output_stride=32):
    """Plain RegNetX: `GGhostRegNet` with the G-Ghost stages off (the baseline).

    Same arguments as `GGhostRegNet` but `mix` and `cheap_ratio`; PyTorch checkpoints load
    when they use the released code's plain-stage key names (`layer{i}.{j}.conv1`, ...).
    """
    return _regnet(RegNetX, variant, False, True, CHEAP_RATIO, name, include_top=include_top,
                   weights=weights, input_shape=input_shape, input_tensor=input_tensor,
                   pooling=pooling, classes=classes, classifier_activation=classifier_activation,
                   dropout_rate=dropout_rate, include_preprocessing=include_preprocessing,
                   features_only=features_only, feature_levels=feature_levels,
                   output_stride=output_stride)


@base.public_builder
def GGhostResNet34(mix=True, cheap_ratio=CHEAP_RATIO, include_top=True, weights=None,
                   input_shape=None, input_tensor=None, pooling=None, classes=1000,
                   classifier_activation="softmax", dropout_rate=0.0, include_preprocessing=False,
                   name=None, features_only=False,
                   feature_levels=None, output_stride=32):
    """G-Ghost ResNet34 of the paper: stages 2-4 of ResNet34 as G-Ghost stages of basic blocks.

    No code or weights were released for it; it is built by the rules of the released
    RegNet models. Same arguments as `GGhostRegNet` but `variant`.
    """
    return _resnet34(GGhostResNet34, True, mix, cheap_ratio, name, include_top=include_top,
                     weights=weights, input_shape=input_shape, input_tensor=input_tensor,
                     pooling=pooling, classes=classes,
                     classifier_activation=classifier_activation, dropout_rate=dropout_rate,
                     include_preprocessing=include_preprocessing,
                     features_only=features_only, feature_levels=feature_levels,
                     output_stride=output_stride)


@base.public_builder
def ResNet34(include_top=True, weights=None, input_shape=None, input_tensor=None, pooling=None,
             classes=1000, classifier_activation="softmax", dropout_rate=0.0,
             include_preprocessing=False, name=None, features_only=False,
             feature_levels=None, output_stride=32):
    """Plain ResNet34, the G-Ghost baseline; torchvision's layout, so torchvision checkpoints
    load through `weights=`. Same arguments as `GGhostRegNet` but `variant`, `mix`,
    `cheap_ratio`."""
    return _resnet34(ResNet34, False, True, CHEAP_RATIO, name, include_top=include_top,
                     weights=weights, input_shape=input_shape, input_tensor=input_tensor,
                     pooling=pooling, classes=classes,
                     classifier_activation=classifier_activation, dropout_rate=dropout_rate,
                     include_preprocessing=include_preprocessing,
                     features_only=features_only, feature_levels=feature_levels,
                     output_stride=output_stride)


_URL = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/g_ghost_regnet/"
# Released checkpoints: variant -> (file, top-1).
_RELEASED = {
    "032": ("g_ghost_regnet_3.2g_77.8.pth", 77.8),
    "040": ("g_ghost_regnet_4.0g_78.6.pth", 78.6),
    "080": ("g_ghost_regnet_8.0g_79.0.pth", 79.0),
    "160": ("g_ghost_regnet_16.0g_79.9.pth", 79.9),
}
# Both were trained and evaluated with the PyTorch ImageNet example's transforms
# (resize 256, center crop 224, bilinear).
for _variant in REGNETX_CONFIGS:
    _file, _top1 = _RELEASED.get(_variant, (None, None))
    register(f"g_ghost_regnetx_{_variant}", GGhostRegNet, kwargs=dict(variant=_variant),
             interpolation="bilinear", top1=_top1, weights_url=_URL + _file if _file else None)
register("g_ghost_resnet34", GGhostResNet34, kwargs=dict(mix=True), interpolation="bilinear")
register("g_ghost_resnet34_nomix", GGhostResNet34, kwargs=dict(mix=False),
         interpolation="bilinear")
# torchvision's ResNet34_Weights.IMAGENET1K_V1 (its key names load as they are).
register("resnet34", ResNet34, interpolation="bilinear", top1=73.314,
         weights_url="https://download.pytorch.org/models/resnet34-b627a593.pth")
