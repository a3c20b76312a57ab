"""Peer models to time our exports against: keras.applications MobileNets and, when
installed, keras_cv_attention_models (kecam) GhostNet / GhostNetV2.

kecam builds tf_keras (Keras 2) models, so it runs in a subprocess with
`TF_USE_LEGACY_KERAS=1`; that switch must not leak into the caller's Keras 3 process.
"""

import os
import subprocess
import sys

# name -> (library, constructor, extra kwargs)
PEERS = {
    "mobilenetv2": ("keras", "MobileNetV2", {}),
    "mobilenetv3large": ("keras", "MobileNetV3Large", {"include_preprocessing": False}),
    "mobilenetv3small": ("keras", "MobileNetV3Small", {"include_preprocessing": False}),
    "kecam_ghostnet_100": ("kecam", "GhostNet", {}),
    "kecam_ghostnetv2_100": ("kecam", "GhostNetV2", {}),
}


def is_peer(name):
    return name in PEERS


def kecam_available():
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("keras_cv_attention_models", "tf_keras"))


def build_keras_peer(name, input_shape):
    """A randomly initialized keras.applications peer without softmax."""
    import keras

    library, constructor, kwargs = PEERS[name]
    if library != "keras":
        raise ValueError(f"{name} is not a keras.applications model.")
    return getattr(keras.applications, constructor)(
        weights=None, input_shape=input_shape, classifier_activation=None, **kwargs)


def convert_peer(name, mode, calibration, input_shape, output):
    """Converts peer `name` to `output` (.tflite) with the same settings as our models."""
    from keras_ghost.export.tflite import convert, write_atomic

    library = PEERS[name][0]
    if library == "keras":
        model = build_keras_peer(name, input_shape)
        return write_atomic(convert(model, mode, calibration, optimize=False), output)
    if not kecam_available():
        raise RuntimeError(f"{name} needs keras-cv-attention-models and tf-keras: "
                           "pip install 'keras-ghost[compare]'.")
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        calib_path = os.path.join(tmp, "calibration.npy")
        np.save(calib_path, np.asarray(calibration, dtype="float32"))
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, "-m", "keras_ghost.export.peers", name, mode,
               ",".join(map(str, input_shape)), calib_path, str(output)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Converting {name} failed:\n{done.stderr[-3000:]}")
    return output


def _convert_kecam_main(argv):
    """Subprocess entry (legacy Keras): kecam model -> .tflite."""
    import numpy as np
    import tensorflow as tf
    from keras_cv_attention_models import ghostnet

    from keras_ghost.export.tflite import _configure, _check_calibration, write_atomic

    name, mode, shape, calib_path, output = argv
    input_shape = tuple(int(d) for d in shape.split(","))
    model = getattr(ghostnet, PEERS[name][1])(pretrained=None, input_shape=input_shape,
                                               classifier_activation=None)
    calibration = None
    if mode == "int8":
        calibration = _check_calibration(np.load(calib_path), input_shape)

    @tf.function(input_signature=[tf.TensorSpec((1, *input_shape), tf.float32)])
    def serve(x):
        return model(x, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model)
    _configure(converter, mode, calibration, "int8")
    write_atomic(converter.convert(), output)


if __name__ == "__main__":
    _convert_kecam_main(sys.argv[1:])
