"""AsymmNet-Large / -Small (Yang et al., CVPRW 2021) as Keras 3 functional models.

Faithful to the authors' code (Spark001/AsymmNet: MXNet original and PyTorch port): same
tables, round-up-to-8 channel rule, SE widths, padding and BN epsilon, so the port's
state_dicts load through `weights=` and give the same logits.

Parameter counts equal the PyTorch port's (6,076,608 for Large 1.0x). The MXNet original
reports 5,991,776 for the same network: its summary counts each k x k conv weight as
`out * in / groups * k` (one kernel dimension missing), so it leaves out 288 of the stem
conv (432 counted as 144) and `C * k * (k - 1)` of every depthwise conv (84,544); the
network, its BN (gamma/beta counted by both) and its MACs are the same.
"""

from typing import NamedTuple

import keras
from keras import layers

from keras_ghost.layers.asymm import asymm_bottleneck
from keras_ghost.layers.common import conv_bn, scale_channels
from keras_ghost.models import base
from keras_ghost.models.features import FeatureTaps, feature_args, finish, last_at_each_stride
from keras_ghost.models.registry import find_spec, register
from keras_ghost.weights import load_weights


class AsymmBlock(NamedTuple):
    kernel: int  # depthwise kernel
    mid: int  # expanded width of the MobileNetV3 table, before width scaling
    out: int  # output channels, before width scaling
    se: bool  # squeeze-excite on the depthwise output
    activation: str  # "relu" or "hard_swish"
    stride: int


RELU, HSWISH = "relu", "hard_swish"
# Stages as in the reference's comments (Large) or by resolution (Small); the reference
# numbers blocks flat (`asymm_block.{i}`), `torch_name_rules` maps between the two.
# AsymmBlock(kernel, mid, out, se, activation, stride)
LARGE_STAGES = (
    (AsymmBlock(3, 16, 16, False, RELU, 1),),
    (AsymmBlock(3, 64, 24, False, RELU, 2),
     AsymmBlock(3, 72, 24, False, RELU, 1)),
    (AsymmBlock(5, 72, 40, True, RELU, 2),
     AsymmBlock(5, 120, 40, True, RELU, 1),
     AsymmBlock(5, 120, 40, True, RELU, 1)),
    (AsymmBlock(3, 240, 80, False, HSWISH, 2),
     AsymmBlock(3, 200, 80, False, HSWISH, 1),
     AsymmBlock(3, 184, 80, False, HSWISH, 1),
     AsymmBlock(3, 184, 80, False, HSWISH, 1),
     AsymmBlock(3, 480, 112, True, HSWISH, 1),
     AsymmBlock(3, 672, 112, True, HSWISH, 1)),
    (AsymmBlock(5, 672, 160, True, HSWISH, 2),
     AsymmBlock(5, 960, 160, True, HSWISH, 1),
     AsymmBlock(5, 960, 160, True, HSWISH, 1)),
)
SMALL_STAGES = (
    (AsymmBlock(3, 16, 16, True, RELU, 2),),
    (AsymmBlock(3, 72, 24, False, RELU, 2),
     AsymmBlock(3, 88, 24, False, RELU, 1)),
    (AsymmBlock(5, 96, 40, True, HSWISH, 2),
     AsymmBlock(5, 240, 40, True, HSWISH, 1),
     AsymmBlock(5, 240, 40, True, HSWISH, 1),
     AsymmBlock(5, 120, 48, True, HSWISH, 1),
     AsymmBlock(5, 144, 48, True, HSWISH, 1)),
    (AsymmBlock(5, 288, 96, True, HSWISH, 2),
     AsymmBlock(5, 576, 96, True, HSWISH, 1),
     AsymmBlock(5, 576, 96, True, HSWISH, 1)),
)
STEM_CHANNELS = 16
LARGE_FEATURES = 960
SMALL_FEATURES = 576
HEAD_CHANNELS = 1280  # not width-scaled, as in the reference
MIN_INPUT_SIZE = 32
DIVISOR = 8  # channels round up to multiples of 8


def _channels(channels, width):
    return scale_channels(channels, width, DIVISOR, round_up=True)


def torch_name_rules(stages):
    """(regex, replacement) pairs that map the PyTorch port's module paths to layer names."""
    flat = [(s, b) for s, stage in enumerate(stages, 1) for b in range(len(stage))]
    blocks = tuple((rf"^asymm_block\.{i}\.", f"stage{s}.block{b}.")
                   for i, (s, b) in enumerate(flat))
    return blocks + (
        (r"^first_block\.0$", "stem.conv"),
        (r"^first_block\.1$", "stem.bn"),
        (r"^last_block\.0$", "features.conv"),
        (r"^last_block\.1$", "features.bn"),
        (r"^last_block\.4$", "head.conv"),
        (r"^output$", "head.classifier"),
        (r"\.dw_conv\.", ".dw."),
        (r"\.pw_conv_linear\.", ".pw."),
        (r"\.se\.out\.0$", ".se.reduce"),
        (r"\.se\.out\.2$", ".se.expand"),
    )


