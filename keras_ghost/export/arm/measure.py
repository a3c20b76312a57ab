"""Host side of the emulated-ARM benchmark: fixed inputs, the x86 reference run, one guest run
per (model, CPU) under the counting plugin, and the report."""

import concurrent.futures
import dataclasses
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from keras_ghost.export.arm import attribution
from keras_ghost.export.arm.cpus import get_cpu
from keras_ghost.export.arm.environment import find_environment
from keras_ghost.export.arm.guest import EMPTY, FIRST, INIT, STEADY, GuestJob

CLASSES = attribution.CLASSES
FLOAT_RTOL = 1e-3  # fp32 outputs: |arm - x86| <= FLOAT_RTOL * max|x86| (FMA order differs)


@dataclasses.dataclass
class ArmResult:
    """One model on one emulated core (XNNPACK). Instruction counts are aarch64 instructions
    executed in native code (LiteRT, libc, libstdc++, libm); they ignore memory stalls and
    pipelines, so they rank compute, not wall time."""

    model: str
    cpu: str
    num_threads: int
    arm_instructions: int  # steady-state, per invoke
    classes: dict  # arm_instructions split by class (CLASSES)
    repeatable: bool  # every counted steady-state invoke gave the same count
    init_instructions: int  # Interpreter() + allocate_tensors (XNNPACK packs weights here)
    first_invoke_instructions: int
    harness_instructions: int  # the Python interpreter's own, per invoke (left out above)
    marker_instructions: int  # the markers' own native cost, subtracted from the counts
    arm_matches_x86: bool  # int8: bit-exact; float: within FLOAT_RTOL
    max_abs_diff: float
    kind: str  # "int8" or "fp32": which floor applies
    macs: int
    floor_instructions: int  # macs / the core's MACs per widest instruction of that kind
    kernels: list = dataclasses.field(default_factory=list)  # attribution.KernelCost dicts
    ops: list = dataclasses.field(default_factory=list)  # attribution.OpCost dicts
    operators: list = dataclasses.field(default_factory=list)  # attribution.OperatorCost dicts
    source: str = "qemu-aarch64"

    @property
    def floor_ratio(self):
        return self.arm_instructions / self.floor_instructions if self.floor_instructions else None

    def as_dict(self):
        return dataclasses.asdict(self)


def fixed_inputs(model_content, seed=0):
    """One array per input: standard normal values (quantized for integer inputs)."""
    from keras_ghost.export.tflite import interpreter

    rng = np.random.default_rng(seed)
    arrays = []
    for detail in interpreter(model_content).get_input_details():
        x = rng.standard_normal(detail["shape"]).astype("float32")
        if np.issubdtype(detail["dtype"], np.integer):
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            x = np.clip(np.round(x / (scale or 1.0) + zero), info.min, info.max)
        arrays.append(x.astype(detail["dtype"]))
    return arrays


