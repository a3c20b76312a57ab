"""Phone benchmarks with TFLite's `benchmark_model` over adb, and a parser for its log.

`benchmark_model` is the reference latency tool of TFLite / LiteRT (Interpreter API);
`benchmark_on_device` pushes it and the models to an Android phone, runs it and parses the
log with `parse_log`, which also reads logs saved by hand. `to_csv` and `plot` (accuracy
vs latency, paper style) report any `BenchmarkResult`s, local or phone.

    results = benchmark_on_device(["out/ghostnetv2_100_int8.tflite"],
                                  "android_aarch64_benchmark_model", cpu_mask="f0")
"""

import collections
import csv
import dataclasses
import io
import re
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path

from keras_ghost.export.benchmark import BenchmarkResult
from keras_ghost.export.tflite import MODES, write_atomic

# The prebuilt Interpreter-API `benchmark_model` for 64-bit Android, as linked from
# tensorflow/lite/g3doc/performance/measurement.md ("Native benchmark binary"); the same
# page is https://ai.google.dev/edge/litert/models/measurement.
PREBUILT_ANDROID_BINARY_URL = (
    "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/"
    "tools/nightly/latest/android_aarch64_benchmark_model")

# ImageNet top-1 (%) of keras.applications peers (width 1.0), from the "Available models"
# table of https://keras.io/api/applications/.
KERAS_APPLICATIONS_TOP1 = {"mobilenet_100": 70.4, "mobilenetv2_100": 71.3,
                           "mobilenetv3large_100": 75.6, "mobilenetv3small_100": 68.1}

# --------------------------------------------------------------------------------- parser

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"  # the tool prints e.g. avg=2.95034e+06
# What may precede the tool's own text: logcat (`adb logcat`, the benchmark app) and
# TFLITE_LOG severities of newer builds ("INFO: ").
_PREFIX = re.compile(
    r"^\s*(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+)?"
    r"(?:[VDIWEF]/[\w.-]+\s*\(\s*\d+\):\s*|(?:\d+\s+\d+\s+)?[VDIWEF]\s+[\w.-]+\s*:\s*)?"
    r"(?:(?:INFO|WARNING|ERROR|VERBOSE):\s+)?")
# Distinctive lines are searched, not matched, so unknown prefixes do not hide them.
_RUNNING = re.compile(r"Running benchmark for at least")
_STATS = re.compile(r"(?:^|\s)count=\d+\s+(?:first|curr)=")  # not "Memory (bytes): count=0"
_SUMMARY = re.compile(r"(?:Average )?[Ii]nference timings in us:\s*(.*)")
_SUMMARY_KEYS = {"init": "init_us", "first inference": "first_inference_us",
                 "warmup": "warmup_avg_us", "warmup (avg)": "warmup_avg_us",
                 "inference": "avg_us", "inference (avg)": "avg_us"}
_SESSION = re.compile(rf"Initialized session in ({_NUM})\s*ms")
_THREADS = re.compile(r"(?:Num threads|#threads used for CPU inference): \[(-?\d+)\]")
_GRAPH = re.compile(r"Graph: \[(.+)\]")
_MEMORY = re.compile(r"(?:Memory footprint delta from the start of the tool|"
                     rf"Peak memory footprint) \(MB\): init=({_NUM}) overall=({_NUM})")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_TITLE = re.compile(r"=+ (Run Order|Top by Computation Time|Summary by node type) =+$")
_COLUMNS = {"nodetype": "node_type", "start": "start_ms", "first": "first_ms",
            "avgms": "avg_ms", "%": "percent", "avg%": "percent", "cdf%": "cdf_percent",
            "memkb": "mem_kb", "timescalled": "times_called", "count": "count", "name": "name"}
_INT_COLUMNS = ("count", "times_called")


