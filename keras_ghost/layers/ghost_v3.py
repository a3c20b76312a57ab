"""GhostNetV3 blocks (Liu et al., 2024) as functions over Keras tensors.

The training form of timm's `GhostModuleV3` / `GhostBottleneckV3` (and the official
`ghostnetv3_pytorch`): the primary conv is `branches` parallel conv + BN summed, the cheap
depthwise op the same plus a 1x1 depthwise "scale" branch and a BN-only identity branch,
and a bottleneck's strided depthwise conv `branches` k x k + a 1x1 strided branch. The
DFC gate, SE and shortcut are GhostNetV2's. `keras_ghost.reparameterize` fuses every
branch sum into one conv with bias (timm's `convert_to_deploy()`).
"""

import math

from keras import layers

from keras_ghost.layers.common import conv_bn
from keras_ghost.layers.ghost import dfc_attention, squeeze_excite
from keras_ghost.layers.rep import rep_conv_bn
from keras_ghost.layers.shape_ops import ChannelSlice, ResizeNearestLike

NUM_BRANCHES = 3  # the released models' `num_conv_branches`


def ghost_module_v3(x, out_channels, ratio=2, kernel_size=1, dw_size=3, strides=1, relu=True,
                    dfc=False, branches=NUM_BRANCHES, name="ghost"):
    """Re-parameterizable ghost module: primary `kernel_size` conv (`branches` conv + BN,
    plus a 1x1 branch when `kernel_size > 1`) -> [ReLU] -> cheap depthwise `dw_size` conv
    (`branches` + 1x1 scale + BN identity when ratio is 2) -> [ReLU]; concat cut to
    `out_channels`; `dfc` multiplies by GhostNetV2's DFC gate of the module input.

    Layers: `{name}.primary.branch{i}.conv/bn`, `{name}.primary.add`, `{name}.primary.relu`,
    `{name}.cheap.branch{i}`, `{name}.cheap.scale`, `{name}.cheap.skip`, `{name}.cheap.add`,
    `{name}.concat`, `{name}.dfc.*`.
    """
    if out_channels < 1 or ratio < 2:
        raise ValueError(f"ghost_module_v3 needs out_channels >= 1 and ratio >= 2, got "
                         f"out_channels={out_channels}, ratio={ratio}.")
    inputs = x
    act = "relu" if relu else None
    init_channels = math.ceil(out_channels / ratio)
    primary = rep_conv_bn(x, init_channels, kernel_size, strides, branches=branches,
                          scale=kernel_size > 1, activation=act, name=f"{name}.primary")
    cheap = rep_conv_bn(primary, None, dw_size, branches=branches, scale=dw_size > 1,
                        skip=ratio == 2, depthwise=True, depth_multiplier=ratio - 1,
                        activation=act, name=f"{name}.cheap")
    if init_channels * ratio > out_channels:
        cheap = ChannelSlice(out_channels - init_channels, name=f"{name}.cheap.slice")(cheap)
    out = layers.Concatenate(name=f"{name}.concat")([primary, cheap])
    if dfc:
        gate = dfc_attention(inputs, out_channels, kernel_size, strides, name=f"{name}.dfc")
        gate = ResizeNearestLike(name=f"{name}.dfc.resize")([gate, out])
        out = layers.Multiply(name=f"{name}.dfc.mul")([out, gate])
    return out


def ghost_bottleneck_v3(x, mid_channels, out_channels, kernel_size=3, strides=1, se_ratio=0.0,
                        dfc=False, branches=NUM_BRANCHES, name="block"):
    """GhostNetV3 bottleneck: ghost_v3 (expand, ReLU, optional DFC) -> [re-parameterizable
    depthwise k x k, stride 2: `{name}.dw`] -> [SE] -> ghost_v3 (project, linear) +
    shortcut (identity, or depthwise k x k + BN + 1x1 + BN as in GhostNet)."""
    in_channels = x.shape[-1]
    shortcut = x
    x = ghost_module_v3(x, mid_channels, relu=True, dfc=dfc, branches=branches,
                        name=f"{name}.ghost1")
    if strides > 1:
        x = rep_conv_bn(x, None, kernel_size, strides, branches=branches, scale=kernel_size > 1,
                        depthwise=True, name=f"{name}.dw")
    if se_ratio:
        x = squeeze_excite(x, se_ratio, name=f"{name}.se")
    x = ghost_module_v3(x, out_channels, relu=False, branches=branches, name=f"{name}.ghost2")
    if in_channels != out_channels or strides != 1:
        shortcut = conv_bn(shortcut, None, kernel_size, strides, depthwise=True,
                           name=f"{name}.shortcut.dw")
        shortcut = conv_bn(shortcut, out_channels, 1, name=f"{name}.shortcut.pw")
    return layers.Add(name=f"{name}.add")([x, shortcut])


__all__ = ["ghost_bottleneck_v3", "ghost_module_v3"]
