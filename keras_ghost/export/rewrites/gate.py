"""Rewrites of the DFC attention gate (GhostNetV2): pool and upsample as XNNPACK ops."""

import dataclasses

import numpy as np

from keras_ghost.export.rewrites.base import Rewrite, constant_depthwise, pair, passthrough
from keras_ghost.layers.shape_ops import UpsampledMultiply


@dataclasses.dataclass(frozen=True)
class UpsampledGateMultiply(Rewrite):
    """ResizeNearestLike([gate, like]) feeding only Multiply([like, resized]) becomes one
    UpsampledMultiply (a broadcast 6-D MUL) that never builds the full-size gate."""

    def find(self, graph):
        replacements = {}
        for resize in graph.layers("ResizeNearestLike"):
            mul, like = graph.only_consumer(resize), graph.inputs(resize)[1]
            if mul is None or type(mul).__name__ != "Multiply" or graph.inputs(mul) != [like, resize]:
                continue
            replacements[resize.name] = passthrough  # hands its gate to the multiply
            replacements[mul.name] = _upsampled_multiply
        return replacements


def _upsampled_multiply(mul, inputs):
    like, gate = inputs
    return UpsampledMultiply(name=mul.name)([like, gate])


@dataclasses.dataclass(frozen=True)
class PoolAsDepthwise(Rewrite):
    """AveragePooling2D (pool size = strides, "valid") becomes a depthwise conv with
    constant weights: XNNPACK runs int8 depthwise convs, but not int8 AVERAGE_POOL_2D."""

    def find(self, graph):
        return {pool.name: _pool_as_depthwise for pool in graph.layers("AveragePooling2D")
                if pool.padding == "valid" and pair(pool.pool_size) == pair(pool.strides)
                and pool.data_format == "channels_last"}


def _pool_as_depthwise(pool, x):
    size = pair(pool.pool_size)
    if size == (1, 1):
        return x
    kernel = np.full((*size, x.shape[-1], 1), 1.0 / (size[0] * size[1]))
    return constant_depthwise(x, kernel, pool.name, strides=size, padding="valid")
