#!/usr/bin/env python
"""Times .tflite models with the LiteRT interpreter (XNNPACK), interleaved.

    python tflite/benchmark.py out/ghostnetv2_100_int8.tflite out/ghostnetv2_100_fp32.tflite \
        --num-threads 1 2 --runs 100 --json out/bench.json
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("models", nargs="+", help=".tflite files")
    p.add_argument("--num-threads", type=int, nargs="+", default=[1])
    p.add_argument("--warmup-runs", type=int, default=5)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--json", help="write all results to this JSON file")
    args = p.parse_args(argv)
    missing = [m for m in args.models if not os.path.isfile(m)]
    if missing:
        sys.exit(f"error: no such .tflite file: {', '.join(missing)}")

    from keras_ghost.export import benchmark, write_atomic

    results = []
    for threads in args.num_threads:
        results += benchmark.benchmark(args.models, threads, args.warmup_runs, args.runs)
    print(benchmark.markdown(results))
    if args.json:
        write_atomic([r.as_dict() for r in results], args.json)
    return results


if __name__ == "__main__":
    main()
