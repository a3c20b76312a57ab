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
    allowed_custom = (keras_ghost.layers.ChannelSlice, keras_ghost.layers.ResizeNearestLike)
    for layer in model.layers:
        assert not isinstance(layer, keras.layers.Lambda), layer.name
        module = type(layer).__module__
        assert module.startswith("keras.") or isinstance(layer, allowed_custom), (layer.name, module)
