"""The same model and weights give the same outputs on the TensorFlow and JAX backends."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_ghost

pytest.importorskip("jax")

JAX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    import keras_ghost
    assert keras.backend.backend() == "jax", keras.backend.backend()
    name, weights, images, out = sys.argv[1:]
    model = keras_ghost.create_model(name, input_shape=(45, 61, 3), classes=10,
                                     classifier_activation=None)
    model.load_weights(weights)
    np.save(out, np.asarray(model.predict(np.load(images), verbose=0)))
""")


@pytest.mark.parametrize("name", ["ghostnet_050", "ghostnetv2_100"])
def test_jax_backend_matches_tensorflow(name, tmp_path):
    model = keras_ghost.create_model(name, input_shape=(45, 61, 3), classes=10,
                                     classifier_activation=None)
    images = np.random.RandomState(0).randn(2, 45, 61, 3).astype("float32")
    model.save_weights(tmp_path / "w.weights.h5")
    np.save(tmp_path / "x.npy", images)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", JAX_SCRIPT, name, str(tmp_path / "w.weights.h5"),
                    str(tmp_path / "x.npy"), str(tmp_path / "jax.npy")],
                   env=env, check=True, capture_output=True, timeout=600)
    jax_logits = np.load(tmp_path / "jax.npy")
    np.testing.assert_allclose(jax_logits, model.predict(images, verbose=0), atol=1e-4)
