"""One training run from a `Recipe`: data, distribution, compile, fit with resume,
checkpoints and logs, final top-1/top-5 report, optional TFLite export.

`train(model_fn, recipe, options)` is what `training/train.py` and
`training/benchmark_cifar.py` call; `model_fn(recipe, num_classes)` builds the model
(logits output) inside the distribution scope. Training runs through `model.fit()`, except
under MultiWorkerMirroredStrategy (where Keras 3's fit fails, keras-team/keras#20585) or
with `custom_loop=True`: then through `loop.DistributedLoop`, a `strategy.run` loop that
drives the same optimizer and callbacks.
"""

import dataclasses
import time
from pathlib import Path
from typing import Optional

import numpy as np

from keras_ghost import image_folder as folders
from keras_ghost import metadata as metadata_lib
from keras_ghost.io_utils import write_atomic
from keras_ghost.models.registry import IMAGENET_MEAN, IMAGENET_STD
from keras_ghost.training import data as data_lib
from keras_ghost.training.callbacks import (AtomicCheckpoint, EMAWeights, ResumeReport,
                                            Throughput, TimeBudget, exportable)
from keras_ghost.training.distribute import (enter_distribution, is_chief, make_strategy,
                                             replicas)
from keras_ghost.training.optim import build_optimizer
from keras_ghost.weights.loading import TOP_LAYER_PREFIX, load_keras_model

EXPORT_MODES = ("fp32", "int8")
FINETUNE_LR_SCALE = 0.1  # the second phase of head_epochs: all layers at a tenth of the lr


@dataclasses.dataclass
class TrainOptions:
    """How to run a recipe (what the recipe does not say)."""

    output_dir: Path
    data_dir: Optional[Path] = None  # TFDS data dir
    # Instead of TFDS: a folder of class subfolders (its path, or image_folder.scan's
    # result); without a validation folder, val_fraction of each class validates.
    image_folder: Optional[object] = None
    val_fraction: float = 0.2
    # Fine-tuning: the first head_epochs train the head alone (the backbone frozen, its BN
    # in inference mode), the rest all layers but BN at FINETUNE_LR_SCALE of the lr.
    head_epochs: int = 0
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    crop_pct: float = 0.875  # eval center crop, when the recipe does not set one
    interpolation: str = "bicubic"  # eval resize
    seed: Optional[int] = 0
    strategy: str = "auto"
    tpu: Optional[str] = None
    mixed_precision: bool = False
    jit: bool = False
    save_freq: object = "epoch"  # BackupAndRestore: "epoch" or every N steps
    steps_per_epoch: Optional[int] = None  # None: one pass over the training split
    limit_train: Optional[int] = None
    limit_eval: Optional[int] = None
    max_seconds: Optional[float] = None  # stop after the epoch that passes this
    teacher: Optional[Path] = None
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    export: Optional[str] = None  # fp32 | int8
    calib_images: int = 500
    tensorboard: bool = True
    cache: bool = False  # keep decoded training images in memory (small datasets)
    verbose: object = "auto"
    # None: the custom strategy.run loop only under MultiWorkerMirroredStrategy, else fit().
    custom_loop: Optional[bool] = None


def scan_folder(recipe, options, progress=None):
    """`options` with its image folder checked and split (`image_folder.scan`): the
    recipe's split names are its train / validation subfolders when they exist."""
    if options.image_folder is None or isinstance(options.image_folder, folders.ImageFolder):
        return options
    root = Path(options.image_folder)
    val_dir = next((d for d in (recipe.eval_split, "val", "validation") if (root / d).is_dir()),
                   "val")
    folder = folders.scan(root, val_fraction=options.val_fraction, seed=options.seed or 0,
                          train_dir=recipe.train_split, val_dir=val_dir, progress=progress)
    return dataclasses.replace(options, image_folder=folder)


def label_names(recipe, options, classes):
    """Class names in output order: the image folder's, the TFDS dataset's, else numbers."""
    if options.image_folder is not None:
        return tuple(options.image_folder.classes)
    names = data_lib.tfds_label_names(recipe.dataset, options.data_dir)
    return tuple(names) if names and len(names) == classes else tuple(map(str, range(classes)))


