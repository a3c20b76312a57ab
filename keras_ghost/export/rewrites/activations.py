"""Rewrites of activations that int8 XNNPACK (LiteRT 2.3) cannot run, or runs as extra ops."""

import dataclasses

import numpy as np

from keras_ghost.export.rewrites.base import (FOLDABLE_CONVS, Rewrite, activation_name,
                                              constant_depthwise, kind, plain_relu, rebuilt,
                                              scale_inputs, weights_of)

HARD_SWISH_NAMES = ("hard_silu", "hard_swish")
# Layers with f(c * x) = c * f(x) per channel for c > 0: a scale passes through them.
SCALE_COMMUTING = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "AveragePooling2D",
                   "MaxPooling2D", "ZeroPadding2D", "Dropout")


@dataclasses.dataclass(frozen=True)
class FoldHardSigmoid(Rewrite):
    """conv -> hard_sigmoid -> Multiply -> convs only, i.e. `x * relu6(z + 3) / 6`: the
    `+ 3` moves into the bias of the conv computing `z` and the `/ 6` into the kernels of
    the convs reading the product, so TFLite fuses the ReLU6 into that conv and no MUL by
    1/6 is left."""

    def find(self, graph):
        replacements, shift, scale = {}, {}, {}
        for act in graph.layers("Activation"):
            source, mul = graph.producer(act), graph.only_consumer(act)
            if activation_name(act) != "hard_sigmoid" or source is None or mul is None:
                continue
            targets = graph.users(mul)
            if (kind(mul) != "Multiply" or kind(source) != "Conv2D"
                    or activation_name(source) != "linear" or graph.only_consumer(source) is not act
                    or not targets or any(kind(t) not in FOLDABLE_CONVS for t in targets)):
                continue
            replacements[act.name] = _relu6
            shift[source.name] = 3.0
            for target in targets:
                scale[target.name] = scale.get(target.name, 1.0) / 6.0
        # A conv may both read one gate's product and compute the next gate's input.
        for name in {*shift, *scale}:
            replacements[name] = _affine(scale.get(name, 1.0), shift.get(name, 0.0))
        return replacements


def _affine(scale, shift):
    """The conv applied to `scale * x`, plus `shift`."""
    def replace(conv, x):
        kernel, bias = weights_of(conv)
        return rebuilt(conv, x, kernel * scale, bias + shift)
    return replace


def _relu6(act, x):
    from keras import layers

    return layers.ReLU(6.0, name=act.name)(x)


@dataclasses.dataclass(frozen=True)
class SplitHardSwish(Rewrite):
    """Hard-swish `x * relu6(x + 3) / 6` becomes `x * relu6(x + 3)`: a 1x1 depthwise conv
    (weight 1, bias 3, fused ReLU6) and a MUL, which XNNPACK runs in int8 (it has no int8
    HARD_SWISH; and an ADD is rejected when its input scale is below 2^-10 of its output
    scale). The `/ 6` goes into the convs / dense layers that read the result, through
    layers that commute with a per-channel scale; where a path reaches anything else, a
    constant 1x1 depthwise conv applies it."""

    def find(self, graph):
        replacements, input_scale = {}, {}
        for act in graph.layers("Activation"):
            if activation_name(act) not in HARD_SWISH_NAMES:
                continue
            sinks = {}
            folded = _scale_sinks(graph, act, np.full(act.output.shape[-1], 1.0 / 6.0), sinks,
                                  set())
            if folded:
                for name, factor in sinks.items():
                    input_scale[name] = input_scale.get(name, 1.0) * factor
            replacements[act.name] = _split(folded)
        for name, factor in input_scale.items():
            replacements[name] = _inputs_scaled(factor)
        return replacements


def _scale_sinks(graph, layer, factor, sinks, seen):
    """Walks the consumers of `layer`, whose output channels are to be multiplied by
    `factor`; records `sinks[name] = factor on its input channels`. False where a path
    reaches a layer that cannot take the factor (or a layer twice, e.g. x * f(x))."""
    users = {u.name: u for u in graph.users(layer)}
    if not users or graph.is_output(layer):
        return False
    for user in users.values():
        if user.name in seen:
            return False
        seen.add(user.name)
        if kind(user) == "Concatenate" and user.axis in (-1, 3):
            parts = [factor if source is layer else np.ones(source.output.shape[-1])
                     for source in graph.inputs(user)]
            ok = _scale_sinks(graph, user, np.concatenate(parts), sinks, seen)
        elif kind(user) == "Multiply":
            # A gate times the scaled map: only one factor may pass through.
            ok = (graph.inputs(user).count(layer) == 1
                  and _scale_sinks(graph, user, factor, sinks, seen))
        elif kind(user) == "Flatten" and all(d is not None for d in user.input.shape[1:]):
            repeat = int(np.prod(user.input.shape[1:-1]))
            ok = _scale_sinks(graph, user, np.tile(factor, repeat), sinks, seen)
        elif kind(user) in SCALE_COMMUTING:
            ok = _scale_sinks(graph, user, factor, sinks, seen)
        elif kind(user) in FOLDABLE_CONVS + ("Dense",) and getattr(user, "groups", 1) == 1:
            sinks[user.name] = factor
            ok = True
        else:
            ok = False
        if not ok:
            return False
    return True


def _inputs_scaled(factor):
    def replace(layer, x):
        kernel, bias = weights_of(layer)
        return rebuilt(layer, x, scale_inputs(kernel, factor), bias)
    return replace


def _split(folded):
    def replace(act, x):
        from keras import layers

        channels = x.shape[-1]
        gate = constant_depthwise(x, np.ones((1, 1, channels, 1)), f"{act.name}_relu6",
                                  bias=np.full(channels, 3.0), activation="relu6")
        y = layers.Multiply(name=act.name)([x, gate])
        if folded:
            return y
        return constant_depthwise(y, np.full((1, 1, channels, 1), 1.0 / 6.0), f"{act.name}_div6")
    return replace


@dataclasses.dataclass(frozen=True)
class FuseReluAfterConcat(Rewrite):
    """A ReLU / ReLU6 right after a concat (nothing before it to fuse into, e.g. a ghost
    module that replaced conv + BN + ReLU) becomes a 1x1 identity depthwise conv with that
    fused activation: XNNPACK (LiteRT 2.3) runs no standalone int8 RELU."""

    def find(self, graph):
        replacements = {}
        for layer in graph.layers("ReLU", "Activation"):
            relu, source = plain_relu(layer), graph.producer(layer)
            if (relu and source is not None and kind(source) == "Concatenate"
                    and graph.only_consumer(source) is layer):
                replacements[layer.name] = _identity_depthwise(relu)
        return replacements


def _identity_depthwise(activation):
    def replace(layer, x):
        return constant_depthwise(x, np.ones((1, 1, x.shape[-1], 1)), layer.name,
                                  activation=activation)
    return replace
