"""TFLite conversion (fp32, fp16, dynamic-range, full int8), inspection and fidelity checks."""

import collections
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from keras_ghost.io_utils import write_atomic  # noqa: F401  (part of this module's API)

MODES = ("fp32", "fp16", "dynamic", "int8")
IO_TYPES = ("int8", "uint8", "float")


def convert(model, mode="fp32", calibration=None, io_type="int8", optimize=True,
            calibration_method="percentile", percentile=99.0, progress=None,
            reparameterize=True):
    """Converts a Keras model to TFLite flatbuffer bytes at batch size 1.

    `calibration` (float32 array shaped like the model input, already preprocessed) is
    required for `int8`, which quantizes weights and activations; `io_type` sets the
    int8 model's input/output type, `calibration_method` how the activation ranges are
    set ("percentile" of the per-image extremes, exact "minmax", or "tflite": the
    converter's calibrator as is; see `keras_ghost.export.ranges`). With `optimize`, the
    deploy-time graph rewrites of `keras_ghost.export.optimize_for_inference` run first
    (outputs unchanged, checked). `reparameterize` fuses multi-branch training-form
    blocks (GhostNetV3, RepVGG / MobileOne style) into single convs, with or without
    `optimize`; `False` exports the branches as they are. Only TFLite builtin ops are
    allowed. `progress`, a `callback(done, total)`, follows the int8 calibration: one step
    per image per pass (TFLite's calibrator, then the range measurement).
    """
    from keras_ghost.export import ranges

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if io_type not in IO_TYPES:
        raise ValueError(f"io_type must be one of {IO_TYPES}, got {io_type!r}.")
    input_shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in input_shape):
        raise ValueError(f"'{model.name}' has a dynamic input {input_shape}; build it with a "
                         "fixed input_shape for export.")
    if mode == "int8":  # before the (slow) SavedModel export
        calibration = check_calibration(calibration, input_shape)
        ranges.check_method(calibration_method, percentile)
    if optimize:
        from keras_ghost.export.optimize import deploy_settings, optimize_for_inference

        model = optimize_for_inference(model, reparameterize=reparameterize,
                                       **deploy_settings(mode))
    elif reparameterize:  # the model itself when it has no branches
        from keras_ghost.export.optimize import apply_rewrites
        from keras_ghost.export.rewrites import FuseParallelBranches

        model = apply_rewrites(model, [FuseParallelBranches()], verify_each=True)
    passes = 1 if calibration_method == "tflite" else 2
    total = passes * len(calibration) if mode == "int8" else 0
    counted = None if progress is None or not total else _counter(progress, total)
    with _converter(model, mode, calibration, io_type, counted) as converter:
        if mode == "int8":
            return ranges.convert_int8(converter, calibration, io_type, calibration_method,
                                       percentile, progress=counted)
        return converter.convert()


@contextlib.contextmanager
def _converter(model, mode, calibration, io_type, progress=None):
    """A configured TFLiteConverter over a SavedModel export of `model` with a static
    batch-1 signature (the converter freezes its variables; the .tflite input is
    (1, h, w, c)). The SavedModel lives as long as the block."""
    import tensorflow as tf

    signature = [tf.TensorSpec((1, *model.inputs[0].shape[1:]), tf.float32, name="image")]
    with tempfile.TemporaryDirectory() as saved_model, contextlib.redirect_stdout(io.StringIO()):
        model.export(saved_model, format="tf_saved_model", input_signature=signature)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        configure_converter(converter, mode, calibration, io_type, progress)
        yield converter


def _counter(progress, total):
    """`step()`: calls `progress(done, total)` with one more image done."""
    done = [0]
    progress(0, total)

    def step():
        done[0] = min(done[0] + 1, total)
        progress(done[0], total)

    return step


