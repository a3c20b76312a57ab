"""Int8 quality gate: trains a model on CIFAR-10 (or loads a trained one), converts it to
full-integer TFLite and compares int8 with float on the test split.

    keras-ghost quality-gate --model ghostnet_050 --epochs 10
    keras-ghost quality-gate --model ghostnetv2_100 --width 0.5 --epochs 10
    keras-ghost quality-gate --keras-model out/quality/ghostnet_050.keras

Writes <model>.keras (when it trains), <model>_int8.tflite and <model>_quality.json to
--output-dir, then exits with status 1 when the gate fails (the files stay, for inspection).
The gate, by default: int8/float top-1 agreement at least the agreement of two correct int8
implementations of the same file (XNNPACK vs TFLite's built-in kernels), and an accuracy
drop of at most 0.3 points. (`python tflite/quality_gate.py ...` from a checkout runs the
same code.)
"""

import argparse
from pathlib import Path

from keras_ghost.cli import common


def parse_args(argv=None):
    p = common.Parser(prog="keras-ghost quality-gate", description=__doc__)
    p.add_argument("--model", default="ghostnet_050",
                   help="registered variant to train (default %(default)s); its mean/std also "
                        "preprocess the images of --keras-model")
    p.add_argument("--width", type=common.positive_number,
                   help="width multiplier (overrides the variant's)")
    p.add_argument("--image-size", type=common.int_at_least(32), default=32,
                   help="input size (default %(default)s)")
    p.add_argument("--keras-model", metavar="PATH",
                   help="a trained .keras model to gate instead of training one")
    p.add_argument("--epochs", type=common.positive_int, default=10,
                   help="training epochs (default %(default)s)")
    p.add_argument("--batch-size", type=common.positive_int, default=128)
    p.add_argument("--seed", type=common.non_negative_int, default=0,
                   help="init, shuffling and augmentation seed")
    p.add_argument("--data-dir", type=Path, default=common.default_data_dir(),
                   help="TFDS data dir holding cifar10 (default: ../shared/tfds beside a "
                        "checkout, else TFDS' default)")
    p.add_argument("--limit-train", type=common.positive_int,
                   help="train on the first N training images only")
    p.add_argument("--limit-test", type=common.positive_int,
                   help="evaluate on the first N test images only")
    p.add_argument("--calib-images", type=common.positive_int, default=500,
                   help="training images that calibrate the int8 ranges (default %(default)s)")
    p.add_argument("--calibration-method", default="percentile",
                   choices=("percentile", "minmax", "tflite"),
                   help="int8 activation ranges (default %(default)s; see tflite/convert.py)")
    p.add_argument("--percentile", type=common.number_in(50, 100, low_open=True, example=99.9),
                   default=99.0,
                   help="percentile for --calibration-method percentile (default %(default)s)")
    p.add_argument("--min-agreement", type=_agreement, default="kernels",
                   help="minimum int8/float top-1 agreement: a fraction 0..1, or 'kernels' "
                        "(default): the XNNPACK vs built-in kernels agreement on the same file")
    p.add_argument("--max-drop", type=common.number_in(-100, 100), default=0.3,
                   help="maximum int8 accuracy drop in points (default %(default)s)")
    p.add_argument("--error-budget", action="store_true",
                   help="also simulate int8 weights alone, activations alone and each part's "
                        "activations alone in Keras, to show where the agreement goes "
                        "(keras_ghost.export.sensitivity; about one float evaluation per part)")
    p.add_argument("--builtin-kernels", action="store_true",
                   help="also run the int8 model on TFLite's built-in kernels (no XNNPACK) and "
                        "report their agreement with float and with XNNPACK: two correct int8 "
                        "implementations that round differently, the floor for the agreement "
                        "(always on with --min-agreement kernels)")
    p.add_argument("--output-dir", type=Path, default=Path("out/quality"))
    p.add_logging_flags()
    args = p.parse_args(argv)
    if args.min_agreement == "kernels":
        args.builtin_kernels = True
    return args


def _agreement(text):
    if text == "kernels":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'kernels' nor a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not a fraction in 0..1 (e.g. 0.98)")
    return value


