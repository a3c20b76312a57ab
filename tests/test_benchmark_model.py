"""Phone benchmarks: the benchmark_model log parser on captured logs, the adb driver against
a fake adb, and the CSV / JSON / markdown / plot reports and the CLI."""

import csv
import dataclasses
import importlib.util
import io
import json
import os
import shlex
import subprocess
import sys

import pytest

import keras_ghost
from keras_ghost.export import benchmark_model as bm
from conftest import REPO

DATA = REPO / "tests" / "data" / "benchmark_model"
README_LOG = DATA / "tflite_readme_mobilenet_quant_op_profiling.txt"  # legacy format
RISCV_LOG = DATA / "riscv64_mobilenet_v1_op_profiling.txt"  # current format, e-notation

_spec = importlib.util.spec_from_file_location("benchmark_cli", REPO / "tflite" / "benchmark.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


def test_parse_tflite_readme_sample():
    r = bm.parse_log_file(README_LOG)
    # "Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9"
    assert (r.warmup_avg_us, r.init_us, r.avg_us) == (83235.0, 38467.0, 79760.9)
    assert r.first_inference_us is None  # not in this format
    # "Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 ..."
    assert (r.runs, r.min_us, r.max_us, r.std_us) == (50, 77385.0, 88213.0, 1929.0)
    assert r.source == "benchmark_model" and r.memory_delta_mb is None
    assert len(r.op_profile) == 31  # "Number of nodes executed: 31"
    assert r.op_profile[6] == {
        "node_type": "CONV_2D", "start_ms": 19.352, "first_ms": 6.652, "avg_ms": 6.652,
        "percent": 0.167, "cdf_percent": 0.652, "mem_kb": 0.0, "times_called": 0,
        "name": "[MobilenetV1/MobilenetV1/Conv2d_3_pointwise/Relu6]"}
    assert [row["node_type"] for row in r.op_summary] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX", "RESHAPE", "AVERAGE_POOL_2D"]
    assert r.op_summary[1] == {"node_type": "DEPTHWISE_CONV_2D", "count": 13, "avg_ms": 0.169,
                               "percent": 10.73, "cdf_percent": 100.0, "mem_kb": 0.0,
                               "times_called": 0}


def test_parse_current_format_with_e_notation():
    r = bm.parse_log_file(RISCV_LOG)
    assert r.model == "mobilenet_v1_1.0_224.tflite" and r.num_threads == 4  # Graph/Num threads
    # "Inference timings in us: Init: 17187, First inference: 3512391,
    #  Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06"
    assert (r.init_us, r.first_inference_us) == (17187.0, 3512391.0)
    assert r.warmup_avg_us == 3512390.0 and r.avg_us == 2950340.0
    # The regular phase: "count=50 first=2990275 curr=2913402 min=2727568 max=3189954
    # avg=2.95034e+06 std=109798", not the profiler's summaries after it.
    assert (r.runs, r.min_us, r.max_us, r.std_us) == (50, 2727568.0, 3189954.0, 109798.0)
    # "Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859"
    assert (r.init_memory_mb, r.memory_delta_mb) == (4.21094, 46.0859)
    # Only the regular runs' tables: the init profile (AllocateTensors) is left out.
    assert len(r.op_profile) == 31
    assert {row["node_type"] for row in r.op_profile} == {
        "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "SQUEEZE", "SOFTMAX"}
    slowest = max(r.op_profile, key=lambda row: row["avg_ms"])
    assert slowest["name"] == "[MobilenetV1/MobilenetV1/Conv2d_5_pointwise/Relu6]:10"
    assert (slowest["first_ms"], slowest["avg_ms"], slowest["percent"]) == (263.724, 277.374, 9.403)
    assert r.op_summary[0]["node_type"] == "CONV_2D"
    assert (r.op_summary[0]["count"], r.op_summary[0]["avg_ms"]) == (15, 2651.853)
    json.dumps(r.as_dict())  # JSON-able, op tables included


# Not a capture: the line formats of newer builds (benchmark_model.cc's TFLITE_LOG lines with
# "INFO: " severities, p5/median/p95 percentiles, --report_peak_memory_footprint), once as
# printed and once with the logcat prefix of the Android benchmark app.
CONSTRUCTED = """\
INFO: Graph: [/data/local/tmp/ghostnetv2_100_int8.tflite]
INFO: #threads used for CPU inference: [2]
INFO: Initialized session in 65.312ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate \
if exceeding 150 seconds.
INFO: count=24 first=59232 curr=20876 min=20011 max=59232 avg=2.30451e+04 std=1.23e+03 \
p5=20011 median=20876 p95=25110

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate \
if exceeding 150 seconds.
INFO: count=50 first=22001 curr=22950 min=21870 max=24100 avg=2.28809e+04 std=1.23e+03 \
p5=21900 median=22870 p95=23650

INFO: Inference timings in us: Init: 65312, First inference: 59232, Warmup (avg): 23045.1, \
Inference (avg): 22880.9
INFO: Memory footprint delta from the start of the tool (MB): init=7.22656 overall=9.28906
INFO: Overall peak memory footprint (MB) via periodic monitoring: 18.6289
"""


@pytest.mark.parametrize("prefix", ["", "07-08 15:33:56.256 I/tflite  ( 5395): "])
def test_parse_prefixed_lines_percentiles_and_peak_memory(prefix):
    text = "".join(prefix + line for line in CONSTRUCTED.splitlines(keepends=True))
    r = bm.parse_log(text)
    assert r.model == "ghostnetv2_100_int8.tflite" and r.num_threads == 2
    assert (r.init_us, r.first_inference_us, r.warmup_avg_us, r.avg_us) == (
        65312.0, 59232.0, 23045.1, 22880.9)
    assert (r.runs, r.std_us, r.p5_us, r.p50_us, r.p95_us) == (50, 1230.0, 21900.0, 22870.0,
                                                              23650.0)
    assert (r.init_memory_mb, r.memory_delta_mb, r.peak_memory_mb) == (7.22656, 9.28906, 18.6289)
    assert r.op_profile == [] and r.op_summary == []


def test_parse_rejects_garbage_and_names_the_file(tmp_path):
    log = tmp_path / "oops.log"
    log.write_text("hello\ncount=3 lines but no timings\n")
    with pytest.raises(ValueError, match=r"oops\.log does not look like benchmark_model output"):
        bm.parse_log_file(log)


def test_parse_surfaces_the_tools_errors():
    text = "INFO: STARTING!\nERROR: Node number 57 (BATCH_MATMUL) failed to prepare.\n" \
           "ERROR: Failed to allocate tensors!\nERROR: Benchmarking failed.\n"
    with pytest.raises(ValueError, match="Failed to allocate tensors!"):
        bm.parse_log(text)


def test_parse_rejects_several_runs():
    text = RISCV_LOG.read_text()
    with pytest.raises(ValueError, match="holds 2 benchmark_model runs"):
        bm.parse_log(text + text)


# ------------------------------------------------------------------------------ fake adb

FAKE_ADB = r"""#!/usr/bin/env bash
# Records each call (shell-quoted) and answers like adb would.
printf '%q ' "$@" >> "$FAKE_ADB_CALLS"; echo >> "$FAKE_ADB_CALLS"
[ "$1" = "-s" ] && shift 2
case "$1" in
  devices) printf '* daemon started successfully\nList of devices attached\n%b\n' \
             "$FAKE_ADB_DEVICES" ;;
  push) echo "$2: 1 file pushed, 0 skipped." ;;
  shell) case "$2" in chmod*) ;; *) cat "$FAKE_ADB_OUTPUT" ;; esac ;;
  *) echo "fake adb: unexpected $*" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """A fake `adb` first on PATH; returns a function that reads back its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "adb").write_text(FAKE_ADB)
    (bin_dir / "adb").chmod(0o755)
    calls = tmp_path / "adb_calls.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_CALLS", str(calls))
    monkeypatch.setenv("FAKE_ADB_DEVICES", r"R58M41ABCDE\tdevice")
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(RISCV_LOG))
    return lambda: [shlex.split(line) for line in calls.read_text().splitlines()]


