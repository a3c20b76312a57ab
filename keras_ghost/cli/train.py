"""Trains a registered model from a recipe (keras_ghost/training/recipes/*.json or a JSON
path); flags override the recipe's values.

    keras-ghost train --model ghostnet_050 --recipe cifar10 --epochs 10
    keras-ghost train --model ghostnetv2_100 --recipe ghostnetv2_rmsproptf \\
        --data-dir ~/tensorflow_datasets --strategy mirrored --mixed-precision
    # fine-tune reference weights on your own photos (DIR/<class>/*.jpg), labelled int8 out
    keras-ghost train --model ghostnet_100 --image-folder DIR --init-weights CKPT.pth \\
        --recipe finetune --head-epochs 2 --export int8
    keras-ghost train --model ghostnet_050 --benchmark-input 50
    # quantization-aware fine-tune (or --prune) of a trained float model to int8 .tflite
    keras-ghost train --model ghostnet_050 --qat --weights out/train/ghostnet_050/best.keras
    # one command per worker; TF_CONFIG names the cluster and this worker's index
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                "task": {"type": "worker", "index": 0}}' \
        keras-ghost train --model ghostnet_100 --strategy multiworker ...

Writes to --output-dir: best.keras / last.keras (EMA weights when the recipe keeps an
EMA), report.json (top-1/top-5), logs/ (TensorBoard), backup/ (rerunning the same command
after a crash resumes from it), and <model>_<mode>.tflite with --export. Under
--strategy multiworker the chief (worker 0) writes there, the other workers to
worker<N>/ inside it, and training runs through the custom strategy.run loop of
keras_ghost/training/loop.py (Keras 3's fit() fails under MultiWorkerMirroredStrategy).
(`python training/train.py ...` from a checkout runs the same code.)
"""

import json
from pathlib import Path

from keras_ghost.cli import common

STRATEGIES = ("auto", "mirrored", "multiworker", "tpu", "jax-data-parallel")
DISTILL_ALPHA, DISTILL_TEMPERATURE = 0.5, 4.0


