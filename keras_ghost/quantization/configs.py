"""tfmot QuantizeConfigs built from `rules.py`, and the scheme that applies them.

Imported only in the QAT worker process (importing tfmot switches TensorFlow to tf_keras).
"""

import tensorflow as tf
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras import (
    quant_ops, quantize_layer, utils as quantize_utils)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantizers, default_8bit_transforms)
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
    model_transformer, transforms)

from keras_ghost.quantization import rules

quantizers = tfmot.quantization.keras.quantizers


class DepthwiseKernelQuantizer(quantizers.LastValueQuantizer):
    """Per-channel symmetric weights of a depthwise kernel `(kh, kw, in, multiplier)`.

    TFLite quantizes a depthwise conv per output channel (`in * multiplier` of them);
    tfmot's conv quantizer takes the last axis, which for multiplier 1 is one range for
    the whole kernel."""

    def __init__(self, **kwargs):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
        return {key: layer.add_weight(f"{name}_{key[:3]}", shape=(channels,),
                                      initializer=tf.keras.initializers.Constant(value),
                                      trainable=False)
                for key, value in (("min_var", -6.0), ("max_var", 6.0))}

    def __call__(self, inputs, training, weights, **kwargs):
        shape = inputs.shape
        flat = tf.reshape(inputs, (shape[0], shape[1], 1, shape[2] * shape[3]))
        quantized = quant_ops.LastValueQuantize(
            flat, weights["min_var"], weights["max_var"], is_training=training, num_bits=8,
            per_channel=True, symmetric=True, narrow_range=True)
        return tf.reshape(quantized, shape)

    def get_config(self):
        return {}


_EMA_DECAY = []  # one tf.Variable, made in the worker on first use


def ema_decay():
    """The decay of every activation range's moving average (`calibrate` lowers it)."""
    if not _EMA_DECAY:
        _EMA_DECAY.append(tf.Variable(0.999, trainable=False, dtype=tf.float32,
                                      name="qat_range_ema_decay"))
    return _EMA_DECAY[0]


class RangeQuantizer(quantizers.MovingAverageQuantizer):
    """8-bit asymmetric activation quantizer with tfmot's moving-average range, whose
    decay `calibrate` can set: tfmot starts every range at [-6, 6] with decay 0.999, so a
    short fine-tune would still carry much of that made-up range into the int8 model."""

    def __init__(self, **kwargs):
        super().__init__(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)

    def __call__(self, inputs, training, weights, **kwargs):
        return quant_ops.MovingAvgQuantize(
            inputs, weights["min_var"], weights["max_var"], ema_decay=ema_decay(),
            is_training=training, num_bits=8, per_channel=False, symmetric=False,
            narrow_range=False)

    def get_config(self):
        return {}


def calibrate(model, images, batch_size=64):
    """Sets every activation range of a fresh QAT model from `images`: the mean over
    batches of each batch's min and max (decay k / (k + 1) for batch k)."""
    decay = ema_decay()
    for k, start in enumerate(range(0, len(images), batch_size)):
        decay.assign(k / (k + 1))
        model(images[start:start + batch_size], training=True)
    decay.assign(0.999)


def weight_quantizer(kind):
    if kind == "per_channel":
        return default_8bit_quantizers.Default8BitConvWeightsQuantizer()
    if kind == "depthwise":
        return DepthwiseKernelQuantizer()
    if kind == "per_tensor":
        return quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True,
                                             narrow_range=True)
    raise ValueError(f"Unknown weight quantizer kind {kind!r}.")


def activation_quantizer():
    return RangeQuantizer()


class GhostQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """One layer's plan from `rules.plan`: weight quantizers, and a quantizer on the fused
    activation or on the output (or neither, where TFLite fuses the output away)."""

    def __init__(self, weights=(), quantize_activation=False, quantize_output=False):
        self.weights = [tuple(w) for w in weights]
        self.quantize_activation = bool(quantize_activation)
        # True, False, or the fixed (min, max) of a kernel such as int8 LOGISTIC.
        self.quantize_output = (tuple(quantize_output) if isinstance(quantize_output, (list, tuple))
                                else bool(quantize_output))

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, attr), weight_quantizer(kind)) for attr, kind in self.weights]

    def set_quantize_weights(self, layer, quantize_weights):
        for (attr, _), weight in zip(self.weights, quantize_weights):
            setattr(layer, attr, weight)

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, activation_quantizer())] if self.quantize_activation else []

    def set_quantize_activations(self, layer, quantize_activations):
        if self.quantize_activation:
            layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        if isinstance(self.quantize_output, tuple):
            low, high = self.quantize_output
            return [quantizers.FixedQuantizer(num_bits=8, init_min=low, init_max=high,
                                              narrow_range=False)]
        return [activation_quantizer()] if self.quantize_output else []

    def get_config(self):
        return {"weights": [list(w) for w in self.weights],
                "quantize_activation": self.quantize_activation,
                "quantize_output": (list(self.quantize_output)
                                    if isinstance(self.quantize_output, tuple)
                                    else self.quantize_output)}


class _InputQuantize(default_8bit_transforms.InputLayerQuantize):
    """tfmot's input quantizer transform with a `RangeQuantizer` (tfmot's keeps the
    running min/max of all values, which never shrinks from its [-6, 6] start)."""

    def replacement(self, match_layer):
        layer = quantize_layer.QuantizeLayer(RangeQuantizer())
        config = quantize_utils.serialize_layer(layer, use_legacy_format=True)
        config["name"] = layer.name
        return transforms.LayerNode(config, input_layers=[match_layer])

    def custom_objects(self):
        return {**super().custom_objects(), "RangeQuantizer": RangeQuantizer}


class _InputOnlyLayout(tfmot.quantization.keras.QuantizeLayoutTransform):
    """Adds the input quantizer only. tfmot's default transforms would replace our
    per-layer configs (e.g. a conv before a ReLU loses its weight quantizers)."""

    def apply(self, model, layer_quantize_map):
        return model_transformer.ModelTransformer(
            model, [_InputQuantize()], set(layer_quantize_map), layer_quantize_map).transform()


class _PlanRegistry(tfmot.quantization.keras.QuantizeRegistry):
    def __init__(self, configs):
        self.configs = configs

    def supports(self, layer):
        return layer.name in self.configs

    def get_quantize_config(self, layer):
        return self.configs[layer.name]


class GhostQuantizeScheme(tfmot.quantization.keras.QuantizeScheme):
    def __init__(self, configs):
        self.configs = configs

    def get_layout_transformer(self):
        return _InputOnlyLayout()

    def get_quantize_registry(self):
        return _PlanRegistry(self.configs)


CUSTOM_OBJECTS = {"GhostQuantizeConfig": GhostQuantizeConfig, "RangeQuantizer": RangeQuantizer,
                  "DepthwiseKernelQuantizer": DepthwiseKernelQuantizer}


def quantize(model):
    """The QAT model of a tf_keras functional model: every layer annotated with its
    `GhostQuantizeConfig` (weights kept), then `quantize_apply` with our scheme."""
    import tf_keras

    from keras_ghost.quantization import twins

    configs = {name: GhostQuantizeConfig(*plan) for name, plan in rules.plan_model(model).items()}
    keras = tfmot.quantization.keras
    annotated = tf_keras.models.clone_model(
        model, clone_function=lambda layer: layer if layer.name not in configs else
        keras.quantize_annotate_layer(layer, configs[layer.name]))
    with keras.quantize_scope({**CUSTOM_OBJECTS, **twins.CUSTOM_OBJECTS}):
        return keras.quantize_apply(annotated, GhostQuantizeScheme(configs))


def load_qat_model(path):
    """Loads a QAT model saved by `keras_ghost.quantization.quantize_aware(qat_model=...)`
    (in a tf_keras process: this imports tfmot)."""
    import tf_keras

    with tfmot.quantization.keras.quantize_scope(custom_objects()):
        return tf_keras.models.load_model(path)


def custom_objects():
    from keras_ghost.quantization import twins

    return {**CUSTOM_OBJECTS, **twins.CUSTOM_OBJECTS}
