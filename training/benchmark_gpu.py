#!/usr/bin/env python
"""GPU speed benchmark: batch-1 latency and batch 64/128/256 throughput in inference and
training for G-GhostNet / GhostNet against their peers, with activation counts.

    python training/benchmark_gpu.py                       # TF; XLA + mixed precision on GPU
    python training/benchmark_gpu.py --backend jax         # same models on JAX
    python training/benchmark_gpu.py --models ghostnet_100 mobilenetv3large \\
        --batch-sizes 8 --input-size 64 --runs 3           # a quick CPU run

On TensorFlow with a GPU visible it runs XLA (--no-jit to disable) and mixed_float16
(--no-mixed-precision); without one it falls back to plain float32 on the CPU, so it runs
anywhere (CPU figures are not GPU figures). Models not in the registry are skipped with a
message. Ratios (ours / peer) come from the same run. Writes Markdown + JSON.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's keras_ghost

from keras_ghost.cli.common import run  # noqa: E402  (after the log level)

DEFAULT_MODELS = ["g_ghost_regnetx_032", "regnetx032", "resnet50", "g_ghost_resnet34",
                  "resnet34", "ghostnet_100", "mobilenetv3large"]
# Ours -> the peers each is compared with.
PAIRS = {"g_ghost_regnetx_032": ("regnetx032", "resnet50"), "g_ghost_resnet34": ("resnet34",),
         "ghostnet_100": ("mobilenetv3large",)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow",
                   help="Keras backend (JAX runs in a subprocess: the backend is fixed at import)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--no-jit", action="store_true", help="no XLA even on a GPU")
    p.add_argument("--no-mixed-precision", action="store_true")
    p.add_argument("--output", type=Path, default=Path("out/benchmark_gpu"),
                   help="writes OUTPUT_<backend>.md and .json")
    return p.parse_args(argv)


def _current_backend():
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _in_subprocess(args, argv):
    """Reruns this script with KERAS_BACKEND=args.backend; returns its JSON result."""
    env = {**os.environ, "KERAS_BACKEND": args.backend}
    argv = list(sys.argv[1:] if argv is None else argv)
    subprocess.run([sys.executable, __file__, *argv], env=env, check=True)
    return json.loads(Path(f"{args.output}_{args.backend}.json").read_text())


def _has_gpu(backend):
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def markdown(result):
    head = (f"Backend {result['backend']}, device {result['device']}, input "
            f"{result['input_size']}x{result['input_size']}, policy {result['policy']}, "
            f"XLA {result['jit']}, median of {result['runs']} runs")
    batches = [str(b) for b in result["batch_sizes"]]
    lines = [head, "", "| model | params | MACs | activations | " + " | ".join(
        [f"{m} b1 ms" for m in ("infer", "train")] +
        [f"{m} b{b} img/s" for m in ("infer", "train") for b in batches]) + " |",
        "|---|" + "---:|" * (3 + 2 + 2 * len(batches))]
    for r in result["results"]:
        cells = [f"{r['params']:,}", f"{r['macs'] / 1e6:.0f}M", f"{r['activations'] / 1e6:.2f}M",
                 f"{r['inference']['latency_ms']:.2f}", f"{r['training']['latency_ms']:.2f}"]
        cells += [f"{r[m]['images_per_second'][b]:.0f}" for m in ("inference", "training")
                  for b in batches]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    if result["ratios"]:
        lines += ["", "| ratio (ours / peer) | " + " | ".join(
            next(iter(result["ratios"].values()))) + " |",
            "|---|" + "---:|" * len(next(iter(result["ratios"].values())))]
        for pair, entry in result["ratios"].items():
            lines.append(f"| {pair} | " + " | ".join(f"{v:.2f}x" for v in entry.values()) + " |")
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(result["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = args.backend
    if _current_backend() != args.backend:
        return _in_subprocess(args, argv)
    import keras

    from keras_ghost.io_utils import write_atomic
    from keras_ghost.training import speed

    gpu = _has_gpu(args.backend)
    jit = gpu and not args.no_jit
    policy = "mixed_float16" if gpu and not args.no_mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)
    results, skipped = [], []
    for name in args.models:
        if not speed.available(name):
            message = (f"{name} is not registered (keras_ghost.list_models()) nor a "
                       f"keras.applications peer ({', '.join(speed.PEERS)})")
            print(f"skipping {message}", flush=True)
            skipped.append(message)
            continue
        model = speed.build(name, args.input_size)
        r = speed.measure(model, args.batch_sizes, jit=jit, warmup=args.warmup, runs=args.runs)
        r["name"] = name
        results.append(r)
        print(f"{name}: inference {r['inference']['latency_ms']} ms (b1), training "
              f"{r['training']['latency_ms']} ms (b1), activations {r['activations']:,}",
              flush=True)
        keras.backend.clear_session()
    pairs = [(a, b) for a, peers in PAIRS.items() for b in peers]
    result = {"backend": args.backend, "device": "gpu" if gpu else "cpu", "policy": policy,
              "jit": jit, "input_size": args.input_size, "batch_sizes": args.batch_sizes,
              "runs": args.runs, "results": results, "skipped": skipped,
              "ratios": speed.ratios(results, pairs)}
    write_atomic(result, f"{args.output}_{args.backend}.json")
    write_atomic(markdown(result), f"{args.output}_{args.backend}.md")
    print(markdown(result))
    return result


if __name__ == "__main__":
    run(main)
