#!/usr/bin/env python
"""Transfer learning on this machine, made from CIFAR-10 in ../shared/tfds: does starting
from pretrained weights beat training from scratch on a small folder of photos?

    python benchmarks/transfer.py                 # the README's transfer table
    python benchmarks/transfer.py --per-class 50 --pretrain-epochs 15 --epochs 30

1. Pre-train ghostnet_050 on CIFAR-10 classes 0-4 (airplane ... deer), written as an image
   folder (`keras-ghost train --image-folder`), 32x32.
2. An image folder of `--per-class` JPEG images of each of classes 5-9 (dog ... truck),
   with 200 of each class's test images as its validation folder (which picks best.keras).
3. With the `finetune_32` recipe and the same epochs: fine-tune all layers from step 1's
   best.keras (`--init-weights`), the same in two phases (`--head-epochs`), and train from
   scratch (at the higher lr that suits it), each exported to int8 (calibrated on the
   folder's training images, gated on its validation images).
4. Accuracy of the float .keras and the int8 .tflite through `keras-ghost predict`'s code
   on the other 800 test images of each class.
Writes OUTPUT.json and OUTPUT.md.
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keras_ghost.cli import common  # noqa: E402  (after the log level)

PRETRAIN_CLASSES = range(0, 5)
VAL_PER_CLASS = 200  # of the 1,000 test images per class; the other 800 measure
TARGET_CLASSES = range(5, 10)
MODEL = ["--model", "ghostnet_050", "--image-size", "32"]


@dataclasses.dataclass
class Row:
    start: str
    float_accuracy: float
    int8_accuracy: float
    train_seconds: float
    gate_passed: bool


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=common.default_data_dir())
    p.add_argument("--per-class", type=common.positive_int, default=50,
                   help="fine-tuning images per class (default %(default)s)")
    p.add_argument("--pretrain-epochs", type=common.positive_int, default=15)
    p.add_argument("--epochs", type=common.positive_int, default=30,
                   help="fine-tuning epochs, the same for both starts (default %(default)s)")
    p.add_argument("--head-epochs", type=common.positive_int, default=5)
    p.add_argument("--scratch-lr", type=common.positive_number, default=0.1,
                   help="peak lr from scratch (default %(default)s, the better of 0.05 and 0.1 "
                        "there; fine-tuning uses the finetune_32 recipe's 0.05)")
    p.add_argument("--work-dir", type=Path, default=Path("out/benchmarks/transfer_work"))
    p.add_argument("--output", type=Path, default=Path("out/benchmarks/transfer"))
    return p.parse_args(argv)


def write_folder(data_dir, split, classes, root, per_class=None, fmt="png", skip=0):
    """CIFAR-10 images of `classes` as `root/<class name>/<i>.<fmt>`, after the first
    `skip` of each class (skips a complete folder)."""
    import tensorflow as tf

    from keras_ghost.training import data

    names = data.tfds_label_names("cifar10", data_dir)
    done = root / ".complete"
    if done.is_file():
        return root
    ds, _, _ = data.load_tfds("cifar10", split, data_dir)
    counts, seen = {c: 0 for c in classes}, {c: 0 for c in classes}
    encode = tf.io.encode_png if fmt == "png" else (lambda x: tf.io.encode_jpeg(x, quality=95))
    for image, label in ds:
        label = int(label)
        if label not in counts or (per_class and counts[label] >= per_class):
            continue
        seen[label] += 1
        if seen[label] <= skip:
            continue
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{counts[label]}.{fmt}").write_bytes(encode(image).numpy())
        counts[label] += 1
        if per_class and all(n >= per_class for n in counts.values()):
            break
    done.write_text(json.dumps(counts))
    return root


def accuracy(model_path, folder):
    """Top-1 of `keras-ghost predict`'s code (the file's own metadata and preprocessing) on
    `folder/<class>/*` against the folder names."""
    from keras_ghost.cli import predict

    card = predict.read_metadata(model_path)
    images, paths, skipped = predict.load_images(predict.image_paths([folder]), card)
    assert not skipped, skipped
    scores = predict.predict(model_path, images, card)
    hits = [card.labels[row.argmax()] == Path(path).parent.name
            for path, row in zip(paths, scores)]
    return sum(hits) / len(hits)


def main(argv=None):
    args = parse_args(argv)
    from keras_ghost.cli import train
    from keras_ghost.io_utils import write_atomic

    work = args.work_dir
    print("writing the image folders", flush=True)
    pre = work / "pretrain"
    write_folder(args.data_dir, "train", PRETRAIN_CLASSES, pre / "train")
    write_folder(args.data_dir, "test", PRETRAIN_CLASSES, pre / "val")
    target = work / f"target_{args.per_class}"
    write_folder(args.data_dir, "train", TARGET_CLASSES, target / "train", args.per_class, "jpg")
    write_folder(args.data_dir, "test", TARGET_CLASSES, target / "val", VAL_PER_CLASS, "jpg")
    test = write_folder(args.data_dir, "test", TARGET_CLASSES, work / "target_test", fmt="jpg",
                        skip=VAL_PER_CLASS)

    checkpoint = work / "pretrained" / "best.keras"
    if not checkpoint.is_file():
        train.main([*MODEL, "--image-folder", str(pre), "--recipe", "cifar10",
                    "--epochs", str(args.pretrain_epochs), "--no-tensorboard",
                    "--fit-verbose", "2", "--output-dir", str(checkpoint.parent)])
    pretrained = json.loads((checkpoint.parent / "report.json").read_text())
    pretrain_top1, pretrain_seconds = pretrained["top1"], pretrained["train_seconds"]

    rows = []
    runs = {"pretrained, all layers": ("finetune", ["--init-weights", str(checkpoint)]),
            f"pretrained, {args.head_epochs} head epochs first": (
                "two_phase", ["--init-weights", str(checkpoint), "--head-epochs",
                              str(args.head_epochs)]),
            f"scratch (lr {args.scratch_lr:g})": ("scratch", ["--lr", str(args.scratch_lr)])}
    for label, (folder, extra) in runs.items():
        out = work / folder
        report = train.main([*MODEL, "--image-folder", str(target), "--recipe", "finetune_32",
                             "--epochs", str(args.epochs), "--export", "int8",
                             "--no-tensorboard", "--fit-verbose", "2", "--output-dir", str(out),
                             *extra])
        rows.append(Row(label, accuracy(out / "best.keras", test),
                        accuracy(Path(report["export"]["path"]), test),
                        report["train_seconds"], report["export"]["gate_passed"]))
        print(rows[-1], flush=True)
    result = {"per_class": args.per_class, "epochs": args.epochs, "head_epochs": args.head_epochs,
              "pretrain_epochs": args.pretrain_epochs, "pretrain_top1": pretrain_top1,
              "pretrain_seconds": round(pretrain_seconds, 1),
              "rows": [dataclasses.asdict(r) for r in rows]}
    lines = [f"ghostnet_050 at 32x32; {args.per_class} images per class of CIFAR-10 classes "
             f"5-9, {VAL_PER_CLASS} per class validating, accuracy on the other "
             f"{5 * (1000 - VAL_PER_CLASS):,} test images; {args.epochs} epochs each.", "",
             "| start | float top-1 | int8 top-1 | int8 gate | train s |",
             "|---|---:|---:|---|---:|"]
    lines += [f"| {r.start} | {100 * r.float_accuracy:.1f}% | {100 * r.int8_accuracy:.1f}% | "
              f"{'pass' if r.gate_passed else 'fail'} | {r.train_seconds:.0f} |" for r in rows]
    lines += ["", f"Pre-training: {args.pretrain_epochs} epochs on the 25,000 training images "
              f"of classes 0-4 in {pretrain_seconds:.0f} s, top-1 {100 * pretrain_top1:.1f}% "
              "on their test images."]
    write_atomic(result, args.output.with_suffix(".json"))
    write_atomic("\n".join(lines) + "\n", args.output.with_suffix(".md"))
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
