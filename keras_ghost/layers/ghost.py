"""Ghost-family building blocks as functions over Keras tensors.

Each block takes a channels-last Keras tensor and returns one, so it drops into any
functional model. Layer names are hierarchical (`{name}_primary_conv`, ...) and stable:
the PyTorch weight converter maps from them.
"""

import math

from keras import layers

from keras_ghost.layers.common import conv_bn, make_divisible
from keras_ghost.layers.rep import rep_conv_bn
from keras_ghost.layers.shape_ops import ChannelSlice, GatePool, ResizeNearestLike

V3_BRANCHES = 3  # GhostNetV3's released models: `num_conv_branches`


def squeeze_excite(x, se_ratio=0.25, divisor=4, name="se"):
    """Squeeze-and-excitation with a hard-sigmoid gate, as in GhostNet / MobileNetV3.

    The reduced width is `make_divisible(channels * se_ratio, divisor)`.
    """
    channels = x.shape[-1]
    reduced = make_divisible(channels * se_ratio, divisor)
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = layers.Conv2D(reduced, 1, name=f"{name}_reduce")(s)
    s = layers.Activation("relu", name=f"{name}_relu")(s)
    s = layers.Conv2D(channels, 1, name=f"{name}_expand")(s)
    s = layers.Activation("hard_sigmoid", name=f"{name}_gate")(s)
    return layers.Multiply(name=f"{name}_mul")([x, s])


def dfc_attention(x, out_channels, kernel_size=1, strides=1, name="dfc"):
    """DFC attention gate of GhostNetV2, computed from the module input `x`.

    2x2/2 average pool, conv + BN, depthwise (1, 5) + BN, depthwise (5, 1) + BN,
    sigmoid. Returns the gate at the pooled resolution; `ghost_module` resizes it.
    A spatial axis smaller than 2 is not pooled (the reference would fail there).
    """
    if None in x.shape[1:3]:  # the size is known only when it runs
        g = GatePool(name=f"{name}_pool")(x)
    else:
        pool = tuple(2 if d >= 2 else 1 for d in x.shape[1:3])
        g = layers.AveragePooling2D(pool, strides=pool, padding="valid", name=f"{name}_pool")(x)
    g = conv_bn(g, out_channels, kernel_size, strides, name=name)
    g = conv_bn(g, None, (1, 5), depthwise=True, name=f"{name}_horizontal")
    g = conv_bn(g, None, (5, 1), depthwise=True, name=f"{name}_vertical")
    return layers.Activation("sigmoid", name=f"{name}_sigmoid")(g)


def _conv_bn(x, filters, kernel_size, strides=1, branches=0, skip=False, **kwargs):
    """conv_bn, or with `branches` GhostNetV3's re-parameterizable sum of that many
    conv + BN branches, a 1x1 "scale" branch (for k > 1) and an optional BN identity."""
    if not branches:
        return conv_bn(x, filters, kernel_size, strides, **kwargs)
    return rep_conv_bn(x, filters, kernel_size, strides, branches=branches,
                       scale=kernel_size not in (1, (1, 1)), skip=skip, **kwargs)


def ghost_module(x, out_channels, ratio=2, kernel_size=1, dw_size=3, strides=1, relu=True,
                 dfc=False, branches=0, name="ghost"):
    """C-Ghost module: a primary conv makes `ceil(out / ratio)` intrinsic maps and a cheap
    depthwise `dw_size` conv makes the ghost maps; their concat is cut to `out_channels`.

    Args:
        x: input tensor (channels-last).
        out_channels: any positive channel count, odd ones included.
        ratio: `s` of the paper; 1 / ratio of the output comes from the primary conv.
        kernel_size: kernel of the primary conv (1 in GhostNet; k to replace a k x k conv).
        dw_size: kernel `d` of the cheap depthwise conv.
        strides: stride of the primary conv.
        relu: ReLU after the primary and cheap ops.
        dfc: multiply the output by GhostNetV2's DFC attention gate.
        branches: 0 for one conv + BN per op (GhostNet, GhostNetV2); n > 0 for
            GhostNetV3's training form: each op a sum of n conv + BN branches, a 1x1 scale
            branch and, for the cheap op at ratio 2, a BN identity (`rep_conv_bn`; layers
            `{name}_primary_branch{i}_conv`, `{name}_cheap_scale`, `{name}_cheap_skip`).
    """
    if out_channels < 1 or ratio < 2:
        raise ValueError(f"ghost_module needs out_channels >= 1 and ratio >= 2, got "
                         f"out_channels={out_channels}, ratio={ratio}.")
    inputs = x
    act = "relu" if relu else None
    init_channels = math.ceil(out_channels / ratio)
    primary = _conv_bn(x, init_channels, kernel_size, strides, branches, activation=act,
                       name=f"{name}_primary")
    cheap = _conv_bn(primary, None, dw_size, 1, branches, skip=ratio == 2, depthwise=True,
                     depth_multiplier=ratio - 1, activation=act, name=f"{name}_cheap")
    if init_channels * ratio > out_channels:
        # Only ghost maps fall beyond `out_channels`, so cutting the cheap part is enough.
        cheap = ChannelSlice(out_channels - init_channels, name=f"{name}_cheap_slice")(cheap)
    out = layers.Concatenate(name=f"{name}_concat")([primary, cheap])
    if dfc:
        gate = dfc_attention(inputs, out_channels, kernel_size, strides, name=f"{name}_dfc")
        gate = ResizeNearestLike(name=f"{name}_dfc_resize")([gate, out])
        out = layers.Multiply(name=f"{name}_dfc_mul")([out, gate])
    return out


def ghost_bottleneck(x, mid_channels, out_channels, kernel_size=3, strides=1, se_ratio=0.0,
                     dfc=False, branches=0, name="block"):
    """Ghost bottleneck: ghost (expand, ReLU) -> [depthwise k x k, stride 2] -> [SE] ->
    ghost (project, linear) + shortcut.

    The shortcut is the identity when shapes allow, else depthwise k x k (stride) + BN +
    1x1 conv + BN. `dfc=True` gives the first ghost module DFC attention (GhostNetV2).
    `branches` > 0 is GhostNetV3's training form: the ghost modules and the strided
    depthwise conv as re-parameterizable branch sums (see `ghost_module`).
    """
    in_channels = x.shape[-1]
    shortcut = x
    x = ghost_module(x, mid_channels, relu=True, dfc=dfc, branches=branches, name=f"{name}_ghost1")
    if strides > 1:
        x = _conv_bn(x, None, kernel_size, strides, branches, depthwise=True, name=f"{name}_dw")
    if se_ratio:
        x = squeeze_excite(x, se_ratio, name=f"{name}_se")
    x = ghost_module(x, out_channels, relu=False, branches=branches, name=f"{name}_ghost2")
    if in_channels != out_channels or strides != 1:
        shortcut = conv_bn(shortcut, None, kernel_size, strides, depthwise=True,
                           name=f"{name}_shortcut_dw")
        shortcut = conv_bn(shortcut, out_channels, 1, name=f"{name}_shortcut_pw")
    return layers.Add(name=f"{name}_add")([x, shortcut])


__all__ = ["squeeze_excite", "dfc_attention", "ghost_module", "ghost_bottleneck"]
