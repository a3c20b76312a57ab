#!/usr/bin/env python
"""Quantization-aware fine-tuning (and optional magnitude pruning) of a trained model to a
full-integer int8 .tflite, with tfmot in a worker process.

    python training/qat.py --weights out/quality/ghostnet_050.keras --epochs 2 \\
        --output out/qat/ghostnet_050_qat.tflite
    python training/qat.py --weights float.keras --prune --target-sparsity 0.5 \\
        --prune-epochs 2 --epochs 1 --output out/qat/x_pruned_qat.tflite

Writes the .tflite and a JSON report beside it (<output>.json): training history,
sparsity, test accuracy of the QAT Keras model and of the .tflite, size, ops, XNNPACK
partitions and fidelity. Library: keras_ghost.quantization.finetune.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "tfds"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True, metavar="PATH",
                   help="trained float Keras 3 model (.keras)")
    p.add_argument("--model", help="registered variant whose mean/std preprocess the images "
                                   "(default: ImageNet mean/std)")
    p.add_argument("--dataset", default="cifar10", help="TFDS dataset (default %(default)s)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="TFDS data dir (default: ../shared/tfds beside the repo)")
    p.add_argument("--epochs", type=int, default=1, help="QAT epochs (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=0.0003,
                   help="peak SGD learning rate, cosine to zero (default %(default)s)")
    p.add_argument("--no-qat", action="store_true",
                   help="with --prune: prune only, then convert with post-training int8")
    p.add_argument("--prune", action="store_true", help="magnitude pruning before QAT")
    p.add_argument("--target-sparsity", type=float, default=0.5)
    p.add_argument("--prune-epochs", type=int, default=1)
    p.add_argument("--raw-graph", action="store_true",
                   help="train on the model's own graph (BN kept) instead of the deploy graph")
    p.add_argument("--calib-images", type=int, default=500)
    p.add_argument("--io", default="int8", choices=("int8", "uint8", "float"))
    p.add_argument("--limit-train", type=int, help="train on the first N training images")
    p.add_argument("--limit-test", type=int, help="evaluate on the first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, required=True, help=".tflite to write")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras_ghost
    from keras_ghost import quantization
    from keras_ghost.io_utils import write_atomic

    norm = {}
    if args.model:
        spec = keras_ghost.get_spec(args.model)
        norm = dict(mean=spec.mean, std=spec.std)
    try:
        report = quantization.finetune(
            args.weights, args.output, dataset=args.dataset, data_dir=args.data_dir,
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            qat=not args.no_qat, prune=args.prune, target_sparsity=args.target_sparsity,
            prune_epochs=args.prune_epochs, calib_images=args.calib_images, io_type=args.io,
            deploy_graph=not args.raw_graph, limit_train=args.limit_train,
            limit_test=args.limit_test, seed=args.seed, **norm)
    except (ValueError, FileNotFoundError, quantization.QATError) as e:
        sys.exit(f"error: {e}")
    json_path = write_atomic(report, args.output.with_suffix(".json"))
    if "int8_accuracy" in report:
        print(f"{report['model']}: QAT Keras top-1 {report['keras_accuracy']:.4f}, int8 .tflite "
              f"top-1 {report['int8_accuracy']:.4f} on {report['test_images']} test images, "
              f"{report['report']['xnnpack_partitions']} XNNPACK partition(s)")
    if "sparsity" in report:
        print(f"sparsity of the pruned kernels: {report['sparsity']['sparsity']:.3f}")
    print(f"wrote {args.output} and {json_path}")
    return report


if __name__ == "__main__":
    main()
