"""Quantization-aware fine-tuning (and optional magnitude pruning) of a trained model to a
full-integer int8 .tflite, with tfmot in a worker process.

    keras-ghost qat --weights out/quality/ghostnet_050.keras --epochs 2 \\
        --output out/qat/ghostnet_050_qat.tflite
    keras-ghost qat --weights float.keras --prune --target-sparsity 0.5 \\
        --prune-epochs 2 --epochs 1 --output out/qat/x_pruned_qat.tflite

Writes the .tflite and a JSON report beside it (<output>.json): training history,
sparsity, test accuracy of the QAT Keras model and of the .tflite, size, ops, XNNPACK
partitions and fidelity. Library: keras_ghost.quantization.finetune.
(`python training/qat.py ...` from a checkout runs the same code.)
"""

from pathlib import Path

from keras_ghost.cli import common


def parse_args(argv=None):
    p = common.Parser(prog="keras-ghost qat", description=__doc__)
    p.add_argument("--weights", required=True, metavar="PATH",
                   help="trained float Keras 3 model (.keras)")
    p.add_argument("--model", help="registered variant whose mean/std preprocess the images "
                                   "(default: ImageNet mean/std)")
    p.add_argument("--dataset", default="cifar10", help="TFDS dataset (default %(default)s)")
    p.add_argument("--data-dir", type=Path, default=common.default_data_dir(),
                   help="TFDS data dir (default: ../shared/tfds beside a checkout, else "
                        "TFDS' default)")
    p.add_argument("--epochs", type=common.non_negative_int, default=1,
                   help="QAT epochs; 0 calibrates the QAT model without training "
                        "(default %(default)s)")
    p.add_argument("--batch-size", type=common.positive_int, default=128)
    p.add_argument("--learning-rate", type=common.positive_number, default=0.0003,
                   help="peak SGD learning rate, cosine to zero (default %(default)s)")
    p.add_argument("--no-qat", action="store_true",
                   help="with --prune: prune only, then convert with post-training int8")
    p.add_argument("--prune", action="store_true", help="magnitude pruning before QAT")
    p.add_argument("--target-sparsity", type=common.number_in(0, 1, True, True), default=0.5)
    p.add_argument("--prune-epochs", type=common.positive_int, default=1)
    p.add_argument("--raw-graph", action="store_true",
                   help="train on the model's own graph (BN kept) instead of the deploy graph")
    p.add_argument("--calib-images", type=common.positive_int, default=500)
    p.add_argument("--io", default="int8", choices=("int8", "uint8", "float"))
    p.add_argument("--limit-train", type=common.positive_int,
                   help="train on the first N training images")
    p.add_argument("--limit-test", type=common.positive_int,
                   help="evaluate on the first N test images")
    p.add_argument("--seed", type=common.non_negative_int, default=0,
                   help="shuffling and augmentation seed (default %(default)s)")
    p.add_argument("--output", type=Path, required=True, help=".tflite to write")
    p.add_logging_flags()
    return p.parse_args(argv)


def validate(args):
    """Flags, the input model and the output path, before the worker starts."""
    common.check_input_file(args.weights, "--weights", (".keras",))
    if args.model is not None:
        common.check_model_name(args.model)
    if args.no_qat and not args.prune:
        raise common.UsageError("--no-qat leaves nothing to do without --prune; add --prune "
                                "or drop --no-qat")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise common.UsageError(f"--data-dir {args.data_dir}: no such folder")
    common.check_output_file(args.output, "--output", (".tflite",))
    return args


def main(argv=None):
    """`keras-ghost qat`; returns the worker's report."""
    return common.run(_main, argv)


def _main(argv):
    args = validate(parse_args(argv))
    import keras_ghost
    from keras_ghost import quantization
    from keras_ghost.io_utils import write_atomic

    norm = {}
    if args.model:
        spec = keras_ghost.get_spec(args.model)
        norm = dict(mean=spec.mean, std=spec.std)
    report = quantization.finetune(
        args.weights, args.output, dataset=args.dataset, data_dir=args.data_dir,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        qat=not args.no_qat, prune=args.prune, target_sparsity=args.target_sparsity,
        prune_epochs=args.prune_epochs, calib_images=args.calib_images, io_type=args.io,
        deploy_graph=not args.raw_graph, limit_train=args.limit_train,
        limit_test=args.limit_test, seed=args.seed, **norm)
    json_path = write_atomic(report, args.output.with_suffix(".json"))
    if "int8_accuracy" in report:
        print(f"{report['model']}: QAT Keras top-1 {report['keras_accuracy']:.4f}, int8 .tflite "
              f"top-1 {report['int8_accuracy']:.4f} on {report['test_images']} test images, "
              f"{report['report']['xnnpack_partitions']} XNNPACK partition(s)")
    if "sparsity" in report:
        print(f"sparsity of the pruned kernels: {report['sparsity']['sparsity']:.3f}")
    print(f"wrote {args.output} and {json_path}")
    return report
