"""The tf_keras side of QAT and pruning: what the worker process runs.

Imported only in the worker (`python -m keras_ghost.quantization.worker`), which switches
TensorFlow to tf_keras before importing anything.
"""

import time

import numpy as np

from keras_ghost.io_utils import write_atomic
from keras_ghost.training.data import classification_pipeline, load_tfds
from keras_ghost.weights.loading import load_keras_model

EVAL_BATCH_SIZE = 256
LABEL_SMOOTHING = 0.1


def load_keras3(path, deploy_graph):
    """The Keras 3 model from a `.keras` file; with `deploy_graph`, the graph that
    `keras_ghost.export` converts (branch sums re-parameterized, BN folded, gates
    rewritten; outputs unchanged): QAT trains the kernels that get deployed."""
    from keras_ghost.export import optimize_for_inference

    model = load_keras_model(path)
    return optimize_for_inference(model) if deploy_graph else model


def arrays(dataset, split, data_dir, image_size, mean, std):
    """A split as numpy `(images, labels)`, preprocessed the eval way."""
    ds, _, _ = load_tfds(dataset, split, data_dir)
    ds = classification_pipeline(ds, image_size, training=False, batch_size=EVAL_BATCH_SIZE,
                                 mean=mean, std=std)
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(images), np.concatenate(labels)