def configure_converter(converter, mode, calibration=None, io_type="int8", progress=None):
    """Sets a `tf.lite.TFLiteConverter` up for `mode` the way `convert` does: builtin ops
    only; fp16 / dynamic-range weights; or full int8 with `calibration` (float32 images,
    preprocessed) as representative dataset and `io_type` in and out. `progress()` is
    called once per calibration image the converter reads."""
    import tensorflow as tf

    def representative():
        for x in calibration:
            yield [x[None]]
            if progress is not None:
                progress()

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type != "float":
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)


def check_calibration(calibration, input_shape):
    """`calibration` as float32 (n, *input_shape); raises naming both shapes."""
    if calibration is None:
        raise ValueError("int8 conversion needs calibration images.")
    calibration = np.asarray(calibration, dtype="float32")
    if calibration.ndim != 4 or tuple(calibration.shape[1:]) != input_shape:
        raise ValueError(f"Calibration data of shape {calibration.shape} does not fit the model "
                         f"input (n, {', '.join(map(str, input_shape))}).")
    return calibration


def interpreter(model_content, num_threads=1, xnnpack=True):
    """A LiteRT interpreter with tensors allocated; clear error on a corrupt model."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.AUTO if xnnpack
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    try:
        it = Interpreter(model_content=bytes(model_content), num_threads=num_threads,
                         experimental_op_resolver_type=resolver)
        it.allocate_tensors()
    except Exception as e:
        raise ValueError(f"Not a valid TFLite model ({type(e).__name__}: {e}).") from e
    return it


def read_tflite(path):
    data = Path(path).read_bytes()
    interpreter(data)  # validates
    return data


def op_histogram(model_content, xnnpack=False):
    """`{op name: count}` of the model's graph; with `xnnpack`, after XNNPACK took its
    partitions (each shows as one DELEGATE op)."""
    it = interpreter(model_content, xnnpack=xnnpack)
    return dict(collections.Counter(op["op_name"] for op in it._get_ops_details()))


def run(model_content, images, xnnpack=True):
    """Runs each image (float32, model-input preprocessed) and returns float outputs,
    (de)quantizing int8/uint8 inputs and outputs with their scales; `xnnpack=False` runs
    TFLite's built-in kernels instead of the XNNPACK delegate."""
    it = interpreter(model_content, xnnpack=xnnpack)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    expected = tuple(int(d) for d in inp["shape"][1:])
    if np.ndim(images) != 1 + len(expected) or tuple(np.shape(images)[1:]) != expected:
        raise ValueError(f"images of shape {np.shape(images)} do not fit the .tflite input "
                         f"(1, {', '.join(map(str, expected))}): pass (n, "
                         f"{', '.join(map(str, expected))}) float32 images, preprocessed.")
    results = []
    for x in images:
        x = x[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype("float32") - zero) * scale
        results.append(y[0])
    return np.stack(results)


def fidelity(expected, actual):
    """Agreement of converted outputs with the Keras model's."""
    expected = expected.reshape(len(expected), -1)
    actual = actual.reshape(len(actual), -1)
    cos = np.sum(expected * actual, 1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1) + 1e-12)
    return {
        "images": int(len(expected)),
        "max_abs_diff": float(np.abs(expected - actual).max()),
        "top1_agreement": float(np.mean(expected.argmax(1) == actual.argmax(1))),
        "mean_cosine": float(cos.mean()),
    }


def report(model_content, mode, keras_outputs=None, tflite_outputs=None):
    """The conversion report: size, ops, builtin-only check and fidelity."""
    ops = op_histogram(model_content)
    custom = sorted(op for op in ops if op.startswith("Flex") or op == "CUSTOM")
    result = {
        "mode": mode,
        "size_bytes": len(model_content),
        "ops": dict(sorted(ops.items())),
        "builtin_only": not custom,
        "non_builtin_ops": custom,
        "xnnpack_partitions": op_histogram(model_content, xnnpack=True).get("DELEGATE", 0),
    }
    if keras_outputs is not None:
        result["fidelity"] = fidelity(keras_outputs, tflite_outputs)
    return result
