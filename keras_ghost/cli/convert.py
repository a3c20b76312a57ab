"""Converts a keras_ghost model to TFLite and writes a report next to it.

    keras-ghost convert --int8                      # ghostnetv2_100, bundled calibration
    keras-ghost convert --model ghostnet_100 --weights imagenet --fp16
    keras-ghost convert --int8 --calib-data cifar10:train --data-dir ../shared/tfds

(`python tflite/convert.py ...` from a checkout runs the same code.) Every argument and
the output path are checked before anything is built; progress goes to stderr, the
summary to stdout.
"""

import json
import os
from pathlib import Path

from keras_ghost.cli import common

MODES = ("fp32", "fp16", "dynamic", "int8")
IO_TYPES = ("int8", "uint8", "float")
CALIBRATION_METHODS = ("percentile", "minmax", "tflite")


def parse_args(argv=None):
    p = common.Parser(prog="keras-ghost convert", description=__doc__)
    mode = p.add_mutually_exclusive_group()
    for m, text in (("fp32", "float32 (default)"), ("fp16", "float16 weights"),
                    ("dynamic", "dynamic-range int8 weights"),
                    ("int8", "full integer: int8 weights and activations")):
        mode.add_argument(f"--{m}", dest="mode", action="store_const", const=m, help=text)
    p.add_argument("--model", default="ghostnetv2_100", help="registered variant (default %(default)s)")
    p.add_argument("--width", type=common.positive_number,
                   help="width multiplier (overrides the variant's)")
    p.add_argument("--input-size", type=common.positive_int, nargs="+", metavar="N",
                   help="input height [width] (default: the variant's, 224)")
    p.add_argument("--weights", help="None (random init), a weights file, or 'imagenet'")
    p.add_argument("--keras-model", type=Path, metavar="FILE",
                   help="convert this .keras model (saved on any Keras backend) instead of "
                        "building --model; --input-size fixes a (None, None, 3) input")
    p.add_argument("--seed", type=common.non_negative_int, default=0,
                   help="seed of the random initialization (without --weights): the same "
                        "seed gives the same model and fidelity figures (default %(default)s)")
    p.add_argument("--io", choices=IO_TYPES,
                   help="input/output type of the --int8 model (default int8)")
    p.add_argument("--calib-data", help="TFDS name[:split] or a folder of images "
                                        "(default: the images bundled with keras_ghost)")
    p.add_argument("--data-dir", help="TFDS data dir for --calib-data")
    p.add_argument("--calib-steps", type=common.positive_int, default=160,
                   help="calibration images (default %(default)s)")
    p.add_argument("--holdout", type=common.positive_int, default=40,
                   help="held-out images for the fidelity check (default %(default)s)")
    p.add_argument("--calibration-method", choices=CALIBRATION_METHODS,
                   help="int8 activation ranges: a percentile of the per-image extremes "
                        "(default), the exact min/max, or TFLite's calibrator as is (see the "
                        "README)")
    p.add_argument("--percentile", type=common.number_in(50, 100, low_open=True, example=99.9),
                   help="percentile for --calibration-method percentile, in (50, 100] "
                        "(default 99)")
    p.add_argument("--include-preprocessing", action="store_true",
                   help="normalize inside the graph: the .tflite takes raw 0..255 pixels")
    p.add_argument("--no-optimize", dest="optimize", action="store_false",
                   help="skip the deploy-time graph rewrites (BN folding, delegable DFC gate, ...)")
    p.add_argument("--no-reparameterize", dest="reparameterize", action="store_false",
                   help="export multi-branch training-form blocks (GhostNetV3) as they are "
                        "instead of fusing them first (keras_ghost.reparameterize)")
    p.add_argument("--remove-pad", action="store_true", default=None,
                   help="absorb every PAD op into its conv, growing even-size stride-2 kernels "
                        "by a zero row/column (slower on XNNPACK; see the README). By default "
                        "only PADs that need no growth go")
    p.add_argument("--min-agreement", type=common.fraction,
                   help="fail unless top-1 agreement with the Keras model reaches this (0..1)")
    p.add_argument("--output", help="output .tflite path (default out/<model>_<mode>.tflite)")
    p.add_logging_flags()
    args = p.parse_args(argv)
    args.mode = args.mode or "fp32"
    return args