def train_data(job, image_size):
    import tensorflow as tf

    split = f"train[:{job.limit_train}]" if job.limit_train else "train"
    ds, classes, examples = load_tfds(job.dataset, split, job.data_dir)
    ds = classification_pipeline(ds, image_size, training=True, batch_size=job.batch_size,
                                 mean=job.mean, std=job.std, seed=job.seed,
                                 cache=True)
    # One-hot labels: tf_keras' sparse cross-entropy has no label smoothing either.
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, classes)))
    return ds, max(examples // job.batch_size, 1)


def fit(model, ds, *, epochs, steps, learning_rate, callbacks=(), from_logits=True,
        verbose=2):
    """SGD (Nesterov momentum 0.9) with cosine decay from `learning_rate` to zero and
    label-smoothed cross-entropy: a fine-tune of an already trained model."""
    import tf_keras

    schedule = tf_keras.optimizers.schedules.CosineDecay(learning_rate, max(epochs * steps, 1))
    model.compile(optimizer=tf_keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss=tf_keras.losses.CategoricalCrossentropy(
                      from_logits=from_logits, label_smoothing=LABEL_SMOOTHING),
                  metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(ds, epochs=epochs, callbacks=list(callbacks), verbose=verbose)
    return {"epochs": epochs, "seconds": round(time.perf_counter() - start, 1),
            "loss": [float(v) for v in history.history["loss"]],
            "accuracy": [float(v) for v in history.history["accuracy"]]}


def to_tflite(model, calibration, io_type="int8", mode="int8", sparsity=False):
    """Converts a tf_keras model at batch size 1 with `keras_ghost.export`'s settings."""
    import tensorflow as tf

    from keras_ghost.export.tflite import configure_converter

    shape = tuple(model.inputs[0].shape[1:])
    function = tf.function(lambda image: model(image, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    configure_converter(converter, mode, calibration, io_type)
    if sparsity:
        converter.optimizations = [*converter.optimizations,
                                   tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return converter.convert()


def _from_logits(model):
    last = model.layers[-1]
    return getattr(getattr(last, "activation", None), "__name__", "linear") != "softmax"


def finetune(job):
    """Translate, optionally prune, QAT fine-tune, convert to int8 and evaluate."""
    from keras_ghost import export
    from keras_ghost.quantization import configs, prune
    from keras_ghost.quantization.translate import to_tf_keras

    source = load_keras3(job.keras_model, job.deploy_graph)
    model = to_tf_keras(source)
    image_size = tuple(model.inputs[0].shape[1:3])
    norm = dict(mean=job.mean, std=job.std)
    result = {"model": source.name, "input_shape": list(model.inputs[0].shape[1:]),
              "deploy_graph": job.deploy_graph}
    from_logits = _from_logits(model)
    ds = steps = None
    if job.prune or job.epochs:
        ds, steps = train_data(job, image_size)
    masks = None
    if job.prune:
        epochs = job.prune_epochs
        end = max(int(steps * epochs * job.prune_end_fraction), 1)
        wrapped = prune.wrap(model, target_sparsity=job.target_sparsity, begin_step=0,
                             end_step=end, frequency=max(min(100, end // 10), 1))
        result["prune_training"] = fit(
            wrapped, ds, epochs=epochs, steps=steps, learning_rate=job.learning_rate,
            callbacks=prune.callbacks(), from_logits=from_logits, verbose=job.verbose)
        model = prune.strip(wrapped)
        masks = prune.masks(model)
        result["sparsity"] = prune.sparsity_report(model)
        result["target_sparsity"] = job.target_sparsity
    float_model = model
    calibration, _ = arrays(job.dataset, f"train[:{job.calib_images}]", job.data_dir,
                            image_size, **norm)
    if job.qat:
        model = configs.quantize(model)
        configs.calibrate(model, calibration)
        if job.epochs:
            keep = [prune.keep_sparse_callback(model, masks)] if masks else []
            result["qat_training"] = fit(model, ds, epochs=job.epochs, steps=steps,
                                         learning_rate=job.learning_rate, callbacks=keep,
                                         from_logits=from_logits, verbose=job.verbose)
    start = time.perf_counter()
    content = to_tflite(model, calibration, job.io_type)
    result["convert_seconds"] = round(time.perf_counter() - start, 1)
    write_atomic(content, job.output)
    result["tflite"] = str(job.output)
    for name, (mode, sparse) in job.extra_outputs.items():
        target = model if mode == "int8" else float_model
        write_atomic(to_tflite(target, calibration, job.io_type, mode, sparse), name)
    if masks is not None:
        result["sparsity_after_qat"] = _kernel_sparsity(model, masks)
    if job.evaluate:
        split = f"test[:{job.limit_test}]" if job.limit_test else "test"
        images, labels = arrays(job.dataset, split, job.data_dir, image_size, **norm)
        keras_logits = model.predict(images, batch_size=EVAL_BATCH_SIZE, verbose=0)
        tflite_logits = export.run(content, images)
        # Fidelity of the .tflite against the Keras model it was converted from (the QAT
        # model simulates int8, so this measures the conversion, as for PTQ).
        report = export.report(content, "int8", keras_logits, tflite_logits)
        result.update(
            dataset=f"{job.dataset}:{split}", test_images=int(len(images)),
            keras_accuracy=float(np.mean(keras_logits.argmax(1) == labels)),
            int8_accuracy=float(np.mean(tflite_logits.argmax(1) == labels)),
            report=report)
    return result


def _kernel_sparsity(model, kernel_masks):
    from keras_ghost.quantization import prune

    zeros = total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in kernel_masks:
            w = prune.kernel_variable(layer, kernel_masks[inner.name].shape).numpy()
            zeros, total = zeros + int(np.sum(w == 0)), total + w.size
    return zeros / max(total, 1)


def check_translation(job):
    """Translates each `.keras` file and compares weights and outputs with Keras 3."""
    import keras

    from keras_ghost.quantization import configs
    from keras_ghost.quantization.translate import to_tf_keras

    results = []
    for path in job.keras_models:
        entry = {"keras_model": path}
        for graph in job.graphs:
            model = load_keras3(path, graph == "deploy")
            translated = to_tf_keras(model)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((2, *model.inputs[0].shape[1:])).astype("float32")
            expected = np.asarray(model.predict(x, verbose=0))
            actual = np.asarray(translated.predict(x, verbose=0))
            by_name = {layer.name: layer for layer in translated.layers}
            same = all(
                layer.name in by_name and len(layer.get_weights()) == len(
                    by_name[layer.name].get_weights()) and all(
                    np.array_equal(a, b) for a, b in zip(layer.get_weights(),
                                                         by_name[layer.name].get_weights()))
                for layer in model.layers)
            info = {"layers": len(model.layers),
                    "weights_identical": bool(same),
                    "max_abs_diff": float(np.abs(expected - actual).max()),
                    "output_scale": float(np.abs(expected).max()),
                    "layer_types": sorted({type(layer).__name__ for layer in model.layers})}
            if job.quantize:
                qat = configs.quantize(translated)
                configs.calibrate(qat, x)
                info["qat_layers"] = len(qat.layers)
                info["qat_max_abs_diff"] = float(np.abs(
                    np.asarray(qat.predict(x, verbose=0)) - expected).max())
            entry[graph] = info
        results.append(entry)
    return {"models": results, "keras": keras.__version__}


def convert_job(job):
    """QAT-wraps (no training) and converts a model with calibration images from a file."""
    from keras_ghost.quantization import configs
    from keras_ghost.quantization.translate import to_tf_keras

    model = to_tf_keras(load_keras3(job.keras_model, job.deploy_graph))
    qat = configs.quantize(model)
    calibration = np.load(job.calibration)
    configs.calibrate(qat, calibration)
    write_atomic(to_tflite(qat, calibration, job.io_type), job.output)
    result = {"tflite": str(job.output)}
    if job.qat_model:
        from keras_ghost.io_utils import atomic_path

        with atomic_path(job.qat_model, suffix=".h5") as tmp:
            qat.save(tmp, save_format="h5")
        result["qat_model"] = str(job.qat_model)
    return result


TASKS = {"finetune": finetune, "check_translation": check_translation, "convert": convert_job}


def run(job):
    """Runs a `keras_ghost.quantization.jobs` dataclass; returns its JSON-able result."""
    return TASKS[job.task](job)

