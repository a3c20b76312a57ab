#!/usr/bin/env python
"""Converts a keras_ghost model to TFLite and writes a report next to it.

    python tflite/convert.py --int8                      # ghostnetv2_100, bundled calibration
    python tflite/convert.py --model ghostnet_100 --weights imagenet --fp16
    python tflite/convert.py --int8 --calib-data cifar10:train --data-dir ../shared/tfds
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    for m, text in (("fp32", "float32 (default)"), ("fp16", "float16 weights"),
                    ("dynamic", "dynamic-range int8 weights"),
                    ("int8", "full integer: int8 weights and activations")):
        mode.add_argument(f"--{m}", dest="mode", action="store_const", const=m, help=text)
    p.add_argument("--model", default="ghostnetv2_100", help="registered variant (default %(default)s)")
    p.add_argument("--width", type=float, help="width multiplier (overrides the variant's)")
    p.add_argument("--input-size", type=int, nargs="+", metavar="N",
                   help="input height [width] (default: the variant's, 224)")
    p.add_argument("--weights", help="None (random init), a weights file, or 'imagenet'")
    p.add_argument("--io", default="int8", choices=("int8", "uint8", "float"),
                   help="input/output type of the int8 model (default %(default)s)")
    p.add_argument("--calib-data", help="TFDS name[:split] or a folder of images "
                                        "(default: the images bundled with keras_ghost)")
    p.add_argument("--data-dir", help="TFDS data dir for --calib-data")
    p.add_argument("--calib-steps", type=int, default=160, help="calibration images (default %(default)s)")
    p.add_argument("--holdout", type=int, default=40, help="held-out images for the fidelity check")
    p.add_argument("--calibration-method", default="percentile", choices=("percentile", "minmax", "tflite"),
                   help="int8 activation ranges: a percentile of the per-image extremes (default), "
                        "the exact min/max, or TFLite's calibrator as is (see the README)")
    p.add_argument("--percentile", type=float, default=99.0,
                   help="percentile for --calibration-method percentile (default %(default)s)")
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
    p.add_argument("--min-agreement", type=float,
                   help="fail unless top-1 agreement with the Keras model reaches this (0..1)")
    p.add_argument("--output", help="output .tflite path (default out/<model>_<mode>.tflite)")
    args = p.parse_args(argv)
    args.mode = args.mode or "fp32"
    return args


def build_model(args):
    """The model the flags describe: `(spec, input_shape, model)`, logits out."""
    import keras_ghost

    spec = keras_ghost.get_spec(args.model)
    size = args.input_size or list(spec.input_size[:2])
    input_shape = (size[0], size[-1], 3)
    kwargs = dict(input_shape=input_shape, classifier_activation=None,
                  include_preprocessing=args.include_preprocessing)
    if args.width is not None:
        kwargs["width"] = args.width
    if args.weights and args.weights.lower() != "none":
        kwargs["weights"] = args.weights
    return spec, input_shape, keras_ghost.create_model(args.model, **kwargs)


def main(argv=None):
    args = parse_args(argv)
    from keras_ghost import export
    from keras_ghost.weights import WeightsDownloadError

    # Bad input (model name, width, weights, offline download, calibration source): the
    # library's message, without a traceback.
    try:
        spec, input_shape, model = build_model(args)
        images = export.load_images(args.calib_data, args.data_dir,
                                    limit=args.calib_steps + args.holdout)
    except (ValueError, FileNotFoundError, WeightsDownloadError) as e:
        sys.exit(f"error: {e}")
    if len(images) <= args.holdout:
        sys.exit(f"error: need more than {args.holdout} images from the calibration source, got {len(images)}.")
    norm = {} if args.include_preprocessing else dict(mean=spec.mean, std=spec.std)
    data = export.to_model_input(images, input_shape, **norm)
    calibration, holdout = data[:-args.holdout], data[-args.holdout:]

    deploy = export.deploy_form(model) if args.reparameterize else model
    if args.optimize:
        deploy = export.optimize_for_inference(deploy, remove_pad=args.remove_pad,
                                               **export.deploy_settings(args.mode))
    content = export.convert(deploy, args.mode, calibration=calibration, io_type=args.io,
                             optimize=False, reparameterize=False,
                             calibration_method=args.calibration_method,
                             percentile=args.percentile)
    expected = model.predict(holdout, verbose=0)
    result = export.report(content, args.mode, expected, export.run(content, holdout))
    result.update(model=model.name, input_shape=list(input_shape), weights=args.weights,
                  optimized=args.optimize, deploy_layers=len(deploy.layers),
                  calibration=args.calib_data or "bundled", calibration_images=len(calibration))
    if args.mode == "int8":
        result.update(calibration_method=args.calibration_method, percentile=args.percentile)

    output = args.output or os.path.join("out", f"{model.name}_{args.mode}.tflite")
    agreement = result["fidelity"]["top1_agreement"]
    if args.min_agreement is not None and agreement < args.min_agreement:
        print(json.dumps(result, indent=2))
        sys.exit(f"error: top-1 agreement {agreement:.3f} < --min-agreement {args.min_agreement}; "
                 f"nothing written.")
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


if __name__ == "__main__":
    main()
