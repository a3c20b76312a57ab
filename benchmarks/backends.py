#!/usr/bin/env python
"""Training and inference speed on this CPU for each Keras backend, beside timm.

    python benchmarks/backends.py                     # the README's backend table
    python benchmarks/backends.py --models ghostnet_100 mobilenetv2 --runtimes tf jax

Each cell (one model on one runtime) runs in its own process, so a backend is fixed at
import and a crash or a timeout costs one cell. Runtimes: `tf` (TensorFlow, graph mode),
`tf-xla` (`jit_compile=True`), `jax` (jit), `torch` (eager), `torch-compile` (Keras'
`jit_compile=True`, i.e. `torch.compile`), and `timm` / `timm-compile` for timm's own
PyTorch model of the same name. Figures: training images/s (SGD step, batch 32) at
224x224 / 1000 classes and at 32x32 / 10 classes (CIFAR), inference images/s at batch 1 and
32 (224x224), and the first training call's seconds (tracing / compiling). Where a goal is
missed, one training step is profiled and the table lists the ops that take the time.
Writes OUTPUT.json and OUTPUT.md.
"""

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's keras_ghost

KERAS_RUNTIMES = {  # runtime -> (KERAS_BACKEND, jit_compile)
    "tf": ("tensorflow", False), "tf-xla": ("tensorflow", True), "jax": ("jax", True),
    "torch": ("torch", False), "torch-compile": ("torch", True)}
TIMM_RUNTIMES = {"timm": False, "timm-compile": True}
RUNTIMES = [*KERAS_RUNTIMES, *TIMM_RUNTIMES]
# Our names (and keras.applications' mobilenetv2) -> timm's model for the same network;
# G-GhostNet is not in timm, so its anchor is the RegNetX it ghosts.
TIMM_NAMES = {"ghostnet_100": "ghostnet_100", "ghostnetv2_100": "ghostnetv2_100",
              "g_ghost_regnetx_002": "regnetx_002", "mobilenetv2": "mobilenetv2_100"}
DEFAULT_MODELS = ["ghostnet_100", "ghostnetv2_100", "g_ghost_regnetx_002", "mobilenetv2"]
BATCH = 32


@dataclasses.dataclass(frozen=True)
class Cell:
    """One model on one runtime, with the timing budget; crosses the process boundary."""

    model: str
    runtime: str
    warmup: int = 2
    runs: int = 3
    profile: bool = False


@dataclasses.dataclass
class CellResult:
    model: str
    runtime: str
    train_224: float | None = None  # images/s
    train_32: float | None = None
    infer_b1: float | None = None
    infer_b32: float | None = None
    first_step_s: float | None = None
    error: str | None = None
    note: str | None = None  # a figure that could not be measured, and why
    top_ops: list | None = None  # [(op, share of the step)] when profiled


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(TIMM_NAMES))
    p.add_argument("--runtimes", nargs="+", default=RUNTIMES, choices=RUNTIMES)
    p.add_argument("--compile-models", nargs="*", default=["ghostnet_100"],
                   choices=list(TIMM_NAMES), help="the models that the torch.compile runtimes "
                   "measure (compiling takes minutes per model on a CPU; default %(default)s)")
    p.add_argument("--runs", type=_positive, default=3, help="timed calls per figure (median)")
    p.add_argument("--warmup", type=_positive, default=2, help="untimed calls before them")
    p.add_argument("--cell-timeout", type=_positive, default=900, help="seconds per cell")
    p.add_argument("--no-profile", action="store_true", help="skip the profiles of missed goals")
    p.add_argument("--rerun-failed", action="store_true",
                   help="keep the cells that OUTPUT.json has figures for, measure the others")
    p.add_argument("--profile", nargs="+", metavar="MODEL:RUNTIME",
                   help="only profile one training step of these cells (e.g. "
                        "g_ghost_regnetx_002:tf); writes OUTPUT_profiles.md")
    p.add_argument("--output", type=Path, default=Path("out/benchmarks/backends"))
    p.add_argument("--cell", help=argparse.SUPPRESS)  # internal: one Cell as JSON
    return p.parse_args(argv)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _keras_steps(cell, size, classes):
    """(train_step, predict(batch)) for the Keras model, compiled for the cell's runtime."""
    import keras
    import numpy as np

    from keras_ghost.training import speed

    _, jit = KERAS_RUNTIMES[cell.runtime]
    model = speed.build(cell.model, size, classes=classes)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, size, size, 3), dtype=np.float32)
    y = rng.integers(0, classes, BATCH)
    return (lambda: model.train_on_batch(x, y)), (lambda b: model.predict_on_batch(x[:b]))


