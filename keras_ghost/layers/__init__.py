"""Building blocks: functions over Keras tensors, usable inside any functional model."""

from keras_ghost.layers.asymm import asymm_bottleneck
from keras_ghost.layers.common import conv_bn, make_divisible, scale_channels
from keras_ghost.layers.g_ghost import g_ghost_stage
from keras_ghost.layers.ghost import dfc_attention, ghost_bottleneck, ghost_module, squeeze_excite
from keras_ghost.layers.rep import rep_conv_bn
from keras_ghost.layers.residual import basic_block, x_block
from keras_ghost.layers.shape_ops import (ChannelSlice, PhaseMerge, PhaseSplit, ResizeNearestLike,
                                          UpsampledMultiply, UpsampleNearest)

__all__ = [
    "ChannelSlice",
    "PhaseMerge",
    "PhaseSplit",
    "ResizeNearestLike",
    "asymm_bottleneck",
    "basic_block",
    "conv_bn",
    "dfc_attention",
    "g_ghost_stage",
    "ghost_bottleneck",
    "ghost_module",
    "make_divisible",
    "rep_conv_bn",
    "scale_channels",
    "squeeze_excite",
    "UpsampledMultiply",
    "UpsampleNearest",
    "x_block",
]
