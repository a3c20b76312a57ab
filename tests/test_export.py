"""TFLite export: every variant converts, runs in LiteRT, uses builtin ops only."""

import json

import keras
import numpy as np
import pytest

import keras_ghost
from keras_ghost import export
from conftest import SHARED
from helpers import load_script, randomize_bn, registry_sweep

SMALL = (32, 32, 3)


@pytest.fixture(scope="module")
def calibration():
    images = export.load_images(None, limit=24)
    spec = keras_ghost.get_spec("ghostnet_100")
    return export.to_model_input(images, SMALL, spec.mean, spec.std)


@pytest.mark.parametrize("name", registry_sweep(everything=False))
def test_fp32_and_int8_conversion(name, calibration):
    # Trained-like BN statistics: default-initialized nets without biases (AsymmNet) give
    # ~1e-9 logits, which no int8 grid resolves.
    model = randomize_bn(keras_ghost.create_model(name, input_shape=SMALL,
                                                  classifier_activation=None))
    held_out = calibration[-4:]
    expected = model.predict(held_out, verbose=0)

    fp32 = export.convert(model, "fp32")
    fp32_report = export.report(fp32, "fp32", expected, export.run(fp32, held_out))
    assert fp32_report["builtin_only"]
    assert fp32_report["fidelity"]["max_abs_diff"] < 1e-4
    assert fp32_report["xnnpack_partitions"] == 1

    int8 = export.convert(model, "int8", calibration=calibration[:-4])
    ops = export.op_histogram(int8)
    assert not any(op.startswith("Flex") for op in ops)
    # What XNNPACK would not take in int8 is gone: one delegate partition runs it all.
    assert not set(ops) & {"GATHER", "AVERAGE_POOL_2D", "RESIZE_NEAREST_NEIGHBOR", "TILE"}
    assert export.op_histogram(int8, xnnpack=True)["DELEGATE"] == 1
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=int8)
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert list(it.get_input_details()[0]["shape"]) == [1, *SMALL]
    # Every tensor that feeds a compute op is integer: nothing was left in float.
    float_tensors = [t["name"] for t in it.get_tensor_details()
                     if t["dtype"] == np.float32 and t["shape"].size > 0]
    assert not float_tensors, float_tensors[:5]
    cosine = export.fidelity(expected, export.run(int8, held_out))["mean_cosine"]
    assert cosine > 0.9


@pytest.mark.parametrize("mode", ["fp16", "dynamic"])
def test_fp16_and_dynamic_range(mode, calibration):
    model = keras_ghost.GhostNetV2(input_shape=SMALL, classifier_activation=None)
    content = export.convert(model, mode)
    outputs = export.run(content, calibration[:2])
    assert export.fidelity(model.predict(calibration[:2], verbose=0), outputs)["mean_cosine"] > 0.99


def _convert_cli():
    return load_script("tflite/convert.py")


def test_convert_cli_end_to_end(tmp_path):
    output = tmp_path / "m.tflite"
    result = _convert_cli().main(["--int8", "--model", "ghostnet_050", "--input-size", "32",
                                  "--calib-steps", "16", "--holdout", "8",
                                  "--include-preprocessing", "--io", "uint8",
                                  "--output", str(output)])
    assert output.is_file() and result["builtin_only"]
    saved = json.loads(output.with_suffix(".json").read_text())
    assert saved["fidelity"]["images"] == 8 and saved["size_bytes"] == output.stat().st_size
    assert saved["calibration_images"] == 16


# Bad input to convert.py: tests/test_cli.py (the table of every CLI's bad inputs).


def test_min_agreement_gate_writes_nothing(tmp_path, monkeypatch):
    from keras_ghost.export import tflite

    fidelity = tflite.fidelity
    # A conversion that disagrees with its Keras model (as a bad int8 one would).
    monkeypatch.setattr(tflite, "fidelity", lambda expected, actual: {
        **fidelity(expected, actual), "top1_agreement": 0.25})
    output = tmp_path / "gated.tflite"
    with pytest.raises(SystemExit, match="top-1 agreement 0.250 < --min-agreement 0.9") as exit_info:
        _convert_cli().main(["--int8", "--model", "ghostnet_050", "--input-size", "32",
                             "--calib-steps", "8", "--holdout", "4", "--min-agreement", "0.9",
                             "--output", str(output)])
    assert exit_info.value.code == 1  # the result failed the gate: not a usage error
    assert list(tmp_path.iterdir()) == []


def test_tfds_calibration_source():
    images = export.load_images("cifar10:test", data_dir=str(SHARED / "tfds"), limit=3)
    assert len(images) == 3 and images[0].shape == (32, 32, 3)