def x86_outputs(model_content, inputs, num_threads=1):
    """The raw outputs of the host's LiteRT + XNNPACK on the same inputs."""
    from keras_ghost.export.tflite import interpreter

    it = interpreter(model_content, num_threads=num_threads)
    for detail, x in zip(it.get_input_details(), inputs):
        it.set_tensor(detail["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def outputs_match(reference, actual):
    """(match, max |difference|): integer outputs must be equal, float ones within
    FLOAT_RTOL of the reference's largest magnitude."""
    match, worst = True, 0.0
    for ref, out in zip(reference, actual):
        diff = float(np.max(np.abs(ref.astype("float64") - out.astype("float64"))))
        worst = max(worst, diff)
        if np.issubdtype(ref.dtype, np.integer):
            match &= bool(np.array_equal(ref, out))
        else:
            match &= diff <= FLOAT_RTOL * float(np.max(np.abs(ref))) + 1e-6
    return match, worst


def parse_counts(text):
    """The plugin's output: ({region: {class: n, "total": n, "harness": n}}, [blocks])."""
    regions, blocks = {}, []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "region":
            regions.setdefault(int(parts[1]), []).append(
                {k: int(v) for k, v in (p.split("=") for p in parts[2:])})
        elif parts and parts[0] == "block":
            blocks.append(attribution.Block(int(parts[3], 16), int(parts[4]),
                                            tuple(int(n) for n in parts[5:]), int(parts[2])))
    return regions, blocks


def run(paths, cpus=("cortex-a76",), runs=3, seed=0, kernels=False, env=None, jobs=None,
        progress=print, timeout=3600):
    """Runs each .tflite on each emulated CPU; returns one ArmResult per (model, CPU), models
    outer. `kernels=True` adds the attribution of one steady-state invoke to XNNPACK's
    kernels and operators, and the graph's ops with their MACs and bytes."""
    env = env or find_environment()
    cpus = [get_cpu(c) if isinstance(c, str) else c for c in cpus]
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}.")
    split = _operator_split(env) if kernels else {}
    with tempfile.TemporaryDirectory(prefix="keras_ghost_arm_") as tmp:
        tasks = []
        for index, path in enumerate(map(Path, paths)):
            content = path.read_bytes()
            inputs = fixed_inputs(content, seed)
            model = _Model(path, Path(tmp) / str(index), x86_outputs(content, inputs),
                           attribution.op_costs(content))
            model.work.mkdir()
            np.savez(model.work / "inputs.npz", **{str(k): x for k, x in enumerate(inputs)})
            tasks += [(model, cpu) for cpu in cpus]

        def one(task):
            start = time.perf_counter()
            result = _run_one(env, *task, runs=runs, kernels=kernels, split=split,
                              timeout=timeout)
            progress(f"  {result.model} on {result.cpu}: {result.arm_instructions / 1e6:.2f}M "
                     f"instructions/invoke, outputs "
                     f"{'match' if result.arm_matches_x86 else 'DIFFER from'} x86 "
                     f"({time.perf_counter() - start:.0f} s)")
            return result

        with concurrent.futures.ThreadPoolExecutor(jobs or min(4, os.cpu_count() or 1)) as pool:
            return list(pool.map(one, tasks))


@dataclasses.dataclass
class _Model:
    path: Path
    work: Path  # its scratch folder: inputs, and per core the job, counts, outputs, maps
    reference: list  # x86 XNNPACK's raw outputs
    ops: list  # attribution.OpCost


def _operator_split(env):
    """GuestJob fields that make the plugin start a segment per XNNPACK operator."""
    library, function = attribution.OPERATOR_ENTRY
    found = sorted((Path(env.path) / "root").glob(f"opt/litert/ai_edge_litert/{library}"))
    if not found:
        return {}
    return dict(split_library=library,
                split_offset=attribution.symbol_offset(str(found[0]), function))


def _run_one(env, model, cpu, *, runs, kernels, split, timeout):
    work, stem = model.work, cpu.name.replace(",", "_").replace("=", "_")
    job = GuestJob(model=str(model.path.resolve()), inputs=str(work / "inputs.npz"),
                   outputs=str(work / f"{stem}_out.npz"), maps=str(work / f"{stem}.maps"),
                   runs=runs, **split)
    (work / f"{stem}.json").write_text(job.to_json())
    counts = work / f"{stem}.counts"
    lo, hi = env.harness
    plugin_args = [f"out={counts}", f"harness={lo:x}:{hi:x}"]
    if kernels:
        plugin_args.append(f"blocks={STEADY}")
    cmd = env.command(cpu, [str(Path(__file__).with_name("guest.py")),
                            str(work / f"{stem}.json")], plugin_args)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env.guest_env(),
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{model.path.name} on emulated {cpu.name} failed (exit "
                           f"{done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
    regions, blocks = parse_counts(counts.read_text())
    with np.load(job.outputs) as data:
        actual = [data[str(k)] for k in range(len(data.files))]
    match, diff = outputs_match(model.reference, actual)
    steady = [regions[r][0] for r in range(STEADY, STEADY + runs)]
    empty = regions[EMPTY][0]
    kind = attribution.model_kind(model.ops)
    macs = sum(op.macs for op in model.ops)
    per = cpu.int8_macs_per_instruction if kind == "int8" else cpu.fp32_macs_per_instruction
    result = ArmResult(
        model=model.path.name, cpu=cpu.name, num_threads=1,
        arm_instructions=steady[0]["total"] - empty["total"],
        classes={c: steady[0][c] - empty[c] for c in CLASSES},
        repeatable=all(s["total"] == steady[0]["total"] for s in steady),
        init_instructions=regions[INIT][0]["total"] - empty["total"],
        first_invoke_instructions=regions[FIRST][0]["total"] - empty["total"],
        harness_instructions=steady[0]["harness"], marker_instructions=empty["total"],
        arm_matches_x86=match, max_abs_diff=diff, kind=kind, macs=macs,
        floor_instructions=-(-macs // per))
    if kernels:
        symbols = attribution.Symbolizer(Path(job.maps).read_text())
        result.kernels = [k.as_dict() for k in attribution.kernel_costs(blocks, symbols)]
        result.ops = [op.as_dict() for op in model.ops]
        result.operators = [o.as_dict()
                            for o in attribution.operator_costs(blocks, symbols, model.ops)]
    return result


def to_csv(results):
    """One row per result: the scalar fields and the class split."""
    import csv
    import io

    buf = io.StringIO()
    fields = [f for f in results[0].as_dict() if f not in ("kernels", "ops", "operators",
                                                          "classes")]
    writer = csv.DictWriter(buf, fields + list(CLASSES), extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow({**r.as_dict(), **r.classes})
    return buf.getvalue()


def markdown(results):
    lines = ["| model | CPU | M instr/invoke | scalar | SIMD | dot | i8mm | SVE | floor M "
             "| x floor | init M | matches x86 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        share = [f"{100 * r.classes[c] / r.arm_instructions:.0f}%" if r.arm_instructions else "-"
                 for c in CLASSES]
        ratio = f"{r.floor_ratio:.1f}" if r.floor_ratio else "-"
        same = ("bit-exact" if r.kind == "int8" else "yes") if r.arm_matches_x86 else (
            f"NO (max diff {r.max_abs_diff:.3g})")
        lines.append(f"| {r.model} | {r.cpu} | {r.arm_instructions / 1e6:.2f} | "
                     f"{' | '.join(share)} | {r.floor_instructions / 1e6:.2f} | {ratio} | "
                     f"{r.init_instructions / 1e6:.1f} | {same}"
                     f"{'' if r.repeatable else ' (count not repeatable)'} |")
    return "\n".join(lines)
