"""The same model and weights give the same outputs on the TensorFlow and JAX backends,
for one variant of every model family (one JAX process per test). The default run checks
the four paper architectures, whose blocks the other families reuse; the rest run under
`-m slow`."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_ghost
from helpers import randomize_bn, registry_sweep

pytest.importorskip("jax")

SHAPE = (45, 61, 3)
# The first variant of every family.
FIRST = {keras_ghost.get_spec(p.values[0]).family: p.values[0] for p in reversed(registry_sweep())}
# One family per paper: GhostNet, GhostNetV2, G-GhostNet (RegNet stages), AsymmNet.
DEFAULT_FAMILIES = {"GhostNet", "GhostNetV2", "GGhostRegNet", "AsymmNetSmall"}
JAX_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    import keras_ghost
    assert keras.backend.backend() == "jax", keras.backend.backend()
    names, shape, folder = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2])), sys.argv[3]
    images = np.load(f"{folder}/x.npy")
    for name in names:
        model = keras_ghost.create_model(name, input_shape=shape, classes=10,
                                         classifier_activation=None)
        model.load_weights(f"{folder}/{name}.weights.h5")
        np.save(f"{folder}/{name}.jax.npy", np.asarray(model.predict(images, verbose=0)))
""")


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["families", "slow_families"])
def test_jax_backend_matches_tensorflow(slow, tmp_path):
    names = sorted(name for family, name in FIRST.items()
                   if (family not in DEFAULT_FAMILIES) == slow)
    images = np.random.RandomState(0).randn(2, *SHAPE).astype("float32")
    np.save(tmp_path / "x.npy", images)
    expected = {}
    for name in names:
        # Trained-like BN statistics: default-initialized nets can give ~1e-9 logits.
        model = randomize_bn(keras_ghost.create_model(name, input_shape=SHAPE, classes=10,
                                                      classifier_activation=None))
        model.save_weights(tmp_path / f"{name}.weights.h5")
        expected[name] = model.predict(images, verbose=0)
    # Building a model on JAX compiles one XLA program per weight initializer; without
    # LLVM's optimizations those compile 2-3x faster (the weights are loaded over them).
    xla_flags = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()}
    subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(names), json.dumps(SHAPE),
                    str(tmp_path)], env=env, check=True, capture_output=True, timeout=900)
    for name in names:
        jax_logits = np.load(tmp_path / f"{name}.jax.npy")
        scale = float(np.abs(expected[name]).max())
        assert scale > 1e-2, (name, scale)  # the comparison is not vacuous
        np.testing.assert_allclose(jax_logits, expected[name], atol=1e-4 * max(1.0, scale),
                                   err_msg=name)
