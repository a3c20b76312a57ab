"""Small helpers shared by every block: channel rounding and PyTorch-style conv + BN."""

import math

from keras import layers

# PyTorch BatchNorm2d defaults; the reference weights were trained with them.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def make_divisible(value, divisor=4, min_value=None, round_limit=0.9, round_up=False):
    """Rounds a channel count to the nearest multiple of `divisor`.

    The result is at least `min_value` (default `divisor`) and never below
    `round_limit` of `value` (the rule of the reference implementations).
    `round_up=True` rounds up instead, `ceil(value / divisor) * divisor` (AsymmNet's rule).
    """
    min_value = min_value or divisor
    if round_up:
        return max(min_value, math.ceil(value / divisor) * divisor)
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def scale_channels(channels, width, divisor=4, round_up=False):
    """The one place where a width multiplier turns into a channel count."""
    return make_divisible(channels * width, divisor, round_up=round_up)


def torch_padding(x, kernel_size, strides, name):
    """Pads like a PyTorch conv with `padding=k // 2` and returns the Keras padding mode.

    Keras "same" pads asymmetrically for stride 2 on even inputs (0 before, 1 after)
    where PyTorch pads symmetrically, so strided convs get an explicit ZeroPadding2D.
    """
    kernel_size = _pair(kernel_size)
    strides = _pair(strides)
    if strides == (1, 1) and all(k % 2 == 1 for k in kernel_size):
        return x, "same"
    pad = tuple((k // 2, k // 2) for k in kernel_size)
    if any(p[0] for p in pad):
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return x, "valid"


def conv_bn(x, filters, kernel_size=1, strides=1, activation=None, depthwise=False,
            depth_multiplier=1, groups=1, name="conv"):
    """Conv (or depthwise conv) without bias, BatchNorm and an optional activation.

    Layers are named `{name}_conv`, `{name}_bn` and `{name}_{activation}`.
    For depthwise convs `filters` is ignored: the output has `in * depth_multiplier` channels.
    `groups` > 1 makes a grouped conv (PyTorch `groups`; RegNet's 3x3 convs).
    """
    x, padding = torch_padding(x, kernel_size, strides, name)
    if depthwise:
        x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding,
                                   depth_multiplier=depth_multiplier, use_bias=False,
                                   name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                          groups=groups, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
