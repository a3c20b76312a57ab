"""Re-parameterizable conv blocks (RepVGG / MobileOne style) as functions over Keras tensors.

In training form a block is several parallel branches of one input, summed by one Add:
`branches` k x k conv + BN, an optional 1x1 conv + BN ("scale") and an optional BN-only
identity branch ("skip"). Every branch is linear in the input, so the sum is one conv with
bias; `keras_ghost.reparameterize` rewrites the block to that conv for deployment.
"""

from keras import layers

from keras_ghost.layers.common import BN_EPSILON, BN_MOMENTUM, conv_bn


def rep_conv_bn(x, filters, kernel_size=3, strides=1, branches=3, scale=True, skip=False,
                depthwise=False, depth_multiplier=1, activation=None, name="rep"):
    """Sum of `branches` conv + BN (`{name}_branch{i}_conv` / `_bn`), a 1x1 conv + BN with
    the same stride when `scale` (`{name}_scale`), and a BN of the input when `skip`
    (`{name}_skip`; needs stride 1 and as many output as input channels), then
    `activation` (`{name}_{activation}`). Padding is PyTorch's `k // 2`, so the 1x1 branch
    sits at the centre of the k x k ones, as in timm's / the official GhostNetV3.

    `depthwise=True` makes every conv depthwise (`filters` ignored, output
    `in * depth_multiplier` channels). With one branch and nothing else it is `conv_bn`.
    """
    if branches < 1:
        raise ValueError(f"rep_conv_bn '{name}': branches must be >= 1, got {branches}.")
    in_channels = x.shape[-1]
    out_channels = in_channels * depth_multiplier if depthwise else filters
    if skip and (strides != 1 or in_channels != out_channels):
        raise ValueError(f"rep_conv_bn '{name}': the skip (BN-only identity) branch needs "
                         f"stride 1 and in == out channels, got stride {strides}, "
                         f"{in_channels} -> {out_channels}. Pass skip=False.")
    kwargs = dict(depthwise=depthwise, depth_multiplier=depth_multiplier)
    parts = [conv_bn(x, filters, kernel_size, strides, name=f"{name}_branch{i}", **kwargs)
             for i in range(branches)]
    if scale:
        parts.append(conv_bn(x, filters, 1, strides, name=f"{name}_scale", **kwargs))
    if skip:
        parts.append(layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                               name=f"{name}_skip")(x))
    y = parts[0] if len(parts) == 1 else layers.Add(name=f"{name}_add")(parts)
    if activation:
        y = layers.Activation(activation, name=f"{name}_{activation}")(y)
    return y


__all__ = ["rep_conv_bn"]