class _LogParser:
    """Line-by-line state machine over one `benchmark_model` run; unknown lines are skipped."""

    def __init__(self):
        self.fields = {}
        self.phases = []  # the stats line of each "Running benchmark ..." phase
        self.other_stats = []  # stats lines outside the phases (profiler summaries)
        self.summaries = 0
        self.errors = []
        self.tables = collections.defaultdict(list)  # (section, title) -> rows
        self._await_phase_stats = False
        # Older builds print only the regular-run tables, without a section header.
        self._section = "run"
        self._table = self._columns = self._row = None

    def feed(self, raw):
        if re.search(r"\bERROR: ", raw):
            self.errors.append(raw.strip())
        line = _PREFIX.sub("", raw, count=1).rstrip()
        if self._table and self._table_line(line):
            return
        if "Profiling Info for Benchmark Initialization" in line:
            self._section = "init"
        elif "Profiling Info for Regular Benchmark Runs" in line:
            self._section = "run"
        elif m := _TITLE.search(line):
            self._table, self._columns = m.group(1), None
        elif _RUNNING.search(line):
            self._await_phase_stats = True
        elif _STATS.search(line):
            stats = {k: float(v) for k, v in re.findall(rf"(\w+)=({_NUM})", line)}
            if self._await_phase_stats:
                self.phases.append(stats)
                self._await_phase_stats = False
            else:
                self.other_stats.append(stats)
        elif m := _SUMMARY.search(line):
            self.summaries += 1
            for key, value in re.findall(rf"([A-Za-z][\w ()]*?):\s*({_NUM})", m.group(1)):
                if key.strip().lower() in _SUMMARY_KEYS:
                    self.fields[_SUMMARY_KEYS[key.strip().lower()]] = float(value)
        elif m := _SESSION.search(line):
            self.fields.setdefault("session_init_us", float(m.group(1)) * 1e3)
        elif m := _THREADS.search(line):
            self.fields["num_threads"] = int(m.group(1))
        elif m := _GRAPH.search(line):
            self.fields["graph"] = m.group(1)
        elif m := _MEMORY.search(line):
            self.fields["init_memory_mb"] = float(m.group(1))
            self.fields["memory_delta_mb"] = float(m.group(2))
        elif m := _PEAK.search(line):
            self.fields["peak_memory_mb"] = float(m.group(1))

    def _table_line(self, line):
        """Consumes a header or row of the current op-profiling table; False ends it."""
        if self._columns is None:
            names = re.findall(r"\[([^\]]+)\]", line)
            if not names:
                if line:  # no header after the title: not a table after all
                    self._table = None
                return not line
            self._columns = [_COLUMNS.get(n.lower().replace(" ", ""), n) for n in names]
            named = self._columns[-1] == "name"
            numbers = r"\s+".join([rf"({_NUM})%?"] * (len(self._columns) - 1 - named))
            self._row = re.compile(rf"^\s*(.+?)\s+{numbers}" + (r"\s+(\S.*)$" if named else "$"))
            return True
        m = self._row.match(line)
        if not m:
            self._table = None
            return False
        row = {}
        for column, value in zip(self._columns, m.groups()):
            if column in ("node_type", "name"):
                row[column] = value.strip()
            else:
                row[column] = int(float(value)) if column in _INT_COLUMNS else float(value)
        self.tables[self._section, self._table].append(row)
        return True


def parse_log(text, model=None, origin=None, num_threads=None):
    """A `BenchmarkResult` from the log of one `benchmark_model` run.

    Reads the formats of old and new TFLite / LiteRT builds, with or without logcat /
    severity prefixes; op-profiling tables (`--enable_op_profiling=true`) of the regular
    runs fill `op_profile` and `op_summary`. `model` defaults to the log's `--graph` file
    name; `origin` (e.g. the log's path) names the log in errors.
    """
    parser = _LogParser()
    for raw in text.splitlines():
        parser.feed(raw)
    origin = origin or "the log"
    f = parser.fields
    if parser.summaries > 1:
        raise ValueError(f"{origin} holds {parser.summaries} benchmark_model runs; parse_log "
                         "reads one run per log, so split it at each 'STARTING!'.")
    if len(parser.phases) > 1:
        warmup, stats = parser.phases[0], parser.phases[-1]
    else:  # older builds: only the profiler's summary of the regular runs
        warmup = {}
        stats = max(parser.other_stats, key=lambda s: s.get("count", 0), default={})
    avg_us = f.get("avg_us", stats.get("avg"))
    if avg_us is None:
        reported = "".join(f"\n  {e}" for e in parser.errors[-5:])
        raise ValueError(
            f"{origin} does not look like benchmark_model output: it has no 'Inference "
            "timings in us' line and no 'count=... avg=...' statistics."
            + (f" The tool reported:{reported}" if reported else ""))
    graph = f.get("graph")
    return BenchmarkResult(
        model=model or (Path(graph).name if graph else Path(str(origin)).stem),
        num_threads=num_threads if num_threads is not None else f.get("num_threads"),
        init_us=f.get("init_us", f.get("session_init_us")),
        first_inference_us=f.get("first_inference_us", warmup.get("first")),
        warmup_avg_us=f.get("warmup_avg_us", warmup.get("avg")),
        runs=int(stats["count"]) if "count" in stats else None,
        avg_us=avg_us, std_us=stats.get("std"), min_us=stats.get("min"),
        max_us=stats.get("max"), p50_us=stats.get("median"), p90_us=None, p99_us=None,
        memory_delta_mb=f.get("memory_delta_mb"), p5_us=stats.get("p5"),
        p95_us=stats.get("p95"), init_memory_mb=f.get("init_memory_mb"),
        peak_memory_mb=f.get("peak_memory_mb"), source="benchmark_model",
        op_profile=parser.tables["run", "Run Order"],
        op_summary=parser.tables["run", "Summary by node type"])