def _timm_steps(cell, size, classes):
    import timm
    import torch

    model = timm.create_model(TIMM_NAMES[cell.model], num_classes=classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    net = torch.compile(model) if TIMM_RUNTIMES[cell.runtime] else model
    x = torch.randn(BATCH, 3, size, size)
    y = torch.randint(0, classes, (BATCH,))

    def train():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def predict(batch):
        model.eval()
        with torch.inference_mode():
            return net(x[:batch]).numpy()

    return train, predict


def _steps(cell, size, classes):
    builder = _keras_steps if cell.runtime in KERAS_RUNTIMES else _timm_steps
    return builder(cell, size, classes)


def measure(cell):
    """Runs in the cell's own process."""
    from keras_ghost.training.speed import median_seconds

    result = CellResult(cell.model, cell.runtime)
    train, predict = _steps(cell, 224, 1000)
    start = time.perf_counter()
    train()
    result.first_step_s = round(time.perf_counter() - start, 2)
    if cell.profile:
        train()
        result.top_ops = profile_step(cell, train)
        return result
    result.train_224 = round(BATCH / median_seconds(train, cell.warmup - 1, cell.runs), 2)
    for batch in (1, BATCH):
        seconds = median_seconds(lambda: predict(batch), cell.warmup, cell.runs)
        setattr(result, f"infer_b{batch}", round(batch / seconds, 2))
    try:
        small_train, _ = _steps(cell, 32, 10)
        result.train_32 = round(BATCH / median_seconds(small_train, cell.warmup, cell.runs), 1)
    except RuntimeError as e:  # e.g. timm's GhostNetV2 pools its DFC branch to 0x0 at 32x32
        result.note = f"train 32: {' '.join(str(e).split())[:120]}"
    return result


def profile_step(cell, train, top=8):
    """[(op type, share of the summed op time)] of one training step (already warm)."""
    if cell.runtime.startswith(("torch", "timm")):
        import torch

        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            train()
        # self time, so nested ops are not counted twice
        totals = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    else:
        totals = _xplane_op_times(cell, train)
    whole = sum(totals.values()) or 1
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [(name, round(t / whole, 3)) for name, t in ranked]


def _xplane_op_times(cell, train):
    """Op-type self times from one traced step (TensorFlow's and JAX's profilers both write
    XPlane protos; TF ships their Python bindings)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        if cell.runtime == "jax":
            import jax

            with jax.profiler.trace(logdir):
                train()
        else:
            import tensorflow as tf

            tf.profiler.experimental.start(logdir)
            train()
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    totals = {}
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: v.display_name or v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            # Kernels run on TensorFlow's executor threads (tf_Compute: one event per op) and
            # XLA's (tf_XLA*: one per HLO, `fusion.12`); the rest of their events are the
            # runtime's own spans around them ("ExecutorState::Process", "end: ...").
            if not line.name.startswith(("tf_Compute", "tf_XLA")):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                if "::" in name or name.startswith("end:"):
                    continue
                op = name.split(":")[-1].split(".")[0]
                totals[op] = totals.get(op, 0) + event.duration_ps
    return totals


def run_cell(cell, timeout):
    """Measures `cell` in a fresh process; a failure or timeout becomes the cell's error."""
    backend = KERAS_RUNTIMES.get(cell.runtime, ("torch",))[0]
    env = {**os.environ, "KERAS_BACKEND": backend}
    with tempfile.NamedTemporaryFile(suffix=".json") as out, \
            tempfile.TemporaryFile("w+") as log:
        command = [sys.executable, __file__, "--cell", json.dumps(dataclasses.asdict(cell)),
                   "--output", out.name]
        # Its own process group: torch.compile's compiler workers go down with it.
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return CellResult(cell.model, cell.runtime, error=f"over {timeout} s")
        if returncode != 0:
            log.seek(0)
            last = (log.read().strip().splitlines() or [f"exit {returncode}"])[-1]
            return CellResult(cell.model, cell.runtime, error=last[:200])
        return CellResult(**json.loads(Path(out.name).read_text()))


def _by(results, model, runtime):
    return next((r for r in results if r.model == model and r.runtime == runtime), None)


def goals(results):
    """The issue's two goals on ghostnet_100: [(goal text, ratio, met, cells to profile)]."""
    keras_ghost = [r for r in results if r.model == "ghostnet_100"
                   and r.runtime in KERAS_RUNTIMES and r.train_224]
    if not keras_ghost:
        return []
    best = max(keras_ghost, key=lambda r: r.train_224)
    out = []
    for runtime in TIMM_RUNTIMES:
        anchor = _by(results, "ghostnet_100", runtime)
        if anchor and anchor.train_224:
            ratio = best.train_224 / anchor.train_224
            out.append((f"ghostnet_100 training, fastest Keras backend ({best.runtime}) / "
                        f"{runtime}", ratio, ratio >= 1,
                        [(best.model, best.runtime), (anchor.model, anchor.runtime)]))
    peer = _by(results, "mobilenetv2", best.runtime)
    if peer and peer.train_224:
        ratio = best.train_224 / peer.train_224
        out.append((f"ghostnet_100 / MobileNetV2 training on {best.runtime}", ratio, ratio >= 1,
                    [(best.model, best.runtime), (peer.model, peer.runtime)]))
    return out


def markdown(results, goal_rows, cell):
    def cell_text(value):
        return "-" if value is None else f"{value:g}"

    lines = [f"Batch {BATCH}, median of {cell.runs} timed calls after {cell.warmup} untimed; "
             "images/s (higher is better).", "",
             "| model | runtime | train 224 | train 32 | infer b1 | infer b32 | first step s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        figures = [r.train_224, r.train_32, r.infer_b1, r.infer_b32, r.first_step_s]
        row = " | ".join(cell_text(v) for v in figures)
        if r.error:
            row = f"failed: {r.error} | | | |"
        lines.append(f"| {r.model} | {r.runtime} | {row} |")
    if goal_rows:
        lines += ["", "| goal | ratio | met |", "|---|---:|---|"]
        lines += [f"| {text} | {ratio:.2f}x | {'yes' if met else 'no'} |"
                  for text, ratio, met, _ in goal_rows]
    notes = [r for r in results if r.note]
    if notes:
        lines += [""] + [f"- {r.model} on {r.runtime}, {r.note}" for r in notes]
    profiled = [r for r in results if r.top_ops]
    if profiled:
        lines += ["", "Where one training step's time goes (share of summed op self time):", ""]
        for r in profiled:
            ops = ", ".join(f"{name} {share:.0%}" for name, share in r.top_ops)
            lines.append(f"- {r.model} on {r.runtime}: {ops}")
    return "\n".join(lines) + "\n"


def profile_only(args, settings):
    """`--profile`: the op shares of one training step of each named cell."""
    from keras_ghost.io_utils import write_atomic

    lines = ["Where one training step's time goes (share of summed op self time, batch "
             f"{BATCH} at 224x224):", ""]
    for entry in args.profile:
        model, _, runtime = entry.partition(":")
        if model not in TIMM_NAMES or runtime not in RUNTIMES:
            raise SystemExit(f"error: --profile {entry}: give MODEL:RUNTIME with a model of "
                             f"{', '.join(TIMM_NAMES)} and a runtime of {', '.join(RUNTIMES)}")
        result = run_cell(dataclasses.replace(settings, model=model, runtime=runtime,
                                              profile=True), args.cell_timeout)
        ops = (", ".join(f"{name} {share:.0%}" for name, share in result.top_ops)
               if result.top_ops else f"failed: {result.error}")
        lines.append(f"- {model} on {runtime}: {ops}")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    write_atomic(text, args.output.with_name(args.output.name + "_profiles.md"))
    return text


def main(argv=None):
    args = parse_args(argv)
    if args.cell:  # the child process
        result = measure(Cell(**json.loads(args.cell)))
        Path(args.output).write_text(json.dumps(dataclasses.asdict(result)))
        return result
    from keras_ghost.io_utils import write_atomic

    settings = Cell("", "", warmup=args.warmup, runs=args.runs)
    if args.profile:
        return profile_only(args, settings)
    cells = [dataclasses.replace(settings, model=m, runtime=r)
             for m in args.models for r in args.runtimes
             if not r.endswith("-compile") or m in args.compile_models]
    previous = {}
    if args.rerun_failed and args.output.with_suffix(".json").is_file():
        previous = {(r["model"], r["runtime"]): CellResult(**r) for r in
                    json.loads(args.output.with_suffix(".json").read_text())["cells"]
                    if not r["error"]}
    results = []
    for i, cell in enumerate(cells, 1):
        start = time.perf_counter()
        kept = previous.get((cell.model, cell.runtime))
        result = kept or run_cell(cell, args.cell_timeout)
        results.append(result)
        # After every cell, so that a crash or Ctrl-C keeps what was measured.
        write_atomic({"settings": dataclasses.asdict(settings),
                      "cells": [dataclasses.asdict(r) for r in results]},
                     args.output.with_suffix(".json"))
        summary = result.error or f"train 224 {result.train_224} img/s"
        print(f"[{i}/{len(cells)}] {cell.model} on {cell.runtime}: {summary} "
              + ("(kept from the previous run)" if kept else
                 f"({time.perf_counter() - start:.0f} s)"), flush=True)
    goal_rows = goals(results)
    if not args.no_profile:
        missed = {c for _, _, met, to_profile in goal_rows if not met for c in to_profile}
        for model, runtime in sorted(missed):
            print(f"profiling one training step of {model} on {runtime}", flush=True)
            profiled = run_cell(dataclasses.replace(settings, model=model, runtime=runtime,
                                                    profile=True), args.cell_timeout)
            target = _by(results, model, runtime)
            target.top_ops = profiled.top_ops or [(f"profile failed: {profiled.error}", 0)]
    write_atomic({"settings": dataclasses.asdict(settings), "goals": [
        {"goal": text, "ratio": round(ratio, 3), "met": met} for text, ratio, met, _ in goal_rows],
        "cells": [dataclasses.asdict(r) for r in results]}, args.output.with_suffix(".json"))
    text = markdown(results, goal_rows, settings)
    write_atomic(text, args.output.with_suffix(".md"))
    print(text)
    return results


if __name__ == "__main__":
    main()
