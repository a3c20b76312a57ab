"""The parent-process side of QAT: jobs for the worker process, files on disk.

Nothing here imports tfmot or tf_keras, so `import keras_ghost` stays on Keras 3 and
TF_USE_LEGACY_KERAS stays unset in the caller's process.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import keras_ghost
from keras_ghost.quantization import jobs

IO_TYPES = ("int8", "uint8", "float")


class QATError(RuntimeError):
    """The QAT worker process failed; the message has its error and log tail."""


def run_worker(job, verbose=True):
    """Runs one job (a `jobs` dataclass) in `python -m keras_ghost.quantization.worker`;
    returns its result."""
    with tempfile.TemporaryDirectory(prefix="keras_ghost_qat_") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(jobs.to_json(job))
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # The worker imports this very package, installed or not.
        root = str(Path(keras_ghost.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        log_path = Path(tmp) / "worker.log"
        with open(log_path, "w") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "keras_ghost.quantization.worker", str(job_path),
                 str(result_path)], env=env, stdout=None if verbose else log, stderr=log)
        tail = log_path.read_text(errors="replace")[-3000:]
        if not result_path.exists():
            raise QATError(f"The QAT worker died (exit code {proc.returncode}) before "
                           f"reporting a result. Its log ends with:\n{tail}")
        result = json.loads(result_path.read_text())
    if not result["ok"]:
        raise QATError(f"QAT worker failed: {result['error']}\n{result['traceback'][-2000:]}")
    return result["result"]


def _model_file(model, tmp):
    """A `.keras` path for `model` (a path, or a Keras 3 model saved to `tmp`)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.suffix == ".keras" and not path.is_file():
            raise FileNotFoundError(f"Model file not found: {path}. Pass the .keras file of a "
                                    "trained float model (e.g. the best.keras of a training run).")
        if path.suffix != ".keras":
            raise ValueError(f"'{path}' is not a .keras file; pass a Keras 3 model or the "
                             ".keras file of one (model.save('model.keras')).")
        return str(path.resolve())
    from keras_ghost.graph import check_functional

    check_functional(model, "Quantization-aware training")
    path = Path(tmp) / "model.keras"
    model.save(path)
    return str(path)


def _check_io(io_type):
    if io_type not in IO_TYPES:
        raise ValueError(f"io_type must be one of {IO_TYPES}, got {io_type!r}.")