def parse_args(argv=None):
    p = common.Parser(prog="keras-ghost train", description=__doc__)
    p.add_argument("--model", default="ghostnet_100", help="registered variant")
    p.add_argument("--width", type=common.positive_number,
                   help="width multiplier (overrides the variant's)")
    p.add_argument("--recipe", help="bundled recipe name or JSON path (default: finetune "
                                    "with --image-folder, else cifar10)")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="TFDS dataset name (recipe: its dataset)")
    data.add_argument("--data-dir", type=Path, default=common.default_data_dir(),
                      help="TFDS data dir (default: ../shared/tfds beside a checkout, else "
                           "TFDS' default); "
                           "imagenet2012 needs `tfds build imagenet2012 --manual_dir ...` first")
    data.add_argument("--image-folder", type=Path,
                      help="your images as DIR/<class>/*.jpg (or DIR/train/<class> + "
                           "DIR/val/<class>) instead of TFDS; JPEG, PNG, WEBP, BMP, GIF")
    data.add_argument("--val-fraction", type=common.number_in(0, 1, True, True), default=0.2,
                      help="share of each class that validates when --image-folder has no "
                           "val folder (seeded by --seed; default %(default)s)")
    data.add_argument("--train-split")
    data.add_argument("--eval-split")
    data.add_argument("--image-size", type=common.positive_int, help="input size (recipe, else the variant's)")
    data.add_argument("--limit-train", type=common.positive_int, help="use the first N training images")
    data.add_argument("--limit-eval", type=common.positive_int, help="evaluate on the first N images")
    data.add_argument("--randaugment", type=common.number_in(0, 30), dest="randaugment_magnitude",
                      metavar="MAGNITUDE", help="RandAugment magnitude 0..10 (timm's m)")
    data.add_argument("--mixup", type=common.number_in(0, 100), dest="mixup_alpha", metavar="ALPHA")
    data.add_argument("--cutmix", type=common.number_in(0, 100), dest="cutmix_alpha", metavar="ALPHA")
    data.add_argument("--erasing", type=common.fraction, dest="erasing_prob", metavar="PROB",
                      help="random erasing probability")
    data.add_argument("--cache", action="store_true",
                      help="keep decoded training images in memory (small datasets)")
    data.add_argument("--benchmark-input", type=common.positive_int, metavar="STEPS",
                      help="only time the training input pipeline for STEPS batches")
    opt = p.add_argument_group("optimization (override the recipe)")
    opt.add_argument("--init-weights", type=Path, metavar="CKPT",
                     help="start from these weights: a timm / official checkpoint (.pth, "
                          ".safetensors), 'imagenet', or a .keras / .weights.h5 of the same "
                          "variant; a classifier for another number of classes is replaced")
    opt.add_argument("--head-epochs", type=common.positive_int, metavar="N",
                     help="fine-tune in two phases: the head alone for the first N epochs, "
                          "then all layers (BatchNorm frozen) at a tenth of the lr")
    opt.add_argument("--epochs", type=common.positive_int)
    opt.add_argument("--batch-size", type=common.positive_int, help="global batch size")
    opt.add_argument("--lr", type=common.positive_number,
                     help="peak lr for the recipe's base batch size")
    opt.add_argument("--optimizer", choices=("sgd", "rmsprop_tf", "adamw"))
    opt.add_argument("--weight-decay", type=common.number_in(0, 1))
    opt.add_argument("--warmup-epochs", type=common.number_in(0, 1e6))
    opt.add_argument("--label-smoothing", type=common.number_in(0, 1, high_open=True))
    opt.add_argument("--dropout", type=common.number_in(0, 1, high_open=True))
    opt.add_argument("--ema-decay", type=common.number_in(0, 1, high_open=True))
    opt.add_argument("--grad-accum", type=common.positive_int, dest="gradient_accumulation_steps",
                     metavar="STEPS", help="gradient accumulation steps")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=common.non_negative_int, default=0,
                     help="initialization, shuffling and augmentation seed (default 0)")
    run.add_argument("--strategy", choices=STRATEGIES, default="auto")
    run.add_argument("--tpu", help="TPU name or address for --strategy tpu")
    run.add_argument("--loop", choices=("auto", "fit", "custom"), default="auto",
                     help="training loop: model.fit() or the custom strategy.run loop "
                          "(keras_ghost/training/loop.py); auto: custom only under "
                          "--strategy multiworker, where Keras 3's fit() fails")
    run.add_argument("--mixed-precision", action="store_true",
                     help="mixed_float16 on GPU, mixed_bfloat16 elsewhere")
    run.add_argument("--jit", action="store_true", help="XLA-compile the train step")
    run.add_argument("--save-freq", type=common.positive_int, metavar="STEPS",
                     help="back up every STEPS steps for resume (default: every epoch)")
    run.add_argument("--steps-per-epoch", type=common.positive_int)
    run.add_argument("--max-seconds", type=common.positive_number, help="stop after the epoch past this time")
    run.add_argument("--teacher", type=Path, help="teacher .keras model to distil from")
    run.add_argument("--distill-alpha", type=common.fraction,
                     help=f"weight of the distillation loss (recipe, else {DISTILL_ALPHA})")
    run.add_argument("--distill-temperature", type=common.positive_number,
                     help=f"distillation temperature (recipe, else {DISTILL_TEMPERATURE})")
    run.add_argument("--export", choices=("fp32", "int8"), help="also write a .tflite")
    run.add_argument("--calib-images", type=common.positive_int, default=500,
                     help="training images that calibrate --export int8 (default %(default)s)")
    run.add_argument("--no-tensorboard", action="store_true")
    run.add_argument("--fit-verbose", type=int, choices=(0, 1, 2), help="Keras fit verbosity "
                     "(default: progress bar on a terminal)")
    run.add_argument("--output-dir", type=Path, help="default: out/train/<model>")
    quant = p.add_argument_group(
        "quantization-aware fine-tuning (tensorflow-model-optimization, in a worker process; "
        "same as training/qat.py)")
    quant.add_argument("--qat", action="store_true",
                       help="QAT fine-tune --weights to a full-int8 .tflite in --output-dir")
    quant.add_argument("--prune", action="store_true",
                       help="magnitude pruning (then QAT) of --weights")
    quant.add_argument("--weights", type=Path, metavar="FLOAT.keras",
                       help="the trained float model that --qat / --prune start from")
    quant.add_argument("--target-sparsity", type=common.number_in(0, 1, True, True), default=0.5)
    quant.add_argument("--prune-epochs", type=common.positive_int, default=1)
    p.add_logging_flags()
    return p.parse_args(argv)


