"""Quantization-aware training and pruning (keras_ghost.quantization).

tfmot work runs in the worker process, so these tests also check that the pytest process
itself stays on Keras 3. A worker call that translates, QAT-wraps and converts a GhostNet
takes a minute or more on a shared 2-core CPU, so the default run has the layer rules of one
variant per family (in-process), the translation of one model, and one tiny end-to-end QAT
fine-tune and conversion; the other families and pruning are marked slow.
"""

import importlib.util
import os
import sys

import keras
import numpy as np
import pytest

import keras_ghost
from keras_ghost import export, quantization
from keras_ghost.quantization import rules

from conftest import SHARED
from helpers import randomize_bn

SIZE = (32, 32, 3)
TFDS = SHARED / "tfds"

# The [qat] extra. Looked up, not imported: importing tfmot would switch this process to
# tf_keras, which is what the worker keeps away from it.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow_model_optimization") is None
                                or importlib.util.find_spec("tf_keras") is None,
                                reason="needs the [qat] extra (tensorflow-model-optimization)")


def _model(name, **kwargs):
    keras.utils.set_random_seed(0)
    model = keras_ghost.create_model(name, input_shape=SIZE, classes=10,
                                     classifier_activation=None, **kwargs)
    # Non-trivial BN statistics, so that folding and translation errors would show.
    return randomize_bn(model)


def _one_per_family():
    """The first registered variant of each family and each set of its builder arguments
    other than the size (`width`, `variant`), which do not change the layer types."""
    chosen = {}
    for name in keras_ghost.list_models():
        spec = keras_ghost.get_spec(name)
        key = (spec.family, tuple(sorted((k, repr(v)) for k, v in spec.kwargs.items()
                                         if k not in ("width", "variant"))))
        chosen.setdefault(key, name)
    return sorted(chosen.values())


def _assert_still_keras3():
    assert os.environ.get("TF_USE_LEGACY_KERAS") is None
    assert "tensorflow_model_optimization" not in sys.modules
    assert keras.version().startswith("3.")
    assert isinstance(_model("ghostnet_050"), keras.Model)


@pytest.fixture(scope="module")
def family_names():
    return _one_per_family()


def _check_rules(names):
    kinds = set()
    for name in names:
        model = keras_ghost.create_model(name, input_shape=SIZE, classes=10)
        plan = rules.plan_model(model)  # raises UnsupportedLayerError on a missing rule
        assert set(plan) == {layer.name for layer in model.layers
                             if not isinstance(layer, keras.layers.InputLayer)}
        kinds |= {type(layer).__name__ for layer in model.layers}
    return kinds


def test_every_layer_type_of_each_family_has_a_rule(family_names):
    # The raw graphs here, the deploy graphs (what QAT trains) in the translation tests.
    kinds = _check_rules(family_names)
    assert {"Conv2D", "DepthwiseConv2D", "BatchNormalization", "Multiply", "Concatenate",
            "ResizeNearestLike"} <= kinds


@pytest.mark.slow
def test_every_layer_type_of_every_registered_model_has_a_rule():
    _check_rules(keras_ghost.list_models())


def test_missing_rule_is_an_error():
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.LayerNormalization(name="ln")(inputs)
    with pytest.raises(rules.UnsupportedLayerError, match="'ln'.*rules.py"):
        rules.plan_model(keras.Model(inputs, outputs))
    outputs = keras.layers.Activation("gelu", name="act")(inputs)
    with pytest.raises(rules.UnsupportedLayerError, match="gelu"):
        rules.plan_model(keras.Model(inputs, outputs))