def finetune(model, output, *, dataset="cifar10", data_dir=None, epochs=1, batch_size=128,
             learning_rate=0.0003, qat=True, prune=False, target_sparsity=0.5, prune_epochs=1,
             prune_end_fraction=0.7, calib_images=500, io_type="int8", mean=None, std=None,
             deploy_graph=True, limit_train=None, limit_test=None, evaluate=True, seed=0,
             extra_outputs=None, verbose=2):
    """Quantization-aware fine-tune of a trained Keras 3 model; writes a full-int8 .tflite.

    `model` is a functional Keras 3 model or its `.keras` file (logits or softmax output).
    In a worker process its graph is translated to tf_keras (same layers and weights), with
    `deploy_graph` first rewritten to the graph `keras_ghost.export` converts (BN folded
    into convs, gates fused; outputs unchanged), so training sees exactly the int8 ops of
    the .tflite. With `prune`, tfmot magnitude pruning (PolynomialDecay from 0 to
    `target_sparsity` over the first `prune_end_fraction` of `prune_epochs` epochs) runs
    first, and QAT keeps the zeros. Then the model is QAT-wrapped, its activation ranges
    are calibrated on `calib_images` training images, it is fine-tuned for `epochs`
    epochs on TFDS `dataset` (SGD, cosine from `learning_rate`) and converted (int8 in
    and out unless `io_type` says otherwise). `mean`/`std` normalize the images (default
    ImageNet). `extra_outputs` maps more .tflite paths to `(mode, sparse)`, `mode`
    "int8" (the QAT model) or "fp32" (the float/pruned model), for size and latency
    comparisons. Returns the worker's report: training history, sparsity, and with
    `evaluate` the test-split accuracy of the Keras QAT model and of the .tflite, and
    `keras_ghost.export.report` (size, ops, XNNPACK partitions, fidelity).
    """
    from keras_ghost.models.registry import IMAGENET_MEAN, IMAGENET_STD

    _check_io(io_type)
    if epochs < 0 or (prune and prune_epochs < 1):
        raise ValueError(f"epochs must be >= 0 and prune_epochs >= 1 when pruning, got "
                         f"epochs={epochs}, prune_epochs={prune_epochs}.")
    if prune and not 0.0 < target_sparsity < 1.0:
        raise ValueError(f"target_sparsity must be in (0, 1), got {target_sparsity}.")
    if not (qat or prune):
        raise ValueError("Nothing to do: qat=False and prune=False. For post-training "
                         "quantization use keras_ghost.export.convert(model, 'int8', ...).")
    for path, (mode, _) in (extra_outputs or {}).items():
        if mode not in ("int8", "fp32"):
            raise ValueError(f"extra_outputs[{path!r}]: mode must be 'int8' or 'fp32'.")
    with tempfile.TemporaryDirectory(prefix="keras_ghost_qat_") as tmp:
        job = jobs.FinetuneJob(
            keras_model=_model_file(model, tmp), output=str(Path(output).resolve()),
            dataset=dataset, data_dir=None if data_dir is None else str(data_dir),
            epochs=int(epochs), batch_size=int(batch_size), learning_rate=float(learning_rate),
            qat=bool(qat), prune=bool(prune), target_sparsity=float(target_sparsity),
            prune_epochs=int(prune_epochs), prune_end_fraction=float(prune_end_fraction),
            calib_images=int(calib_images), io_type=io_type,
            mean=[float(m) for m in (mean or IMAGENET_MEAN)],
            std=[float(s) for s in (std or IMAGENET_STD)], deploy_graph=bool(deploy_graph),
            limit_train=limit_train, limit_test=limit_test, evaluate=bool(evaluate),
            seed=int(seed), extra_outputs={str(Path(p).resolve()): list(v)
                                           for p, v in (extra_outputs or {}).items()},
            verbose=int(verbose))
        return run_worker(job, verbose=bool(verbose))


def quantize_aware(model, output, calibration=None, *, io_type="int8", deploy_graph=True,
                   qat_model=None):
    """QAT-wraps a Keras 3 model without training and converts it to a full-int8 .tflite.

    The tf_keras QAT model has the same layers and weights (see `finetune`); its
    activation ranges come from `calibration` (float32 images shaped like the model
    input, preprocessed), which the int8 conversion also needs. With `qat_model` (an
    `.h5` path) the tfmot model is saved too, for training in a tf_keras process of your
    own (`keras_ghost.quantization.configs.load_qat_model`, which imports tfmot).
    Returns the worker's result (`{"tflite": path, "qat_model": path}`).
    """
    import numpy as np

    _check_io(io_type)
    if calibration is None:
        raise ValueError("quantize_aware needs calibration images for the int8 ranges.")
    with tempfile.TemporaryDirectory(prefix="keras_ghost_qat_") as tmp:
        calib_path = Path(tmp) / "calibration.npy"
        np.save(calib_path, np.asarray(calibration, "float32"))
        job = jobs.ConvertJob(
            keras_model=_model_file(model, tmp), calibration=str(calib_path),
            output=str(Path(output).resolve()), io_type=io_type, deploy_graph=bool(deploy_graph),
            qat_model=None if qat_model is None else str(Path(qat_model).resolve()))
        return run_worker(job, verbose=False)


def check_translation(models, graphs=("raw",), quantize=False):
    """Translates Keras 3 models (or `.keras` files) to tf_keras in the worker and
    reports per model and graph ("raw", "deploy") whether the weights are identical and
    how far the outputs are apart; with `quantize`, also QAT-wraps them."""
    with tempfile.TemporaryDirectory(prefix="keras_ghost_qat_") as tmp:
        paths = []
        for i, model in enumerate(models):
            sub = Path(tmp) / str(i)
            sub.mkdir()
            paths.append(_model_file(model, sub))
        job = jobs.TranslationJob(keras_models=paths, graphs=list(graphs),
                                  quantize=bool(quantize))
        return run_worker(job, verbose=False)
