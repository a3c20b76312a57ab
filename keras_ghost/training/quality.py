"""The int8 quality gate: how much a trained model loses in full-integer TFLite.

Quantization error only means something on a trained model (random-init logits are
near-ties that any rounding flips), so the gate trains a classifier on a TFDS dataset
(CIFAR-10 by default), converts it to int8 with `keras_ghost.export`, runs both on the
test split and compares top-1 accuracy and agreement.
"""

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from keras_ghost.io_utils import atomic_path
from keras_ghost.training.data import classification_pipeline, load_tfds

LEARNING_RATE = 0.1  # peak, for batch 128; scaled linearly with the batch size
WEIGHT_DECAY = 5e-4  # decoupled (Keras multiplies it by the learning rate)
LABEL_SMOOTHING = 0.1
WARMUP_EPOCHS = 1
EVAL_BATCH_SIZE = 256


def compile_for_training(model, *, steps_per_epoch, epochs, batch_size=128):
    """SGD (Nesterov momentum 0.9) with a linear warmup then cosine decay to zero,
    decoupled weight decay on kernels only, and label-smoothed cross-entropy on logits."""
    import keras

    total = steps_per_epoch * epochs
    # At most a fifth of a short run goes to warmup.
    warmup = min(WARMUP_EPOCHS * steps_per_epoch, total // 5)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(total - warmup, 1), warmup_target=LEARNING_RATE * batch_size / 128,
        warmup_steps=warmup)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                     weight_decay=WEIGHT_DECAY)
    # Decaying BN scales/offsets and biases only fights the normalization.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                  label_smoothing=LABEL_SMOOTHING),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],  # one-hot labels
        # XLA on CPU runs these depthwise-heavy nets ~7x slower than plain TF (measured on
        # ghostnet_050 at 32x32, one core), and "auto" would pick it.
        jit_compile=False)
    return model


def train(model, data_dir, *, epochs, mean, std, batch_size=128, dataset="cifar10",
          limit_train=None, seed=None, verbose=2):
    """Trains `model` (logits output) on `dataset`'s train split with `model.fit`.

    Returns `(history, seconds, num_examples)`.
    """
    import tensorflow as tf

    split = f"train[:{limit_train}]" if limit_train else "train"
    ds, num_classes, num_examples = load_tfds(dataset, split, data_dir)
    if num_examples < batch_size:
        raise ValueError(f"{num_examples} training images are fewer than one batch of "
                         f"{batch_size}; raise --limit-train or lower --batch-size.")
    ds = classification_pipeline(ds, model.input_shape[1:3], training=True,
                                 batch_size=batch_size, mean=mean, std=std, seed=seed,
                                 cache=True)
    # One-hot labels: Keras' sparse cross-entropy has no label smoothing.
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)))
    steps = num_examples // batch_size
    compile_for_training(model, steps_per_epoch=steps, epochs=epochs, batch_size=batch_size)
    start = time.perf_counter()
    history = model.fit(ds, epochs=epochs, verbose=verbose)
    return history, time.perf_counter() - start, num_examples


def save_keras(model, path):
    """Saves a `.keras` file atomically (`model.save` insists on the `.keras` suffix)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)


def load_arrays(data_dir, split, image_size, *, mean, std, dataset="cifar10"):
    """A split as numpy `(images, labels)`, preprocessed the eval way (no augmentation)."""
    ds, _, _ = load_tfds(dataset, split, data_dir)
    ds = classification_pipeline(ds, image_size, training=False, batch_size=EVAL_BATCH_SIZE,
                                 mean=mean, std=std)
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(images), np.concatenate(labels)


class GateData(NamedTuple):
    """What the gate evaluates on: calibration images, test images and labels (all
    preprocessed for the model), and the test split's name ("cifar10:test")."""

    calibration: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    split: str


def gate_data(data_dir, image_size, *, mean, std, calib_images=500, limit_test=None,
              dataset="cifar10"):
    """The first `calib_images` training images and the (first `limit_test`) test images
    of `dataset`, the eval way, as a `GateData`."""
    calibration, _ = load_arrays(data_dir, f"train[:{calib_images}]", image_size,
                                 mean=mean, std=std, dataset=dataset)
    test_split = f"test[:{limit_test}]" if limit_test else "test"
    images, labels = load_arrays(data_dir, test_split, image_size, mean=mean, std=std,
                                 dataset=dataset)
    return GateData(calibration, images, labels, f"{dataset}:{test_split}")