def test_rules_follow_tflite_fusion():
    model = _model("ghostnetv2_100")
    plan = rules.plan_model(model)
    weights, _, out = plan["stem_conv"]
    assert weights == [("kernel", "per_channel")] and not out   # BN folds into it
    assert plan["stem_bn"][2] is False                           # ReLU fuses into it
    assert plan["stem_relu"][2] is True
    assert plan["stage0_block0_ghost1_cheap_conv"][0] == [("depthwise_kernel", "depthwise")]
    assert plan["stage1_block0_ghost2_cheap_bn"][2] is True      # no ReLU after it
    for name in ("stage0_block0_add", "stage0_block0_ghost1_concat", "stage3_block0_se_mul",
                 "stage3_block0_se_gate", "stage2_block0_ghost1_dfc_mul", "head_pool"):
        assert plan[name][2] is True, name
    for name in ("stage2_block0_ghost1_dfc_resize", "stage1_block0_dw_pad", "head_flatten"):
        assert plan[name][2] is False, name
    # int8 LOGISTIC has a fixed output grid (scale 1/256, zero point -128).
    assert plan["stage2_block0_ghost1_dfc_sigmoid"][2] == (0.0, 255 / 256)
    inputs = keras.Input((4, 4, 3))
    probs = keras.layers.Dense(5, activation="softmax", name="fc")(keras.layers.Flatten()(inputs))
    assert rules.plan_model(keras.Model(inputs, probs))["fc"][2] == (0.0, 255 / 256)


def _check_translation(names, quantize):
    models = [_model(name) for name in names]
    result = quantization.check_translation(models, graphs=("raw", "deploy"), quantize=quantize)
    for name, entry in zip(names, result["models"]):
        for graph in ("raw", "deploy"):
            info = entry[graph]
            assert info["weights_identical"], (name, graph)
            assert info["max_abs_diff"] <= 1e-4 * max(1.0, info["output_scale"]), (name, info)
            if quantize:
                # A random-weight net's logits are small, so 8-bit rounding moves them a lot
                # (ghostnet_050: 0.15 at scale 0.23); this only catches a broken wrap. The
                # int8 fidelity of a wrapped model is checked in the conversion test.
                assert info["qat_max_abs_diff"] < info["output_scale"], (name, info)
                assert info["qat_layers"] >= info["layers"]
    _assert_still_keras3()


@pytest.mark.parametrize("name", ["ghostnet_050",
                                  pytest.param("ghostnetv2_100", marks=pytest.mark.slow)])
def test_translation_and_qat_wrap(name):
    """tf_keras translation: identical weights and outputs for the raw and the deploy
    graph, and the QAT wrap of both (before training) stays close to the float model."""
    _check_translation([name], quantize=True)


@pytest.mark.slow
def test_translation_one_variant_per_family(family_names):
    _check_translation(family_names, quantize=True)


@pytest.mark.slow
def test_translation_every_registered_variant():
    _check_translation(keras_ghost.list_models(), quantize=False)


def _assert_full_int8(content):
    """Integer ops only: no Flex ops, no DEQUANTIZE, no float tensor, int8 in and out, and
    one XNNPACK partition."""
    ops = export.op_histogram(content)
    assert not any(op.startswith("Flex") or op == "DEQUANTIZE" for op in ops), ops
    assert export.op_histogram(content, xnnpack=True)["DELEGATE"] == 1
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=content)
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert it.get_output_details()[0]["dtype"] == np.int8
    float_tensors = [t["name"] for t in it.get_tensor_details()
                     if t["dtype"] == np.float32 and t["shape"].size > 0]
    assert not float_tensors, float_tensors[:5]


@pytest.mark.skipif(not (TFDS / "cifar10").exists(), reason="no CIFAR-10 in ../shared/tfds")
def test_qat_finetune_end_to_end_converts_to_full_int8(tmp_path):
    """The whole QAT path in one worker call: translate, wrap, calibrate, fine-tune on
    CIFAR-10, convert, evaluate."""
    model = _model("ghostnet_050")
    before = [w.copy() for w in model.get_weights()]
    out = tmp_path / "qat.tflite"
    report = quantization.finetune(model, out, data_dir=TFDS, epochs=1, limit_train=256,
                                   batch_size=64, calib_images=64, limit_test=64,
                                   learning_rate=0.001, verbose=0)
    _assert_still_keras3()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    training = report["qat_training"]
    assert training["epochs"] == 1 and np.isfinite(training["loss"]).all()
    assert report["test_images"] == 64 and 0.0 <= report["int8_accuracy"] <= 1.0
    assert report["report"]["builtin_only"] and report["report"]["xnnpack_partitions"] == 1
    _assert_full_int8(out.read_bytes())
    # The .tflite computes what the QAT Keras model simulates: int8 rounding apart, the
    # same logits (a broken range or scale hand-over drops the cosine far below this).
    assert report["report"]["fidelity"]["mean_cosine"] > 0.99, report["report"]["fidelity"]


