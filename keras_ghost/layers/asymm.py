"""AsymmNet's asymmetrical bottleneck (Yang et al., CVPRW 2021) as a function over Keras tensors.

Faithful to the authors' code (Spark001/AsymmNet, MXNet and PyTorch): same expansion rule,
channel counts, SE rounding and activation placement, so their checkpoints load.
"""

from keras import layers

from keras_ghost.layers.common import conv_bn, make_divisible
from keras_ghost.layers.ghost import squeeze_excite

ACTIVATIONS = ("relu", "hard_swish")


def asymm_se_channels(channels):
    """SE width of the reference: `channels // 4` rounded up to a multiple of 8."""
    return make_divisible(channels // 4, 8, round_up=True)


def asymm_bottleneck(x, mid_channels, out_channels, kernel_size=3, strides=1, se=False,
                     activation="relu", asymm_rate=1, name="block"):
    """Asymmetrical bottleneck: [1x1 expand + BN + act, concatenated between `asymm_rate`
    copies of the input on each side] -> depthwise k x k + BN + act -> [SE] -> linear 1x1
    + BN, plus the input when `in == out` and stride 1.

    The expansion conv makes only `mid - r * in` channels: the block input is reused
    instead of recomputed, so the depthwise conv sees `mid + r * in` channels. Without
    expansion (`mid <= max(in, r * in)`) the depthwise conv runs on the input itself,
    which then needs `mid == in`.

    Args:
        mid_channels: expanded width `mid` of the MobileNetV3-style table.
        se: squeeze-excite (ReLU, hard-sigmoid gate) on the depthwise output.
        activation: "relu" or "hard_swish" after the expansion and the depthwise conv.
        asymm_rate: `r`, copies of the input on each side of the expansion (0 = none).
    """
    in_channels = x.shape[-1]
    if activation not in ACTIVATIONS:
        raise ValueError(f"asymm_bottleneck: activation must be one of {ACTIVATIONS}, got "
                         f"{activation!r}.")
    if not isinstance(asymm_rate, int) or isinstance(asymm_rate, bool) or asymm_rate < 0:
        raise ValueError(f"asymm_bottleneck: asymm_rate must be an int >= 0, got {asymm_rate!r}.")
    shortcut = x
    if mid_channels > max(in_channels, asymm_rate * in_channels):
        pw = conv_bn(x, mid_channels - asymm_rate * in_channels, 1, activation=activation,
                     name=f"{name}_expand")
        if asymm_rate:
            x = layers.Concatenate(name=f"{name}_reuse")([x] * asymm_rate + [pw] +
                                                         [x] * asymm_rate)
        else:
            x = pw
    elif mid_channels != in_channels:
        raise ValueError(
            f"asymm_bottleneck '{name}': mid_channels={mid_channels} is not above "
            f"max(in, asymm_rate * in) = {max(in_channels, asymm_rate * in_channels)}, so the "
            f"block does not expand and its depthwise conv would need mid_channels == "
            f"in_channels ({in_channels}). Lower asymm_rate or raise mid_channels.")
    x = conv_bn(x, None, kernel_size, strides, activation=activation, depthwise=True,
                name=f"{name}_dw")
    if se:
        channels = x.shape[-1]
        # squeeze_excite rounds `channels * ratio` to the nearest multiple of 8; asking for
        # exactly the reference width (a multiple of 8) makes that rounding a no-op.
        x = squeeze_excite(x, asymm_se_channels(channels) / channels, divisor=8,
                           name=f"{name}_se")
    x = conv_bn(x, out_channels, 1, name=f"{name}_pw")
    if in_channels == out_channels and strides == 1:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


__all__ = ["asymm_bottleneck", "asymm_se_channels"]
