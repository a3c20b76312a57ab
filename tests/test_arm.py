"""Emulated aarch64 LiteRT: one small int8 model of each family runs on three emulated
cores with outputs bit-exact to x86 XNNPACK, and its instruction count per invoke stays
within a committed budget (deterministic counts, so the budget is a real regression gate).

The environment is built (about a minute, cached) when it is missing; .ci/run builds it in
a step of its own first. KERAS_GHOST_UPDATE_ARM_BUDGET=1 rewrites the budget file.
"""

import importlib.util
import json
import os

import keras
import pytest

import keras_ghost
from keras_ghost import export
from keras_ghost.export import arm
from keras_ghost.export.arm import attribution, measure
from conftest import REPO

BUDGET = REPO / "tests" / "data" / "arm_budget.json"
CPUS = ("cortex-a53", "cortex-a76", "max,sme=off")
# One small variant per family (name, builder kwargs, input size).
MODELS = {
    "ghostnet_050@64": ("ghostnet_050", {}, 64),
    "ghostnetv2_100_w0.5@64": ("ghostnetv2_100", {"width": 0.5}, 64),
    "g_ghost_regnetx_002@64": ("g_ghost_regnetx_002", {}, 64),
    "asymmnet_small_035@64": ("asymmnet_small_035", {}, 64),
    "ghost_resnet56_cifar@32": ("ghost_resnet56_cifar", {}, 32),
}
REGRESSION = 1.01  # a count more than 1% above budget fails
STALE = 0.97  # a count more than 3% below budget asks for the budget to be lowered


@pytest.fixture(scope="module")
def environment():
    try:
        return arm.setup(progress=lambda *a: None)
    except arm.ArmSetupError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no emulated aarch64 environment here: {e}")


def _int8_model(tmp_path, key):
    name, kwargs, size = MODELS[key]
    keras.utils.set_random_seed(0)
    model = keras_ghost.create_model(name, input_shape=(size, size, 3),
                                     classifier_activation=None, **kwargs)
    spec = keras_ghost.get_spec(name)
    images = export.load_images(None, None, limit=16)
    calibration = export.to_model_input(images, (size, size, 3), mean=spec.mean, std=spec.std)
    path = tmp_path / f"{key}.tflite"
    export.write_atomic(export.convert(model, "int8", calibration), path)
    return path


@pytest.mark.parametrize("key", list(MODELS))
def test_int8_on_emulated_arm(key, environment, tmp_path):
    path = _int8_model(tmp_path, key)
    results = measure.run([path], CPUS, env=environment, kernels=True, progress=lambda *a: None)
    assert [r.cpu for r in results] == list(CPUS)
    by_cpu = {r.cpu: r for r in results}
    for r in results:
        assert r.arm_matches_x86 and r.max_abs_diff == 0, (r.cpu, r.max_abs_diff)
        assert r.repeatable, r.cpu
        assert r.kind == "int8" and r.macs > 0
        assert sum(r.classes.values()) == r.arm_instructions
        # The attribution accounts for every instruction of the invoke, markers included.
        assert sum(k["instructions"] for k in r.kernels) == (
            r.arm_instructions + r.marker_instructions)
        assert r.kernels[0]["function"].startswith("xnn_"), r.kernels[:3]
        assert sum(op["macs"] for op in r.ops) == r.macs
        # One segment per XNNPACK operator, matched to the graph's ops by kind and order.
        in_operators = sum(o["instructions"] for o in r.operators)
        assert 0.95 * r.arm_instructions < in_operators <= r.arm_instructions + r.marker_instructions
        # Every conv and depthwise conv operator finds its op (with its MACs); operators
        # without one (standalone clamps, free reshapes) hold little of the count.
        convs = [o for o in r.operators if o["kind"].startswith("conv ")
                 or o["kind"] == "depthwise conv"]
        assert convs and all(o["op_index"] >= 0 and o["macs"] > 0 for o in convs)
        matched = sum(o["instructions"] for o in r.operators if o["op_index"] >= 0)
        assert matched >= 0.9 * in_operators, (matched, in_operators)
    # Each core runs the kernels it has: SDOT from ARMv8.2, SMMLA/USDOT with i8mm, neither
    # on the Cortex-A53.
    a53, a76, i8mm = (by_cpu[c] for c in CPUS)
    assert a53.classes["dot"] == a53.classes["i8mm"] == 0
    assert a76.classes["dot"] > 0 and a76.classes["i8mm"] == 0
    assert i8mm.classes["i8mm"] > 0
    assert a76.arm_instructions < a53.arm_instructions

    counts = {r.cpu: r.arm_instructions for r in results}
    budget = json.loads(BUDGET.read_text()) if BUDGET.exists() else {}
    if os.environ.get("KERAS_GHOST_UPDATE_ARM_BUDGET"):
        budget[key] = counts
        export.write_atomic(dict(sorted(budget.items())), BUDGET)
    assert key in budget, f"no budget for {key}: run with KERAS_GHOST_UPDATE_ARM_BUDGET=1"
    for cpu, count in counts.items():
        limit = budget[key][cpu]
        assert count <= limit * REGRESSION, (
            f"{key} on {cpu}: {count} instructions per invoke, over its budget {limit} "
            f"(+{100 * (count / limit - 1):.2f}%)")
        assert count >= limit * STALE, (
            f"{key} on {cpu}: {count} instructions, {100 * (1 - count / limit):.1f}% under "
            f"its budget {limit}: lower it (KERAS_GHOST_UPDATE_ARM_BUDGET=1)")


