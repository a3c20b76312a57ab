"""The two shape operations the Ghost blocks need that Keras has no built-in layer for.

Both are registered serializable, so models load with `safe_mode=True`.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ghost")
class ChannelSlice(keras.layers.Layer):
    """Keeps the first `channels` channels (channels-last)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def call(self, inputs):
        return inputs[..., : self.channels]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


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
        x = self._resize_axis(x, ops.shape(like)[1], axis=1)
        return self._resize_axis(x, ops.shape(like)[2], axis=2)

    @staticmethod
    def _resize_axis(x, out_size, axis):
        in_size = ops.shape(x)[axis]
        if isinstance(in_size, int) and isinstance(out_size, int) and in_size == out_size:
            return x
        # Exact integer form of floor(i * in / out); no float rounding at multiples.
        index = ops.floor_divide(ops.arange(out_size, dtype="int32") * in_size, out_size)
        return ops.take(x, index, axis=axis)

    def compute_output_shape(self, input_shape):
        x_shape, like_shape = input_shape
        return (x_shape[0], like_shape[1], like_shape[2], x_shape[3])
