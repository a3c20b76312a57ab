r"""Times .tflite models: locally with the LiteRT interpreter (XNNPACK, interleaved), on an
Android phone with TFLite's benchmark_model (--adb), or from saved benchmark_model logs; or
costs them in exact aarch64 instruction counts on emulated ARM cores (--arm).

    keras-ghost benchmark out/ghostnetv2_100_int8.tflite out/ghostnetv2_100_fp32.tflite \
        --num-threads 1 2 --runs 100 --json out/bench.json
    keras-ghost benchmark out/*.tflite --adb --benchmark-binary \
        android_aarch64_benchmark_model --cpu-mask f0 --save-log out/logs --plot out/pareto.png
    keras-ghost benchmark --parse-log out/logs/*.log --csv out/phone.csv
    keras-ghost benchmark --arm-setup          # once: the aarch64 environment (~1 min)
    keras-ghost benchmark out/*_int8.tflite --arm cortex-a76 --arm cortex-a53 \
        --arm-kernels --json out/arm.json

(`python tflite/benchmark.py ...` from a checkout runs the same code.) The "RSS +MB"
column is the resident memory the process gained while each interpreter was created and
ran once, not the model's whole footprint.
"""

import importlib.util

from keras_ghost.cli import common

_PHONE_ONLY = ("serial", "benchmark_binary", "use_gpu", "use_nnapi", "no_xnnpack",
               "op_profiling", "cpu_mask", "save_log")
_ARM_ONLY = ("arm_kernels", "arm_runs")


def parse_args(argv=None):
    p = common.Parser(prog="keras-ghost benchmark", description=__doc__)
    p.add_argument("models", nargs="*", help=".tflite files")
    p.add_argument("--num-threads", type=common.positive_int, nargs="+", default=[1],
                   metavar="N",
                   help="thread counts of the interpreter (XNNPACK's thread pool); each count "
                        "is timed in a round of its own (default 1)")
    p.add_argument("--warmup-runs", type=common.non_negative_int, default=5, metavar="N",
                   help="untimed invokes per model before the timed ones, so caches and "
                        "XNNPACK's packed weights are warm (default %(default)s)")
    p.add_argument("--runs", type=common.positive_int, default=50, metavar="N",
                   help="timed invokes per model; the statistics (avg, std, percentiles) are "
                        "over these (default %(default)s)")
    p.add_argument("--seed", type=common.non_negative_int, default=0,
                   help="seed of the random input images (default %(default)s)")
    p.add_argument("--block", type=common.positive_int, default=10,
                   help="local mode: timed runs per model per turn, after one untimed run "
                        "(default %(default)s; 1 alternates every run, with cold caches)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--adb", action="store_true",
                       help="run TFLite's benchmark_model on an Android device over adb")
    where.add_argument("--parse-log", nargs="+", metavar="FILE",
                       help="read saved benchmark_model logs instead of timing anything")
    where.add_argument("--arm", action="append", metavar="CPU",
                       help="count aarch64 instructions per invoke on this emulated core "
                            "(repeatable): cortex-a53, cortex-a72, cortex-a76, neoverse-n1, "
                            "max,sme=off; XNNPACK, 1 thread, outputs checked against x86")
    where.add_argument("--arm-sme-check", action="store_true",
                       help="run the models on emulated -cpu max with SME under "
                            "bookworm-backports' QEMU 10 (fetched once; QEMU 7.2's SME is "
                            "wrong) and compare their outputs with x86: outputs, not counts")
    where.add_argument("--arm-setup", action="store_true",
                       help="build the emulated aarch64 environment once (cached) and exit")
    arm = p.add_argument_group("emulated ARM (--arm)")
    arm.add_argument("--arm-kernels", action="store_true",
                     help="attribute the count to XNNPACK's kernels, with each op's MACs and "
                          "bytes moved")
    arm.add_argument("--arm-runs", type=common.positive_int, default=3,
                     help="steady-state invokes counted, to check repeatability (default 3)")
    arm.add_argument("--arm-cache", metavar="DIR",
                     help="where the environment lives (default: ~/.cache/keras_ghost/arm)")
    arm.add_argument("--arm-mirror", metavar="URL",
                     help="Debian archive for --arm-setup (default: the one apt uses)")
    phone = p.add_argument_group("phone (--adb)")
    phone.add_argument("--benchmark-binary", metavar="PATH",
                       help="benchmark_model built for the device (required with --adb)")
    phone.add_argument("--serial", help="adb serial of the device (when several are attached)")
    phone.add_argument("--adb-path", default="adb", help="adb executable (default: from PATH)")
    phone.add_argument("--use-gpu", action="store_true", help="GPU delegate")
    phone.add_argument("--use-nnapi", action="store_true", help="NNAPI delegate")
    phone.add_argument("--no-xnnpack", action="store_true",
                       help="TFLite's builtin CPU kernels instead of XNNPACK")
    phone.add_argument("--op-profiling", action="store_true",
                       help="per-op timings (--enable_op_profiling=true)")
    phone.add_argument("--cpu-mask", metavar="HEX",
                       help="taskset CPU mask, e.g. f0 for the big cores of many phones")
    phone.add_argument("--save-log", metavar="DIR", help="keep each raw benchmark_model log here")
    out = p.add_argument_group("outputs (the markdown table is always printed)")
    out.add_argument("--json", metavar="FILE", help="all results, op tables included")
    out.add_argument("--csv", metavar="FILE", help="one row per result, scalar fields")
    out.add_argument("--markdown", metavar="FILE", help="the printed report")
    out.add_argument("--plot", metavar="FILE.png",
                     help="ImageNet top-1 vs latency chart (needs keras-ghost[plot])")
    p.add_logging_flags()
    args = p.parse_args(argv)
    if args.arm_setup:
        if args.models:
            p.error("--arm-setup takes no models; run --arm with them afterwards")
        return args
    if not args.parse_log and not args.models:
        p.error("give .tflite models (or --parse-log FILE ...)")
    if args.arm:
        from keras_ghost.export.arm.cpus import check_names

        try:
            check_names(args.arm)
        except ValueError as e:
            p.error(f"--arm {e}")
    else:
        given = [n for n in _ARM_ONLY if getattr(args, n) not in (None, False, 3)]
        if given:
            p.error(f"--{given[0].replace('_', '-')} only applies with --arm")
    if args.adb and not args.benchmark_binary:
        p.error("--adb needs --benchmark-binary PATH (the benchmark_model built for the device)")
    if not args.adb:
        given = [n for n in _PHONE_ONLY if getattr(args, n) not in (None, False)]
        if given:
            p.error(f"--{given[0].replace('_', '-')} only applies with --adb")
    return args


