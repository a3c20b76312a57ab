#!/usr/bin/env python
"""Float vs post-training int8 vs QAT int8 on CIFAR-10, with .tflite latency.

    python training/qat_benchmark.py --models ghostnet_100 ghostnetv2_100 --epochs 3 \\
        --qat-epochs 1 --data-dir ../shared/tfds --output-dir out/qat_benchmark

Per model: trains the float model at 32x32 (keras_ghost.training.quality.train; or
reuses <output-dir>/<model>.keras with --reuse), converts it to int8 with post-training
quantization (500 calibration images) and evaluates float and int8 on the test split,
then QAT fine-tunes the float model (keras_ghost.quantization.finetune) and evaluates its
int8 .tflite. Latency: LiteRT + XNNPACK, 1 thread, the models timed interleaved.
With --prune-model, also prunes that model (magnitude, PolynomialDecay to
--target-sparsity) and compares .tflite size, gzip size and latency, dense vs sparse.
Writes results.json and results.md (atomically) to --output-dir.
"""

import argparse
import gzip
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's keras_ghost

from keras_ghost.cli.common import run  # noqa: E402  (after the log level)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "tfds"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["ghostnet_100", "ghostnetv2_100"])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3, help="float training epochs")
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--qat-learning-rate", type=float, default=0.0003)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit-train", type=int, help="train on the first N training images")
    p.add_argument("--qat-limit-train", type=int,
                   help="QAT / pruning on the first N training images (default: --limit-train)")
    p.add_argument("--limit-test", type=int)
    p.add_argument("--calib-images", type=int, default=500)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--reuse", action="store_true", help="reuse trained <model>.keras files")
    p.add_argument("--prune-model", help="also prune this model (one of --models)")
    p.add_argument("--target-sparsity", type=float, default=0.5)
    p.add_argument("--prune-epochs", type=int, default=1)
    p.add_argument("--runs", type=int, default=100, help="timed runs per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, default=Path("out/qat_benchmark"))
    p.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                   help="only merge results.json files of earlier runs into one table")
    return p.parse_args(argv)


def float_model(args, name, classes, norm):
    import keras

    import keras_ghost
    from keras_ghost.training import quality

    path = args.output_dir / f"{name}.keras"
    if args.reuse and path.exists():
        return keras_ghost.load_model(path), path, {"reused": True}
    keras.utils.set_random_seed(args.seed)
    model = keras_ghost.create_model(name, input_shape=(args.image_size,) * 2 + (3,),
                                     classes=classes, classifier_activation=None)
    _, seconds, examples = quality.train(model, args.data_dir, epochs=args.epochs,
                                         batch_size=args.batch_size,
                                         limit_train=args.limit_train, seed=args.seed, **norm)
    quality.save_keras(model, path)
    return model, path, {"epochs": args.epochs, "train_images": examples,
                         "train_seconds": round(seconds, 1)}


