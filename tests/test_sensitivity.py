"""The Keras simulation of int8 error (keras_ghost.export.sensitivity)."""

import keras
import numpy as np
import pytest

from keras_ghost import export
from keras_ghost.export import sensitivity as eb
from keras_ghost.export import ranges, tflite

SHAPE = (10, 10, 3)


def _parts_model():
    layers = keras.layers
    inputs = keras.Input(SHAPE, name="image")
    x = layers.ZeroPadding2D(1, name="stem_pad")(inputs)
    x = layers.Conv2D(8, 3, name="stem_conv")(x)
    x = layers.ReLU(name="stem_relu")(x)
    primary = layers.Conv2D(4, 1, name="stage0_primary")(x)
    cheap = layers.DepthwiseConv2D(3, padding="same", name="stage0_cheap")(primary)
    x = layers.Concatenate(name="stage0_concat")([primary, cheap])
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    return keras.Model(inputs, layers.Dense(5, name="head_logits")(x), name="parts")


@pytest.fixture(scope="module")
def model_and_data():
    images = np.random.default_rng(0).normal(size=(48, *SHAPE)).astype("float32")
    return _parts_model(), images[:32], images[32:]


def test_quantized_tensors_are_the_ones_tflite_keeps(model_and_data):
    model, _, _ = model_and_data
    # The padding keeps its input's grid and the stem conv is fused with its ReLU.
    tensors = eb.quantized_tensors(model)
    assert list(tensors) == ["stem_relu", "stage0_primary", "stage0_cheap", "stage0_concat",
                             "head_pool", "head_logits"]
    assert set(tensors.values()) == {None}  # no fixed-grid activation: all measured


def test_kernel_grid_is_per_output_channel_symmetric_int8():
    rng = np.random.default_rng(1)
    for layer, shape, axes in [(keras.layers.Conv2D(6, 3), (3, 3, 4, 6), (0, 1, 2)),
                               (keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
                                (3, 3, 4, 2), (0, 1)),
                               (keras.layers.Dense(6), (4, 6), (0,))]:
        kernel = rng.normal(size=shape).astype("float32") * rng.uniform(0.01, 3, shape[-1])
        kernel[..., 0] = 0.0  # an all-zero channel stays zero
        q = eb.quantize_kernel(layer, kernel)
        scale = np.abs(kernel).max(axis=axes, keepdims=True) / 127
        steps = np.divide(q, scale, out=np.zeros_like(q), where=scale > 0)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        np.testing.assert_allclose(np.abs(steps).max(axis=axes)[..., 1:], 127, atol=1e-3)
        assert np.all(np.abs(q - kernel) <= scale / 2 + 1e-6) and not q[..., 0].any()
        assert not np.array_equal(q, kernel)


def test_fake_quant_grid():
    x = np.linspace(-3, 5, 1001).astype("float32")
    q = keras.ops.convert_to_numpy(eb.fake_quant(x, -1.0, 4.0))
    assert len(np.unique(q)) <= 256 and 0.0 in q
    assert q.min() == pytest.approx(-1.0, abs=0.02) and q.max() == pytest.approx(4.0, abs=0.02)
    inside = (x > -1) & (x < 4)
    assert np.abs(q - x)[inside].max() <= 5 / 255 / 2 + 1e-6
    # A range without 0 is widened to hold it (ReLU outputs start at exactly 0).
    assert keras.ops.convert_to_numpy(eb.fake_quant(np.zeros(1, "float32"), 0.5, 2.0))[0] == 0


def test_ranges_match_the_ones_the_converter_gets(model_and_data):
    """The simulation quantizes with the ranges `calibration_method="percentile"` writes
    into the .tflite, tensor for tensor."""
    from tensorflow.lite.tools import flatbuffer_utils

    model, calibration, _ = model_and_data
    names = eb.quantized_tensors(model)
    simulated = eb.activation_ranges(model, names, calibration, percentile=90.0)
    with tflite._converter(model, "int8", calibration, "int8") as converter:
        calibrated = ranges.calibrate_only(converter)
    edited = ranges.set_ranges(calibrated, calibration, "percentile", 90.0)
    subgraph = flatbuffer_utils.read_model_from_bytearray(bytearray(edited)).subgraphs[0]
    converted = {}
    for i in ranges._ranged_tensors(subgraph):
        tensor = subgraph.tensors[i]
        first = tensor.name.decode().split(";")[0].split("/")
        if i in subgraph.outputs:  # named after the signature
            name = model.layers[-1].name
        elif len(first) > 1:  # "<model>/<layer>_1/<op>"
            name = first[1].rsplit("_", 1)[0]
        else:
            continue
        converted[name] = (tensor.quantization.min[0], tensor.quantization.max[0])
    assert set(names) <= set(converted), sorted(converted)
    for name in names:
        np.testing.assert_allclose(simulated[name], converted[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_budget_of_a_model(model_and_data):
    model, calibration, images = model_and_data
    budget = export.error_budget(model, calibration, images, optimize=False)
    assert budget["images"] == len(images) and budget["quantized_tensors"] == 6
    parts = budget["activations_by_part"]
    assert list(parts) == ["stem", "stage0", "head"]
    assert sum(p["tensors"] for p in parts.values()) == budget["quantized_tensors"]
    for result in [budget["weights_only"], budget["activations_only"], *parts.values()]:
        # int8 rounding changes the logits, but only a little.
        assert 0 < result["max_abs_diff"] and 0.95 < result["mean_cosine"] < 1.0, result
        assert 0.0 <= result["top1_agreement"] <= 1.0


def test_quantized_tensors_follow_the_quantization_rules():
    """Add + ReLU is one TFLite op; a sigmoid has the int8 LOGISTIC kernel's fixed grid."""
    layers = keras.layers
    inputs = keras.Input(SHAPE, name="image")
    x = layers.Conv2D(3, 1, name="conv")(inputs)
    x = layers.ReLU(name="relu")(layers.Add(name="add")([x, inputs]))
    gate = layers.Activation("sigmoid", name="gate")(layers.Conv2D(3, 1, name="gate_conv")(x))
    model = keras.Model(inputs, layers.Multiply(name="gated")([x, gate]))
    tensors = eb.quantized_tensors(model)
    assert list(tensors) == ["conv", "relu", "gate_conv", "gate", "gated"]
    assert tensors["gate"] == (0.0, 255.0 / 256.0) and tensors["relu"] is None