def validate(args):
    """Flags, input file and output folder, before any training; raises UsageError."""
    common.check_model_name(args.model)
    if args.keras_model:
        common.check_input_file(args.keras_model, "--keras-model", (".keras",))
        given = [f for f in ("width", "limit_train") if getattr(args, f) is not None]
        if given:
            raise common.UsageError(f"--{given[0].replace('_', '-')} applies to the model "
                                    "this tool trains, not to --keras-model; drop one of them")
    common.check_output_dir(args.output_dir, "--output-dir")
    return args


def main(argv=None):
    """`keras-ghost quality-gate`; returns the report."""
    return common.run(_main, argv)


def _main(argv):
    args = validate(parse_args(argv))
    import keras

    import keras_ghost
    from keras_ghost import export
    from keras_ghost.training import load_tfds, quality
    from keras_ghost.weights.loading import load_keras_model

    common.quiet_python_logs(args.verbose)  # absl, now that TensorFlow loaded it
    progress = common.Progress(enabled=not args.quiet)
    spec = keras_ghost.get_spec(args.model)
    norm = dict(mean=spec.mean, std=spec.std)
    # Fails fast, before any training, when the data is missing.
    _, classes, _ = load_tfds("cifar10", "test", args.data_dir)
    if args.keras_model:
        with progress.stage("load", str(args.keras_model)):
            model = load_keras_model(args.keras_model)
        training = {"keras_model": str(args.keras_model)}
    else:
        keras.utils.set_random_seed(args.seed)
        kwargs = {} if args.width is None else {"width": args.width}
        model = keras_ghost.create_model(args.model, input_shape=(args.image_size,) * 2 + (3,),
                                         classes=classes, classifier_activation=None,
                                         **kwargs)
        with progress.stage("train", f"{model.name}, {args.epochs} epochs", prints=True):
            _, seconds, examples = quality.train(
                model, args.data_dir, epochs=args.epochs, batch_size=args.batch_size,
                limit_train=args.limit_train, seed=args.seed, **norm)
        path = quality.save_keras(model, args.output_dir / f"{model.name}.keras")
        training = {"epochs": args.epochs, "train_images": examples, "batch_size": args.batch_size,
                    "seed": args.seed, "train_seconds": round(seconds, 1), "keras_model": str(path)}

    with progress.stage("data", f"{args.calib_images} calibration images, the test split"):
        data = quality.gate_data(args.data_dir, model.input_shape[1:3],
                                 calib_images=args.calib_images, limit_test=args.limit_test,
                                 **norm)
    with progress.stage("int8", "convert, then run float and int8 on the test images"):
        report, content = quality.evaluate_int8(model, data,
                                                calibration_method=args.calibration_method,
                                                percentile=args.percentile,
                                                builtin_kernels=args.builtin_kernels)
    if args.error_budget:
        with progress.stage("budget", "int8 error budget, part by part"):
            report["error_budget"] = export.error_budget(model, data.calibration, data.images,
                                                         percentile=args.percentile)
    failures = quality.gate_failures(report, args.min_agreement, args.max_drop)
    report.update(training=training, gate={"min_agreement": args.min_agreement,
                                           "agreement_threshold": quality.agreement_threshold(
                                               report, args.min_agreement),
                                           "max_drop_points": args.max_drop,
                                           "passed": not failures, "failures": failures})
    tflite_path = export.write_atomic(content, args.output_dir / f"{model.name}_int8.tflite")
    json_path = export.write_atomic(report, args.output_dir / f"{model.name}_quality.json")

    print(f"{model.name} on {report['test_images']} test images: float top-1 "
          f"{report['float_accuracy']:.4f}, int8 top-1 {report['int8_accuracy']:.4f} "
          f"(drop {report['accuracy_drop_points']:.2f} points), agreement "
          f"{report['top1_agreement']:.4f}, cosine {report['mean_cosine']:.5f}")
    if args.builtin_kernels:
        builtin = report["builtin_kernels"]
        print(f"int8 on TFLite's built-in kernels: top-1 {builtin['int8_accuracy']:.4f}, "
              f"agreement with float {builtin['top1_agreement_with_float']:.4f}, "
              f"with XNNPACK {builtin['top1_agreement_with_xnnpack']:.4f}")
    if args.error_budget:
        print(quality.format_error_budget(report["error_budget"]))
    print(f"wrote {tflite_path} and {json_path}")
    if failures:
        common.fail(f"int8 quality gate failed: {'; '.join(failures)} (see {json_path}). "
                    "--error-budget shows which part of the model costs the agreement; more "
                    "--calib-images helps only when activation ranges are under-estimated.",
                    code=1)
    return report