OUTPUTS = (("json", (".json",)), ("csv", (".csv",)), ("markdown", (".md", ".markdown", ".txt")),
           ("plot", (".png",)))


def validate(args):
    """The input files exist (and the .tflite ones load), the outputs can be written:
    raises UsageError naming the flag."""
    for name, suffixes in OUTPUTS:
        if getattr(args, name):
            common.check_output_file(getattr(args, name), f"--{name}", suffixes)
    if args.save_log:
        common.check_output_dir(args.save_log, "--save-log")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise common.UsageError("--plot needs matplotlib: pip install 'keras-ghost[plot]'")
    if args.arm_setup:
        return args
    flag = "--parse-log" if args.parse_log else "model"
    for path in args.parse_log or args.models:
        common.check_input_file(path, flag)
    if not (args.parse_log or args.adb):  # a phone's delegates may take what LiteRT here won't
        from keras_ghost.export.tflite import read_tflite

        for path in args.models:
            try:
                read_tflite(path)
            except ValueError as e:
                raise common.UsageError(f"{path}: {e}") from None
    return args


def main(argv=None):
    """`keras-ghost benchmark`; returns the results."""
    return common.run(_main, argv)


def _main(argv):
    args = validate(parse_args(argv))
    if args.arm_setup:
        from keras_ghost.export import arm

        return arm.setup(args.arm_cache, mirror=args.arm_mirror)
    from keras_ghost.export import benchmark, benchmark_model, write_atomic

    if args.arm:
        return _arm(args)
    if args.arm_sme_check:
        from keras_ghost.export.arm import find_environment, sme

        results = sme.check(args.models, env=find_environment(args.arm_cache))
        if args.json:
            write_atomic([r.as_dict() for r in results], args.json)
        return results
    if args.parse_log:
        results = [benchmark_model.parse_log_file(f) for f in args.parse_log]
    else:
        results = []
        for threads in args.num_threads:
            if args.adb:
                results += benchmark_model.benchmark_on_device(
                    args.models, args.benchmark_binary, serial=args.serial,
                    num_threads=threads, use_xnnpack=not args.no_xnnpack, use_gpu=args.use_gpu,
                    use_nnapi=args.use_nnapi, enable_op_profiling=args.op_profiling,
                    cpu_mask=args.cpu_mask, warmup_runs=args.warmup_runs, num_runs=args.runs,
                    adb=args.adb_path, save_log=args.save_log)
            else:
                results += benchmark.benchmark(args.models, threads, args.warmup_runs,
                                               args.runs, seed=args.seed, block=args.block)

    report = "\n\n".join([benchmark.markdown(results)] + [
        benchmark_model.op_markdown(r) for r in results if r.op_profile])
    _write(args, report, results, lambda: benchmark_model.to_csv(results))
    if args.plot:
        benchmark_model.plot(results, args.plot)
    return results


def _write(args, report, results, csv_text):
    """Prints the report and writes the --markdown / --json / --csv files asked for."""
    from keras_ghost.io_utils import write_atomic

    print(report)
    if args.markdown:
        write_atomic((report + "\n").encode(), args.markdown)
    if args.json:
        write_atomic([r.as_dict() for r in results], args.json)
    if args.csv:
        write_atomic(csv_text().encode(), args.csv)


def _arm(args):
    from keras_ghost.export import arm
    from keras_ghost.export.arm import attribution, measure

    env = arm.find_environment(args.arm_cache)  # before any work: says how to build it
    print(f"counting on emulated {', '.join(args.arm)} (QEMU {env.qemu_version}, "
          f"ai-edge-litert {env.litert_version}), XNNPACK, 1 thread", flush=True)
    results = measure.run(args.models, args.arm, runs=args.arm_runs, kernels=args.arm_kernels,
                          env=env)
    report = "\n\n".join([measure.markdown(results)] + [
        attribution.kernel_markdown(r) for r in results if r.kernels])
    _write(args, report, results, lambda: measure.to_csv(results))
    return results
