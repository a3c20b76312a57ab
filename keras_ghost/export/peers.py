"""Peer models to time our exports against: keras.applications MobileNets and, when
installed, keras_cv_attention_models (kecam) GhostNet / GhostNetV2 and timm's GhostNet /
GhostNetV2 converted by litert-torch (what a PyTorch user ships).

kecam builds tf_keras (Keras 2) models, so it runs in a subprocess with
`TF_USE_LEGACY_KERAS=1`; that switch must not leak into the caller's Keras 3 process.
litert-torch runs in a subprocess too: torch and TensorFlow in one process clash (README).
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
    # NCHW float input (a TRANSPOSE first); int8 is litert-torch's PT2E static quantization
    # (per-channel symmetric weights), which keeps a float input and output.
    "timm_ghostnet_100": ("litert-torch", "ghostnet_100", {}),
    "timm_ghostnetv2_100": ("litert-torch", "ghostnetv2_100", {}),
}
_NEEDS = {"kecam": ("keras_cv_attention_models", "tf_keras"),
          "litert-torch": ("litert_torch", "timm", "torch")}
_INSTALL = {"kecam": "pip install 'keras-ghost[compare]'",
            "litert-torch": "pip install 'keras-ghost[litert-torch]'"}


def is_peer(name):
    return name in PEERS


def available(name):
    """Whether the libraries peer `name` needs are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in _NEEDS.get(PEERS[name][0], ()))


def install_hint(name):
    return _INSTALL.get(PEERS[name][0], "")


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
    if not available(name):
        raise RuntimeError(f"{name} needs {', '.join(_NEEDS[library])}: {install_hint(name)}.")
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        calib_path = os.path.join(tmp, "calibration.npy")
        np.save(calib_path, np.asarray(calibration, dtype="float32"))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        argv = [name, mode, ",".join(map(str, input_shape)), calib_path, str(output)]
        if library == "kecam":
            env["TF_USE_LEGACY_KERAS"] = "1"
            cmd = [sys.executable, "-m", "keras_ghost.export.peers", *argv]
        else:  # run this file without importing keras_ghost (and so TensorFlow) first
            cmd = [sys.executable, "-c", "import runpy, sys; sys.argv = sys.argv[1:]; "
                   f"runpy.run_path({os.path.abspath(__file__)!r}, run_name='__main__')",
                   "peers", *argv]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise PeerConversionError(name, mode, done.stderr)
    return output


class PeerConversionError(RuntimeError):
    """A peer's own converter failed; `reason` is its last error line."""

    def __init__(self, name, mode, stderr):
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        self.reason = lines[-1][:400] if lines else "no output"
        super().__init__(f"Converting {name} ({mode}) failed: {self.reason}\n{stderr[-3000:]}")


def _convert_timm_main(argv):
    """Subprocess entry (no TensorFlow): timm model -> litert-torch -> .tflite."""
    import numpy as np
    import timm
    import torch

    import litert_torch

    name, mode, shape, calib_path, output = argv
    h, w, c = (int(d) for d in shape.split(","))
    torch.manual_seed(0)
    model = timm.create_model(PEERS[name][1], pretrained=False).eval()
    sample = (torch.randn(1, c, h, w),)
    quant_config = None
    if mode == "int8":
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
        model = quantize_pt2e.prepare_pt2e(torch.export.export(model, sample).module(),
                                           quantizer)
        for x in np.load(calib_path):  # NHWC, like ours
            model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None])))
        model = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(model, fold_quantize=False))
        quant_config = QuantConfig(pt2e_quantizer=quantizer)
    elif mode != "fp32":
        raise ValueError(f"{name}: litert-torch peers convert to fp32 or int8, not {mode}.")
    edge = litert_torch.convert(model, sample, quant_config=quant_config)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = f"{output}.partial.tflite"  # keras_ghost.io_utils would import TensorFlow here
    try:
        edge.export(tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _convert_kecam_main(argv):
    """Subprocess entry (legacy Keras): kecam model -> .tflite."""
    import numpy as np
    import tensorflow as tf
    from keras_cv_attention_models import ghostnet

    from keras_ghost.export.tflite import check_calibration, configure_converter, write_atomic

    name, mode, shape, calib_path, output = argv
    input_shape = tuple(int(d) for d in shape.split(","))
    model = getattr(ghostnet, PEERS[name][1])(pretrained=None, input_shape=input_shape,
                                               classifier_activation=None)
    calibration = None
    if mode == "int8":
        calibration = check_calibration(np.load(calib_path), input_shape)

    @tf.function(input_signature=[tf.TensorSpec((1, *input_shape), tf.float32)])
    def serve(x):
        return model(x, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model)
    configure_converter(converter, mode, calibration, "int8")
    write_atomic(converter.convert(), output)


if __name__ == "__main__":
    if PEERS[sys.argv[1]][0] == "litert-torch":
        _convert_timm_main(sys.argv[1:])
    else:
        _convert_kecam_main(sys.argv[1:])
