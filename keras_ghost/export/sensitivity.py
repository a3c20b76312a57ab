"""Where a model's int8 error comes from, measured in Keras.

Full-int8 error has two sources: the per-channel int8 weights and the per-tensor int8
activations. `error_budget` simulates each alone on the deploy graph that
`keras_ghost.export.convert` quantizes, and the activations part by part (the first
component of the layer names: "stem", "stage3", "head"), and reports the top-1 agreement
and cosine of each against the float model. A part whose simulation alone costs more
agreement than the others is where to look; costs that are about equal in every part
mean the error is the sum of many small roundings, which no single fix removes.

The simulation follows TFLite's scheme: symmetric per-output-channel weights in
[-127, 127]; asymmetric per-tensor activations with zero exactly representable, on the
outputs that have an int8 tensor of their own by `keras_ghost.quantization.rules` (the
table QAT uses: fused conv / add + ReLU, pass-through layers, the fixed output grid of
sigmoid / softmax / tanh), with the other ranges set like
`calibration_method="percentile"` (see `keras_ghost.export.ranges`). It does not model
TFLite's integer rounding, the input's quantization, or where the converter merges the
grids of a concat and its inputs, so it estimates; the int8 .tflite's own agreement is
the measurement.
"""

import numpy as np

WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")


def quantize_kernel(layer, kernel):
    """`kernel` rounded to TFLite's per-output-channel symmetric int8 grid."""
    name = type(layer).__name__
    # Output channels: the last axis of Conv2D / Dense kernels; for a depthwise kernel
    # (h, w, in, multiplier) every (in, multiplier) pair is one.
    axes = (0, 1) if name == "DepthwiseConv2D" else tuple(range(kernel.ndim - 1))
    scale = np.abs(kernel).max(axis=axes, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return (np.round(kernel / scale) * scale).astype(kernel.dtype)


def _weights_quantized(model):
    from keras_ghost.graph import copy_call, rebuild

    def call(layer, *args, **kwargs):
        if type(layer).__name__ not in WEIGHTED:
            return layer(*args, **kwargs)
        outputs = copy_call(layer, *args, **kwargs)
        new = outputs._keras_history.operation
        weights = new.get_weights()
        weights[0] = quantize_kernel(layer, weights[0])
        new.set_weights(weights)
        return outputs

    return rebuild(model, call)


def quantized_tensors(model):
    """`{layer name: None or fixed (min, max)}` for the layers whose outputs TFLite stores
    as int8 tensors of their own (None: the range is measured)."""
    from keras_ghost.quantization import rules

    return {name: output if isinstance(output, tuple) else None
            for name, (_, _, output) in rules.plan_model(model).items() if output}


def activation_ranges(model, names, calibration, percentile=99.0, batch_size=64):
    """`{name: (low, high)}`: the `percentile`-th percentile over images of each image's
    max (and the mirrored one of its min) of the named layers' outputs."""
    import keras

    def extremes(tensor):
        axes = tuple(range(1, len(tensor.shape)))
        return keras.ops.min(tensor, axis=axes), keras.ops.max(tensor, axis=axes)

    from keras_ghost.export.ranges import percentile_range

    outputs = [v for name in names for v in extremes(model.get_layer(name).output)]
    probe = keras.Model(model.inputs, outputs)
    values = probe.predict(calibration, batch_size=batch_size, verbose=0)
    lows, highs = percentile_range(np.stack(values[0::2], 1), np.stack(values[1::2], 1),
                                   percentile)
    return {name: (float(lows[k]), float(highs[k])) for k, name in enumerate(names)}


def fake_quant(x, low, high):
    """`x` on the asymmetric int8 grid of [low, high] (extended to hold 0), as floats."""
    import keras

    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / 255.0
    zero = float(np.clip(np.round(-128.0 - low / scale), -128, 127))
    q = keras.ops.clip(keras.ops.round(x / scale) + zero, -128.0, 127.0)
    return (q - zero) * scale


def _activations_quantized(model, ranges):
    from keras_ghost.graph import rebuild

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if layer.name in ranges:
            outputs = fake_quant(outputs, *ranges[layer.name])
        return outputs

    return rebuild(model, call)


def part_of(layer_name):
    return layer_name.split("_")[0]


def error_budget(model, calibration, images, *, percentile=99.0, optimize=True,
                 batch_size=256):
    """Top-1 agreement and cosine against `model` on `images` (preprocessed float32) of
    its int8-weights simulation, its int8-activations simulation and, per part, of the
    simulation with only that part's activations in int8. `calibration` sets the ranges.
    """
    from keras_ghost.export.tflite import fidelity

    deploy = model
    if optimize:
        from keras_ghost.export.optimize import optimize_for_inference

        deploy = optimize_for_inference(model, split_hard_swish=True)
    expected = model.predict(images, batch_size=batch_size, verbose=0)

    def measure(simulated):
        return fidelity(expected, simulated.predict(images, batch_size=batch_size, verbose=0))

    tensors = quantized_tensors(deploy)
    names = list(tensors)
    ranges = activation_ranges(deploy, [n for n in names if tensors[n] is None], calibration,
                               percentile)
    ranges.update({n: fixed for n, fixed in tensors.items() if fixed is not None})
    parts = {}
    for name in names:
        parts.setdefault(part_of(name), {})[name] = ranges[name]
    return {
        "images": int(len(images)),
        "calibration_images": int(len(calibration)),
        "percentile": percentile,
        "quantized_tensors": len(names),
        "weights_only": measure(_weights_quantized(deploy)),
        "activations_only": measure(_activations_quantized(deploy, ranges)),
        "activations_by_part": {part: dict(measure(_activations_quantized(deploy, subset)),
                                           tensors=len(subset))
                                for part, subset in parts.items()},
    }