def _asymmnet(builder, stages, features, *, width, asymm_rate, include_top, weights,
              input_shape, input_tensor, pooling, classes, classifier_activation, dropout_rate,
              include_preprocessing, name, features_only, feature_levels, output_stride):
    fargs = feature_args(features_only, feature_levels, output_stride, pooling=pooling)
    include_top = include_top and not features_only
    width = base.check_width(width)
    # Registered variants all use the paper's asymm_rate=1.
    spec = find_spec(builder, width=width) if asymm_rate == 1 else None
    base.check_top_args(include_top, weights, classes, pooling, spec)
    if name is None:
        rate = "" if asymm_rate == 1 else f"_r{asymm_rate}"
        name = spec.name if spec else f"{builder.__name__.lower()}_w{width:g}{rate}"
    default_shape = spec.input_size if spec else (224, 224, 3)
    inputs, x = base.model_inputs(input_shape, input_tensor, default_shape, MIN_INPUT_SIZE, name)
    if include_preprocessing:
        reference = spec or find_spec(builder, width=1.0)
        x = base.preprocessing_layer(reference.mean, reference.std)(x)

    x = conv_bn(x, _channels(STEM_CHANNELS, width), 3, 2, activation=HSWISH, name="stem")
    # Default taps: the last layer at each stride (a block ends in its add or its BN).
    trunk, stride = [(f"stem_{HSWISH}", 2)], 2
    for stage_index, stage in enumerate(stages, 1):
        for index_in_stage, block in enumerate(stage):
            block_name = f"stage{stage_index}_block{index_in_stage}"
            stride *= block.stride
            residual = x.shape[-1] == _channels(block.out, width) and block.stride == 1
            trunk.append((f"{block_name}_add" if residual else f"{block_name}_pw_bn", stride))
            x = asymm_bottleneck(
                x,
                mid_channels=_channels(block.mid, width),
                out_channels=_channels(block.out, width),
                kernel_size=block.kernel,
                strides=block.stride,
                se=block.se,
                activation=block.activation,
                asymm_rate=asymm_rate,
                name=block_name,
            )
    x = conv_bn(x, _channels(features, width), 1, activation=HSWISH, name="features")
    trunk.append((f"features_{HSWISH}", stride))

    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="head_pool")(x)
        x = layers.Conv2D(HEAD_CHANNELS, 1, use_bias=False, name="head_conv")(x)
        x = layers.Activation(HSWISH, name="head_hard_swish")(x)
        x = layers.Flatten(name="head_flatten")(x)
    x = base.classifier_top(x, include_top, pooling, classes, classifier_activation, dropout_rate)

    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights, spec=spec, torch_rules=torch_name_rules(stages))
    taps = FeatureTaps({"default": last_at_each_stride(trunk)})
    return finish(model, taps, fargs)


@base.builder_doc
@base.public_builder
def AsymmNetLarge(width=1.0, include_top=True, weights=None, input_shape=None,
                  input_tensor=None, pooling=None, classes=1000, classifier_activation="softmax",
                  dropout_rate=0.2, include_preprocessing=False, name=None, asymm_rate=1,
                  features_only=False, feature_levels=None, output_stride=32):
    """AsymmNet-Large (asymmetrical bottlenecks on the MobileNetV3-Large table),
    keras.applications style.

    Args:
        width: width multiplier (0.35, 0.5, 0.75, 1.0, 1.25 are registered; any positive
            value builds). Channels round up to multiples of 8.
        include_top: include the 1280-wide head and the classifier.
        weights: None, or a path to a Keras weights file (`.weights.h5`, `.keras`) or a
            state_dict of the authors' PyTorch port (`.pth`, `.safetensors`).
        {application_args}
        asymm_rate: copies of the block input on each side of the expansion (paper: 1).
    """
    return _asymmnet(AsymmNetLarge, LARGE_STAGES, LARGE_FEATURES, width=width,
                     asymm_rate=asymm_rate, include_top=include_top, weights=weights,
                     input_shape=input_shape, input_tensor=input_tensor, pooling=pooling,
                     classes=classes, classifier_activation=classifier_activation,
                     dropout_rate=dropout_rate, include_preprocessing=include_preprocessing,
                     name=name, features_only=features_only, feature_levels=feature_levels,
                     output_stride=output_stride)


@base.public_builder
def AsymmNetSmall(width=1.0, include_top=True, weights=None, input_shape=None,
                  input_tensor=None, pooling=None, classes=1000, classifier_activation="softmax",
                  dropout_rate=0.2, include_preprocessing=False, name=None, asymm_rate=1,
                  features_only=False, feature_levels=None, output_stride=32):
    """AsymmNet-Small (asymmetrical bottlenecks on the MobileNetV3-Small table).

    Same arguments as `AsymmNetLarge`.
    """
    return _asymmnet(AsymmNetSmall, SMALL_STAGES, SMALL_FEATURES, width=width,
                     asymm_rate=asymm_rate, include_top=include_top, weights=weights,
                     input_shape=input_shape, input_tensor=input_tensor, pooling=pooling,
                     classes=classes, classifier_activation=classifier_activation,
                     dropout_rate=dropout_rate, include_preprocessing=include_preprocessing,
                     name=name, features_only=features_only, feature_levels=feature_levels,
                     output_stride=output_stride)


# ImageNet top-1 of the paper (MXNet training); no reference weights are published.
_TOP1 = {("large", 1.0): 75.4, ("large", 0.5): 69.2, ("small", 1.0): 68.4}
for _size, _builder in (("large", AsymmNetLarge), ("small", AsymmNetSmall)):
    for _width in (0.35, 0.5, 0.75, 1.0, 1.25):
        register(f"asymmnet_{_size}_{round(_width * 100):03d}", _builder,
                 kwargs=dict(width=_width), top1=_TOP1.get((_size, _width)))