@pytest.fixture
def phone_files(tmp_path):
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF")
    model = tmp_path / "ghostnetv2_100_int8.tflite"
    model.write_bytes(b"TFL3")
    return binary, model


def test_run_on_device_pushes_runs_and_parses(fake_adb, phone_files, tmp_path):
    binary, model = phone_files
    r = bm.run_on_device(model, binary, num_threads=4, enable_op_profiling=True,
                         cpu_mask="f0", save_log=tmp_path / "logs")
    calls = fake_adb()
    remote = "/data/local/tmp"
    assert calls[:4] == [
        ["devices"],
        ["-s", "R58M41ABCDE", "push", str(binary), f"{remote}/benchmark_model"],
        ["-s", "R58M41ABCDE", "shell", f"chmod +x {remote}/benchmark_model"],
        ["-s", "R58M41ABCDE", "push", str(model), f"{remote}/ghostnetv2_100_int8.tflite"]]
    assert calls[4][:3] == ["-s", "R58M41ABCDE", "shell"] and len(calls) == 5
    command = shlex.split(calls[4][3])
    assert command[:3] == ["taskset", "f0", f"{remote}/benchmark_model"]
    for flag in (f"--graph={remote}/ghostnetv2_100_int8.tflite", "--num_threads=4",
                 "--use_xnnpack=true", "--use_gpu=false", "--use_nnapi=false",
                 "--enable_op_profiling=true", "--warmup_runs=1", "--num_runs=50"):
        assert flag in command
    assert r.model == "ghostnetv2_100_int8.tflite" and r.num_threads == 4
    assert r.avg_us == 2950340.0 and len(r.op_profile) == 31
    saved = tmp_path / "logs" / "ghostnetv2_100_int8_t4_xnnpack.log"
    assert saved.read_text() == RISCV_LOG.read_text()