def quantization_finetune(args):
    """`--qat` / `--prune`: hands the run to training/qat.py (keras_ghost.quantization)."""
    from keras_ghost.cli import qat

    output = (args.output_dir or Path("out", "train", args.model)) / f"{args.model}_qat_int8.tflite"
    argv = ["--weights", str(args.weights), "--model", args.model, "--dataset",
            args.dataset or "cifar10", "--data-dir", str(args.data_dir), "--epochs",
            str(args.epochs or 1), "--seed", str(args.seed), "--output", str(output),
            "--calib-images", str(args.calib_images)]
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    if args.lr:
        argv += ["--learning-rate", str(args.lr)]
    if args.limit_train:
        argv += ["--limit-train", str(args.limit_train)]
    if args.limit_eval:
        argv += ["--limit-test", str(args.limit_eval)]
    if args.prune:
        argv += ["--prune", "--target-sparsity", str(args.target_sparsity),
                 "--prune-epochs", str(args.prune_epochs)] + ([] if args.qat else ["--no-qat"])
    if args.verbose:
        argv.append("--verbose")
    return qat.main(argv)


def distillation(args, recipe):
    """`(alpha, temperature)`: the flags, else the recipe's, else the defaults; a recipe
    that requires a teacher without --teacher is an error."""
    if recipe.teacher_required and args.teacher is None and not args.benchmark_input:
        raise common.UsageError(
            f"recipe '{recipe.name}' trains by distillation from a teacher: pass --teacher "
            "TEACHER.keras (a trained model of the same classes, logits out), or choose "
            "another --recipe.")
    alpha = next(v for v in (args.distill_alpha, recipe.distill_alpha, DISTILL_ALPHA)
                 if v is not None)
    temperature = next(v for v in (args.distill_temperature, recipe.distill_temperature,
                                   DISTILL_TEMPERATURE) if v is not None)
    return alpha, temperature


RECIPE_FLAGS = ("dataset", "train_split", "eval_split", "image_size", "randaugment_magnitude",
                "mixup_alpha", "cutmix_alpha", "erasing_prob", "epochs", "batch_size", "lr",
                "optimizer", "weight_decay", "warmup_epochs", "label_smoothing", "dropout",
                "ema_decay", "gradient_accumulation_steps")


def load_config(args):
    """`(spec, recipe, image_size)`: the variant, its recipe with the flags applied, and
    the input size (the recipe's, else the variant's)."""
    import keras_ghost
    from keras_ghost.training import recipes

    spec = keras_ghost.get_spec(args.model)
    recipe = recipes.load_recipe(recipe_name(args)).replace(
        **{k: getattr(args, k) for k in RECIPE_FLAGS})
    return spec, recipe, recipe.image_size or spec.input_size[0]


def model_builder(args, image_size):
    """The `model_fn(recipe, classes)` that the trainer builds the model with (logits out)."""
    import keras_ghost

    def model_fn(recipe, classes):
        kwargs = {} if args.width is None else {"width": args.width}
        if args.init_weights is not None:
            kwargs["weights"] = str(args.init_weights)
        if recipe.dropout is not None:
            kwargs["dropout_rate"] = recipe.dropout
        return keras_ghost.create_model(args.model, input_shape=(image_size, image_size, 3),
                                        classes=classes, classifier_activation=None, **kwargs)
    return model_fn


def validate(args):
    """Flags that depend on each other, input files and the output folder, before any
    model or dataset is touched; raises UsageError naming the flag."""
    common.check_model_name(args.model)
    if args.qat or args.prune:
        if args.weights is None:
            raise common.UsageError("--qat / --prune fine-tune a trained float model: pass "
                                    "--weights FLOAT.keras (e.g. the best.keras of a training "
                                    "run)")
        common.check_input_file(args.weights, "--weights", (".keras",))
    elif args.weights is not None:
        raise common.UsageError("--weights is the float model that --qat / --prune start "
                                "from; add --qat or --prune, or drop it")
    if args.tpu and args.strategy != "tpu":
        raise common.UsageError("--tpu names the TPU of --strategy tpu; add --strategy tpu")
    if args.teacher is not None:
        common.check_input_file(args.teacher, "--teacher", (".keras",))
    if args.init_weights is not None and str(args.init_weights) != "imagenet":
        common.check_input_file(args.init_weights, "--init-weights", WEIGHT_SUFFIXES)
    if args.head_epochs is not None:
        if args.init_weights is None:
            raise common.UsageError("--head-epochs trains a new head on pretrained features: "
                                    "add --init-weights CKPT")
        epochs = args.epochs or _recipe_epochs(recipe_name(args))
        if epochs is not None and args.head_epochs >= epochs:
            raise common.UsageError(f"--head-epochs {args.head_epochs} must be fewer than the "
                                    f"epochs ({epochs}): the rest fine-tune all layers")
    if args.image_folder is not None and not args.image_folder.is_dir():
        raise common.UsageError(f"--image-folder {args.image_folder}: no such folder")
    if args.image_folder is None and args.data_dir is not None and not args.data_dir.is_dir():
        raise common.UsageError(f"--data-dir {args.data_dir}: no such folder (the TFDS data "
                                "dir that holds the prepared dataset)")
    from keras_ghost.training import recipes

    try:
        recipes.load_recipe(recipe_name(args))
    except ValueError as e:
        raise common.UsageError(f"--recipe: {e}") from None
    common.check_output_dir(args.output_dir or Path("out/train") / args.model, "--output-dir")
    return args


