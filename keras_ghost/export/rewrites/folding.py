"""Rewrites that fold a layer into the conv next to it, or drop it: same graph, fewer ops."""

import dataclasses

import numpy as np

from keras_ghost.export.rewrites.base import (FOLDABLE_CONVS, Rewrite, activation_name,
                                              bn_is_channel_last, bn_scale_shift, kind, pair,
                                              passthrough, rebuilt, scale_outputs, weights_of)

TRAINING_ONLY = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                 "GaussianDropout", "GaussianNoise", "AlphaDropout")


@dataclasses.dataclass(frozen=True)
class DropTrainingLayers(Rewrite):
    """Dropout and noise layers are the identity at inference: they go."""

    def find(self, graph):
        return {layer.name: passthrough for layer in graph.layers(*TRAINING_ONLY)}


@dataclasses.dataclass(frozen=True)
class FoldBatchNorm(Rewrite):
    """conv / depthwise conv / dense (no activation) -> BatchNormalization, the BN being
    its only consumer: one layer whose kernel and bias carry the BN."""

    def find(self, graph):
        replacements = {}
        for layer in graph.layers(*FOLDABLE_CONVS, "Dense"):
            bn = graph.only_consumer(layer)
            if (activation_name(layer) != "linear" or bn is None
                    or kind(bn) != "BatchNormalization" or not (bn_is_channel_last(bn) and bn.center and bn.scale)):
                continue
            replacements[bn.name] = passthrough
            replacements[layer.name] = _folded(bn)
        return replacements


def _folded(bn):
    def replace(layer, x):
        return rebuilt(layer, x, *scale_outputs(*weights_of(layer), *bn_scale_shift(bn)))
    return replace


def kernel_growth(in_shape, strides):
    """Per spatial axis, 1 where a stride-2 "same" conv on an even size pads one less
    before than PyTorch does, so the kernel needs a zero row/column at its end."""
    return [int(s == 2 and n % 2 == 0) for n, s in zip(in_shape[1:3], strides)]


def _pad_is_torch_same(pad, conv):
    """Whether `conv(pad(x))` equals a "same" conv (possibly with a zero-extended kernel)."""
    (top, bottom), (left, right) = pad.padding
    if conv.padding != "valid" or pair(conv.dilation_rate) != (1, 1):
        return False
    for (before, after), k, s in zip(((top, bottom), (left, right)), pair(conv.kernel_size),
                                     pair(conv.strides)):
        if not (k % 2 == 1 and before == after == k // 2 and s in (1, 2)):
            return False
    return all(d is not None for d in pad.input.shape[1:3])


@dataclasses.dataclass(frozen=True)
class AbsorbPadding(Rewrite):
    """ZeroPadding2D(k // 2) -> "valid" conv (PyTorch padding) becomes a "same" conv.

    They are equal wherever "same" pads symmetrically (stride 1, or stride 2 on an odd
    size); on an even size a stride-2 conv needs its kernel grown by a zero row / column
    at the end, which only `grow_kernels=True` does (XNNPACK fuses a PAD into the next
    conv for free, while 4x4 / 6x6 kernels run slower)."""

    grow_kernels: bool = False

    def find(self, graph):
        replacements = {}
        for pad in graph.layers("ZeroPadding2D"):
            conv = graph.only_consumer(pad)
            if conv is None or kind(conv) not in FOLDABLE_CONVS or not _pad_is_torch_same(pad, conv):
                continue
            growth = kernel_growth(pad.input.shape, pair(conv.strides))
            if any(growth) and not self.grow_kernels:
                continue
            replacements[pad.name] = passthrough
            replacements[conv.name] = _same_padded(growth)
        return replacements


def _same_padded(growth):
    def replace(conv, x):
        kernel, bias = weights_of(conv)
        kernel = np.pad(kernel, [(0, g) for g in growth] + [(0, 0)] * (kernel.ndim - 2))
        return rebuilt(conv, x, kernel, bias, padding="same")
    return replace