def test_missing_and_unknown_datasets(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared"):
        export.load_images("cifar100:train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown calibration source"):
        export.load_images("no_such_dataset_xyz", data_dir=str(tmp_path))


def test_calibration_of_the_wrong_shape():
    model = keras_ghost.GhostNet(width=0.5, input_shape=SMALL)
    with pytest.raises(ValueError, match=r"Calibration data of shape \(4, 16, 16, 3\)"):
        export.convert(model, "int8", calibration=np.zeros((4, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="HxWx3"):
        export.to_model_input([np.zeros((32, 32), "uint8")], SMALL)


def test_corrupt_tflite(tmp_path):
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(b"TFL3 but not really a flatbuffer")
    with pytest.raises(ValueError, match="Not a valid TFLite model"):
        export.read_tflite(path)


def test_write_atomic_leaves_nothing_on_failure(tmp_path):
    class Boom:
        pass
    with pytest.raises(TypeError):
        export.write_atomic({"x": Boom()}, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []
    from keras_ghost.io_utils import atomic_path
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "m.keras", suffix=".keras") as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []
    written = export.write_atomic(b"ok", tmp_path / "ok.bin")
    assert written.read_bytes() == b"ok" and (written.stat().st_mode & 0o777) != 0o600


def test_local_benchmark_interleaved(tmp_path):
    from keras_ghost.export import benchmark

    paths = []
    for width in (0.5, 1.0):
        model = keras_ghost.GhostNet(width=width, input_shape=SMALL)
        paths.append(export.write_atomic(export.convert(model, "fp32"), tmp_path / f"g{width}.tflite"))
    results = benchmark.benchmark(paths, num_threads=1, warmup_runs=2, runs=5)
    assert [r.model for r in results] == ["g0.5.tflite", "g1.0.tflite"]
    for r in results:
        assert r.runs == 5 and 0 < r.min_us <= r.p50_us <= r.max_us and r.std_us >= 0
    assert "g0.5.tflite" in benchmark.markdown(results)


def test_compare_cli_times_ours_and_a_keras_peer(tmp_path):
    compare = load_script("tflite/compare.py")
    md = tmp_path / "report.md"
    results = compare.main(["--models", "ghostnet_050", "mobilenetv3small", "--modes", "int8",
                            "--num-threads", "1", "--runs", "3", "--warmup-runs", "1",
                            "--input-size", "64", "--out-dir", str(tmp_path),
                            "--markdown", str(md)])
    assert sorted(r.model for r in results) == ["ghostnet_050_int8.tflite",
                                                 "mobilenetv3small_int8.tflite"]
    assert all(r.avg_us > 0 for r in results)
    text = md.read_text()
    assert "| ghostnet_050 |" in text and "| mobilenetv3small |" in text
    with pytest.raises(SystemExit, match="unknown model"):
        compare.main(["--models", "resnet9000"])


@pytest.mark.parametrize("name, shape", [
    ("ghostnetv3_100", SMALL),
    pytest.param("ghostnetv3_100", (224, 224, 3), marks=pytest.mark.slow, id="224"),
])
def test_ghostnetv3_exports_reparameterized(name, shape):
    """The export fuses GhostNetV3's branches first (keras_ghost.reparameterize): fp32
    equals the training-form Keras model, int8 runs as one XNNPACK partition."""
    keras.utils.set_random_seed(0)
    model = randomize_bn(keras_ghost.create_model(name, input_shape=shape,
                                                  classifier_activation=None))
    spec = keras_ghost.get_spec(name)
    data = export.to_model_input(export.load_images(None, limit=28), shape, spec.mean, spec.std)
    calibration, held_out = data[:-4], data[-4:]
    expected = model.predict(held_out, verbose=0)
    convs = sum(type(layer).__name__ in ("Conv2D", "DepthwiseConv2D") for layer in model.layers)

    fp32 = export.convert(model, "fp32")
    ops = export.op_histogram(fp32)
    # 3 conv + 1 scale branch per cheap op and strided dw, 3 per primary conv: the fused
    # graph has GhostNetV2's convs, well under half of the training form's.
    assert ops["CONV_2D"] + ops["DEPTHWISE_CONV_2D"] < convs / 2
    assert export.fidelity(expected, export.run(fp32, held_out))["max_abs_diff"] < 1e-4 * max(
        1.0, float(np.abs(expected).max()))

    int8 = export.convert(model, "int8", calibration=calibration)
    assert export.op_histogram(int8, xnnpack=True)["DELEGATE"] == 1
    assert export.fidelity(expected, export.run(int8, held_out))["mean_cosine"] > 0.95
