"""The G-Ghost stage of G-GhostNet (IJCV 2022): a GPU-efficient upgrade of any CNN stage.

Most of a stage's late features are cheap "ghosts" of its early ones, so only part of
the channels goes through the deep path of blocks; the rest is a cheap 1x1 transform of
the stage's first output, enriched by the pooled intermediate features ("mix").
Details (split, rounding, activations) follow the released `g_ghost_regnet.py`.
"""

from keras import layers

from keras_ghost.layers.common import conv_bn
from keras_ghost.layers.shape_ops import ChannelSlice

# The complex path uses narrower groups than the full-width blocks (released code).
COMPLEX_GROUP_WIDTH_FACTOR = 0.75
# TFLite's XNNPACK delegate takes CONCATENATION of at most 5 inputs; more fall back to
# the reference kernels and split the delegated graph.
MAX_CONCAT_INPUTS = 5


def g_ghost_stage(x, block, filters, depth, strides=2, cheap_ratio=0.5, mix=True,
                  group_width=None, name="stage"):
    """A stage of `depth` blocks turned into a G-Ghost stage.

    first block (full width, `strides`) -> x0; x0 is split channel-wise into a complex part
    (`raw` channels) and a cheap part (the rest). The complex part goes through `depth - 2`
    blocks of width `raw`; the cheap part becomes 1x1 conv + BN of itself, plus (with `mix`)
    the broadcast "mix" of concat(x0, complex outputs): global average pool -> 1x1 conv ->
    BN -> ReLU -> 1x1 conv -> BN; then ReLU. concat(complex, cheap) -> last full-width block.

    Args:
        x: input tensor (channels-last).
        block: any block function `block(x, filters, strides=1, name=...)` that returns
            `filters` channels (e.g. `x_block`, `basic_block`, or a function wrapping yours).
        filters: output channels of the stage.
        depth: number of blocks the plain stage would have; at least 3.
        strides: stride of the first block.
        cheap_ratio: share of x0's channels made by the cheap op (0.5 in the released code).
        mix: add the mix of intermediate features to the cheap part.
        group_width: for grouped-conv blocks (RegNet): passed to `block` as `group_width=`;
            the complex path uses `int(0.75 * group_width)` and its width is rounded down
            to a multiple of that. None: `block` takes no group width, `raw` is not rounded.
        name: layer name prefix; layers are `{name}_first`, `{name}_complex_block{i}`,
            `{name}_cheap`, `{name}_mix_reduce`, `{name}_mix_expand`, `{name}_last`.
    """
    if depth < 3:
        raise ValueError(f"{name}: a G-Ghost stage needs depth >= 3 (first block, at least one "
                         f"complex block, last block), got depth={depth}; build a plain stage "
                         "of fewer blocks instead.")
    if not 0 < cheap_ratio < 1:
        raise ValueError(f"{name}: cheap_ratio must be in (0, 1), got {cheap_ratio!r}.")
    full_kwargs, complex_kwargs, multiple = {}, {}, 1
    if group_width is not None:
        multiple = int(group_width * COMPLEX_GROUP_WIDTH_FACTOR)
        if multiple < 1:
            raise ValueError(f"{name}: group_width must be at least 2, got {group_width!r}.")
        full_kwargs, complex_kwargs = {"group_width": group_width}, {"group_width": multiple}
    raw = int(filters * (1 - cheap_ratio) / multiple) * multiple
    cheap = filters - raw
    if raw < 1:
        raise ValueError(f"{name}: no channels left for the complex path: filters={filters}, "
                         f"cheap_ratio={cheap_ratio}, rounding multiple {multiple}. Lower "
                         "cheap_ratio or group_width.")

    x0 = block(x, filters, strides=strides, name=f"{name}_first", **full_kwargs)
    complex_x = ChannelSlice(raw, name=f"{name}_complex_split")(x0)
    intermediates = [x0]
    for index in range(depth - 2):
        complex_x = block(complex_x, raw, strides=1, name=f"{name}_complex_block{index}",
                          **complex_kwargs)
        intermediates.append(complex_x)

    cheap_x = ChannelSlice(cheap, start=raw, name=f"{name}_cheap_split")(x0)
    cheap_x = conv_bn(cheap_x, cheap, 1, name=f"{name}_cheap")
    if mix:
        # The reference pools concat(x0, ...); pooling each map first gives the same
        # per-channel means without materializing the full-size concat.
        pooled = [layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_mix_pool{i}")(t)
                  for i, t in enumerate(intermediates)]
        m = _concatenate(pooled, name=f"{name}_mix_concat")
        m = conv_bn(m, cheap, 1, activation="relu", name=f"{name}_mix_reduce")
        m = conv_bn(m, cheap, 1, name=f"{name}_mix_expand")
        cheap_x = layers.Add(name=f"{name}_mix_add")([cheap_x, m])
    cheap_x = layers.Activation("relu", name=f"{name}_cheap_relu")(cheap_x)

    x = layers.Concatenate(name=f"{name}_concat")([complex_x, cheap_x])
    return block(x, filters, strides=1, name=f"{name}_last", **full_kwargs)


def _concatenate(tensors, name):
    """Channel concat, nested so that no Concatenate has more than MAX_CONCAT_INPUTS inputs
    (same result, in the same channel order)."""
    level = 0
    while len(tensors) > MAX_CONCAT_INPUTS:
        groups = [tensors[i:i + MAX_CONCAT_INPUTS]
                  for i in range(0, len(tensors), MAX_CONCAT_INPUTS)]
        tensors = [group[0] if len(group) == 1 else
                   layers.Concatenate(name=f"{name}_part{level}_{index}")(group)
                   for index, group in enumerate(groups)]
        level += 1
    return layers.Concatenate(name=name)(tensors)


__all__ = ["g_ghost_stage"]