def parse_log_file(path, model=None):
    """`parse_log` of a saved log file."""
    return parse_log(Path(path).read_text(errors="replace"), model=model, origin=str(path))


# ------------------------------------------------------------------------------------ adb

class Adb:
    """A minimal adb client; `runner` (subprocess.run's signature) runs every command."""

    def __init__(self, adb="adb", serial=None, runner=subprocess.run, timeout=600):
        self.path = shutil.which(adb)
        if self.path is None:
            raise FileNotFoundError(f"adb not found ({adb!r}); install Android platform-tools "
                                    "or pass --adb-path.")
        self.serial, self.runner, self.timeout = serial, runner, timeout

    def run(self, *args, check=True, device=True):
        """The CompletedProcess of `adb [-s SERIAL] ARGS`, stderr merged into stdout."""
        argv = [self.path, *(["-s", self.serial] if device and self.serial else []), *args]
        proc = self.runner(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=self.timeout)
        if check and proc.returncode:
            raise RuntimeError(f"`{shlex.join(argv)}` failed (exit {proc.returncode}):\n"
                               f"{proc.stdout.strip()}")
        return proc

    def shell(self, argv, check=True):
        # adb joins its arguments into one string for the device's sh: quote each word.
        return self.run("shell", shlex.join(argv), check=check)

    def select_device(self):
        """Checks `adb devices`; picks the only device unless `serial` names one."""
        # "SERIAL<TAB>STATE" lines follow the title; "* daemon started" lines may precede it.
        listed = self.run("devices", device=False).stdout.split("List of devices attached")[-1]
        states = dict(line.strip().partition("\t")[::2] for line in listed.splitlines()
                      if "\t" in line)
        if self.serial is None:
            if not states:
                raise RuntimeError("No Android device attached (`adb devices` lists none): "
                                   "connect a phone with USB debugging enabled.")
            if len(states) > 1:
                raise RuntimeError(f"Several devices attached ({', '.join(states)}); choose "
                                   "one with serial= (--serial).")
            self.serial = next(iter(states))
        state = states.get(self.serial)
        if state is None:
            raise RuntimeError(f"No device {self.serial!r} attached; `adb devices` lists "
                               f"{', '.join(states) or 'none'}.")
        if state == "unauthorized":
            raise RuntimeError(f"Device {self.serial} is unauthorized: unlock it and accept "
                               "the 'Allow USB debugging?' prompt, then retry.")
        if state != "device":
            raise RuntimeError(f"Device {self.serial} is {state!r}, not ready ('device'): "
                               "reconnect it or run `adb kill-server`.")
        return self.serial


def _flag(value):
    return "true" if value else "false"


