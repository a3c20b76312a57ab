"""Every family on the TensorFlow, JAX and PyTorch backends: the same weights give the
same outputs (classifier and `features_only`), a model trains and saves on each, a
`.keras` file saved on one backend loads on the others, reference checkpoints and
keras_ghost 0.1 files load everywhere, and a model trained on JAX or PyTorch exports to
the same int8 file as on TensorFlow. One process per backend (tests/backend_worker.py);
the default run checks one small variant per paper family, the rest run under `-m slow`."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_ghost
from backend_worker import Job
from helpers import JAX_FAST_COMPILE, python_env, randomize_bn, registry_sweep

HERE = Path(__file__).parent
LEGACY = HERE / "data" / "legacy" / "ghostnetv2_025_cifar_v0.1"
SHAPE = (45, 61, 3)  # odd sizes, not square
BACKENDS = ("jax", "torch")
FIRST = {keras_ghost.get_spec(p.values[0]).family: p.values[0] for p in reversed(registry_sweep())}
# One per paper: GhostNet, GhostNetV2, GhostNetV3, G-GhostNet (RegNet stages), AsymmNet.
DEFAULT_FAMILIES = {"GhostNet", "GhostNetV2", "GhostNetV3", "GGhostRegNet", "AsymmNetSmall"}
FIT_NAME = "ghostnet_050"
# Relative to the largest output: float32 sums in other orders (oneDNN, XLA, ATen).
RTOL = 1e-5


def run_backend(backend, job, tmp_path):
    path = tmp_path / f"job.{backend}.{len(list(tmp_path.glob('job.*')))}.json"
    path.write_text(json.dumps(dataclasses.asdict(job)))
    env = python_env(KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="",
                     XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {JAX_FAST_COMPILE}".strip())
    done = subprocess.run([sys.executable, str(HERE / "backend_worker.py"), str(path)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]


def load(tmp_path, key, backend):
    with np.load(tmp_path / f"{key}.{backend}.npz") as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def assert_close(actual, expected, what):
    assert len(actual) == len(expected), what
    for a, e in zip(actual, expected):
        scale = float(np.abs(e).max())
        assert scale > 1e-2 and float(e.std()) > 1e-3, (what, scale)  # not vacuous
        np.testing.assert_allclose(a, e, rtol=0, atol=RTOL * scale, err_msg=what)


def outputs(model, images):
    return [np.asarray(y) for y in keras.tree.flatten(model.predict(images, verbose=0))]


def write_forward_weights(names, tmp_path):
    """Saves each variant's classifier and features_only weights (trained-like BN)."""
    images = np.load(tmp_path / "images.npy")
    expected = {}
    for name in names:
        model = randomize_bn(keras_ghost.create_model(name, input_shape=SHAPE, classes=10,
                                                      classifier_activation=None))
        model.save_weights(tmp_path / f"{name}.weights.h5")
        features = randomize_bn(keras_ghost.create_model(name, input_shape=SHAPE,
                                                         features_only=True), seed=1)
        features.save_weights(tmp_path / f"{name}.features.weights.h5")
        expected[name] = outputs(model, images), outputs(features, images)
    return expected


def assert_forward(names, expected, tmp_path):
    for backend in BACKENDS:
        for name in names:
            logits, features = expected[name]
            assert_close(load(tmp_path, f"{name}.logits", backend), logits, (backend, name))
            assert len(features) >= 4
            assert_close(load(tmp_path, f"{name}.features", backend), features,
                         (backend, name, "features_only"))


def timm_checkpoint(tmp_path):
    """A timm ghostnet_050 state_dict with trained-like BN, and its Keras logits."""
    torch, timm = pytest.importorskip("torch"), pytest.importorskip("timm")
    reference = timm.create_model(FIT_NAME).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.3, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    path = tmp_path / "timm_ghostnet_050.pth"
    torch.save(reference.state_dict(), path)
    images = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "images64.npy", images)
    with torch.no_grad():
        timm_logits = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    return path, timm_logits


