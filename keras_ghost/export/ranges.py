"""Activation ranges for full-int8 conversion, measured outside TFLite's calibrator.

TFLite's calibrator logs an op's inputs a second time after the op ran. When the memory
planner lets the op write its output over an input (in-place ADD and MUL), that input is
logged with the output's values (tensorflow/tensorflow#127842, open in TF 2.21). In
ghostnet_050 19 of 178 ranges were wrong: the concat before each residual ADD got the
ADD's range (5x too wide) and each SE gate's ReLU6 got the gated product's ([-42, 30]
instead of [0, 6]). So the converter only calibrates (to mark the tensors that need a
range); the ranges are then measured on the same images in an interpreter that keeps
every tensor, and the model is quantized with them by the converter's own quantizer.

Methods: "minmax" (the exact min and max over all images, what the calibrator means to
record), "percentile" (the `percentile`-th percentile over images of each image's max, and
the mirrored one of its min: a few extreme images no longer stretch the int8 grid of
everyone; the model input keeps its full range), "tflite" (the calibrator's ranges as they
are, i.e. plain `TFLiteConverter`).
"""

import numpy as np

METHODS = ("percentile", "minmax", "tflite")


def check_method(method, percentile):
    if method not in METHODS:
        raise ValueError(f"calibration_method must be one of {METHODS}, got {method!r}.")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}.")


def _ranged_tensors(subgraph):
    return [i for i, t in enumerate(subgraph.tensors)
            if t.quantization is not None and t.quantization.min is not None
            and len(t.quantization.min) == 1]


def measure(calibrated, calibration, indices, progress=None):
    """Per image, the min and max of each tensor in `indices` of a float model:
    two arrays shaped (images, tensors); NaN where a tensor cannot be read."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No delegate and no buffer sharing: every tensor keeps the values its op wrote.
    it = Interpreter(model_content=bytes(calibrated), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    lows = np.full((len(calibration), len(indices)), np.nan, np.float32)
    highs = lows.copy()
    for n, image in enumerate(calibration):
        it.set_tensor(inp, np.asarray(image, np.float32)[None])
        it.invoke()
        for k, index in enumerate(indices):
            try:
                values = it.get_tensor(index)
            except ValueError:  # a tensor without data (none in our graphs)
                continue
            if values.size:
                lows[n, k], highs[n, k] = values.min(), values.max()
        if progress is not None:
            progress()
    return lows, highs


def percentile_range(lows, highs, percentile):
    """From per-image minima and maxima (images on axis 0): the `percentile`-th
    percentile of the maxima and the mirrored one of the minima (NaNs ignored)."""
    return (np.nanpercentile(lows, 100.0 - percentile, 0),
            np.nanpercentile(highs, percentile, 0))


def set_ranges(calibrated, calibration, method="percentile", percentile=99.0, progress=None):
    """The calibrated float model (`converter._experimental_calibrate_only`) with the
    activation ranges of `method` measured on `calibration`."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    subgraph = model.subgraphs[0]
    indices = _ranged_tensors(subgraph)
    lows, highs = measure(calibrated, calibration, indices, progress)
    exact = np.nanmin(lows, 0), np.nanmax(highs, 0)
    if method == "percentile":
        robust = percentile_range(lows, highs, percentile)
    else:
        robust = exact
    inputs = set(subgraph.inputs)
    for k, index in enumerate(indices):
        lo, hi = (exact if index in inputs else robust)
        if not (np.isfinite(lo[k]) and np.isfinite(hi[k])) or hi[k] <= lo[k]:
            continue  # nothing measured: keep the calibrator's range
        quant = subgraph.tensors[index].quantization
        quant.min = np.array([lo[k]], np.float32)
        quant.max = np.array([hi[k]], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def calibrate_only(converter):
    """The float model annotated with the calibrator's ranges (what TFLite's
    QuantizationDebugger starts from)."""
    converter._experimental_calibrate_only = True
    try:
        return converter.convert()
    finally:
        converter._experimental_calibrate_only = False


def convert_int8(converter, calibration, io_type, method="percentile", percentile=99.0,
                 progress=None):
    """Full-int8 conversion of a converter already configured for int8 (representative
    dataset, int8 builtins, io types), with the activation ranges of `method`; `progress()`
    is called once per image measured."""
    import tensorflow as tf

    check_method(method, percentile)
    if method == "tflite":
        return converter.convert()
    try:
        from tensorflow.lite.python.convert import mlir_quantize
    except ImportError as e:  # the quantizer entry point that TFLite's debugger uses
        raise RuntimeError(f"calibration_method={method!r} needs TensorFlow's "
                           "tensorflow.lite.python.convert.mlir_quantize, which this "
                           f"TensorFlow {tf.__version__} lacks; use "
                           "calibration_method='tflite'.") from e
    calibrated = calibrate_only(converter)
    edited = set_ranges(calibrated, calibration, method, percentile, progress)
    dtype = tf.float32 if io_type == "float" else getattr(tf, io_type)
    return mlir_quantize(edited, False, input_data_type=dtype, output_data_type=dtype)
