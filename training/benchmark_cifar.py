#!/usr/bin/env python
"""CIFAR-10 benchmark: trains ghostnet_100, ghostnetv2_100 and keras.applications
MobileNetV2 (weights=None) with the same recipe, input size and step budget, then reports
test accuracy, training images/s and input-pipeline-alone images/s as Markdown + JSON.

    python training/benchmark_cifar.py --epochs 6 --steps-per-epoch 100
    python training/benchmark_cifar.py --models ghostnet_100 mobilenetv2 --max-seconds 300

The budget is the same number of optimizer steps for every model (--epochs x
--steps-per-epoch at --batch-size; the cosine schedule spans it), with --max-seconds as a
cap per model. MobileNetV2's BatchNormalization momentum is set to 0.9, as in our models.
Results depend on the machine and its load: say which when you quote them.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's keras_ghost

from keras_ghost.cli.common import UsageError, run  # noqa: E402  (after the log level)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "tfds"
MOBILENETV2 = "mobilenetv2"  # keras.applications.MobileNetV2, weights=None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["ghostnet_100", "ghostnetv2_100", MOBILENETV2],
                   help=f"registered variants and/or '{MOBILENETV2}' (default %(default)s)")
    p.add_argument("--recipe", default="cifar10")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--batch-size", type=int, help="global batch (recipe's by default)")
    p.add_argument("--max-seconds", type=float, help="cap per model (stops after an epoch)")
    p.add_argument("--limit-eval", type=int, help="first N test images (default: all 10,000)")
    p.add_argument("--pipeline-steps", type=int, default=100,
                   help="batches timed for the input-pipeline-alone figure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, default=Path("out/benchmark_cifar"))
    return p.parse_args(argv)


def model_fn_for(name, image_size):
    """A `model_fn(recipe, classes)` for a registered variant or keras.applications
    MobileNetV2, logits out."""
    import keras

    import keras_ghost

    def build(recipe, classes):
        shape = (image_size, image_size, 3)
        if name == MOBILENETV2:
            model = keras.applications.MobileNetV2(input_shape=shape, weights=None,
                                                   classes=classes, classifier_activation=None)
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    # keras.applications' 0.999 needs thousands of steps before its moving
                    # statistics are usable (eval stays at chance in a short run); 0.9 is
                    # what our models use (PyTorch's 0.1).
                    layer.momentum = 0.9
            return model
        kwargs = {} if recipe.dropout is None else {"dropout_rate": recipe.dropout}
        return keras_ghost.create_model(name, input_shape=shape, classes=classes,
                                        classifier_activation=None, **kwargs)

    return build


def markdown(rows, recipe, args):
    lines = [f"CIFAR-10, {recipe.image_size}x{recipe.image_size}, recipe `{recipe.name}`, "
             f"batch {recipe.batch_size}, {args.epochs} x {args.steps_per_epoch} steps "
             "(random init)", "",
             "| model | params | steps | test top-1 | test top-5 | train img/s | "
             "pipeline img/s | train s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['optimizer_steps']} | "
                     f"{100 * r['top1']:.2f}% | "
                     f"{100 * r['top5']:.2f}% | {r['train_images_per_second']:.0f} | "
                     f"{r['pipeline_images_per_second']:.0f} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    from keras_ghost.io_utils import write_atomic
    from keras_ghost.training import data as data_lib
    from keras_ghost.training import recipes, trainer
    from keras_ghost.models.registry import IMAGENET_MEAN, IMAGENET_STD

    recipe = recipes.load_recipe(args.recipe).replace(epochs=args.epochs,
                                                      batch_size=args.batch_size)
    if recipe.image_size is None:
        raise UsageError(f"recipe {recipe.name} sets no image_size; the models need one size.")
    rows = []
    for name in args.models:
        options = trainer.TrainOptions(
            output_dir=args.output_dir / name, data_dir=args.data_dir, mean=IMAGENET_MEAN,
            std=IMAGENET_STD, seed=args.seed, steps_per_epoch=args.steps_per_epoch,
            limit_eval=args.limit_eval, max_seconds=args.max_seconds, cache=True,
            tensorboard=False, verbose=2)
        size = (recipe.image_size,) * 2
        try:
            train_ds, *_ = trainer.input_pipelines(recipe, options, size, recipe.batch_size)
        except ValueError as e:
            raise UsageError(str(e)) from None
        pipeline = data_lib.benchmark_input(train_ds, args.pipeline_steps)
        print(f"== {name}: input pipeline alone {pipeline['images_per_second']} images/s",
              flush=True)
        report = trainer.train(model_fn_for(name, recipe.image_size), recipe, options)
        rows.append({"model": name, "params": report["trainable_params"], "top1": report["top1"],
                     "top5": report["top5"], "eval_images": report["eval_images"],
                     "train_images_per_second": report["train_images_per_second"],
                     "pipeline_images_per_second": pipeline["images_per_second"],
                     "train_seconds": report["train_seconds"],
                     "optimizer_steps": report["optimizer_steps"]})
        print(f"== {name}: top-1 {report['top1']:.4f}, {report['train_images_per_second']} "
              "train images/s", flush=True)
    table = markdown(rows, recipe, args)
    write_atomic(table, args.output_dir / "benchmark_cifar.md")
    write_atomic({"recipe": recipe.to_dict(), "epochs": args.epochs,
                  "steps_per_epoch": args.steps_per_epoch, "results": rows},
                 args.output_dir / "benchmark_cifar.json")
    print(table)
    return rows


if __name__ == "__main__":
    run(main)
