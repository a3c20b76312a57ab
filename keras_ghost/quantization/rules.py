"""How each layer type is quantized: the one table the QAT configs are built from.

Free of tfmot and tf_keras, so the parent process (and the tests) can check that every
layer type of every registered model is covered without switching Keras versions. The
rules follow what TFLite's int8 kernels compute:

- Conv2D / DepthwiseConv2D kernels per output channel, Dense kernels per tensor, all
  symmetric in [-127, 127]; biases stay float here (TFLite stores them as int32).
- BatchNormalization after a conv is folded into it, and ReLU / ReLU6 after a conv, a
  folded BN or an Add is fused into that op, so no fake-quant sits inside such a chain:
  only its last output is quantized.
- Layers that only move or pick values (padding, slicing, reshapes, max pooling, nearest
  resize) keep their input's scale and get no quantizer of their own.
- Every other output (Add, Multiply, gates, Concatenate, pooling averages, activations)
  gets an 8-bit asymmetric moving-average quantizer, except where the int8 kernel has a
  fixed output grid (sigmoid, softmax, tanh): those get that grid, since any learned
  range would cost a requantize op after the kernel that training never saw.
"""

# Keras class name -> [(weight attribute, quantizer kind)].
WEIGHTED = {
    "Conv2D": [("kernel", "per_channel")],
    "DepthwiseConv2D": [("depthwise_kernel", "depthwise")],
    "Dense": [("kernel", "per_tensor")],
}
# Output has the input's quantization (values are only moved, copied or compared).
PASSTHROUGH = {"InputLayer", "ZeroPadding2D", "Cropping2D", "Reshape", "Flatten", "Permute",
               "Dropout", "MaxPooling2D", "GlobalMaxPooling2D", "ChannelSlice",
               "ResizeNearestLike"}
# Output quantized (unless fused into the next op, see `output_fused`).
QUANTIZED_OUTPUT = {"Add", "Subtract", "Multiply", "UpsampledMultiply", "Concatenate",
                    "Maximum", "Minimum", "AveragePooling2D", "GlobalAveragePooling2D",
                    "BatchNormalization", "Activation", "ReLU", "HardSigmoid", "HardSwish",
                    "Softmax",
                    "Rescaling", "Normalization"}
# Activations with an int8 TFLite kernel (Activation layers and fused `activation=`).
ACTIVATIONS = {"linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "softmax",
               "hard_silu", "hard_swish", "silu", "swish"}
FUSABLE_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")
# The output range of int8 LOGISTIC / SOFTMAX (scale 1/256, zero point -128) and TANH
# (scale 1/128, zero point 0) in TFLite.
FIXED_OUTPUT_RANGE = {"sigmoid": (0.0, 255.0 / 256.0), "softmax": (0.0, 255.0 / 256.0),
                      "tanh": (-1.0, 127.0 / 128.0)}


class UnsupportedLayerError(TypeError):
    """A layer type with no quantization rule."""


def activation_name(layer):
    fn = getattr(layer, "activation", None)
    if fn is None:
        return None
    return fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))


def kind_of(layer):
    """The rule key of a Keras 3 or tf_keras layer (twins count as what they stand for)."""
    return type(layer).__name__


def check_supported(layer):
    """Raises UnsupportedLayerError unless `layer` has a quantization rule."""
    kind = kind_of(layer)
    if kind not in WEIGHTED and kind not in PASSTHROUGH and kind not in QUANTIZED_OUTPUT:
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' ({kind}) has no quantization rule for QAT. Add its class "
            "to keras_ghost/quantization/rules.py (WEIGHTED, PASSTHROUGH or "
            "QUANTIZED_OUTPUT) after checking which int8 TFLite op it becomes.")
    act = activation_name(layer)
    if act is not None and act not in ACTIVATIONS:
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' uses activation {act!r}, which has no int8 TFLite kernel "
            "rule in keras_ghost/quantization/rules.py (ACTIVATIONS).")
    return kind


def _is_relu(layer):
    kind = kind_of(layer)
    if kind == "Activation":
        return activation_name(layer) in ("relu", "relu6")
    if kind == "ReLU":
        return (float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
                and layer.max_value in (None, 6.0, 6))
    return False


def output_fused(layer, consumers, producer):
    """Whether TFLite fuses `layer`'s output into its only consumer, so it has no int8
    tensor of its own: conv -> BN, and conv / folded BN / Add -> ReLU(6).

    `consumers(layer)` lists the layers reading its output; `producer(layer)` is its only
    input layer (or None)."""
    users = consumers(layer)
    if len(users) != 1:
        return False
    (user,) = users
    kind = kind_of(layer)
    linear = activation_name(layer) in (None, "linear")
    if kind in FUSABLE_INTO and linear and kind_of(user) == "BatchNormalization":
        return True
    folded_bn = (kind == "BatchNormalization" and producer(layer) is not None
                 and kind_of(producer(layer)) in FUSABLE_INTO
                 and output_fused(producer(layer), consumers, producer))
    if (kind in FUSABLE_INTO and linear) or folded_bn or kind == "Add":
        return _is_relu(user)
    return False


def graph(model):
    """`consumers(layer)` and `producer(layer)` (its only input layer, or None) of a
    functional Keras 3 or tf_keras model."""
    consumers, producers = {}, {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            inbound = getattr(node, "inbound_layers", None)  # tf_keras
            if inbound is None:  # Keras 3
                inbound = [t._keras_history.operation for t in node.input_tensors]
            inbound = list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]
            for source in inbound:
                consumers.setdefault(source.name, []).append(layer)
            if len(inbound) == 1:
                producers[layer.name] = inbound[0]
    return (lambda layer: consumers.get(layer.name, []),
            lambda layer: producers.get(layer.name))


def plan_model(model):
    """`plan` for every layer of a functional model but its inputs."""
    consumers, producer = graph(model)
    layers = [layer for layer in model.layers if kind_of(layer) != "InputLayer"]
    return plan(layers, consumers, producer)


def plan(layers, consumers, producer):
    """`{layer name: (weights, quantize_activation, quantize_output)}` for every layer;
    `weights` lists `(attribute, quantizer kind)`, `quantize_output` is False, True (a
    learned range) or the fixed `(min, max)` of the layer's int8 kernel."""
    result = {}
    for layer in layers:
        kind = check_supported(layer)
        weights = list(WEIGHTED.get(kind, ()))
        act = activation_name(layer)
        fused_act = kind in WEIGHTED and act not in (None, "linear")
        passthrough = kind in PASSTHROUGH
        # A fused activation is quantized as the layer output: tfmot's activation wrapper
        # supports only a few activations (not e.g. hard_silu).
        quantize_output = fused_act or not (passthrough
                                            or output_fused(layer, consumers, producer))
        if quantize_output and kind in ("Activation", "Softmax", *WEIGHTED):
            quantize_output = FIXED_OUTPUT_RANGE.get(
                "softmax" if kind == "Softmax" else act, quantize_output)
        result[layer.name] = (weights, False, quantize_output)
    return result