def evaluate_int8(model, data, *, calibration_method="percentile", percentile=99.0,
                  builtin_kernels=False):
    """Converts `model` to full int8 (int8 input/output), calibrated on
    `data.calibration` (a `GateData`) with `calibration_method` (see
    `keras_ghost.export.convert`), and runs the float and int8 models on `data.images`.

    Returns `(report, tflite_bytes)`; the report has float and int8 top-1 accuracy, the
    drop in points, and `keras_ghost.export.report`'s size, ops and fidelity. With
    `builtin_kernels`, the int8 model also runs on TFLite's built-in kernels instead of
    XNNPACK; `report["builtin_kernels"]` has their accuracy and top-1 agreement with the
    float model and with XNNPACK. Both are correct int8 implementations that round
    differently, so their agreement is the floor that int8/float agreement can reach.
    """
    from keras_ghost import export

    content = export.convert(model, "int8", calibration=data.calibration, io_type="int8",
                             calibration_method=calibration_method, percentile=percentile)
    float_logits = model.predict(data.images, batch_size=EVAL_BATCH_SIZE, verbose=0)
    int8_logits = export.run(content, data.images)
    tflite = export.report(content, "int8", float_logits, int8_logits)

    float_acc = float(np.mean(float_logits.argmax(1) == data.labels))
    int8_acc = float(np.mean(int8_logits.argmax(1) == data.labels))
    report = {
        "model": model.name,
        "input_shape": list(model.input_shape[1:]),
        "dataset": data.split,
        "calibration_images": len(data.calibration),
        "calibration_method": calibration_method,
        "percentile": percentile,
        "test_images": len(data.images),
        "float_accuracy": float_acc,
        "int8_accuracy": int8_acc,
        "accuracy_drop_points": round(100.0 * (float_acc - int8_acc), 6),
        "top1_agreement": tflite["fidelity"]["top1_agreement"],
        "mean_cosine": tflite["fidelity"]["mean_cosine"],
        "tflite": tflite,
    }
    if builtin_kernels:
        builtin_logits = export.run(content, data.images, xnnpack=False)
        top1 = builtin_logits.argmax(1)
        report["builtin_kernels"] = {
            "int8_accuracy": float(np.mean(top1 == data.labels)),
            "top1_agreement_with_float": float(np.mean(top1 == float_logits.argmax(1))),
            "top1_agreement_with_xnnpack": float(np.mean(top1 == int8_logits.argmax(1))),
        }
    return report, content


def format_error_budget(budget):
    """The budget as lines of text: agreement (and cosine) of each simulation."""
    def line(label, result):
        return (f"  {label:<28} agreement {100 * result['top1_agreement']:6.2f}%  "
                f"cosine {result['mean_cosine']:.5f}")

    lines = [f"int8 error budget (Keras simulation, {budget['images']} images; "
             "agreement with the float model):",
             line("int8 weights only", budget["weights_only"]),
             line(f"int8 activations only ({budget['quantized_tensors']})",
                  budget["activations_only"])]
    lines += [line(f"  only {part} ({result['tensors']})", result)
              for part, result in budget["activations_by_part"].items()]
    return "\n".join(lines)


KERNEL_FLOOR = "kernels"  # min_agreement: the XNNPACK-vs-built-in kernels agreement
MAX_DROP_POINTS = 0.3


def agreement_threshold(report, min_agreement=KERNEL_FLOOR):
    """The agreement the gate asks for: a number, or with "kernels" the top-1 agreement of
    two correct int8 implementations of the same file (XNNPACK and TFLite's built-in
    kernels; `evaluate_int8(..., builtin_kernels=True)` measures it)."""
    if min_agreement != KERNEL_FLOOR:
        return min_agreement
    if "builtin_kernels" not in report:
        raise ValueError("the 'kernels' agreement gate needs the built-in kernels' run: "
                         "evaluate_int8(..., builtin_kernels=True).")
    return report["builtin_kernels"]["top1_agreement_with_xnnpack"]


def gate_failures(report, min_agreement=None, max_drop=None):
    """Messages for each threshold the report misses (empty when it passes).
    `min_agreement` is a fraction or "kernels" (see `agreement_threshold`); None skips a
    check."""
    failures = []
    if min_agreement is not None:
        threshold = agreement_threshold(report, min_agreement)
        if report["top1_agreement"] < threshold:
            limit = (f"{threshold:.4f} (the XNNPACK vs built-in kernels agreement)"
                     if min_agreement == KERNEL_FLOOR else f"{min_agreement}")
            failures.append(f"int8/float top-1 agreement {report['top1_agreement']:.4f} < "
                            f"{limit}")
    if max_drop is not None and report["accuracy_drop_points"] > max_drop:
        failures.append(f"int8 accuracy drop {report['accuracy_drop_points']:.2f} points > "
                        f"{max_drop}")
    return failures