def set_phase(model, phase):
    """Fine-tuning phases (Keras' transfer-learning guide): "head" trains the layers after
    the backbone only; "all" every layer but BatchNormalization, which stays frozen and so
    in inference mode (its statistics would otherwise drift on a small dataset)."""
    import keras

    for layer in model.layers:
        if phase == "head":
            layer.trainable = layer.name.startswith(TOP_LAYER_PREFIX)
        else:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)


def _merge(first, second):
    """One History of two fit() calls."""
    if first is None:
        return second
    for key, values in second.history.items():
        first.history.setdefault(key, []).extend(values)
    first.epoch += second.epoch
    return first


def _phases(recipe, options):
    """`[(phase, recipe of the phase, first epoch, end epoch)]`: one "all" phase, or with
    head_epochs the head phase then all layers at FINETUNE_LR_SCALE of the lr."""
    if not options.head_epochs:
        return [("all", recipe, 0, recipe.epochs)]
    head = options.head_epochs
    rest = recipe.replace(epochs=recipe.epochs - head, lr=recipe.lr * FINETUNE_LR_SCALE,
                          warmup_epochs=0.0)
    return [("head", recipe.replace(epochs=head), 0, head), ("all", rest, head, recipe.epochs)]


def _metadata(model, labels, options, recipe):
    return metadata_lib.ModelMetadata(
        labels=labels, image_size=tuple(int(d) for d in model.input_shape[1:3]),
        mean=tuple(options.mean), std=tuple(options.std),
        crop_pct=recipe.eval_crop_pct or options.crop_pct, interpolation=options.interpolation,
        logits=True, model=model.name)


def _split(split, limit):
    return f"{split}[:{limit}]" if limit else split


def load_split(recipe, options, split, limit, flag):
    """`(dataset, num_classes, num_examples)` of a split, TFDS or image folder; `flag`
    names the option that picks `split` in the error for a split the dataset lacks."""
    if options.image_folder is not None:
        folder = options.image_folder
        part = "train" if split == recipe.train_split else "val"
        ds, count = folders.dataset(folder, part, limit=limit)
        return ds, len(folder.classes), count
    try:
        return data_lib.load_tfds(recipe.dataset, _split(split, limit), options.data_dir)
    except data_lib.UnknownSplitError as e:
        # Typically a recipe's ImageNet split names used with another --dataset.
        raise data_lib.UnknownSplitError(f"{e} Pick one with {flag}.") from None


def input_pipelines(recipe, options, image_size, global_batch, repeat=None):
    """Train and eval `tf.data` pipelines for the recipe, plus `(num_classes, train
    images, eval images)`; the train one repeats when `repeat` (default: with a fixed
    steps_per_epoch)."""
    repeat = options.steps_per_epoch is not None if repeat is None else repeat
    train_ds, classes, train_count = load_split(recipe, options, recipe.train_split,
                                                options.limit_train, "--train-split")
    eval_ds, _, eval_count = load_split(recipe, options, recipe.eval_split, options.limit_eval,
                                        "--eval-split")
    if train_count < global_batch:
        raise ValueError(f"{train_count} training images are fewer than one global batch of "
                         f"{global_batch}; lower --batch-size or raise --limit-train.")
    norm = dict(mean=options.mean, std=options.std, num_classes=classes)
    train = data_lib.train_pipeline(
        train_ds, image_size, batch_size=global_batch, crop=recipe.crop,
        crop_scale=recipe.crop_scale, randaugment_magnitude=recipe.randaugment_magnitude,
        erasing_prob=recipe.erasing_prob, mixup_alpha=recipe.mixup_alpha,
        cutmix_alpha=recipe.cutmix_alpha, seed=options.seed, cache=options.cache,
        repeat=repeat, **norm)
    crop_pct = recipe.eval_crop_pct or options.crop_pct
    evaluation = data_lib.eval_pipeline(eval_ds, image_size, batch_size=global_batch,
                                        crop_pct=crop_pct, interpolation=options.interpolation,
                                        **norm)
    return _shard_by_data(train), _shard_by_data(evaluation), classes, train_count, eval_count