def test_missing_adb_is_explained(phone_files):
    binary, model = phone_files
    with pytest.raises(FileNotFoundError, match="adb not found.*platform-tools.*--adb-path"):
        bm.run_on_device(model, binary, adb="no-such-adb-here")


def test_missing_binary_points_to_the_prebuilt_one(fake_adb, phone_files, tmp_path):
    _, model = phone_files
    with pytest.raises(FileNotFoundError, match="android_aarch64_benchmark_model"):
        bm.run_on_device(model, tmp_path / "nope" / "benchmark_model")


@pytest.mark.parametrize("devices, serial, message", [
    ("", None, "No Android device attached"),
    (r"R58M41ABCDE\tunauthorized", None, "unauthorized.*Allow USB debugging"),
    (r"R58M41ABCDE\tdevice\nemulator-5554\tdevice", None, "Several devices.*--serial"),
    (r"R58M41ABCDE\toffline", None, "offline"),
    (r"R58M41ABCDE\tdevice", "emulator-5554", "No device 'emulator-5554'"),
])
def test_device_problems_are_explained(fake_adb, phone_files, monkeypatch, devices, serial,
                                       message):
    monkeypatch.setenv("FAKE_ADB_DEVICES", devices)
    binary, model = phone_files
    with pytest.raises(RuntimeError, match=message):
        bm.run_on_device(model, binary, serial=serial)
    assert all(call[-1] != "push" for call in fake_adb())  # nothing pushed


def test_bad_cpu_mask(fake_adb, phone_files):
    binary, model = phone_files
    with pytest.raises(ValueError, match="hex CPU mask"):
        bm.run_on_device(model, binary, cpu_mask="big")


# ------------------------------------------------------------------------------- reports

def test_csv_round_trip():
    results = [bm.parse_log_file(README_LOG), bm.parse_log_file(RISCV_LOG)]
    rows = list(csv.DictReader(io.StringIO(bm.to_csv(results))))
    assert len(rows) == 2 and "op_profile" not in rows[0]
    for row, r in zip(rows, results):
        assert row["model"] == r.model and float(row["avg_us"]) == r.avg_us
        assert row["first_inference_us"] == ("" if r.first_inference_us is None
                                             else str(r.first_inference_us))
    assert float(rows[1]["memory_delta_mb"]) == 46.0859