def benchmark_on_device(model_paths, benchmark_binary, serial=None, num_threads=1,
                        use_xnnpack=True, use_gpu=False, use_nnapi=False,
                        enable_op_profiling=False, cpu_mask=None, warmup_runs=1, num_runs=50,
                        extra_args=(), adb="adb", remote_dir="/data/local/tmp", save_log=None,
                        runner=subprocess.run, timeout=600):
    """Runs `benchmark_model` on an Android device for each model; one `BenchmarkResult` each.

    `cpu_mask` pins the tool with `taskset` (hex, e.g. "f0" for the big cores of many
    phones) to cut variance; `save_log` (a folder) keeps each raw log. The binary is pushed
    once; flags beyond these go in `extra_args` (e.g. "--gpu_backend=cl").
    """
    client = Adb(adb, serial, runner=runner, timeout=timeout)
    binary = Path(benchmark_binary)
    if not binary.is_file():
        raise FileNotFoundError(
            f"benchmark_model binary not found: {binary}. Download the prebuilt Android one "
            f"({PREBUILT_ANDROID_BINARY_URL}) or build it with bazel "
            "(--config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model).")
    models = [Path(m) for m in model_paths]
    missing = [str(m) for m in models if not m.is_file()]
    if missing:
        raise FileNotFoundError(f"No such .tflite file: {', '.join(missing)}")
    if cpu_mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", str(cpu_mask)):
        raise ValueError(f"cpu_mask must be a hex CPU mask for taskset (e.g. 'f0'), "
                         f"got {cpu_mask!r}.")
    device = client.select_device()

    remote_binary = f"{remote_dir}/benchmark_model"
    client.run("push", str(binary), remote_binary)
    client.shell(["chmod", "+x", remote_binary])
    delegate = "gpu" if use_gpu else "nnapi" if use_nnapi else "xnnpack" if use_xnnpack else "cpu"
    results = []
    for model in models:
        remote_model = f"{remote_dir}/{model.name}"
        client.run("push", str(model), remote_model)
        argv = [*(["taskset", str(cpu_mask)] if cpu_mask is not None else []), remote_binary,
                f"--graph={remote_model}", f"--num_threads={num_threads}",
                f"--use_xnnpack={_flag(use_xnnpack)}", f"--use_gpu={_flag(use_gpu)}",
                f"--use_nnapi={_flag(use_nnapi)}",
                f"--enable_op_profiling={_flag(enable_op_profiling)}",
                f"--warmup_runs={warmup_runs}", f"--num_runs={num_runs}", *extra_args]
        proc = client.shell(argv, check=False)
        origin = f"benchmark_model on {device} ({model.name})"
        if save_log is not None:
            log = Path(save_log) / f"{model.stem}_t{num_threads}_{delegate}.log"
            write_atomic(proc.stdout.encode(), log)
            origin = str(log)
        try:
            result = parse_log(proc.stdout, model=model.name, origin=origin,
                               num_threads=num_threads)
        except ValueError as e:
            raise RuntimeError(f"`adb shell {shlex.join(argv)}` exited with "
                               f"{proc.returncode}: {e}") from e
        results.append(result)
    return results


def run_on_device(model_path, benchmark_binary, **kwargs):
    """`benchmark_on_device` for one model; its `BenchmarkResult`."""
    return benchmark_on_device([model_path], benchmark_binary, **kwargs)[0]


# -------------------------------------------------------------------------------- reports

_SCALAR_FIELDS = [f.name for f in dataclasses.fields(BenchmarkResult) if f.type is not list]