def _shard_by_data(ds):
    """Multi-worker runs split the batches, not the files: TFDS splits such as CIFAR-10's
    train[:N] live in one file, too few for FILE sharding (each worker still reads all)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _set_precision(mixed):
    import keras
    import tensorflow as tf

    if not mixed:
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    # float16 needs loss scaling (compile adds it); bfloat16 is the CPU/TPU choice.
    gpu = keras.backend.backend() == "tensorflow" and tf.config.list_physical_devices("GPU")
    policy = "mixed_float16" if gpu else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _float32_outputs(model):
    """`model` with float32 outputs: under mixed precision the classifier computes in
    (b)float16, while the loss and the top-k metric need float32 logits (Keras'
    mixed-precision guide puts the last activation in float32 for this)."""
    import keras

    if all(keras.backend.standardize_dtype(o.dtype) == "float32" for o in model.outputs):
        return model
    outputs = keras.layers.Activation("linear", dtype="float32",
                                      name="head_float32")(model.outputs[0])
    return keras.Model(model.inputs, outputs, name=model.name)


def _worker_dir(output_dir, strategy):
    """Non-chief workers write beside the chief, in `worker<N>/` (TF's multi-worker rule:
    every worker saves, only the chief to the real place)."""
    if is_chief(strategy):
        return Path(output_dir)
    task_id = strategy.extended._cluster_resolver.task_id
    return Path(output_dir) / f"worker{task_id}"


def _has_tensorboard():
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _custom_loop(strategy, options):
    """Whether to train through loop.DistributedLoop (a tf.distribute strategy's loop)."""
    if strategy is None:  # JAX and other backends
        if options.custom_loop:
            raise ValueError("the custom training loop needs the TensorFlow backend.")
        return False
    if options.custom_loop is not None:
        return options.custom_loop
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def train(model_fn, recipe, options):
    """Runs `recipe` with `options`; returns the report dict (also written as
    `report.json` in the output dir). Resumes from `output_dir/backup` when a previous
    run of the same output dir was interrupted."""
    import keras

    options = scan_folder(recipe, options)
    strategy = make_strategy(options.strategy, options.tpu)
    custom_loop = _custom_loop(strategy, options)
    if options.head_epochs and (custom_loop or options.head_epochs >= recipe.epochs):
        raise ValueError(f"head_epochs ({options.head_epochs}) must be fewer than the epochs "
                         f"({recipe.epochs}) and needs the fit() loop.")
    if custom_loop and (options.teacher is not None or options.strategy == "tpu"):
        raise ValueError("the custom training loop (--strategy multiworker or --loop "
                         "custom) runs neither distillation (--teacher) nor TPUs.")
    policy = _set_precision(options.mixed_precision)
    if options.seed is not None:
        keras.utils.set_random_seed(options.seed)
    n_replicas = replicas(strategy) if options.strategy != "jax-data-parallel" else None
    out = _worker_dir(options.output_dir, strategy)
    accumulation = recipe.gradient_accumulation_steps or 1
    global_batch = recipe.batch_size

    with enter_distribution(strategy, options.strategy):
        if n_replicas is None:
            n_replicas = replicas(None)
        _, classes, _ = load_split(recipe, options, recipe.eval_split, 1, "--eval-split")
        model = model_fn(recipe, classes)
        if policy != "float32":
            model = _float32_outputs(model)
        image_size = tuple(model.input_shape[1:3])
        train_ds, eval_ds, classes, train_count, eval_count = input_pipelines(
            recipe, options, image_size, global_batch)
        steps = options.steps_per_epoch or train_count // global_batch
        phases = _phases(recipe, options)
        # The lr follows the effective batch (accumulated micro-batches included).
        optimizer = build_optimizer(phases[0][1], steps, global_batch * accumulation)
        if options.teacher is not None:
            from keras_ghost.training.distill import Distiller

            teacher = load_keras_model(options.teacher)
            model = Distiller(model, teacher, options.distill_alpha, options.distill_temperature)
            model.build((None, *model.student.input_shape[1:]))

        def loss(**kwargs):
            return keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=recipe.label_smoothing, **kwargs)

        def compile_with(optimizer):
            model.compile(
                optimizer=optimizer,
                loss=loss(),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                         keras.metrics.TopKCategoricalAccuracy(k=min(5, classes), name="top5")],
                jit_compile=options.jit)

        if options.head_epochs:
            set_phase(exportable(model), "head")
        compile_with(optimizer)
    labels = label_names(recipe, options, classes)
    card = _metadata(exportable(model), labels, options, recipe)

    throughput = Throughput(global_batch)
    resume = ResumeReport()

    def backup(name="backup"):
        # First, before EMAWeights: the backup must hold the raw weights, not the EMA.
        return keras.callbacks.BackupAndRestore(str(out / name), save_freq=options.save_freq,
                                                double_checkpoint=True)

    callbacks = [resume, throughput]
    if options.max_seconds:  # before EMAWeights, which must see the stop
        callbacks.append(TimeBudget(options.max_seconds))
    if recipe.ema_decay is not None:
        # Validation and the checkpoints after it see the EMA weights.
        callbacks.append(EMAWeights())
    callbacks.append(AtomicCheckpoint(out, metadata=card))
    if options.tensorboard:
        if _has_tensorboard():
            callbacks.append(keras.callbacks.TensorBoard(str(out / "logs")))
        else:
            print("TensorBoard logs skipped: tensorboard is not installed "
                  "(pip install -e \".[train]\").", flush=True)

    start = time.perf_counter()
    if custom_loop:
        from keras_ghost.training.loop import DistributedLoop

        # model.optimizer: compile wraps it in a LossScaleOptimizer under mixed_float16.
        loop = DistributedLoop(model, model.optimizer, loss(reduction=None), strategy,
                               top_k=min(5, classes), jit=options.jit)
        history = loop.fit(train_ds, eval_ds, epochs=recipe.epochs, steps_per_epoch=steps,
                           callbacks=[backup(), *callbacks], verbose=options.verbose)
    else:
        history, done = None, out / "head_phase.weights.h5"
        for n, (phase, phase_recipe, first_epoch, last_epoch) in enumerate(phases):
            if n:
                with enter_distribution(strategy, options.strategy):
                    set_phase(exportable(model), phase)
                    compile_with(build_optimizer(phase_recipe, steps, global_batch * accumulation))
            if phase == "head" and done.is_file():  # a rerun after the head phase ended
                model.load_weights(done)
                print(f"head phase done before ({done}); fine-tuning all layers", flush=True)
                continue
            if len(phases) > 1:
                print(f"phase {phase}: epochs {first_epoch + 1}-{last_epoch}, lr "
                      f"{phase_recipe.lr:g}", flush=True)
            history = _merge(history, model.fit(
                train_ds, epochs=last_epoch, initial_epoch=first_epoch,
                validation_data=eval_ds, steps_per_epoch=options.steps_per_epoch,
                callbacks=[backup("backup_head" if phase == "head" else "backup"), *callbacks],
                verbose=options.verbose))
            if phase == "head":
                model.save_weights(done)
        done.unlink(missing_ok=True)  # finished: a rerun starts afresh, as the backups do
    train_seconds = time.perf_counter() - start
    # Both leave the EMA weights in the model when the optimizer keeps them.
    metrics = (loop.evaluate(eval_ds) if custom_loop
               else model.evaluate(eval_ds, return_dict=True, verbose=0))
    student = exportable(model)
    report = {
        "model": student.name,
        "recipe": recipe.to_dict(),
        "input_shape": list(student.input_shape[1:]),
        "trainable_params": int(sum(np.prod(w.shape) for w in student.trainable_weights)),
        "dataset": (str(options.image_folder.root) if options.image_folder is not None
                    else recipe.dataset),
        "classes": list(labels),
        "skipped_files": ([list(x) for x in options.image_folder.skipped]
                          if options.image_folder is not None else []),
        "head_epochs": options.head_epochs,
        "train_images": train_count,
        "eval_split": (_split(recipe.eval_split, options.limit_eval)
                       if options.image_folder is None else "validation"),
        "eval_images": eval_count,
        "top1": float(metrics["accuracy"]),
        "top5": float(metrics["top5"]),
        "eval_loss": float(metrics["loss"]),
        "epochs_run": len(history.epoch),
        "train_loss": [float(v) for v in history.history.get("loss", [])],  # per epoch
        "last_epoch": history.epoch[-1] + 1 if history.epoch else None,
        "started_at": resume.start,
        "optimizer_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "train_seconds": round(train_seconds, 1),
        "train_images_per_second": round(throughput.images_per_second, 1),
        "global_batch_size": global_batch,
        "replicas": n_replicas,
        "strategy": options.strategy,
        "loop": "custom" if custom_loop else "fit",
        "backend": keras.backend.backend(),
        "precision_policy": policy,
        "jit": options.jit,
        "ema": recipe.ema_decay is not None,
        "distillation": None if options.teacher is None else {
            "teacher": str(options.teacher), "alpha": options.distill_alpha,
            "temperature": options.distill_temperature},
        "checkpoints": {"best": str(out / "best.keras"), "last": str(out / "last.keras")},
    }
    if options.export:
        report["export"] = export_tflite(model_fn, recipe, options, student, out, policy, card)
    write_atomic(report, out / "report.json")
    return report


