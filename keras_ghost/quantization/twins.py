"""tf_keras twins of the Keras 3 layers whose meaning does not survive a by-name translation.

Imported only in the QAT worker process (it imports tf_keras). The twins run the very same
`call` code as the Keras 3 layers (keras.ops on the TensorFlow backend accepts TF tensors),
so there is no second copy of the shape logic.
"""

import tensorflow as tf
import tf_keras

from keras_ghost.layers import shape_ops

PACKAGE = "keras_ghost_tf_keras"


@tf_keras.utils.register_keras_serializable(package=PACKAGE)
class ChannelSlice(tf_keras.layers.Layer):
    """Twin of `keras_ghost.layers.ChannelSlice`."""

    call = shape_ops.ChannelSlice.call

    def __init__(self, channels, start=0, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.start = int(start)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "start": self.start}


@tf_keras.utils.register_keras_serializable(package=PACKAGE)
class ResizeNearestLike(tf_keras.layers.Layer):
    """Twin of `keras_ghost.layers.ResizeNearestLike` (PyTorch-exact nearest resize)."""

    call = shape_ops.ResizeNearestLike.call


@tf_keras.utils.register_keras_serializable(package=PACKAGE)
class UpsampledMultiply(tf_keras.layers.Layer):
    """Twin of `keras_ghost.layers.UpsampledMultiply` (broadcast 6-D gate multiply)."""

    call = shape_ops.UpsampledMultiply.call


@tf_keras.utils.register_keras_serializable(package=PACKAGE)
class HardSigmoid(tf_keras.layers.Layer):
    """Keras 3's `hard_sigmoid`, `relu6(x + 3) / 6`. tf_keras' activation of that name is
    the older `clip(0.2 x + 0.5, 0, 1)`, so translating by name would change the model."""

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)


@tf_keras.utils.register_keras_serializable(package=PACKAGE)
class HardSwish(tf_keras.layers.Layer):
    """Keras 3's `hard_silu` / `hard_swish`, `x * relu6(x + 3) / 6`; tf_keras has no
    activation of that name."""

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)


# Keras 3 class name -> twin class (custom layers of this package).
LAYERS = {cls.__name__: cls for cls in (ChannelSlice, ResizeNearestLike, UpsampledMultiply)}
# Keras 3 activation names whose tf_keras namesake computes something else.
ACTIVATIONS = {"hard_sigmoid": HardSigmoid, "hard_silu": HardSwish, "hard_swish": HardSwish}
CUSTOM_OBJECTS = {cls.__name__: cls for cls in (*LAYERS.values(), HardSigmoid, HardSwish)}
