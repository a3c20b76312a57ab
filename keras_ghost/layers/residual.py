"""Plain residual blocks (RegNetX bottleneck, ResNet basic block) as functions over Keras tensors.

Both follow the block contract of `g_ghost_stage`: `block(x, filters, strides=1, name=...)`
returns `filters` channels and projects the shortcut (1x1 conv + BN, with the stride) only
when the shape changes. Layer names follow the PyTorch modules (`conv1`..`conv3`,
`shortcut` for `downsample`), so reference checkpoints map by simple rules.
"""

import keras
import numpy as np
from keras import layers

from keras_ghost.layers.common import conv_bn

SHORTCUTS = ("projection", "zero_pad")


@keras.saving.register_keras_serializable(package="keras_ghost")
class ChannelPadSelection(keras.initializers.Initializer):
    """1x1 conv kernel that copies input channel i to output channel i + `offset`: with
    more output than input channels, the rest are zeros (a zero-padding of channels)."""

    def __init__(self, offset=0):
        self.offset = int(offset)

    def __call__(self, shape, dtype=None):
        _, _, channels_in, channels_out = shape
        eye = np.eye(channels_in, channels_out, k=self.offset).reshape(shape)
        return keras.ops.convert_to_tensor(eye, dtype=dtype or "float32")

    def get_config(self):
        return {"offset": self.offset}


def _shortcut(x, filters, strides, name, kind="projection"):
    if strides == 1 and x.shape[-1] == filters:
        return x
    if kind == "projection":
        return conv_bn(x, filters, 1, strides, name=f"{name}_shortcut")
    if kind != "zero_pad":
        raise ValueError(f"{name}: shortcut must be one of {SHORTCUTS}, got {kind!r}.")
    # He et al.'s CIFAR option A, no trainable parameters: subsample by the stride and
    # zero-pad the new channels on both sides. A frozen 1x1 strided conv rather than a pool
    # and a concat with zeros: one op, and XNNPACK takes it (it refuses 1x1 max pools).
    extra = filters - x.shape[-1]
    if extra <= 0 or extra % 2:
        raise ValueError(f"{name}: a zero-pad shortcut cannot map {x.shape[-1]} to {filters} "
                         "channels (needs an even increase); use shortcut='projection'.")
    return layers.Conv2D(filters, 1, strides, use_bias=False, trainable=False,
                         kernel_initializer=ChannelPadSelection(extra // 2),
                         name=f"{name}_shortcut_pad")(x)


def x_block(x, filters, strides=1, group_width=1, name="block"):
    """RegNetX bottleneck (bottleneck ratio 1): 1x1 -> 3x3 grouped conv (stride) -> 1x1,
    each with BN, ReLU after the first two and after the residual add.

    The 3x3 conv has `filters // min(filters, group_width)` groups, as in the reference.
    """
    groups = filters // min(filters, group_width)
    if filters % groups:
        raise ValueError(f"{name}: filters={filters} is not divisible by its "
                         f"{groups} groups (group_width={group_width}); choose filters a multiple "
                         "of group_width.")
    shortcut = _shortcut(x, filters, strides, name)
    x = conv_bn(x, filters, 1, activation="relu", name=f"{name}_conv1")
    x = conv_bn(x, filters, 3, strides, activation="relu", groups=groups, name=f"{name}_conv2")
    x = conv_bn(x, filters, 1, name=f"{name}_conv3")
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.Activation("relu", name=f"{name}_relu")(x)


def basic_block(x, filters, strides=1, shortcut="projection", name="block"):
    """ResNet basic block: 3x3 (stride) -> 3x3, each with BN, ReLU after the first conv and
    after the residual add (torchvision's `BasicBlock`). Where the shape changes, the
    shortcut is a 1x1 conv + BN ("projection") or He et al.'s parameter-free CIFAR option A
    ("zero_pad": subsample, zero channels on both sides)."""
    shortcut = _shortcut(x, filters, strides, name, shortcut)
    x = conv_bn(x, filters, 3, strides, activation="relu", name=f"{name}_conv1")
    x = conv_bn(x, filters, 3, name=f"{name}_conv2")
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.Activation("relu", name=f"{name}_relu")(x)


__all__ = ["ChannelPadSelection", "basic_block", "x_block"]