WEIGHT_SUFFIXES = (".keras", ".h5", ".npz", ".pth", ".pt", ".tar", ".bin", ".ckpt",
                   ".safetensors")


def recipe_name(args):
    if args.recipe:
        return args.recipe
    return "finetune" if args.image_folder is not None else "cifar10"


def _recipe_epochs(name):
    from keras_ghost.training import recipes

    try:
        return recipes.load_recipe(name).epochs
    except ValueError:
        return None  # validate() names the bad recipe


def check_folder(args, recipe, options):
    """The image folder scanned (one line: classes, images, what was skipped) before the
    long work; its problems as one-line usage errors."""
    from keras_ghost import image_folder
    from keras_ghost.training import trainer

    bar = common.Progress(enabled=not args.quiet).bar(f"checking {args.image_folder}")
    try:
        options = trainer.scan_folder(recipe, options, progress=bar)
    except image_folder.ImageFolderError as e:
        raise common.UsageError(f"--image-folder: {e}") from None
    print(options.image_folder.summary(), flush=True)
    return options


def main(argv=None):
    """`keras-ghost train`; returns the training report."""
    return common.run(_main, argv)


def _main(argv):
    args = validate(parse_args(argv))
    if args.qat or args.prune:
        return quantization_finetune(args)
    from keras_ghost.training import data as data_lib
    from keras_ghost.training import trainer

    common.quiet_python_logs(args.verbose)  # absl, now that TensorFlow loaded it
    spec, recipe, image_size = load_config(args)
    distill_alpha, distill_temperature = distillation(args, recipe)
    options = trainer.TrainOptions(
        output_dir=args.output_dir or Path("out/train") / args.model,
        data_dir=args.data_dir, image_folder=args.image_folder, val_fraction=args.val_fraction,
        head_epochs=args.head_epochs or 0, mean=spec.mean, std=spec.std,
        crop_pct=spec.crop_pct, interpolation=spec.interpolation, seed=args.seed,
        strategy=args.strategy, tpu=args.tpu, mixed_precision=args.mixed_precision,
        jit=args.jit, save_freq=args.save_freq or "epoch",
        steps_per_epoch=args.steps_per_epoch, limit_train=args.limit_train,
        limit_eval=args.limit_eval, max_seconds=args.max_seconds, teacher=args.teacher,
        distill_alpha=distill_alpha, distill_temperature=distill_temperature,
        export=args.export, calib_images=args.calib_images,
        tensorboard=not args.no_tensorboard, cache=args.cache,
        verbose="auto" if args.fit_verbose is None else args.fit_verbose,
        custom_loop={"auto": None, "fit": False, "custom": True}[args.loop])
    model_fn = model_builder(args, image_size)
    if args.image_folder is not None:
        options = check_folder(args, recipe, options)

    if args.benchmark_input:
        train_ds, _, _, _, _ = trainer.input_pipelines(
            recipe, options, (image_size, image_size), recipe.batch_size,
            repeat=True)
        result = data_lib.benchmark_input(train_ds, args.benchmark_input)
        print(json.dumps(result))
        return result
    report = trainer.train(model_fn, recipe, options)
    print(f"{report['model']}: top-1 {report['top1']:.4f}, top-5 {report['top5']:.4f} on "
          f"{report['eval_images']} {report['eval_split']} images after "
          f"{report['last_epoch']} epochs; {report['train_images_per_second']} train images/s")
    print(f"wrote {Path(report['checkpoints']['last']).parent}")
    return report