def to_csv(results):
    """CSV text, one row per result, of the scalar fields (op tables left out)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, _SCALAR_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow(dataclasses.asdict(r))
    return buf.getvalue()


def op_markdown(result, top=10):
    """Markdown of a profiled result: its `top` slowest ops and the time per node type."""
    ops = sorted(result.op_profile, key=lambda row: row.get("avg_ms", 0.0), reverse=True)
    lines = [f"Top {min(top, len(ops))} ops of {result.model} by average time:", "",
             "| node type | name | avg ms | % |", "|---|---|---:|---:|"]
    lines += [f"| {op.get('node_type')} | {op.get('name', '')} | {op.get('avg_ms', 0):.3f} "
              f"| {op.get('percent', 0):.2f} |" for op in ops[:top]]
    if result.op_summary:
        lines += ["", f"Time of {result.model} by node type:", "",
                  "| node type | count | avg ms | % |", "|---|---:|---:|---:|"]
        lines += [f"| {row.get('node_type')} | {row.get('count', '')} | "
                  f"{row.get('avg_ms', 0):.3f} | {row.get('percent', 0):.2f} |"
                  for row in result.op_summary]
    return "\n".join(lines)


_MODE_SUFFIX = re.compile(rf"_({'|'.join(MODES)})$")


def model_label(name):
    """`out/ghostnetv2_100_int8.tflite` -> ("ghostnetv2_100", "int8"); mode None if absent."""
    stem = Path(name).name.removesuffix(".tflite")
    m = _MODE_SUFFIX.search(stem)
    return (stem[:m.start()], m.group(1)) if m else (stem, None)


def reference_top1(label, accuracy=None):
    """ImageNet top-1 (%) of a model label: from `accuracy` ({label: top1}), the keras_ghost
    registry, or `KERAS_APPLICATIONS_TOP1`; None if unknown."""
    if accuracy and label in accuracy:
        return accuracy[label]
    import keras_ghost

    if label in keras_ghost.list_models():
        spec = keras_ghost.get_spec(label)
        return spec.top1 if spec.dataset == "imagenet" else None
    return KERAS_APPLICATIONS_TOP1.get(label)


_Point = collections.namedtuple("_Point", "family mode threads source label ms top1")
_SERIES = ("family", "mode", "threads", "source")  # what makes points one line


def _series_name(key, varies):
    """"ghostnetv2", plus whichever of mode / threads / source differ between series."""
    extras = [f"{value} thread{'s' * (value != 1)}" if field == "threads" else str(value)
              for field, value in zip(_SERIES[1:], key[1:])
              if varies[field] and value is not None]
    return key[0] + (f" ({', '.join(extras)})" if extras else "")


def plot(results, path, accuracy=None, title=None):
    """Writes an accuracy (y) vs latency (x) PNG, one labelled point per result and a line
    through each family's widths (e.g. ghostnetv2_100/_130/_160). Results without a known
    top-1 are left out with a warning; `accuracy` ({label: top1}) adds or overrides."""
    try:
        from matplotlib.figure import Figure  # no pyplot: leaves the global backend alone
    except ImportError as e:
        raise ImportError("plot() needs matplotlib: pip install 'keras-ghost[plot]'") from e
    points = []
    for r in results:
        label, mode = model_label(r.model)
        top1 = reference_top1(label, accuracy)
        if top1 is None:
            warnings.warn(f"No ImageNet top-1 known for {label!r}; left it off the plot "
                          f"(pass accuracy={{{label!r}: ...}}).", stacklevel=2)
            continue
        points.append(_Point(re.sub(r"_\d+$", "", label), mode, r.num_threads, r.source,
                             label, r.avg_us / 1e3, top1))
    if not points:
        raise ValueError("Nothing to plot: no result has a known ImageNet top-1.")
    series = collections.defaultdict(list)
    for p in points:
        series[tuple(getattr(p, f) for f in _SERIES)].append(p)
    varies = {f: len({getattr(p, f) for p in points}) > 1 for f in _SERIES}

    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    for key in sorted(series, key=str):
        members = sorted(series[key], key=lambda p: p.ms)
        ax.plot([p.ms for p in members], [p.top1 for p in members], marker="o",
                label=_series_name(key, varies))
        for p in members:
            ax.annotate(p.label, (p.ms, p.top1), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    ax.set_xlabel("Latency (ms)")
    ax.set_ylabel("ImageNet top-1 (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    return write_atomic(buf.getvalue(), path)


def plot_arm(results, path, accuracy=None, title=None, ours=lambda label: True):
    """Accuracy (y) vs emulated ARM instructions per invoke (x) of `ArmResult`s: one panel
    per (mode, core), a labelled point per model; `ours(label)` picks the colour. Results
    without a known top-1 (e.g. deploy-pass variants) are left out."""
    from matplotlib.figure import Figure

    points = []
    for r in results:
        label, mode = model_label(r.model)
        top1 = reference_top1(label, accuracy)
        if top1 is not None:
            points.append((mode, r.cpu, label, r.arm_instructions / 1e6, top1))
    if not points:
        raise ValueError("Nothing to plot: no result has a known ImageNet top-1.")
    modes = list(dict.fromkeys(p[0] for p in points))
    cpus = list(dict.fromkeys(p[1] for p in points))
    fig = Figure(figsize=(4.4 * len(cpus), 3.4 * len(modes)), layout="constrained")
    axes = fig.subplots(len(modes), len(cpus), squeeze=False)
    for mode, cpu, label, count, top1 in points:
        ax = axes[modes.index(mode)][cpus.index(cpu)]
        ax.scatter(count, top1, color="C0" if ours(label) else "C1", zorder=2)
        ax.annotate(label, (count, top1), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for i, mode in enumerate(modes):
        for j, cpu in enumerate(cpus):
            ax = axes[i][j]
            ax.set_title(f"{mode}, {cpu}", fontsize=9)
            ax.set_xlabel("M aarch64 instructions per invoke", fontsize=8)
            ax.set_ylabel("ImageNet top-1 (%)", fontsize=8)
            ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return write_atomic(buf.getvalue(), path)