def test_every_backend_matches_tensorflow(tmp_path):
    names = sorted(name for family, name in FIRST.items() if family in DEFAULT_FAMILIES)
    assert len(names) == len(DEFAULT_FAMILIES), names
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.normal(size=(2, *SHAPE)).astype("float32"))
    expected = write_forward_weights(names, tmp_path)

    dynamic = randomize_bn(keras_ghost.create_model(FIT_NAME, input_shape=(None, None, 3),
                                                    classes=10, classifier_activation=None))
    dynamic.save_weights(tmp_path / f"{FIT_NAME}.dynamic.weights.h5")
    images = np.load(tmp_path / "images.npy")
    np.save(tmp_path / "fit_x.npy", rng.normal(size=(8, 32, 32, 3)).astype("float32"))
    np.save(tmp_path / "fit_y.npy", np.arange(8) % 10)
    checkpoint, timm_logits = timm_checkpoint(tmp_path)
    legacy = [str(LEGACY) + ".keras", str(tmp_path / "legacy_images.npy")]
    np.save(legacy[1], np.load(str(LEGACY) + "_outputs.npz")["images"])
    fit_x = str(tmp_path / "fit_x.npy")

    # TensorFlow saves first; then each backend loads the files the ones before it saved.
    keras.utils.set_random_seed(0)
    dynamic.compile(keras.optimizers.SGD(0.02, momentum=0.9),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dynamic.fit(np.load(fit_x), np.load(tmp_path / "fit_y.npy"), batch_size=8, epochs=1,
                verbose=0)
    dynamic.save(tmp_path / "trained.tensorflow.keras")
    saved = ["tensorflow"]
    for backend in BACKENDS:
        loads = [legacy] + [[str(tmp_path / f"trained.{b}.keras"), fit_x] for b in saved]
        run_backend(backend, Job(str(tmp_path), names, list(SHAPE), FIT_NAME, loads,
                                 str(checkpoint)), tmp_path)
        saved.append(backend)
    # and the one direction the chain leaves out: JAX loads PyTorch's file
    run_backend("jax", Job(str(tmp_path), [], list(SHAPE),
                           loads=[[str(tmp_path / "trained.torch.keras"), fit_x]]), tmp_path)

    assert_forward(names, expected, tmp_path)
    legacy_outputs = np.load(str(LEGACY) + "_outputs.npz")["outputs"]
    tf_legacy = outputs(keras_ghost.load_model(legacy[0]), np.load(legacy[1]))
    assert_close(tf_legacy, [legacy_outputs], "legacy on tensorflow")
    tf_checkpoint = keras_ghost.create_model(FIT_NAME, weights=checkpoint, input_shape=(64, 64, 3),
                                             classifier_activation=None)
    assert_close(outputs(tf_checkpoint, np.load(tmp_path / "images64.npy")), [timm_logits],
                 "timm checkpoint on tensorflow")
    before = dynamic_before(tmp_path)
    dynamic_expected = {(h, w): outputs(before, images[:, :h, :w]) for h, w in ((32, 32), (50, 40))}
    for backend in BACKENDS:
        for (h, w), want in dynamic_expected.items():
            assert_close(load(tmp_path, f"dynamic.{h}x{w}", backend), want,
                         (backend, "(None, None, 3) at", (h, w)))
        losses = load(tmp_path, "fit.loss", backend)[0]
        # SGD with momentum on one batch, BN in training mode: the loss falls, not monotonically.
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], (backend, losses)
        assert min(losses[1:]) < 0.9 * losses[0], (backend, losses)
        assert_close(load(tmp_path, "loaded.ghostnetv2_025_cifar_v0.1", backend),
                     [legacy_outputs], (backend, "keras_ghost 0.1 file"))
        assert_close(load(tmp_path, "checkpoint", backend), [timm_logits],
                     (backend, "timm checkpoint"))
    # Every file loads on every other backend with the outputs of the backend that saved it.
    for saver in ("tensorflow", *BACKENDS):
        on_tf = outputs(keras_ghost.load_model(tmp_path / f"trained.{saver}.keras"),
                        np.load(fit_x))
        if saver != "tensorflow":
            assert_close(on_tf, load(tmp_path, "trained", saver), (saver, "file on tensorflow"))
        for loader in BACKENDS:
            if loader != saver:
                assert_close(load(tmp_path, f"loaded.trained.{saver}", loader), on_tf,
                             (saver, "file on", loader))


    # A model trained on PyTorch exports (through TensorFlow) to the file that the same
    # model saved on TensorFlow gives.
    from keras_ghost.cli import convert

    keras_ghost.load_model(tmp_path / "trained.torch.keras").save(tmp_path / "resaved.keras")
    reports = [convert.main(["--int8", "--keras-model", str(tmp_path / saved), "--input-size",
                             "32", "--calib-steps", "16", "--holdout", "8", "--quiet",
                             "--output", str(tmp_path / f"{i}.tflite")])
               for i, saved in enumerate(["trained.torch.keras", "resaved.keras"])]
    assert reports[0]["xnnpack_partitions"] == 1, reports[0]
    assert reports[0]["model"] == FIT_NAME
    assert (tmp_path / "0.tflite").read_bytes() == (tmp_path / "1.tflite").read_bytes()


def dynamic_before(tmp_path):
    model = keras_ghost.create_model(FIT_NAME, input_shape=(None, None, 3), classes=10,
                                     classifier_activation=None)
    model.load_weights(tmp_path / f"{FIT_NAME}.dynamic.weights.h5")
    return model


@pytest.mark.slow
def test_every_backend_matches_tensorflow_other_families(tmp_path):
    names = sorted(name for family, name in FIRST.items() if family not in DEFAULT_FAMILIES)
    np.save(tmp_path / "images.npy",
            np.random.default_rng(0).normal(size=(2, *SHAPE)).astype("float32"))
    expected = write_forward_weights(names, tmp_path)
    for backend in BACKENDS:
        run_backend(backend, Job(str(tmp_path), names, list(SHAPE)), tmp_path)
    assert_forward(names, expected, tmp_path)
