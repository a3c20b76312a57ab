"""Local LiteRT benchmark reporting the statistics TFLite's `benchmark_model` reports.

Several models are timed interleaved (one run of each per round), so machine noise hits
all of them alike and ratios from one run are fair.
"""

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from keras_ghost.export.tflite import interpreter


@dataclasses.dataclass
class BenchmarkResult:
    model: str
    num_threads: int
    init_us: float
    first_inference_us: float
    warmup_avg_us: float
    runs: int
    avg_us: float
    std_us: float
    min_us: float
    max_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    memory_delta_mb: float  # resident memory added by init + first inference

    def as_dict(self):
        return dataclasses.asdict(self)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _random_input(detail, rng):
    shape, dtype = detail["shape"], detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def benchmark(paths, num_threads=1, warmup_runs=5, runs=50, seed=0):
    """Times each .tflite in `paths` with XNNPACK; returns one `BenchmarkResult` each."""
    rng = np.random.default_rng(seed)
    states = []
    for path in paths:
        content = Path(path).read_bytes()
        rss = _rss_mb()
        start = time.perf_counter()
        it = interpreter(content, num_threads=num_threads)
        init_us = (time.perf_counter() - start) * 1e6
        for detail in it.get_input_details():
            it.set_tensor(detail["index"], _random_input(detail, rng))
        start = time.perf_counter()
        it.invoke()
        first_us = (time.perf_counter() - start) * 1e6
        states.append(dict(path=str(path), it=it, init_us=init_us, first_us=first_us,
                           memory=_rss_mb() - rss, warmup=[], timed=[]))
    for key, count in (("warmup", warmup_runs), ("timed", runs)):
        for _ in range(count):
            for state in states:
                start = time.perf_counter()
                state["it"].invoke()
                state[key].append((time.perf_counter() - start) * 1e6)
    results = []
    for s in states:
        t = np.asarray(s["timed"])
        results.append(BenchmarkResult(
            model=Path(s["path"]).name, num_threads=num_threads, init_us=s["init_us"],
            first_inference_us=s["first_us"],
            warmup_avg_us=float(np.mean(s["warmup"])) if s["warmup"] else float("nan"),
            runs=len(t), avg_us=float(t.mean()), std_us=float(t.std()), min_us=float(t.min()),
            max_us=float(t.max()), p50_us=float(np.percentile(t, 50)),
            p90_us=float(np.percentile(t, 90)), p99_us=float(np.percentile(t, 99)),
            memory_delta_mb=s["memory"]))
    return results


def markdown(results):
    lines = ["| model | threads | avg ms | std ms | min ms | p50 ms | p90 ms | init ms | mem MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.model} | {r.num_threads} | {r.avg_us / 1e3:.2f} | {r.std_us / 1e3:.2f} | "
                     f"{r.min_us / 1e3:.2f} | {r.p50_us / 1e3:.2f} | {r.p90_us / 1e3:.2f} | "
                     f"{r.init_us / 1e3:.1f} | {r.memory_delta_mb:.1f} |")
    return "\n".join(lines)