GATE_IMAGES = 2000  # validation images the int8 gate runs on, unless limit_eval says


def export_tflite(model_fn, recipe, options, model, out, policy, card):
    """Writes `<name>_<mode>.tflite` (class names and preprocessing in its metadata) and
    `labels.txt` in `out`. int8 is calibrated on the first `calib_images` training images
    (eval preprocessing) and gated on the validation split: int8/float top-1 agreement at
    least that of XNNPACK vs the built-in kernels on the same file, accuracy drop at most
    0.3 points. Returns the export report."""
    import keras

    from keras_ghost import export
    from keras_ghost.training import quality

    if options.export not in EXPORT_MODES:
        raise ValueError(f"export must be one of {EXPORT_MODES}, got {options.export!r}.")
    if policy != "float32":
        # TFLite conversion wants a float32 graph: rebuild and copy the weights.
        keras.mixed_precision.set_global_policy("float32")
        fp32 = model_fn(recipe, model.output_shape[-1])
        fp32.set_weights(model.get_weights())
        model = fp32
    calibration, _ = _arrays(recipe, options, recipe.train_split, options.calib_images, model)
    result = {"calibration_images": len(calibration)}
    if options.export == "int8":
        limit = options.limit_eval or GATE_IMAGES
        images, labels = _arrays(recipe, options, recipe.eval_split, limit, model)
        data = quality.GateData(calibration, images, labels, _split(recipe.eval_split, limit))
        gate, content = quality.evaluate_int8(model, data, builtin_kernels=True)
        failures = quality.gate_failures(gate, quality.KERNEL_FLOOR, quality.MAX_DROP_POINTS)
        result.update(gate_images=len(images), float_accuracy=gate["float_accuracy"],
                      int8_accuracy=gate["int8_accuracy"],
                      accuracy_drop_points=gate["accuracy_drop_points"],
                      top1_agreement=gate["top1_agreement"],
                      kernel_agreement=gate["builtin_kernels"]["top1_agreement_with_xnnpack"],
                      gate_passed=not failures, gate_failures=failures)
    else:
        content = export.convert(model, options.export)
        expected = model.predict(calibration[:64], verbose=0)
        fidelity = export.fidelity(expected, export.run(content, calibration[:64]))
        result["top1_agreement"] = fidelity["top1_agreement"]
    content = metadata_lib.add_to_tflite(content, card)
    path = export.write_atomic(content, out / f"{model.name}_{options.export}.tflite")
    labels = metadata_lib.write_labels(card.labels, out / "labels.txt")
    result.update(path=str(path), labels=str(labels), size_bytes=len(content),
                  xnnpack_partitions=export.op_histogram(content, xnnpack=True).get("DELEGATE", 0))
    return result


def _arrays(recipe, options, split, limit, model):
    """`(images, int labels)` of a split, eval-preprocessed for `model`'s input."""
    ds, classes, _ = load_split(recipe, options, split, limit, "--train-split")
    batches = data_lib.eval_pipeline(ds, tuple(model.input_shape[1:3]), batch_size=256,
                                     mean=options.mean, std=options.std, num_classes=classes,
                                     crop_pct=recipe.eval_crop_pct or options.crop_pct,
                                     interpolation=options.interpolation)
    pairs = [(x.numpy(), y.numpy().argmax(-1)) for x, y in batches]
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])
