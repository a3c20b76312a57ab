"""Structural re-parameterization (RepVGG, MobileOne, GhostNetV3): every sum of parallel
linear branches of one input becomes one conv with bias.

A branch is one of

- `[ZeroPadding2D ->] Conv2D / DepthwiseConv2D [-> BatchNormalization]` of `x` (linear
  activation, any bias), each of its layers used by nothing else;
- `BatchNormalization(x)` or `x` itself (an identity, as a kernel with one centre tap);
- another such `Add` (nested sums are flattened).

Kernels of different sizes are aligned by where they read the input: a branch with kernel
`k` and leading padding `p` lands at offset `P - p` in the largest branch's kernel `K`
(padding `P`), so a 1x1 "scale" branch lands at the centre of a PyTorch-padded k x k one.
BN folds into its branch and the branches' kernels and biases add. Sums that do not match
(other branch kinds, different strides or conv types, kernels that do not nest) stay.
"""

import dataclasses
from typing import List, Optional

import numpy as np

from keras_ghost.export.rewrites.base import (FOLDABLE_CONVS, Rewrite, bn_is_channel_last,
                                              bn_scale_shift, kind, pair, passthrough, rebuilt)


@dataclasses.dataclass
class Branch:
    """One linear branch of a sum: `bn(conv(pad(x)))` with any part absent."""

    pad: object = None
    conv: object = None
    bn: object = None

    @property
    def layers(self):
        return [layer for layer in (self.pad, self.conv, self.bn) if layer is not None]


@dataclasses.dataclass
class Fusion:
    """A planned sum -> conv: the branches, the one whose kernel holds all the others, the
    fused layers' names and every layer the fused conv replaces."""

    add: object
    branches: List[Branch]
    widest: Branch
    name: str
    pad_name: Optional[str]
    absorbed: List[object] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class FuseParallelBranches(Rewrite):
    """Sums of parallel conv / BN / identity branches of one input -> one conv with bias.
    The fused conv of a sum named `X_add` is named `X_conv` (`X_pad` for its padding),
    else `{sum name}_conv`."""

    def find(self, graph):
        replacements = {}
        for fusion in plan_fusions(graph):
            replacements[fusion.add.name] = _fused(fusion)
            for layer in fusion.absorbed:
                # Every absorbed layer lies between the sum's input and the sum.
                replacements[layer.name] = passthrough
        return replacements


def plan_fusions(graph):
    """The sums `FuseParallelBranches` fuses, outermost ones only."""
    outputs = {id(t._keras_history.operation) for t in graph.model.outputs}
    names = {layer.name for layer in graph.model.layers}

    def private(layer):
        """Used once, by one call, and not a model output: safe to fold away."""
        return (len(layer._inbound_nodes) == 1 and len(graph.users(layer)) == 1
                and id(layer) not in outputs)

    fusions, taken = [], set()
    for add in graph.layers("Add"):
        if len(add._inbound_nodes) != 1 or add.name in taken:
            continue
        found = _branches(graph, add, private)
        if found is None:
            continue
        source, branches, nested = found
        fusion = _fusion(add, source, branches, names)
        if fusion is None:
            continue
        fusion.absorbed = [layer for b in branches for layer in b.layers] + nested
        fusions.append(fusion)
        taken.update(layer.name for layer in fusion.absorbed)
    # An outer sum may have absorbed an inner one planned first: keep the outer.
    return [f for f in fusions if f.add.name not in taken]


def _branches(graph, add, private):
    """(source tensor, branches, nested Adds) when every input of `add` is a linear branch
    of one tensor, else None."""
    branches, nested, sources = [], [], []
    pending = list(zip(add._inbound_nodes[0].input_tensors, graph.inputs(add)))
    while pending:
        tensor, layer = pending.pop(0)
        if kind(layer) == "Add" and private(layer):
            nested.append(layer)
            pending.extend(zip(layer._inbound_nodes[0].input_tensors, graph.inputs(layer)))
            continue
        branch = Branch()
        if kind(layer) == "BatchNormalization" and private(layer) and bn_is_channel_last(layer):
            branch.bn, tensor, layer = layer, layer.input, graph.producer(layer)
        if layer is not None and kind(layer) in FOLDABLE_CONVS and private(layer) and _conv_ok(layer):
            branch.conv, tensor, layer = layer, layer.input, graph.producer(layer)
            if layer is not None and kind(layer) == "ZeroPadding2D" and private(layer):
                branch.pad, tensor = layer, layer.input
        branches.append(branch)
        sources.append(tensor)
    if any(s is not sources[0] for s in sources) or len(branches) < 2:
        return None
    if not any(b.conv is not None for b in branches):
        return None
    return sources[0], branches, nested


def _conv_ok(conv):
    return (getattr(conv.activation, "__name__", "") == "linear"
            and pair(conv.dilation_rate) == (1, 1) and conv.data_format == "channels_last")


