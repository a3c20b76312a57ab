"""Int8 activation ranges measured outside TFLite's calibrator (keras_ghost.export.ranges)."""

import keras
import numpy as np
import pytest

from keras_ghost import export
from keras_ghost.export import ranges, tflite

SHAPE = (12, 12, 4)


def _ghost_like_model():
    """A concat feeding a residual ADD and a ReLU6 gate feeding a MUL: the two places
    where an in-place op's output can be logged as its input's range."""
    layers = keras.layers
    inputs = keras.Input(SHAPE, name="image")
    primary = layers.Conv2D(2, 1, name="primary")(inputs)
    cheap = layers.DepthwiseConv2D(3, padding="same", name="cheap")(primary)
    ghost = layers.Concatenate(name="ghost_concat")([primary, cheap])
    shortcut = layers.Conv2D(4, 1, name="shortcut")(inputs)
    x = layers.Add(name="residual")([ghost, shortcut])
    gate = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    gate = layers.Conv2D(4, 1, name="expand")(gate)
    gate = layers.ReLU(6.0, name="gate")(gate)
    x = layers.Multiply(name="gated")([x, gate])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, layers.Dense(5, name="logits")(x))
    rng = np.random.default_rng(0)
    # Larger shortcut and gate weights: the ADD and MUL outputs span far wider ranges
    # than their inputs, so a range taken from the wrong tensor shows.
    model.get_layer("shortcut").set_weights([rng.normal(0, 4, (1, 1, 4, 4)), np.zeros(4)])
    model.get_layer("expand").set_weights([rng.normal(0, 3, (1, 1, 4, 4)), np.full(4, 2.0)])
    return model


@pytest.fixture(scope="module")
def model_and_data():
    model = _ghost_like_model()
    images = np.random.default_rng(1).normal(size=(40, *SHAPE)).astype("float32")
    with tflite._converter(model, "int8", images, "int8") as converter:
        calibrated = ranges.calibrate_only(converter)
    return model, images, calibrated


def _ranges_by_name(content):
    from tensorflow.lite.tools import flatbuffer_utils

    subgraph = flatbuffer_utils.read_model_from_bytearray(bytearray(content)).subgraphs[0]
    return {t.name.decode(): (float(t.quantization.min[0]), float(t.quantization.max[0]))
            for t in (subgraph.tensors[i] for i in ranges._ranged_tensors(subgraph))}


def _find(table, layer):
    # Tensors are named "<model>/<layer>_1/<op>;<ops fused into it>...".
    names = [n for n in table
             if "/" in n and n.split(";")[0].split("/")[1].rsplit("_", 1)[0] == layer]
    assert len(names) == 1, (layer, sorted(table))
    return table[names[0]]


def test_minmax_ranges_are_each_tensors_own(model_and_data):
    model, images, calibrated = model_and_data
    measured = _ranges_by_name(ranges.set_ranges(calibrated, images, "minmax"))
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in ("ghost_concat", "gate")])
    for layer, values in zip(("ghost_concat", "gate"), probe.predict(images, verbose=0)):
        np.testing.assert_allclose(_find(measured, layer), (values.min(), values.max()),
                                   rtol=1e-5, atol=1e-6, err_msg=layer)


def test_percentile_ranges_are_inside_minmax_and_keep_the_input(model_and_data):
    _, images, calibrated = model_and_data
    exact = _ranges_by_name(ranges.set_ranges(calibrated, images, "minmax"))
    robust = _ranges_by_name(ranges.set_ranges(calibrated, images, "percentile", 90.0))
    assert exact.keys() == robust.keys()
    narrower = 0
    for name, (lo, hi) in robust.items():
        assert exact[name][0] <= lo <= hi <= exact[name][1], name
        narrower += (lo, hi) != exact[name]
    assert narrower > 0
    # The model input is never clipped.
    assert robust["serving_default_image:0"] == exact["serving_default_image:0"]
    assert exact["serving_default_image:0"] == pytest.approx((images.min(), images.max()))


@pytest.mark.parametrize("io_type", ["int8", "float"])
def test_every_method_gives_the_same_integer_graph(model_and_data, io_type):
    model, images, _ = model_and_data
    held_out = np.random.default_rng(2).normal(size=(64, *SHAPE)).astype("float32")
    expected = model.predict(held_out, verbose=0)
    histograms = {}
    for method in ranges.METHODS:
        content = export.convert(model, "int8", images, io_type=io_type, optimize=False,
                                 calibration_method=method)
        histograms[method] = (export.op_histogram(content),
                              export.op_histogram(content, xnnpack=True))
        cosine = export.fidelity(expected, export.run(content, held_out))["mean_cosine"]
        assert cosine > 0.98, (method, cosine)
    # Same ops, same XNNPACK partitioning: only the int8 scales differ.
    assert histograms["percentile"] == histograms["minmax"] == histograms["tflite"]
    assert "DEQUANTIZE" not in histograms["percentile"][0] or io_type == "float"


def test_bad_method_or_percentile():
    model = _ghost_like_model()
    images = np.zeros((2, *SHAPE), "float32")
    with pytest.raises(ValueError, match="calibration_method must be one of"):
        export.convert(model, "int8", images, calibration_method="entropy")
    with pytest.raises(ValueError, match=r"percentile must be in \(50, 100\]"):
        export.convert(model, "int8", images, percentile=30)