def sizes(path):
    data = Path(path).read_bytes()
    return {"size_bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9))}


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, args.output_dir)
    args.qat_limit_train = args.qat_limit_train or args.limit_train
    import keras_ghost
    from keras_ghost import export, quantization
    from keras_ghost.export import benchmark
    from keras_ghost.training import load_tfds, quality

    _, classes, _ = load_tfds("cifar10", "test", args.data_dir)
    out = args.output_dir
    rows, timed = [], {}
    for name in args.models:
        spec = keras_ghost.get_spec(name)
        norm = dict(mean=spec.mean, std=spec.std)
        model, keras_path, training = float_model(args, name, classes, norm)
        data = quality.gate_data(args.data_dir, model.input_shape[1:3],
                                 calib_images=args.calib_images, limit_test=args.limit_test,
                                 **norm)
        ptq, content = quality.evaluate_int8(model, data)
        ptq_path = export.write_atomic(content, out / f"{name}_ptq_int8.tflite")
        fp32_path = export.write_atomic(export.convert(model, "fp32"), out / f"{name}_fp32.tflite")
        qat_path = out / f"{name}_qat_int8.tflite"
        qat = quantization.finetune(
            keras_path, qat_path, data_dir=args.data_dir, epochs=args.qat_epochs,
            learning_rate=args.qat_learning_rate, batch_size=args.batch_size,
            calib_images=args.calib_images, limit_train=args.qat_limit_train,
            limit_test=args.limit_test, seed=args.seed, **norm)
        timed.update({f"{name}/fp32": fp32_path, f"{name}/ptq_int8": ptq_path,
                      f"{name}/qat_int8": qat_path})
        rows.append({"model": name, "training": training, "float_accuracy": ptq["float_accuracy"],
                     "ptq_int8_accuracy": ptq["int8_accuracy"],
                     "qat_keras_accuracy": qat["keras_accuracy"],
                     "qat_int8_accuracy": qat["int8_accuracy"], "ptq": ptq, "qat": qat})
    pruning = None
    if args.prune_model:
        pruning = prune(args, classes, timed)
    results = benchmark.benchmark(list(timed.values()), num_threads=1, runs=args.runs)
    # Median, not mean: on a shared machine a few preempted runs dominate the mean.
    latency = {key: r.p50_us / 1e3 for key, r in zip(timed, results)}
    for row in rows:
        for kind in ("fp32", "ptq_int8", "qat_int8"):
            row[f"{kind}_ms"] = latency[f"{row['model']}/{kind}"]
            row[f"{kind}_size"] = sizes(timed[f"{row['model']}/{kind}"])
    if pruning:
        for key, entry in pruning["files"].items():
            entry["ms"] = latency.get(key)
    report = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "rows": rows, "pruning": pruning, "latency_ms": latency,
              "benchmark": [r.as_dict() for r in results]}
    json_path = export.write_atomic(report, out / "results.json")
    md_path = export.write_atomic(markdown(report), out / "results.md")
    print(markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return report


def prune(args, classes, timed):
    """Prunes one trained model; sizes and latency of dense vs sparse .tflite files."""
    import keras_ghost
    from keras_ghost import quantization
    from keras_ghost.export.tflite import interpreter

    name = args.prune_model
    spec = keras_ghost.get_spec(name)
    out = args.output_dir
    sparse = {f"{name}/pruned_fp32": (out / f"{name}_pruned_fp32.tflite", ("fp32", False)),
              f"{name}/pruned_fp32_sparse": (out / f"{name}_pruned_fp32_sparse.tflite",
                                             ("fp32", True)),
              f"{name}/pruned_qat_int8_sparse": (out / f"{name}_pruned_qat_int8_sparse.tflite",
                                                 ("int8", True))}
    main_path = out / f"{name}_pruned_qat_int8.tflite"
    result = quantization.finetune(
        out / f"{name}.keras", main_path, data_dir=args.data_dir, epochs=args.qat_epochs,
        learning_rate=args.qat_learning_rate, prune=True, target_sparsity=args.target_sparsity,
        prune_epochs=args.prune_epochs, batch_size=args.batch_size,
        calib_images=args.calib_images, limit_train=args.qat_limit_train,
        limit_test=args.limit_test, seed=args.seed, mean=spec.mean, std=spec.std,
        extra_outputs={str(p): mode for p, mode in sparse.values()})
    files = {f"{name}/pruned_qat_int8": main_path, **{k: p for k, (p, _) in sparse.items()}}
    unloadable = {}
    for key, path in files.items():
        try:  # LiteRT 2.3's XNNPACK fails to prepare int8 FULLY_CONNECTED with sparse weights
            interpreter(Path(path).read_bytes())
            timed[key] = path
        except ValueError as e:
            unloadable[key] = str(e)
    return {"model": name, "target_sparsity": args.target_sparsity,
            "pruned_layers": result["sparsity"]["pruned_layers"],
            "sparsity": result["sparsity"]["sparsity"],
            "sparsity_after_qat": result.get("sparsity_after_qat"),
            "int8_accuracy": result.get("int8_accuracy"), "finetune": result,
            "not_loadable_with_xnnpack": unloadable,
            "files": {k: {"path": str(p), **sizes(p)} for k, p in files.items()}}


def merge(paths, output_dir):
    """One report from several runs' results.json (each run timed its own models)."""
    import json

    from keras_ghost.io_utils import write_atomic

    reports = [json.loads(Path(p).read_text()) for p in paths]
    for report in reports:  # median latency, also for runs that stored the mean
        by_name = {b["model"]: b for b in report["benchmark"]}
        for row in report["rows"]:
            for kind in ("fp32", "ptq_int8", "qat_int8"):
                row[f"{kind}_ms"] = by_name[f"{row['model']}_{kind}.tflite"]["p50_us"] / 1e3
        for entry in (report.get("pruning") or {}).get("files", {}).values():
            timing = by_name.get(Path(entry["path"]).name)
            entry["ms"] = None if timing is None else timing["p50_us"] / 1e3
    merged = {"command": "; ".join(r["command"] for r in reports),
              "rows": [row for r in reports for row in r["rows"]],
              "pruning": next((r["pruning"] for r in reports if r.get("pruning")), None),
              "runs": reports}
    write_atomic(merged, output_dir / "results.json")
    write_atomic(markdown(merged), output_dir / "results.md")
    print(markdown(merged))
    return merged


def markdown(report):
    lines = [f"Command: `{report['command']}`", "", "Latency: median of the timed runs, "
             "LiteRT + XNNPACK, 1 thread, 32x32 input.", "",
             "| model | float top-1 | PTQ int8 top-1 | QAT int8 top-1 | QAT - float | "
             "fp32 ms | PTQ int8 ms | QAT int8 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(
            f"| {r['model']} | {100 * r['float_accuracy']:.2f}% | "
            f"{100 * r['ptq_int8_accuracy']:.2f}% | {100 * r['qat_int8_accuracy']:.2f}% | "
            f"{100 * (r['qat_int8_accuracy'] - r['float_accuracy']):+.2f} pt | "
            f"{r['fp32_ms']:.2f} | {r['ptq_int8_ms']:.2f} | {r['qat_int8_ms']:.2f} |")
    pruning = report.get("pruning")
    if pruning:
        lines += ["", f"Pruning {pruning['model']}: sparsity {pruning['sparsity']:.3f} of the "
                  f"pruned kernels (target {pruning['target_sparsity']}), after QAT "
                  f"{pruning['sparsity_after_qat']}; pruned QAT int8 top-1 "
                  f"{100 * (pruning['int8_accuracy'] or 0):.2f}%", "",
                  "| .tflite | size | gzip size | ms (1 thread) |", "|---|---:|---:|---:|"]
        dense = {f"{pruning['model']}/fp32", f"{pruning['model']}/qat_int8"}
        for key in sorted(dense) + list(pruning["files"]):
            entry = pruning["files"].get(key)
            if entry is None:
                row = next(r for r in report["rows"] if r["model"] == pruning["model"])
                kind = key.split("/")[1]
                entry = {**row[f"{kind}_size"], "ms": row[f"{kind}_ms"]}
            ms = "XNNPACK fails" if entry["ms"] is None else f"{entry['ms']:.2f}"
            lines.append(f"| {key} | {entry['size_bytes']:,} | {entry['gzip_bytes']:,} | {ms} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run(main)
