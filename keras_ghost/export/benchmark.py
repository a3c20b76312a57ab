"""Local LiteRT benchmark reporting the statistics TFLite's `benchmark_model` reports.

Several models are timed interleaved (one run of each per round), so machine noise hits
all of them alike and ratios from one run are fair.
"""

import dataclasses
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from keras_ghost.export.tflite import interpreter


@dataclasses.dataclass
class BenchmarkResult:
    """Timings of one model (all times in microseconds); None where the source does not
    report a statistic (e.g. `benchmark_model` prints p5/median/p95, not p90/p99)."""

    model: str
    num_threads: Optional[int]
    init_us: Optional[float]
    first_inference_us: Optional[float]
    warmup_avg_us: Optional[float]
    runs: Optional[int]
    avg_us: float
    std_us: Optional[float]
    min_us: Optional[float]
    max_us: Optional[float]
    p50_us: Optional[float]
    p90_us: Optional[float]
    p99_us: Optional[float]
    # Resident memory added by init + first inference (local); for `benchmark_model`, its
    # "memory footprint delta from the start of the tool" at the end of the run.
    memory_delta_mb: Optional[float]
    p5_us: Optional[float] = None
    p95_us: Optional[float] = None
    init_memory_mb: Optional[float] = None  # `benchmark_model`: delta after init only
    peak_memory_mb: Optional[float] = None  # `benchmark_model --report_peak_memory_footprint`
    source: str = "litert-python"  # or "benchmark_model"
    # `benchmark_model --enable_op_profiling=true`: one dict per row of the "Run Order"
    # table (node_type, name, first_ms, avg_ms, percent, cdf_percent, mem_kb, times_called)
    # and of the "Summary by node type" table.
    op_profile: list = dataclasses.field(default_factory=list)
    op_summary: list = dataclasses.field(default_factory=list)

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


def benchmark(paths, num_threads=1, warmup_runs=5, runs=50, seed=0, block=10):
    """Times each .tflite in `paths` with XNNPACK; returns one `BenchmarkResult` each.

    Models take turns in blocks: each turn runs one model once untimed (to bring its
    weights back into the caches the other models evicted) and then up to `block` timed
    runs. Noise still hits all models alike, while each is timed warm, the way
    `benchmark_model` times one model. `block=1` alternates every run (cold caches).
    """
    for name, value, least in (("num_threads", num_threads, 1), ("warmup_runs", warmup_runs, 0),
                               ("runs", runs, 1), ("block", block, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}.")
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
        for turn in range(0, count, block):
            for state in states:
                state["it"].invoke()  # cache refill after the other models, not timed
                for _ in range(min(block, count - turn)):
                    start = time.perf_counter()
                    state["it"].invoke()
                    state[key].append((time.perf_counter() - start) * 1e6)
    results = []
    for s in states:
        t = np.asarray(s["timed"])
        results.append(BenchmarkResult(
            model=Path(s["path"]).name, num_threads=num_threads, init_us=s["init_us"],
            first_inference_us=s["first_us"],
            warmup_avg_us=float(np.mean(s["warmup"])) if s["warmup"] else None,
            runs=len(t), avg_us=float(t.mean()), std_us=float(t.std()), min_us=float(t.min()),
            max_us=float(t.max()), p50_us=float(np.percentile(t, 50)),
            p90_us=float(np.percentile(t, 90)), p99_us=float(np.percentile(t, 99)),
            memory_delta_mb=s["memory"], p5_us=float(np.percentile(t, 5)),
            p95_us=float(np.percentile(t, 95))))
    return results


def _fmt(value, scale=1.0, digits=2):
    return "-" if value is None else f"{value / scale:.{digits}f}"


MEMORY_NOTE = ("RSS +MB: resident memory the process gained while the interpreter was created "
               "and ran once (local runs; benchmark_model: its footprint delta from the start "
               "of the tool); not the model's total footprint.")


def markdown(results):
    """The results as a Markdown table, with `MEMORY_NOTE` under it."""
    lines = ["| model | threads | avg ms | std ms | min ms | p50 ms | p90 ms | p95 ms | init ms "
             "| RSS +MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ms = [_fmt(getattr(r, f), 1e3) for f in
              ("avg_us", "std_us", "min_us", "p50_us", "p90_us", "p95_us")]
        lines.append(f"| {r.model} | {'-' if r.num_threads is None else r.num_threads} | "
                     f"{' | '.join(ms)} | {_fmt(r.init_us, 1e3, 1)} | "
                     f"{_fmt(r.memory_delta_mb, digits=1)} |")
    return "\n".join(lines + ["", MEMORY_NOTE])
