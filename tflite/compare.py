#!/usr/bin/env python
"""Converts our models and their peers with the same settings and times them side by side
(one interleaved LiteRT run per thread count), with latency ratios against the peers; or,
with --arm, costs them all in exact aarch64 instructions per invoke on emulated ARM cores.

    python tflite/compare.py                                  # the README's x86 table
    python tflite/compare.py --arm cortex-a53 --arm cortex-a76 --arm max,sme=off  # ARM table
    python tflite/compare.py --models ghostnet_050 mobilenetv3small --num-threads 1 2 4
    python tflite/compare.py --models ghostnet_100 --arm cortex-a76 \
        --variants unoptimized remove_pad=true merge_ghost_min_size=56   # deploy-pass settings

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
# Deploy-pass settings a variant may change (keyword=value of optimize_for_inference).
VARIANT_OPTIONS = {"remove_pad": {"none": None, "true": True, "false": False},
                   "merge_ghost_min_size": None,  # an int, or none
                   "split_hard_swish": {"true": True, "false": False},
                   "fold_hard_sigmoid": {"true": True, "false": False},
                   "move_concat": {"true": True, "false": False}}


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
    p.add_argument("--variants", nargs="+", default=[], metavar="SETTING",
                   help="also our models with other deploy-pass settings: 'unoptimized', or "
                        "KEY=VALUE of optimize_for_inference (remove_pad=none|true|false, "
                        "merge_ghost_min_size=N|none, split_hard_swish=true|false, "
                        "fold_hard_sigmoid=true|false, move_concat=true|false); rows "
                        "'<name>/<setting>'")
    p.add_argument("--calib-images", type=int, default=100,
                   help="int8 calibration images (latency does not depend on them)")
    p.add_argument("--arm", action="append", metavar="CPU",
                   help="count aarch64 instructions per invoke on this emulated core instead "
                        "of timing on x86 (repeatable; see tflite/benchmark.py --arm-setup)")
    p.add_argument("--arm-cache", metavar="DIR", help="the aarch64 environment's cache dir")
    p.add_argument("--json", help="write all results here")
    p.add_argument("--markdown", help="write the report here")
    p.add_argument("--plot", metavar="FILE.png",
                   help="ImageNet top-1 (reference weights) vs latency chart")
    args = p.parse_args(argv)
    for v in args.variants:
        try:
            deploy_options(v)
        except ValueError as e:
            p.error(f"--variants {v}: {e}")
    if args.arm:
        from keras_ghost.export.arm.cpus import check_names

        try:
            check_names(args.arm)
        except ValueError as e:
            p.error(f"--arm {e}")
    if args.calib_images < 1:
        p.error("--calib-images must be >= 1")
    return args


def deploy_options(variant):
    """'unoptimized' -> None; 'hard_swish' or 'KEY=VALUE' -> optimize_for_inference kwargs."""
    if variant == "unoptimized":
        return None
    if variant == "hard_swish":
        return {"split_hard_swish": False}
    key, eq, value = variant.partition("=")
    if not eq or key not in VARIANT_OPTIONS:
        raise ValueError(f"not 'unoptimized' or KEY=VALUE with KEY in {sorted(VARIANT_OPTIONS)}")
    table = VARIANT_OPTIONS[key]
    value = value.lower()
    if table is None:
        if value == "none":
            return {key: None}
        if not value.isdigit():
            raise ValueError(f"{key} takes a whole number or none")
        return {key: int(value)}
    if value not in table:
        raise ValueError(f"{key} takes {' | '.join(table)}")
    return {key: table[value]}


def convert_all(args):
    """Converts every (model, mode) to `out_dir`; returns {(model, mode): path} and
    {(peer, mode): why its converter failed}."""
    import keras_ghost
    from keras_ghost import export
    from keras_ghost.export import peers
    from keras_ghost.models.registry import IMAGENET_MEAN, IMAGENET_STD

    shape = (args.input_size, args.input_size, 3)
    images = export.load_images(None, None, limit=args.calib_images)
    # One normalization for all (our models' ImageNet mean/std): latency does not care.
    calibration = export.to_model_input(images, shape, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    paths, failed = {}, {}
    names = list(args.models)
    if args.with_unoptimized:
        names += [f"{n}/unoptimized" for n in args.models if not peers.is_peer(n)]
    if args.with_hard_swish:
        names += [f"{n}/hard_swish" for n in args.models if not peers.is_peer(n)]
    names += [f"{n}/{v}" for v in args.variants for n in args.models if not peers.is_peer(n)]
    for name in names:
        if peers.is_peer(name) and not peers.available(name):
            print(f"skipping {name}: {peers.install_hint(name)} to time it")
            continue
        model = None
        for mode in args.modes:
            # Per input size, so that --reuse never picks up a model of another size.
            path = os.path.join(args.out_dir, str(args.input_size),
                                f"{name.replace('/', '_').replace('=', '-')}_{mode}.tflite")
            paths[(name, mode)] = path
            if args.reuse and os.path.exists(path):
                continue
            print(f"converting {name} ({mode})", flush=True)
            if peers.is_peer(name):
                try:
                    peers.convert_peer(name, mode, calibration, shape, path)
                except peers.PeerConversionError as e:  # the table says so; the rest goes on
                    print(f"skipping {name} ({mode}): its converter failed: {e.reason}")
                    failed[(name, mode)] = e.reason
                    del paths[(name, mode)]
                continue
            base, _, variant = name.partition("/")
            if model is None:
                model = keras_ghost.create_model(base, input_shape=shape,
                                                 classifier_activation=None)
            options = deploy_options(variant) if variant else {}
            if options:  # convert()'s settings for this mode, but for the variant's
                options = {**export.deploy_settings(mode), **options}
                optimized = export.optimize_for_inference(export.deploy_form(model), **options)
                content = export.convert(optimized, mode, calibration, optimize=False)
            else:
                content = export.convert(model, mode, calibration, optimize=options is not None)
            export.write_atomic(content, path)
    return paths, failed


def arm_report(results, paths, args):
    """Rows: models; columns: mode x CPU in M aarch64 instructions per invoke; then the
    ratios of RATIOS and of every variant to its default, and the per-core detail."""
    from keras_ghost.export.arm import measure

    by_key = {}
    for (name, mode), path in paths.items():
        for r in results:
            if r.model == os.path.basename(path):
                by_key[(name, mode, r.cpu)] = r
    cols = [(m, c) for m in args.modes for c in args.arm]
    head = "| " + " | ".join(f"{m} {c}" for m, c in cols) + " |"
    lines = ["M instructions per invoke (aarch64, XNNPACK, 1 thread; exact counts)", "",
             "| model " + head, "|---|" + "---:|" * len(cols)]
    for name in dict.fromkeys(k[0] for k in by_key):
        cells = []
        for m, c in cols:
            r = by_key.get((name, m, c))
            cells.append("-" if r is None else f"{r.arm_instructions / 1e6:.2f}" + (
                "" if r.arm_matches_x86 else " (outputs differ from x86)"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    variants = [(n, n.split("/")[0]) for n in dict.fromkeys(k[0] for k in by_key) if "/" in n]
    pairs = list(RATIOS) + [(v, b) for v, b in variants if (b, v) not in RATIOS]
    ratio_lines = []
    for ours, peer in dict.fromkeys(pairs):
        cells = []
        for m, c in cols:
            a, b = by_key.get((ours, m, c)), by_key.get((peer, m, c))
            cells.append(f"{a.arm_instructions / b.arm_instructions:.3f}x" if a and b else "-")
        if any(x != "-" for x in cells):
            ratio_lines.append(f"| {ours} / {peer} " + "| " + " | ".join(cells) + " |")
    if ratio_lines:
        lines += ["", "| instruction ratio " + head, "|---|" + "---:|" * len(cols), *ratio_lines]
    return "\n".join(lines) + "\n\n" + measure.markdown(results)


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


def _failures(failed):
    if not failed:
        return ""
    return "\n\nNot converted (their own converter failed):\n" + "\n".join(
        f"- {name} ({mode}): {reason}" for (name, mode), reason in failed.items())


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
    if args.arm:
        from keras_ghost.export import arm

        env = arm.find_environment(args.arm_cache)  # before converting: says how to build it
    paths, failed = convert_all(args)
    files = list(dict.fromkeys(paths.values()))
    if args.arm:
        from keras_ghost.export.arm import measure

        print(f"counting {len(files)} models on emulated {', '.join(args.arm)}", flush=True)
        results = measure.run(files, args.arm, env=env)
        text = arm_report(results, paths, args)
    else:
        results = []
        for threads in args.num_threads:
            print(f"timing {len(files)} models interleaved, {threads} thread(s)", flush=True)
            results += benchmark.benchmark(files, threads, args.warmup_runs, args.runs,
                                           block=args.block)
        text = report(results, paths, args)
    text += _failures(failed)
    print(text)
    if args.markdown:
        write_atomic(text.encode(), args.markdown)
    if args.json:
        write_atomic([r.as_dict() for r in results], args.json)
    if args.plot:
        _plot(results, args, "arm_instructions" if args.arm else "avg_us")
    return results


def _plot(results, args, metric):
    import keras_ghost
    from keras_ghost.export import benchmark_model, peers

    # kecam's and timm's ports are the same architectures as ours: same reference accuracy.
    accuracy = {f"{lib}_{n}": keras_ghost.get_spec(n).top1
                for lib in ("kecam", "timm") for n in ("ghostnet_100", "ghostnetv2_100")}
    for peer in ("mobilenetv2", "mobilenetv3large", "mobilenetv3small"):
        accuracy[peer] = benchmark_model.KERAS_APPLICATIONS_TOP1[f"{peer}_100"]
    size = f"{args.input_size}x{args.input_size}"
    if metric == "arm_instructions":
        return benchmark_model.plot_arm(
            results, args.plot, accuracy=accuracy, ours=lambda label: not peers.is_peer(label),
            title=f"LiteRT + XNNPACK on emulated aarch64, {size}, 1 thread (blue: keras_ghost)")
    return benchmark_model.plot(results, args.plot, accuracy=accuracy,
                                title=f"LiteRT + XNNPACK, {size}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:  # bad input: the message says the fix
        sys.exit(f"error: {e}")
