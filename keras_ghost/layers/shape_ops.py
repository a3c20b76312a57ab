"""The shape operations the Ghost blocks need that Keras has no built-in layer for.

Both are registered serializable, so models load with `safe_mode=True`.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ghost")
class ChannelSlice(keras.layers.Layer):
    """Keeps `channels` channels from channel `start` on (channels-last; default the first)."""

    def __init__(self, channels, start=0, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.start = int(start)

    def call(self, inputs):
        return inputs[..., self.start : self.start + self.channels]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "start": self.start}


@keras.saving.register_keras_serializable(package="keras_ghost")
class ResizeNearestLike(keras.layers.Layer):
    """Nearest-neighbour resize of `inputs[0]` to the height and width of `inputs[1]`.

    Follows PyTorch's `F.interpolate(mode="nearest")` (and TF's legacy
    `resize_nearest_neighbor` without half-pixel centers): output row `i` reads input row
    `floor(i * in / out)`. Keras' `Resizing` uses half-pixel centers, which differs
    from the reference for odd sizes, hence this layer.
    """

    def call(self, inputs):
        x, like = inputs
        return resize_nearest(x, ops.shape(like)[1], ops.shape(like)[2])

    def compute_output_shape(self, input_shape):
        x_shape, like_shape = input_shape
        return (x_shape[0], like_shape[1], like_shape[2], x_shape[3])


def resize_nearest(x, height, width):
    """PyTorch-exact nearest resize of a channels-last batch to (height, width)."""
    return _resize_axis(_resize_axis(x, height, axis=1), width, axis=2)


def _resize_axis(x, out_size, axis):
    in_size = ops.shape(x)[axis]
    if isinstance(in_size, int) and isinstance(out_size, int):
        return _repeat_static(x, in_size, out_size, axis)
    # Exact integer form of floor(i * in / out); no float rounding at multiples.
    index = ops.floor_divide(ops.arange(out_size, dtype="int32") * in_size, out_size)
    return ops.take(x, index, axis=axis)


def nearest_runs(in_size, out_size):
    """PyTorch's nearest index map `floor(i * in / out)` as runs `(start, stop, repeat)`:
    source rows `start..stop-1` each repeated `repeat` times, in output order."""
    counts = [0] * in_size
    for i in range(out_size):
        counts[i * in_size // out_size] += 1
    runs = []
    for src, count in enumerate(counts):
        if runs and runs[-1][2] == count and runs[-1][1] == src:
            runs[-1][1] = src + 1
        else:
            runs.append([src, src + 1, count])
    return [tuple(r) for r in runs if r[2]]


def _repeat_static(x, in_size, out_size, axis):
    """Static-shape nearest resize along `axis` (1 or 2) from slices, concats and reshapes.

    These lower to STRIDED_SLICE / CONCATENATION / RESHAPE, which XNNPACK runs in float
    and int8, unlike GATHER (what `ops.take` becomes) or int8 RESIZE_NEAREST_NEIGHBOR.
    """
    if in_size == out_size:
        return x
    parts = []
    for start, stop, repeat in nearest_runs(in_size, out_size):
        part = x if (start, stop) == (0, in_size) else (
            x[:, start:stop] if axis == 1 else x[:, :, start:stop])
        if repeat > 1:
            # Repeating each row r times = r copies side by side on the next axis, then a
            # reshape that folds them back into this one.
            shape = list(part.shape[1:])
            part = ops.concatenate([part] * repeat, axis=axis + 1)
            shape[axis - 1] *= repeat
            part = ops.reshape(part, (-1, *shape))
        parts.append(part)
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=axis)


@keras.saving.register_keras_serializable(package="keras_ghost")
class GatePool(keras.layers.Layer):
    """The DFC gate's 2x2/2 average pool for inputs of unknown size: an axis of size 1 is
    not pooled (as the static-shape gate decides at build time; the reference fails there),
    every other axis pools to `floor(n / 2)` like AveragePooling2D(2, padding="valid")."""

    def call(self, x):
        for axis in (1, 2):
            x = _pool_axis(x, axis)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *(None if d is None else max(d // 2, 1) if d >= 2 else d
                                  for d in input_shape[1:3]), input_shape[3])


def _pool_axis(x, axis):
    size = ops.shape(x)[axis]
    window = (2, 1) if axis == 1 else (1, 2)
    if isinstance(size, int) and size < 2:
        return x
    if isinstance(size, int):
        return ops.average_pool(x, window, strides=window, padding="valid")
    # Unknown size: the last row appended makes a size-1 axis average with itself; the pair
    # it makes on odd sizes >= 3 is dropped again, leaving floor(n / 2) rows.
    last = x[:, -1:] if axis == 1 else x[:, :, -1:]
    pooled = ops.average_pool(ops.concatenate([x, last], axis=axis), window, strides=window,
                              padding="valid")
    keep = ops.maximum(size // 2, 1)
    return pooled[:, :keep] if axis == 1 else pooled[:, :, :keep]


@keras.saving.register_keras_serializable(package="keras_ghost")
class UpsampledMultiply(keras.layers.Layer):
    """`x * ResizeNearestLike()([gate, x])` in one layer, for inference graphs.

    When `x` is an exact integer multiple of `gate` in height and width, the gate is not
    materialized at full size: `x` is viewed as (h, rh, w, rw, C) blocks and multiplied
    by the (h, 1, w, 1, C) gate with broadcasting, which TFLite and XNNPACK run as one
    6-D MUL between two free reshapes.
    """

    def call(self, inputs):
        x, gate = inputs
        (_, height, width, channels), (_, h, w, _) = x.shape, gate.shape
        if None in (height, width, h, w) or height % h or width % w:
            return x * resize_nearest(gate, height, width)
        rh, rw = height // h, width // w
        blocks = ops.reshape(x, (-1, h, rh, w, rw, channels))
        gated = blocks * ops.reshape(gate, (-1, h, 1, w, 1, channels))
        return ops.reshape(gated, (-1, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="keras_ghost")
class PhaseSplit(keras.layers.Layer):
    """Splits a map into its `factor x factor` phases (sub-grids `x[:, i::f, j::f]`), stacked
    on the batch axis phase by phase: (B, H, W, C) -> (f * f * B, ceil(H / f), ceil(W / f), C).

    With `PhaseMerge`, runs a branch of a dilated network (see `keras_ghost.models.features`)
    per phase, as the undilated network runs it. Height and width are zero-padded at the end
    to multiples of `factor`.
    """

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        f = self.factor
        _, height, width, channels = x.shape
        height, width = (ops.shape(x)[1] if height is None else height,
                         ops.shape(x)[2] if width is None else width)
        h, w = -(-height // f), -(-width // f)
        x = ops.pad(x, ((0, 0), (0, h * f - height), (0, w * f - width), (0, 0)))
        x = ops.reshape(x, (-1, h, f, w, f, channels))
        x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
        return ops.reshape(x, (-1, h, w, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        f = self.factor
        return (None if batch is None else batch * f * f,
                None if height is None else -(-height // f),
                None if width is None else -(-width // f), channels)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="keras_ghost")
class PhaseMerge(keras.layers.Layer):
    """Inverse of `PhaseSplit`: interleaves `inputs[0]`'s phases back into one map and crops
    it to the height and width of `inputs[1]` (the map that was split)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, inputs):
        x, like = inputs
        f = self.factor
        _, h, w, channels = x.shape
        h, w = (ops.shape(x)[1] if h is None else h, ops.shape(x)[2] if w is None else w)
        height, width = like.shape[1:3]
        height, width = (ops.shape(like)[1] if height is None else height,
                         ops.shape(like)[2] if width is None else width)
        x = ops.reshape(x, (f, f, -1, h, w, channels))
        x = ops.transpose(x, (2, 3, 0, 4, 1, 5))
        x = ops.reshape(x, (-1, h * f, w * f, channels))
        return x[:, :height, :width, :]

    def compute_output_shape(self, input_shape):
        x_shape, like_shape = input_shape
        return (like_shape[0], like_shape[1], like_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="keras_ghost")
class UpsampleNearest(keras.layers.Layer):
    """`UpSampling2D(size)` (nearest) from concats and reshapes, which XNNPACK runs in int8;
    Keras' own lowers to TILE, which splits an int8 TFLite graph into several partitions."""

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, x):
        _, height, width, _ = x.shape
        if None in (height, width):
            return ops.repeat(ops.repeat(x, self.size, axis=1), self.size, axis=2)
        return resize_nearest(x, height * self.size, width * self.size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, None if height is None else height * self.size,
                None if width is None else width * self.size, channels)

    def get_config(self):
        return {**super().get_config(), "size": self.size}