@pytest.mark.slow
@pytest.mark.parametrize("name", _one_per_family())
def test_qat_model_converts_to_full_int8(name, tmp_path):
    model = _model(name)
    rng = np.random.default_rng(1)
    calibration = rng.standard_normal((32, *SIZE)).astype("float32")
    path = tmp_path / "qat.tflite"
    quantization.quantize_aware(model, path, calibration)
    _assert_still_keras3()
    content = path.read_bytes()
    _assert_full_int8(content)
    # The untrained QAT model computes what the float model does, up to int8 rounding.
    held_out = rng.standard_normal((8, *SIZE)).astype("float32")
    fidelity = export.fidelity(model.predict(held_out, verbose=0), export.run(content, held_out))
    assert fidelity["mean_cosine"] > 0.9, fidelity


@pytest.mark.slow
@pytest.mark.skipif(not (TFDS / "cifar10").exists(), reason="no CIFAR-10 in ../shared/tfds")
def test_pruning_reaches_target_sparsity_and_qat_keeps_it(tmp_path):
    model = _model("ghostnet_050")
    report = quantization.finetune(
        model, tmp_path / "pruned.tflite", data_dir=TFDS, epochs=1, prune=True,
        target_sparsity=0.5, prune_epochs=2, limit_train=512, batch_size=64, calib_images=64,
        limit_test=64, learning_rate=0.001, verbose=0,
        extra_outputs={tmp_path / "sparse_fp32.tflite": ("fp32", True)})
    _assert_still_keras3()
    assert report["sparsity"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert report["sparsity_after_qat"] == pytest.approx(report["sparsity"]["sparsity"], abs=1e-3)
    assert report["report"]["builtin_only"] and report["test_images"] == 64
    assert (tmp_path / "pruned.tflite").exists() and (tmp_path / "sparse_fp32.tflite").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (TFDS / "cifar10").exists(), reason="no CIFAR-10 in ../shared/tfds")
@pytest.mark.parametrize("name", _one_per_family())
def test_pruning_and_qat_run_for_every_family(name, tmp_path):
    report = quantization.finetune(
        _model(name), tmp_path / "pruned.tflite", data_dir=TFDS, epochs=0, prune=True,
        target_sparsity=0.5, prune_epochs=1, prune_end_fraction=0.5, limit_train=128,
        batch_size=32, calib_images=16, limit_test=16, verbose=0)
    assert report["sparsity"]["sparsity"] == pytest.approx(0.5, abs=0.02), report["sparsity"]
    assert report["sparsity_after_qat"] == pytest.approx(report["sparsity"]["sparsity"], abs=1e-3)
    _assert_full_int8((tmp_path / "pruned.tflite").read_bytes())


def test_worker_errors_reach_the_caller():
    # UpSampling2D translates to tf_keras but has no quantization rule (yet).
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.UpSampling2D(name="up")(keras.layers.Conv2D(4, 1)(inputs))
    with pytest.raises(quantization.QATError, match="no quantization rule"):
        quantization.check_translation([keras.Model(inputs, outputs)], quantize=True)
    _assert_still_keras3()


def test_argument_errors(tmp_path):
    model = _model("ghostnet_050")
    with pytest.raises(ValueError, match="Nothing to do"):
        quantization.finetune(model, tmp_path / "x.tflite", qat=False)
    with pytest.raises(ValueError, match="target_sparsity"):
        quantization.finetune(model, tmp_path / "x.tflite", prune=True, target_sparsity=1.5)
    with pytest.raises(FileNotFoundError, match="Model file not found"):
        quantization.finetune(tmp_path / "missing.keras", tmp_path / "x.tflite")
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="not a .keras file"):
        quantization.finetune(tmp_path / "weights.h5", tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="io_type"):
        quantization.quantize_aware(model, tmp_path / "x.tflite", np.zeros((1, *SIZE)), io_type="x")
    with pytest.raises(TypeError, match="functional"):
        quantization.quantize_aware(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "x",
                                    np.zeros((1, 4)))
