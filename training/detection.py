#!/usr/bin/env python
"""Trains keras-hub's RetinaNet on a backbone on the pasted-CIFAR-10 detection set, reports
its COCO-style mAP, and exports it (backbone + FPN + heads) to int8 TFLite, whose raw
outputs are decoded on the host (keras-hub's anchors, box decoding and NMS).

    python training/detection.py --backbone ghostnet_100 --steps 700
    python training/detection.py --backbone mobilenetv2 --steps 700

Writes <out>/<backbone>/{detector.keras, fp32.tflite, int8.tflite, results.json}.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's keras_ghost

from keras_ghost.cli import common  # noqa: E402  (after the log level)


def parse_args(argv=None):
    p = common.Parser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backbone", default="ghostnet_100",
                   help="a registered keras_ghost variant or 'mobilenetv2' (default %(default)s)")
    p.add_argument("--data-dir", type=Path, default=common.default_data_dir(),
                   help="TFDS dir with cifar10 (default: ../shared/tfds beside this checkout, "
                        "found from the repository, not the current folder; else TFDS' "
                        "default)")
    p.add_argument("--canvas", type=common.int_at_least(32), default=128, help="canvas size (default %(default)s)")
    p.add_argument("--train-images", type=common.positive_int, default=4000)
    p.add_argument("--test-images", type=common.positive_int, default=500)
    p.add_argument("--steps", type=common.positive_int, default=700, help="training steps (default %(default)s)")
    p.add_argument("--batch-size", type=common.positive_int, default=8)
    p.add_argument("--learning-rate", type=common.positive_number, default=1e-3)
    p.add_argument("--head-convs", type=common.non_negative_int, default=2,
                   help="convs before each RetinaNet head output (default %(default)s)")
    p.add_argument("--calib-images", type=common.positive_int, default=100,
                   help="train canvases that calibrate the int8 model (default %(default)s)")
    p.add_argument("--confidence-threshold", type=common.fraction, default=0.05,
                   help="lowest score NMS keeps for the mAP (default %(default)s)")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate <out>/<backbone>/{fp32,int8}.tflite on the test split: "
                        "per-class and class-agnostic mAP; nothing trained or written")
    p.add_argument("--seed", type=common.non_negative_int, default=0)
    p.add_argument("--out", default=os.path.join("out", "detection"))
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's log")
    args = p.parse_args(argv)
    if not args.eval_only:
        common.check_output_dir(os.path.join(args.out, args.backbone), "--out")
    return args


def main(argv=None):
    """Trains, evaluates and exports one detector; returns its results (a dict)."""
    return common.run(_main, argv)


def _main(argv):
    args = parse_args(argv)
    import numpy as np
    import keras

    from keras_ghost import export
    from keras_ghost.training import detection as det

    keras.utils.set_random_seed(args.seed)
    out_dir = os.path.join(args.out, args.backbone)
    shape = (args.canvas, args.canvas, 3)
    try:
        backbone = det.backbone_for(args.backbone, shape)
    except ImportError as e:  # keras-hub missing: one line, as for any bad input
        raise common.UsageError(str(e)) from None
    images, labels = det.cifar10_arrays("train", args.data_dir)
    test_images, test_labels = det.cifar10_arrays("test", args.data_dir)
    train = det.pasted_objects(images, labels, args.train_images, args.canvas, seed=args.seed)
    test = det.pasted_objects(test_images, test_labels, args.test_images, args.canvas,
                              seed=args.seed + 1)
    if args.eval_only:
        return evaluate_saved(out_dir, backbone, test, args)
    print(f"data: {len(train)} train / {len(test)} test canvases of {args.canvas}px, "
          f"{int((train.labels >= 0).sum())} / {int((test.labels >= 0).sum())} objects", flush=True)

    detector = det.retinanet(backbone, len(train.class_names), head_convs=args.head_convs,
                             confidence_threshold=args.confidence_threshold)
    det.compile_detector(detector, args.steps, args.learning_rate)
    log_every = 50
    epochs = max(1, args.steps // log_every)
    started = time.perf_counter()
    history = detector.fit(det.train_dataset(train, args.batch_size, args.seed),
                           steps_per_epoch=args.steps // epochs, epochs=epochs, verbose=2)
    train_s = time.perf_counter() - started
    steps = (args.steps // epochs) * epochs
    os.makedirs(out_dir, exist_ok=True)
    detector.save(os.path.join(out_dir, "detector.keras"))

    started = time.perf_counter()
    float_dets = det.detect(detector, test.images)
    infer_s = time.perf_counter() - started
    float_map = det.coco_map(test, float_dets)
    print(f"float mAP {float_map}", flush=True)

    raw_model = det.export_model(detector)
    calibration = train.images[:args.calib_images].astype("float32")
    fp32 = export.convert(raw_model, "fp32")
    int8 = export.convert(raw_model, "int8", calibration=calibration, io_type="int8")
    test_float = test.images.astype("float32")
    keras_raw = raw_model.predict(test_float, batch_size=32, verbose=0)
    int8_raw = export.run(int8, test_float)
    int8_map = det.coco_map(test, det.decode_raw(detector, int8_raw, test.images))
    fp32_map = det.coco_map(test, det.decode_raw(detector, export.run(fp32, test_float),
                                                 test.images))
    result = {
        "backbone": args.backbone, "canvas": args.canvas, "steps": steps,
        "batch_size": args.batch_size, "train_images": len(train), "test_images": len(test),
        "params": int(detector.count_params()),
        "backbone_params": int(backbone.count_params()),
        "macs": det.tflite_macs(fp32),
        "loss_first_last": [float(history.history["loss"][0]),
                            float(history.history["loss"][-1])],
        "train_images_per_s": steps * args.batch_size / train_s,
        "inference_images_per_s": len(test) / infer_s,
        "map_float": float_map.__dict__, "map_tflite_fp32": fp32_map.__dict__,
        "map_int8": int8_map.__dict__,
        "int8_raw_fidelity": export.fidelity(keras_raw, int8_raw),
        "int8_ops": export.op_histogram(int8),
        "int8_xnnpack_ops": export.op_histogram(int8, xnnpack=True),
        "command": "python training/detection.py " + " ".join(argv or sys.argv[1:]),
    }
    export.write_atomic(fp32, os.path.join(out_dir, "fp32.tflite"))
    export.write_atomic(int8, os.path.join(out_dir, "int8.tflite"))
    export.write_atomic(result, os.path.join(out_dir, "results.json"))
    print(json.dumps(result, indent=2))
    return result


def evaluate_saved(out_dir, backbone, test, args):
    """mAP of the exported fp32 and int8 models in `out_dir` at `--confidence-threshold`,
    per class and class-agnostic (every box and detection one class: localization only).
    The raw outputs are decoded by a detector of the same configuration (its anchors and
    NMS; decoding uses no weights)."""
    import dataclasses

    import numpy as np

    from keras_ghost import export
    from keras_ghost.training import detection as det

    decoder = det.retinanet(backbone, len(test.class_names), head_convs=args.head_convs,
                            confidence_threshold=args.confidence_threshold)
    one = dataclasses.replace(test, labels=np.where(test.labels >= 0, 0, -1))
    result = {"backbone": args.backbone, "confidence_threshold": args.confidence_threshold}
    for mode in ("fp32", "int8"):
        content = export.read_tflite(os.path.join(out_dir, f"{mode}.tflite"))
        found = det.decode_raw(decoder, export.run(content, test.images.astype("float32")),
                               test.images)
        agnostic = dataclasses.replace(found, labels=np.zeros_like(found.labels))
        result[f"map_{mode}"] = det.coco_map(test, found).__dict__
        result[f"map_{mode}_class_agnostic"] = det.coco_map(one, agnostic).__dict__
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