def _leading_pad(branch):
    """(top, left) zeros the branch's conv reads before the input, or None if unknown."""
    conv = branch.conv
    before = [0, 0]
    if branch.pad is not None:
        (top, _), (left, _) = branch.pad.padding
        before = [top, left]
    if conv.padding == "valid":
        return tuple(before)
    # "same": TF pads max((out - 1) * s + k - n, 0) in total, the smaller half first.
    size = conv.input.shape[1:3]
    result = []
    for axis, (k, s) in enumerate(zip(pair(conv.kernel_size), pair(conv.strides))):
        n = size[axis]
        if s == 1:
            total = k - 1
        elif n is None:
            return None
        else:
            total = max((-(-n // s) - 1) * s + k - n, 0)
        result.append(before[axis] + total // 2)
    return tuple(result)


def _signature(conv):
    """What must be equal for two convs' kernels to add up."""
    if kind(conv) == "DepthwiseConv2D":
        return ("dw", conv.depth_multiplier, pair(conv.strides))
    return ("conv", conv.filters, conv.groups, pair(conv.strides))


def _fusion(add, source, branches, names):
    convs = [b for b in branches if b.conv is not None]
    if len({_signature(b.conv) for b in convs}) != 1:
        return None
    widest = max(convs, key=lambda b: np.prod(pair(b.conv.kernel_size)))
    big = pair(widest.conv.kernel_size)
    big_pad = _leading_pad(widest)
    if big_pad is None:
        return None
    for b in branches:
        if b.conv is None:
            # Identity: stride 1, same channels, and the centre tap inside the kernel.
            if (pair(widest.conv.strides) != (1, 1)
                    or add.output.shape[-1] != source.shape[-1]
                    or (kind(widest.conv) == "DepthwiseConv2D"
                        and widest.conv.depth_multiplier != 1)
                    or not all(0 <= p < k for p, k in zip(big_pad, big))):
                return None
            continue
        pad = _leading_pad(b)
        if pad is None:
            return None
        for p, k, P, K in zip(pad, pair(b.conv.kernel_size), big_pad, big):
            if not (0 <= P - p and P - p + k <= K):
                return None
    prefix = add.name[: -len("_add")] if add.name.endswith("_add") else None
    name = f"{prefix}_conv" if prefix and f"{prefix}_conv" not in names else f"{add.name}_conv"
    pad_name = None
    if widest.pad is not None:
        pad_name = (f"{prefix}_pad" if prefix and f"{prefix}_pad" not in names
                    else f"{add.name}_pad")
    return Fusion(add, branches, widest, name, pad_name)


def _branch_kernel(branch, fusion, source_channels):
    """The branch as (kernel in the widest conv's layout and size, bias)."""
    widest = fusion.widest.conv
    K = pair(widest.kernel_size)
    P = _leading_pad(fusion.widest)
    depthwise = kind(widest) == "DepthwiseConv2D"
    if depthwise:
        shape = (*K, source_channels, widest.depth_multiplier)
    else:
        shape = (*K, source_channels // widest.groups, widest.filters)
    kernel = np.zeros(shape)
    out_channels = shape[2] * shape[3] if depthwise else shape[3]
    bias = np.zeros(out_channels)
    if branch.conv is None:  # identity: one centre tap per channel
        if depthwise:
            kernel[P[0], P[1], :, 0] = 1.0
        else:
            per_group = shape[2]
            for o in range(out_channels):
                kernel[P[0], P[1], o % per_group, o] = 1.0
    else:
        conv = branch.conv
        weights = conv.get_weights()
        small = weights[0].astype("float64")
        pad = _leading_pad(branch)
        top, left = P[0] - pad[0], P[1] - pad[1]
        kernel[top: top + small.shape[0], left: left + small.shape[1]] = small
        if conv.use_bias:
            bias = weights[1].astype("float64").reshape(-1)
    if branch.bn is not None:
        scale, shift = bn_scale_shift(branch.bn)
        # Output channel c * m + j of a depthwise kernel is kernel[..., c, j].
        kernel = kernel * (scale.reshape(shape[2:]) if depthwise else scale)
        bias = bias * scale + shift
    return kernel, bias


def _fused(fusion):
    def replace(add, inputs):
        """The fused [padding +] conv on the rebuilt input of the sum (every input of the
        sum is its source, handed on by the absorbed layers)."""
        from keras import layers

        x = inputs[0]
        widest = fusion.widest.conv
        kernel, bias = 0.0, 0.0
        for branch in fusion.branches:
            k, b = _branch_kernel(branch, fusion, x.shape[-1])
            kernel, bias = kernel + k, bias + b
        if fusion.widest.pad is not None:
            x = layers.ZeroPadding2D(fusion.widest.pad.padding, name=fusion.pad_name)(x)
        return rebuilt(widest, x, kernel, bias, name=fusion.name, trainable=True)
    return replace