def test_deployed_ghostnetv3_costs_what_ghostnetv2_costs(environment, tmp_path):
    """After the branch fusion the deploy pass sees GhostNetV2's graph, ghost-concat merge
    on the 112x112 maps included (224 input): the same ops and the same count."""
    images = export.load_images(None, None, limit=8)
    paths = []
    for name in ("ghostnetv3_050", "ghostnetv2_100"):
        keras.utils.set_random_seed(0)
        model = keras_ghost.create_model(name, width=0.5, classifier_activation=None)
        calibration = export.to_model_input(images, (224, 224, 3), mean=0.5, std=0.25)
        paths.append(export.write_atomic(export.convert(model, "int8", calibration),
                                         tmp_path / f"{name}.tflite"))
    v3, v2 = (p.read_bytes() for p in paths)
    assert export.op_histogram(v3) == export.op_histogram(v2)
    r3, r2 = measure.run(paths, ["cortex-a76"], env=environment, progress=lambda *a: None)
    assert r3.arm_matches_x86 and r2.arm_matches_x86
    assert r3.arm_instructions == r2.arm_instructions


def test_fp32_on_emulated_arm_matches_x86_within_tolerance(environment, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_ghost.create_model("ghostnet_050", input_shape=(32, 32, 3),
                                     classifier_activation=None)
    path = export.write_atomic(export.convert(model, "fp32"), tmp_path / "g_fp32.tflite")
    (r,) = measure.run([path], ["cortex-a72"], env=environment, progress=lambda *a: None)
    assert r.kind == "fp32" and r.arm_matches_x86 and r.repeatable
    assert r.classes["dot"] == r.classes["i8mm"] == 0 and r.classes["simd"] > 0
    assert r.floor_instructions == -(-r.macs // 4)


def _benchmark_cli():
    spec = importlib.util.spec_from_file_location("benchmark_cli", REPO / "tflite" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_cli_arm_mode(environment, tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = keras_ghost.create_model("ghostnet_050", input_shape=(32, 32, 3),
                                     classifier_activation=None)
    images = export.load_images(None, None, limit=8)
    calibration = export.to_model_input(images, (32, 32, 3), mean=0.5, std=0.25)
    path = export.write_atomic(export.convert(model, "int8", calibration),
                               tmp_path / "ghostnet_050_int8.tflite")
    out = tmp_path / "arm.json"
    results = _benchmark_cli().main([str(path), "--arm", "cortex-a76", "--arm-kernels",
                                     "--json", str(out), "--csv", str(tmp_path / "arm.csv")])
    saved = json.loads(out.read_text())
    assert [(e["cpu"], e["arm_instructions"], e["arm_matches_x86"]) for e in saved] == [
        ("cortex-a76", results[0].arm_instructions, True)]
    printed = capsys.readouterr().out
    assert "| ghostnet_050_int8.tflite | cortex-a76 |" in printed
    assert "| depthwise conv |" in printed and "| kind | M instr | share |" in printed
    assert "XNNPACK operators, in run order" in printed
    header = (tmp_path / "arm.csv").read_text().splitlines()[0]
    assert header.startswith("model,cpu,") and "arm_instructions" in header and "dot" in header


@pytest.mark.parametrize("argv, message", [
    (["m.tflite", "--arm", "cortex-a99"], "--arm cortex-a99: unknown core"),
    (["m.tflite", "--arm-kernels"], "--arm-kernels only applies with --arm"),
    (["m.tflite", "--arm", "cortex-a76", "--arm-runs", "0"], "argument --arm-runs: must be >= 1"),
    (["m.tflite", "--arm-setup"], "--arm-setup takes no models"),
    (["m.tflite", "--arm", "cortex-a76", "--adb"], "not allowed with argument"),
])
def test_benchmark_cli_arm_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _benchmark_cli().parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_missing_environment_says_how_to_build_it(tmp_path):
    with pytest.raises(arm.ArmSetupError, match=r"benchmark.py --arm-setup"):
        arm.find_environment(tmp_path)


def test_cpu_table():
    assert arm.CPUS["cortex-a53"].int8_macs_per_instruction == 8
    assert arm.CPUS["cortex-a76"].int8_macs_per_instruction == 16
    assert arm.CPUS["max,sme=off"].int8_macs_per_instruction == 32
    info = arm.CPUS["cortex-a76"].cpuinfo()
    assert "CPU part\t: 0xd0b" in info and "asimddp" in info
    assert "i8mm" in arm.CPUS["max,sme=off"].features and "sme" not in arm.CPUS[
        "max,sme=off"].features.split()
    with pytest.raises(ValueError, match="unknown ARM CPU 'm1'"):
        arm.get_cpu("m1")


def test_kernel_categories():
    assert attribution.category("xnn_qs8_qc8w_dwconv_minmax_fp32_ukernel_25p16c__neonv8_mla8_ld64",
                                "libpywrap_litert_common.so") == "depthwise conv"
    assert attribution.category("xnn_qs8_qc8w_igemm_minmax_fp32_ukernel_4x16c4__neondot",
                                "x.so") == "conv kxk (igemm)"
    assert attribution.category("xnn_f32_vadd_minmax_ukernel__neon_u8", "x.so") == "add"
    assert attribution.category("[libc.so.6]", "libc.so.6") == "libc (memcpy, memset, malloc)"


@pytest.mark.slow
def test_sme_kernels_match_x86_under_backports_qemu(environment, tmp_path):
    """QEMU 7.2's `-cpu max` (SME on) corrupts int8 XNNPACK outputs; bookworm-backports'
    QEMU 10 runs the same SME kernels bit-exact to x86 (downloads about 60 MB once)."""
    from keras_ghost.export.arm import sme

    path = _int8_model(tmp_path, "ghostnet_050@64")
    (fixed,) = sme.check([path], env=environment, progress=lambda *a: None)
    assert fixed.sme_instructions_translated > 0, "no SME kernel ran: the check proves nothing"
    assert fixed.arm_matches_x86 and fixed.outputs_differing == 0
    (broken,) = sme.check([path], env=environment, qemu=environment.qemu,
                          progress=lambda *a: None)
    assert broken.qemu_version.startswith("7.2") and not broken.arm_matches_x86


def test_sme_encodings():
    from keras_ghost.export.arm.sme import is_sme

    smstart, smstop, fmopa = 0xD503477F, 0xD503467F, 0x80800000
    nop, add, sdot, sve_ld1b = 0xD503201F, 0x8B020020, 0x4E829420, 0xA400A000
    assert all(is_sme(w) for w in (smstart, smstop, fmopa))
    assert not any(is_sme(w) for w in (nop, add, sdot, sve_ld1b))


def test_compare_cli_arm_table_with_a_deploy_variant(environment, tmp_path):
    from helpers import load_script

    compare = load_script("tflite/compare.py")
    md = tmp_path / "report.md"
    results = compare.main(["--models", "ghostnet_050", "mobilenetv3small", "--modes", "int8",
                            "--input-size", "64", "--calib-images", "4", "--variants",
                            "merge_ghost_min_size=none", "--arm", "cortex-a76", "--out-dir",
                            str(tmp_path), "--markdown", str(md), "--json",
                            str(tmp_path / "arm.json")])
    counts = {r.model: r.arm_instructions for r in results}
    assert set(counts) == {"ghostnet_050_int8.tflite", "mobilenetv3small_int8.tflite",
                           "ghostnet_050_merge_ghost_min_size-none_int8.tflite"}
    assert all(r.arm_matches_x86 and r.cpu == "cortex-a76" for r in results)
    # At 64x64 no ghost module works on 112x112 maps: the variant is the same graph.
    assert counts["ghostnet_050_int8.tflite"] == counts[
        "ghostnet_050_merge_ghost_min_size-none_int8.tflite"]
    text = md.read_text()
    assert "| model | int8 cortex-a76 |" in text
    assert "| ghostnet_050/merge_ghost_min_size=none / ghostnet_050 | 1.000x |" in text
    saved = json.loads((tmp_path / "arm.json").read_text())
    assert sorted(e["arm_instructions"] for e in saved) == sorted(counts.values())
