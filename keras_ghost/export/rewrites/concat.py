"""Rewrites that move or remove channel concats (ghost modules, AsymmNet's feature reuse)."""

import dataclasses

import numpy as np

from keras_ghost.export.rewrites.base import (Rewrite, copy_as, kind, pair, passthrough, rebuilt,
                                              weights_of)


def _is_channel_concat(layer):
    return kind(layer) == "Concatenate" and layer.axis in (-1, 3)


def _is_relu(layer):
    return layer is not None and (kind(layer) == "ReLU" or (
        kind(layer) == "Activation" and getattr(layer.activation, "__name__", "") in ("relu", "relu6")))


@dataclasses.dataclass(frozen=True)
class MoveConcatAfterDepthwise(Rewrite):
    """concat -> [pad] -> strided depthwise conv [-> ReLU]: a depthwise conv works per
    channel, so it runs on each part and the concat moves after it, onto the 4x smaller
    map. The ReLU runs per part too, so TFLite fuses it into each part's conv."""

    def find(self, graph):
        replacements = {}
        for concat in graph.layers("Concatenate"):
            after = graph.only_consumer(concat)
            if not _is_channel_concat(concat) or after is None:
                continue
            pad = after if kind(after) == "ZeroPadding2D" else None
            dw = graph.only_consumer(pad) if pad is not None else after
            if (dw is None or kind(dw) != "DepthwiseConv2D" or dw.depth_multiplier != 1
                    or max(pair(dw.strides)) < 2):
                continue
            act = graph.only_consumer(dw)
            act = act if _is_relu(act) else None
            replacements[concat.name] = _per_part(pad, dw, act)
            for layer in (pad, dw, act):
                if layer is not None:
                    replacements[layer.name] = passthrough
        return replacements


def _per_part(pad, dw, act):
    def replace(concat, parts):
        from keras import layers

        kernel, bias = weights_of(dw)
        outputs, start = [], 0
        for i, part in enumerate(parts):
            channels = slice(start, start + part.shape[-1])
            start = channels.stop
            if pad is not None:
                part = copy_as(pad, part, f"{pad.name}_part{i}")
            part = rebuilt(dw, part, kernel[:, :, channels], bias[channels],
                           name=f"{dw.name}_part{i}")
            if act is not None:
                part = copy_as(act, part, f"{act.name}_part{i}")
            outputs.append(part)
        return layers.Concatenate(name=concat.name)(outputs)
    return replace


def _chain(graph, layer, kinds):
    """Walks single-input producers back from `layer` through optional layers of the given
    kinds (in order; "Activation" also matches ReLU); returns `{kind: layer}` and the
    layer reached."""
    found = {}
    for wanted in kinds:
        if layer is not None and (kind(layer) == wanted
                                  or (wanted == "Activation" and kind(layer) == "ReLU")):
            found[wanted] = layer
            layer = graph.producer(layer)
    return found, layer


def _activation_key(layer):
    if layer is None:
        return None
    if kind(layer) == "ReLU":
        return ("relu", layer.max_value, layer.negative_slope, layer.threshold)
    return (getattr(layer.activation, "__name__", str(layer.activation)), None, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class MergeGhostConcat(Rewrite):
    """A ghost module `concat(P, act(dw(P))[..., :n])` with `P = act(conv(x))`, on maps at
    least `min_size` high and wide, drops its concat: the primary conv also emits the
    copies of its maps that the cheap depthwise conv reads, and the depthwise conv (with
    identity kernels for the intrinsic maps) makes the whole output. Costs a few MACs,
    saves a full copy; pays off only on large maps."""

    min_size: int = 112

    def find(self, graph):
        replacements = {}
        for concat in graph.layers("Concatenate"):
            match = self._match(graph, concat)
            if match is None:
                continue
            conv, dw, piece = match
            extra = concat.output.shape[-1] - conv.filters
            replacements[conv.name] = _with_copies(extra)
            replacements[dw.name] = _with_identity_prefix(conv.filters)
            if piece is not None:
                replacements[piece.name] = passthrough
            replacements[concat.name] = _second_input
        return replacements

    def _match(self, graph, concat):
        inputs = graph.inputs(concat)
        if len(inputs) != 2 or not _is_channel_concat(concat):
            return None
        primary_end, cheap_end = inputs
        cheap, source = _chain(graph, cheap_end, ("ChannelSlice", "Activation", "DepthwiseConv2D"))
        primary, _ = _chain(graph, primary_end, ("Activation", "Conv2D"))
        dw, conv, piece = cheap.get("DepthwiseConv2D"), primary.get("Conv2D"), cheap.get("ChannelSlice")
        if dw is None or conv is None or source is not primary_end:
            return None
        if (dw.depth_multiplier != 1 or pair(dw.strides) != (1, 1) or dw.padding != "same"
                or pair(dw.dilation_rate) != (1, 1) or any(k % 2 == 0 for k in pair(dw.kernel_size))
                or conv.groups != 1 or (piece is not None and piece.start != 0)):
            return None
        if _activation_key(primary.get("Activation")) != _activation_key(cheap.get("Activation")):
            return None  # the identity half must see the same activation twice
        if sorted(c.name for c in graph.users(primary_end)) != sorted((concat.name, dw.name)):
            return None
        if any(len(graph.users(layer)) != 1 for layer in (conv, dw, *primary.values(),
                                                          *cheap.values())
               if layer is not primary_end):
            return None
        height, width = concat.output.shape[1:3]
        if height is None or width is None or min(height, width) < self.min_size:
            return None
        return conv, dw, piece


def _with_copies(extra):
    def replace(conv, x):
        kernel, bias = weights_of(conv)
        return rebuilt(conv, x, np.concatenate([kernel, kernel[..., :extra]], axis=-1),
                       np.concatenate([bias, bias[:extra]]))
    return replace


def _with_identity_prefix(n):
    def replace(dw, x):
        # The cheap maps keep their kernels; the n intrinsic maps in front pass through.
        kernel, bias = weights_of(dw)
        kh, kw = kernel.shape[:2]
        identity = np.zeros((kh, kw, n, 1))
        identity[kh // 2, kw // 2] = 1.0
        extra = x.shape[-1] - n
        return rebuilt(dw, x, np.concatenate([identity, kernel[:, :, :extra]], axis=2),
                       np.concatenate([np.zeros(n), bias[:extra]]))
    return replace


def _second_input(concat, inputs):
    return inputs[1]
