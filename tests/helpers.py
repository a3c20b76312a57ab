"""Reusable model checks (keras-hub style): each takes a built model and asserts."""

import numpy as np
import keras
import tensorflow as tf

import keras_ghost


def random_images(shape, batch=2, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, (batch, *shape)).astype("float32")


def run_forward(model, batch=2):
    x = random_images(model.input_shape[1:], batch)
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (batch, *model.output_shape[1:])
    assert np.isfinite(y).all()
    return x, y


def run_train_step(model, classes):
    """One SGD step: every trainable variable gets a finite gradient, every kernel a
    nonzero one, and the step changes the weights."""
    x = random_images(model.input_shape[1:])
    labels = np.arange(len(x)) % classes
    with tf.GradientTape() as tape:
        probs = model(x, training=True)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probs))
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing, f"no gradient for {missing}"
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    dead = [v.path for v, g in zip(model.trainable_variables, grads)
            if v.path.endswith("kernel") and not np.any(g.numpy())]
    assert not dead, f"zero gradient for kernels {dead}"
    before = model.trainable_variables[0].numpy().copy()
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, model.trainable_variables))
    assert not np.allclose(before, model.trainable_variables[0].numpy())


def run_config_roundtrip(model):
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]
    x = random_images(model.input_shape[1:])
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def run_save_load(model, tmp_path):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = random_images(model.input_shape[1:])
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    return loaded


def assert_builtin_layers_only(model):
    """Functional graph of built-in Keras layers and our registered shape layers; no Lambda."""
    allowed_custom = (keras_ghost.layers.ChannelSlice, keras_ghost.layers.ResizeNearestLike,
                      keras_ghost.layers.PhaseSplit, keras_ghost.layers.PhaseMerge)
    for layer in model.layers:
        assert not isinstance(layer, keras.layers.Lambda), layer.name
        module = type(layer).__module__
        assert module.startswith("keras.") or isinstance(layer, allowed_custom), (layer.name, module)


def load_script(relative_path):
    """A CLI script of the repo (e.g. "tflite/convert.py") imported as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / relative_path
    spec = importlib.util.spec_from_file_location(f"{path.stem}_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (for multi-worker tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Building a model on JAX compiles one XLA program per weight initializer; without LLVM's
# optimizations those compile 2-3x faster (tests load weights over them anyway).
JAX_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def python_env(**extra):
    """The environment for a test subprocess: this one, quiet TF, plus `extra`."""
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


# Families whose costly checks run only with `-m slow`: their layers are already covered by
# a cheaper family (ResNet34's basic blocks by GGhostResNet34; ghostify by the CIFAR ghost
# models), and a ResNet-34 / ResNet-50 export takes 20-30 s of the default run.
# GhostNetV3 (892 layers in training form) is built from the layer types of GhostNetV2;
# its own default checks (timm in both forms, save/load, export) are in
# tests/test_ghostnetv3.py and tests/test_export.py.
SLOW_FAMILIES = {"ResNet34", "GhostResNet50", "GhostNetV3"}


def registry_sweep(pattern="*", everything=True):
    """Registered variant names as pytest params. With `everything=False` (for costly
    checks: save/load, TFLite export) the first variant of each builder runs by default
    (but those of SLOW_FAMILIES) and the others are marked slow (`pytest -m slow`)."""
    import pytest

    seen, params = set(), []
    for name in keras_ghost.list_models(pattern):
        family = keras_ghost.get_spec(name).family
        cheap = family not in seen and family not in SLOW_FAMILIES
        marks = () if everything or cheap else (pytest.mark.slow,)
        seen.add(family)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def randomize_bn(model, seed=0):
    """BN statistics away from the identity, so a wrong fold or a lost gate shows in the
    outputs (default-initialized nets without biases give ~1e-9 logits)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2.0, var.shape)])
    return model