def test_model_label_and_reference_accuracy():
    assert bm.model_label("out/ghostnetv2_100_int8.tflite") == ("ghostnetv2_100", "int8")
    assert bm.model_label("ghostnet_130.tflite") == ("ghostnet_130", None)
    assert bm.reference_top1("ghostnet_100") == keras_ghost.get_spec("ghostnet_100").top1
    assert bm.reference_top1("mobilenetv2_100") == bm.KERAS_APPLICATIONS_TOP1["mobilenetv2_100"]
    assert bm.reference_top1("ghostnet_100", {"ghostnet_100": 1.0}) == 1.0
    assert bm.reference_top1("mobilenet_v1_1.0_224") is None


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="needs matplotlib (the [plot] extra)")
def test_plot_writes_png(tmp_path):
    base = bm.parse_log_file(RISCV_LOG)
    results = [dataclasses.replace(base, model=f"{name}_int8.tflite", avg_us=ms * 1e3)
               for name, ms in (("ghostnet_100", 20.0), ("ghostnet_130", 28.0),
                                ("ghostnetv2_100", 24.0), ("mobilenetv2_100", 22.0))]
    results.append(dataclasses.replace(base))  # mobilenet_v1_1.0_224: no known top-1
    with pytest.warns(UserWarning, match="mobilenet_v1_1.0_224"):
        path = bm.plot(results, tmp_path / "plots" / "pareto.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


# ----------------------------------------------------------------------------------- CLI

def test_cli_parse_log_writes_every_report(tmp_path, capsys):
    out = {ext: tmp_path / f"phone.{ext}" for ext in ("csv", "md", "json")}
    results = cli.main(["--parse-log", str(README_LOG), str(RISCV_LOG), "--csv",
                        str(out["csv"]), "--markdown", str(out["md"]), "--json",
                        str(out["json"])])
    printed = capsys.readouterr().out
    assert "| mobilenet_v1_1.0_224.tflite | 4 | 2950.34 |" in printed
    assert "Top 10 ops of mobilenet_v1_1.0_224.tflite" in printed
    assert "Time of mobilenet_v1_1.0_224.tflite by node type" in printed
    assert out["md"].read_text().strip() == printed.strip()
    assert len(list(csv.DictReader(out["csv"].open()))) == 2
    saved = json.loads(out["json"].read_text())
    assert [r["avg_us"] for r in saved] == [r.avg_us for r in results] == [79760.9, 2950340.0]
    assert len(saved[1]["op_profile"]) == 31


def test_cli_adb_runs_each_thread_count(fake_adb, phone_files, tmp_path, capsys):
    binary, model = phone_files
    results = cli.main([str(model), "--adb", "--benchmark-binary", str(binary),
                        "--num-threads", "1", "2", "--cpu-mask", "f0", "--no-xnnpack",
                        "--save-log", str(tmp_path / "logs")])
    assert [r.num_threads for r in results] == [1, 2]
    runs = [shlex.split(call[3]) for call in fake_adb() if call[2:3] == ["shell"]
            and not call[3].startswith("chmod")]
    assert [c for run in runs for c in run if c.startswith("--num_threads")] == [
        "--num_threads=1", "--num_threads=2"]
    assert all("--use_xnnpack=false" in run for run in runs)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        "ghostnetv2_100_int8_t1_cpu.log", "ghostnetv2_100_int8_t2_cpu.log"]


@pytest.mark.parametrize("argv, message", [
    ([], "give .tflite models"),
    (["m.tflite", "--adb"], "--adb needs --benchmark-binary"),
    (["m.tflite", "--use-gpu"], "--use-gpu only applies with --adb"),
])
def test_cli_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert message in capsys.readouterr().err


def test_cli_bad_input_ends_in_one_error_line(tmp_path):
    """Run as a script, bad input gives the message (exit status 2), not a traceback."""
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"not a flatbuffer")
    result = subprocess.run([sys.executable, str(REPO / "tflite" / "benchmark.py"), str(corrupt)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: {corrupt}: Not a valid TFLite model")