def validate(args):
    """Every check that needs no model: raises UsageError naming the flag and the fix.
    Fills in the defaults that depend on other flags."""
    common.check_model_name(args.model)
    if args.input_size and len(args.input_size) > 2:
        raise common.UsageError(f"--input-size takes a height and an optional width, got "
                                f"{len(args.input_size)} numbers")
    int8_only = [flag for flag, value in (("--io", args.io),
                                          ("--calibration-method", args.calibration_method),
                                          ("--percentile", args.percentile)) if value is not None]
    if int8_only and args.mode != "int8":
        raise common.UsageError(f"{int8_only[0]} applies to --int8 only (the {args.mode} model "
                                "has float input and output and no activation ranges); "
                                "add --int8 or drop it")
    if args.percentile is not None and args.calibration_method not in (None, "percentile"):
        raise common.UsageError(f"--percentile applies to --calibration-method percentile, "
                                f"not {args.calibration_method}; drop one of them")
    args.io = args.io or "int8"
    args.calibration_method = args.calibration_method or "percentile"
    args.percentile = 99.0 if args.percentile is None else args.percentile
    if args.remove_pad and not args.optimize:
        raise common.UsageError("--remove-pad is a deploy-time rewrite, which --no-optimize "
                                "skips; drop one of them")
    if args.weights and args.weights.lower() not in ("none", "imagenet"):
        common.check_input_file(args.weights, "--weights")
    if args.keras_model is not None:
        common.check_input_file(args.keras_model, "--keras-model", (".keras",))
        clash = next((flag for flag, value in (("--weights", args.weights),
                                               ("--width", args.width)) if value), None)
        if clash:
            raise common.UsageError(f"{clash} describes a model to build, --keras-model "
                                    "gives one; drop one of them")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise common.UsageError(f"--data-dir {args.data_dir}: no such folder")
    if args.calib_data and os.sep in args.calib_data and not Path(args.calib_data).is_dir():
        raise common.UsageError(f"--calib-data {args.calib_data}: no such folder (give a "
                                "folder of images or a TFDS name such as cifar10:train)")
    if args.output is not None:
        args.output = str(common.check_output_file(args.output, "--output", (".tflite",)))
    else:
        common.check_output_dir("out", "--output (default out/<model>_<mode>.tflite)")
    return args


def build_model(args):
    """The model the flags describe: `(spec, input_shape, model)`, logits out; random
    initialization seeded with --seed."""
    import keras

    import keras_ghost

    if args.keras_model is not None:
        return _saved_model(args)
    spec = keras_ghost.get_spec(args.model)
    size = args.input_size or list(spec.input_size[:2])
    input_shape = (size[0], size[-1], 3)
    kwargs = dict(input_shape=input_shape, classifier_activation=None,
                  include_preprocessing=args.include_preprocessing)
    if args.width is not None:
        kwargs["width"] = args.width
    if args.weights and args.weights.lower() != "none":
        kwargs["weights"] = args.weights
    keras.utils.set_random_seed(getattr(args, "seed", 0))
    return spec, input_shape, keras_ghost.create_model(args.model, **kwargs)


def _saved_model(args):
    """`build_model` for --keras-model: the file's model, its input fixed to --input-size
    when that is given or the file's input size is free; the preprocessing is the
    variant's the model is named after (else --model's)."""
    import keras

    import keras_ghost

    model = keras_ghost.load_model(args.keras_model)
    name = model.name if model.name in keras_ghost.list_models() else args.model
    spec = keras_ghost.get_spec(name)
    height, width, channels = model.input_shape[1:]
    if args.input_size:
        height, width = args.input_size[0], args.input_size[-1]
    elif height is None or width is None:
        raise common.UsageError(f"--keras-model {args.keras_model} takes any input size "
                                f"{model.input_shape[1:]}; give the one to export with "
                                "--input-size")
    if tuple(model.input_shape[1:3]) != (height, width):
        config = model.get_config()
        if len(model.inputs) != 1 or config["layers"][0]["class_name"] != "InputLayer":
            raise common.UsageError(f"--keras-model {args.keras_model}: --input-size needs a "
                                    "functional model with one image input")
        config["layers"][0]["config"]["batch_shape"] = [None, height, width, channels]
        fixed = keras.Model.from_config(config)
        fixed.set_weights(model.get_weights())
        model = fixed
    return spec, (height, width, channels), model


