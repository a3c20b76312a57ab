#!/usr/bin/env python
"""Converts our models and their peers with the same settings and times them side by side
(one interleaved LiteRT run per thread count), with latency ratios against the peers.

    python tflite/compare.py                                  # the README table
    python tflite/compare.py --models ghostnet_050 mobilenetv3small --num-threads 1 2 4

Peers: keras.applications mobilenetv2 / mobilenetv3large / mobilenetv3small and, with
`pip install 'keras-ghost[compare]'`, kecam_ghostnet_100 / kecam_ghostnetv2_100.
All models are randomly initialized: latency does not depend on the weights.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_MODELS = ["ghostnet_100", "ghostnetv2_100", "kecam_ghostnet_100",
                  "kecam_ghostnetv2_100", "mobilenetv2", "mobilenetv3large"]
# (ours, peer) pairs whose latency ratio the report lists when both were timed.
RATIOS = [("ghostnet_100", "kecam_ghostnet_100"), ("ghostnet_100", "mobilenetv2"),
          ("ghostnet_100", "ghostnet_100/unoptimized"),
          ("ghostnetv2_100", "kecam_ghostnetv2_100"), ("ghostnetv2_100", "mobilenetv2"),
          ("ghostnetv2_100", "ghostnetv2_100/unoptimized"),
          ("asymmnet_large_100", "mobilenetv3large"),
          ("asymmnet_large_100/hard_swish", "mobilenetv3large"),
          ("asymmnet_large_100", "asymmnet_large_100/hard_swish")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                   help="registered keras_ghost variants and peer names")
    p.add_argument("--modes", nargs="+", default=["fp32", "int8"], choices=("fp32", "fp16",
                                                                            "dynamic", "int8"))
    p.add_argument("--num-threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup-runs", type=int, default=10)
    p.add_argument("--block", type=int, default=10,
                   help="timed runs per model per turn (default %(default)s; 1 = cold caches)")
    p.add_argument("--out-dir", default="out/compare",
                   help="where the .tflite files go (in a folder per input size)")
    p.add_argument("--reuse", action="store_true", help="keep .tflite files already there")
    p.add_argument("--with-unoptimized", action="store_true",
                   help="also time our models converted without the deploy-time graph "
                        "optimization (rows '<name>/unoptimized')")
    p.add_argument("--with-hard-swish", action="store_true",
                   help="also time our models optimized but with hard-swish kept as one op "
                        "(rows '<name>/hard_swish'; XNNPACK does not run it in int8)")
    p.add_argument("--json", help="write all results here")
    p.add_argument("--markdown", help="write the report here")
    p.add_argument("--plot", metavar="FILE.png",
                   help="ImageNet top-1 (reference weights) vs latency chart")
    return p.parse_args(argv)


def convert_all(args):
    """Converts every (model, mode) to `out_dir`; returns {(model, mode): path}."""
    import keras_ghost
    from keras_ghost import export
    from keras_ghost.export import peers
    from keras_ghost.models.registry import IMAGENET_MEAN, IMAGENET_STD

    shape = (args.input_size, args.input_size, 3)
    images = export.load_images(None, None, limit=100)
    # One normalization for all (our models' ImageNet mean/std): latency does not care.
    calibration = export.to_model_input(images, shape, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    paths = {}
    names = list(args.models)
    if args.with_unoptimized:
        names += [f"{n}/unoptimized" for n in args.models if not peers.is_peer(n)]
    if args.with_hard_swish:
        names += [f"{n}/hard_swish" for n in args.models if not peers.is_peer(n)]
    for name in names:
        if peers.PEERS.get(name, ("",))[0] == "kecam" and not peers.kecam_available():
            print(f"skipping {name}: pip install 'keras-ghost[compare]' to time it")
            continue
        model = None
        for mode in args.modes:
            # Per input size, so that --reuse never picks up a model of another size.
            path = os.path.join(args.out_dir, str(args.input_size),
                                f"{name.replace('/', '_')}_{mode}.tflite")
            paths[(name, mode)] = path
            if args.reuse and os.path.exists(path):
                continue
            print(f"converting {name} ({mode})", flush=True)
            if peers.is_peer(name):
                peers.convert_peer(name, mode, calibration, shape, path)
                continue
            base, _, variant = name.partition("/")
            if model is None:
                model = keras_ghost.create_model(base, input_shape=shape,
                                                 classifier_activation=None)
            if variant == "hard_swish":
                optimized = export.optimize_for_inference(model, split_hard_swish=False)
                content = export.convert(optimized, mode, calibration, optimize=False)
            else:
                content = export.convert(model, mode, calibration,
                                         optimize=variant != "unoptimized")
            export.write_atomic(content, path)
    return paths


def report(results, paths, args):
    from keras_ghost.export import benchmark

    by_key = {}
    for (name, mode), path in paths.items():
        for r in results:
            if r.model == os.path.basename(path):
                by_key[(name, mode, r.num_threads)] = r
    lines = ["| model | " + " | ".join(f"{m} {t}T ms" for m in args.modes
                                        for t in args.num_threads) + " |",
             "|---|" + "---:|" * (len(args.modes) * len(args.num_threads))]
    timed = list(dict.fromkeys(k[0] for k in by_key))
    for name in timed:
        cells = [_ms(by_key.get((name, m, t))) for m in args.modes for t in args.num_threads]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ratio_lines = []
    for ours, peer in RATIOS:
        cells = []
        for m in args.modes:
            for t in args.num_threads:
                a, b = by_key.get((ours, m, t)), by_key.get((peer, m, t))
                cells.append(f"{a.avg_us / b.avg_us:.2f}x" if a and b else "-")
        if any(c != "-" for c in cells):
            ratio_lines.append(f"| {ours} / {peer} | " + " | ".join(cells) + " |")
    if ratio_lines:
        lines += ["", "| latency ratio (avg) | " + " | ".join(
            f"{m} {t}T" for m in args.modes for t in args.num_threads) + " |",
            "|---|" + "---:|" * (len(args.modes) * len(args.num_threads)), *ratio_lines]
    return "\n".join(lines) + "\n\n" + benchmark.markdown(results)


def _ms(result):
    return "-" if result is None else f"{result.avg_us / 1e3:.2f}"


def main(argv=None):
    args = parse_args(argv)
    import keras_ghost
    from keras_ghost.export import benchmark, peers, write_atomic

    unknown = [n for n in args.models if not peers.is_peer(n) and n not in keras_ghost.list_models()]
    if unknown:
        sys.exit(f"error: unknown model(s) {unknown}; choose from {keras_ghost.list_models()} "
                 f"or the peers {sorted(peers.PEERS)}.")
    paths = convert_all(args)
    files = list(dict.fromkeys(paths.values()))
    results = []
    for threads in args.num_threads:
        print(f"timing {len(files)} models interleaved, {threads} thread(s)", flush=True)
        results += benchmark.benchmark(files, threads, args.warmup_runs, args.runs,
                                       block=args.block)
    text = report(results, paths, args)
    print(text)
    if args.markdown:
        write_atomic(text.encode(), args.markdown)
    if args.json:
        write_atomic([r.as_dict() for r in results], args.json)
    if args.plot:
        from keras_ghost.export import benchmark_model

        # kecam's ports are the same architectures as ours: same reference accuracy.
        accuracy = {f"kecam_{n}": keras_ghost.get_spec(n).top1
                    for n in ("ghostnet_100", "ghostnetv2_100")}
        accuracy["mobilenetv2"] = benchmark_model.KERAS_APPLICATIONS_TOP1["mobilenetv2_100"]
        benchmark_model.plot(results, args.plot, accuracy=accuracy,
                             title=f"LiteRT + XNNPACK, {args.input_size}x{args.input_size}")
    return results


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:  # bad input: the message says the fix
        sys.exit(f"error: {e}")