def labelled(args, input_shape):
    """The class names and preprocessing a `--keras-model` file written by `keras-ghost
    train` carries (for the .tflite's metadata), at the exported input size; else None."""
    if args.keras_model is None or args.include_preprocessing:
        return None
    import dataclasses

    from keras_ghost import metadata

    card = metadata.read(args.keras_model)
    if card is None:
        return None
    return dataclasses.replace(card, image_size=tuple(input_shape[:2]))


def main(argv=None):
    """`keras-ghost convert`; returns the report (a dict)."""
    return common.run(_main, argv)


def _main(argv):
    args = validate(parse_args(argv))
    progress = common.Progress(enabled=not args.quiet)
    from keras_ghost import export, metadata

    common.quiet_python_logs(args.verbose)  # absl, now that TensorFlow loaded it
    with progress.stage("data", f"{args.calib_steps} + {args.holdout} images from "
                                f"{args.calib_data or 'the bundled set'}"):
        images = export.load_images(args.calib_data, args.data_dir,
                                    limit=args.calib_steps + args.holdout)
    if len(images) <= args.holdout:
        raise common.UsageError(
            f"--holdout {args.holdout}: the calibration source has only {len(images)} images; "
            "lower --holdout (and --calib-steps) or give a larger --calib-data")
    with progress.stage("build", str(args.keras_model) if args.keras_model else
                        f"{args.model}, weights {args.weights or 'random'}"):
        spec, input_shape, model = build_model(args)
    card = labelled(args, input_shape)
    source = card or spec  # a trained file's own preprocessing, else the variant's
    norm = {} if args.include_preprocessing else dict(mean=source.mean, std=source.std)
    data = export.to_model_input(images, input_shape, **norm)
    calibration, holdout = data[:-args.holdout], data[-args.holdout:]

    deploy = model
    if args.optimize:
        with progress.stage("optimize", "deploy-time graph rewrites"):
            deploy = export.optimize_for_inference(model, remove_pad=args.remove_pad,
                                                   reparameterize=args.reparameterize,
                                                   **export.deploy_settings(args.mode))
    with progress.stage("convert", f"{args.mode}" + (
            f", calibrating on {len(calibration)} images" if args.mode == "int8" else "")):
        content = export.convert(deploy, args.mode, calibration=calibration, io_type=args.io,
                                 optimize=False, reparameterize=args.reparameterize,
                                 calibration_method=args.calibration_method,
                                 percentile=args.percentile,
                                 progress=progress.bar("calibrate"))
    with progress.stage("verify", f"{len(holdout)} held-out images, Keras vs LiteRT"):
        expected = model.predict(holdout, verbose=0)
        result = export.report(content, args.mode, expected, export.run(content, holdout))
    result.update(model=model.name, input_shape=list(input_shape), weights=args.weights,
                  seed=None if args.weights else args.seed,
                  optimized=args.optimize, deploy_layers=len(deploy.layers),
                  calibration=args.calib_data or "bundled", calibration_images=len(calibration))
    if args.mode == "int8":
        result.update(calibration_method=args.calibration_method, percentile=args.percentile)

    output = args.output or os.path.join("out", f"{model.name}_{args.mode}.tflite")
    agreement = result["fidelity"]["top1_agreement"]
    if args.min_agreement is not None and agreement < args.min_agreement:
        print(json.dumps(result, indent=2))
        common.fail(f"top-1 agreement {agreement:.3f} < --min-agreement {args.min_agreement}; "
                    "nothing written.", code=1)
    with progress.stage("write", output):
        if card is not None:
            content = metadata.add_to_tflite(content, card)
            result["labels"] = str(metadata.write_labels(
                card.labels, Path(output).with_name("labels.txt")))
            result["size_bytes"] = len(content)
        export.write_atomic(content, output)
        export.write_atomic(result, os.path.splitext(output)[0] + ".json")
    print_summary(output, result)
    return result


def print_summary(output, result):
    fid = result["fidelity"]
    print(f"wrote {output} ({result['size_bytes'] / 1e6:.2f} MB, {result['mode']})")
    print(f"  ops: {', '.join(f'{k} x{v}' for k, v in result['ops'].items())}")
    print(f"  builtin ops only: {result['builtin_only']}; "
          f"XNNPACK partitions: {result['xnnpack_partitions']}")
    print(f"  fidelity on {fid['images']} held-out images: top-1 agreement {fid['top1_agreement']:.3f}, "
          f"cosine {fid['mean_cosine']:.5f}, max abs diff {fid['max_abs_diff']:.2e}")
