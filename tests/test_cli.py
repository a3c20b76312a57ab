"""Bad input, for every command-line tool and the main API calls: one `error: ...` line,
exit status 2, before any model is converted or trained, nothing left behind; Ctrl-C in
one line (130); quiet by default with stage progress; `--seed` repeats a run exactly.

The CLI cases run in-process (`keras_ghost.cli.<tool>.main(argv)`), with the long work
(conversion, training, timing, the QAT worker) replaced by a function that fails the test
if it is reached; two run as scripts to show that no traceback and no TensorFlow log line
reaches the user.
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import keras_ghost
from keras_ghost import export
from keras_ghost.cli import benchmark, compare, convert, qat, quality_gate, train
from helpers import python_env

REPO = Path(__file__).resolve().parents[1]
TOOLS = {"convert": convert, "benchmark": benchmark, "compare": compare,
         "quality-gate": quality_gate, "train": train, "qat": qat}
# Seconds from main() to the error, in-process (TensorFlow already imported). Pure argument
# checks take milliseconds; cases that build a small model first take a few seconds.
ARGUMENT_CHECK_S = 10
BUILD_CHECK_S = 60


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad input files: a file where a folder is expected, a truncated .keras, a .keras
    and a .weights.h5 of another variant, a corrupt JPEG, a corrupt .tflite."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "a_file").write_text("not a folder")
    other = keras_ghost.create_model("ghostnet_100", input_shape=(32, 32, 3))
    other.save(root / "other.keras")
    other.save_weights(root / "other.weights.h5")
    data = (root / "other.keras").read_bytes()
    (root / "truncated.keras").write_bytes(data[:len(data) // 2])
    images = root / "images"
    images.mkdir()
    good = keras_ghost.export.load_images(None, limit=1)[0]
    import tensorflow as tf

    (images / "a_good.png").write_bytes(tf.io.encode_png(good).numpy())
    (images / "b_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG at all")
    (root / "corrupt.tflite").write_bytes(b"TFL3 but not really a flatbuffer")
    (root / "m.tflite").write_bytes(export.convert(
        keras_ghost.create_model("ghostnet_050", input_shape=(32, 32, 3)), "fp32",
        optimize=False))
    return root


def _case(tool, argv, message, limit=ARGUMENT_CHECK_S):
    return pytest.param(tool, argv, message, limit, id=f"{tool} {' '.join(argv)}"[:90])


SMALL = ["--model", "ghostnet_050", "--input-size", "32"]
# {in}: the inputs folder; {out}: the (empty) output folder, checked empty afterwards.
CASES = [
    # convert: ranges
    _case("convert", ["--calib-steps", "0"], "argument --calib-steps: must be >= 1, got 0"),
    _case("convert", ["--holdout", "0"], "argument --holdout: must be >= 1, got 0"),
    _case("convert", ["--holdout", "-3"], "argument --holdout: must be >= 1, got -3"),
    _case("convert", ["--int8", "--percentile", "150"], r"--percentile: must be in \(50, 100\]"),
    _case("convert", ["--int8", "--percentile", "nan"], r"--percentile: must be in \(50, 100\]"),
    _case("convert", ["--min-agreement", "5"], r"--min-agreement: must be in \[0, 1\]"),
    _case("convert", ["--width", "0"], "--width: must be a positive number"),
    _case("convert", ["--width", "-1"], "--width: must be a positive number"),
    _case("convert", ["--input-size", "32", "32", "32"], "--input-size takes a height"),
    _case("convert", ["--input-size", "abc"], "--input-size: 'abc' is not a whole number"),
    _case("convert", ["--seed", "-1"], "--seed: must be >= 0"),
    _case("convert", ["--fp16", "--int8"], "not allowed with argument"),
    # convert: flags that would be silently ignored
    _case("convert", ["--io", "uint8"], "--io applies to --int8 only"),
    _case("convert", ["--fp16", "--calibration-method", "minmax"],
          "--calibration-method applies to --int8 only"),
    _case("convert", ["--int8", "--calibration-method", "minmax", "--percentile", "99"],
          "--percentile applies to --calibration-method percentile"),
    _case("convert", ["--remove-pad", "--no-optimize"], "--remove-pad .* --no-optimize"),
    # convert: the output path
    _case("convert", ["--output", "{out}/m.tfl"], "--output .*m.tfl: the file name must end in "
                                                  r"\.tflite"),
    _case("convert", ["--output", "{in}/a_file/m.tflite"], "a_file is a file, not a folder"),
    _case("convert", ["--output", "{out}"], "is a folder; give a file path"),
    _case("convert", ["--output", "/proc/m.tflite"], "cannot write in /proc"),
    # convert: names and files
    _case("convert", ["--model", "ghostnet_5O"], "--model ghostnet_5O: unknown model; did you "
                                                 "mean ghostnet_050"),
    _case("convert", ["--weights", "{in}/missing.pth"], "--weights .*missing.pth: no such file"),
    _case("convert", ["--weights", "{in}"], "--weights .* is not a file"),
    _case("convert", [*SMALL, "--weights", "{in}/other.weights.h5"],
          r"other.weights.h5 does not fit 'ghostnet_050': layer 'stem_conv' expects "
          r"stem_conv/kernel of shape \(3, 3, 3, 8\), the file has \(3, 3, 3, 16\)",
          BUILD_CHECK_S),
    _case("convert", [*SMALL, "--weights", "{in}/other.keras"], "other.keras does not fit",
          BUILD_CHECK_S),
    _case("convert", [*SMALL, "--weights", "{in}/truncated.keras"],
          "truncated.keras is not a complete .keras file: it is not a zip archive",
          BUILD_CHECK_S),
    _case("convert", [*SMALL, "--int8", "--calib-data", "{in}/images"],
          "b_corrupt.jpg is not a readable image", BUILD_CHECK_S),
    _case("convert", ["--calib-data", "{in}/no_such_folder/"], "--calib-data .*: no such folder"),
    _case("convert", ["--int8", "--data-dir", "{in}/nowhere"], "--data-dir .*: no such folder"),
    _case("convert", [*SMALL, "--int8", "--calib-data", "cifar100:train", "--data-dir", "{in}"],
          "'cifar100' is not prepared", BUILD_CHECK_S),
    _case("convert", [*SMALL, "--holdout", "500"], "--holdout 500: the calibration source has "
                                                   "only 200 images", BUILD_CHECK_S),
    _case("convert", ["--model", "ghostnet_050", "--input-size", "16"], "at least 32",
          BUILD_CHECK_S),
    _case("convert", ["--model", "resnet34", "--width", "0.5"],
          r"'resnet34' \(ResNet34\) takes no argument 'width'", BUILD_CHECK_S),
    # benchmark
    _case("benchmark", ["{in}/m.tflite", "--runs", "0"], "argument --runs: must be >= 1"),
    _case("benchmark", ["{in}/m.tflite", "--num-threads", "0"],
          "argument --num-threads: must be >= 1"),
    _case("benchmark", ["{in}/m.tflite", "--warmup-runs", "-1"], "--warmup-runs: must be >= 0"),
    _case("benchmark", ["{in}/m.tflite", "--block", "0"], "--block: must be >= 1"),
    _case("benchmark", ["{in}/missing.tflite"], "missing.tflite: no such file"),
    _case("benchmark", ["{in}/corrupt.tflite"], "corrupt.tflite: Not a valid TFLite model"),
    _case("benchmark", ["{in}/m.tflite", "--json", "{out}/r.txt"], "--json .*must end in .json"),
    _case("benchmark", ["{in}/m.tflite", "--csv", "{in}/a_file/r.csv"], "is a file, not a folder"),
    _case("benchmark", [], "give .tflite models"),
    _case("benchmark", ["{in}/m.tflite", "--use-gpu"], "--use-gpu only applies with --adb"),
    _case("benchmark", ["{in}/m.tflite", "--arm", "cortex-a99"], "--arm cortex-a99: unknown core"),
    # compare
    _case("compare", ["--models", "resnet9000"], r"--models: unknown model\(s\) \['resnet9000'\]"),
    _case("compare", ["--runs", "0"], "argument --runs: must be >= 1"),
    _case("compare", ["--input-size", "16"], "argument --input-size: must be >= 32"),
    _case("compare", ["--calib-images", "0"], "argument --calib-images: must be >= 1"),
    _case("compare", ["--variants", "bogus"], "--variants bogus: not 'unoptimized' or KEY=VALUE"),
    _case("compare", ["--json", "{out}/r.md"], "--json .*must end in .json"),
    _case("compare", ["--out-dir", "{in}/a_file/x"], "is a file, not a folder"),
    # quality-gate
    _case("quality-gate", ["--epochs", "0"], "argument --epochs: must be >= 1"),
    _case("quality-gate", ["--batch-size", "0"], "argument --batch-size: must be >= 1"),
    _case("quality-gate", ["--min-agreement", "5"], "--min-agreement: 5.0 is not a fraction"),
    _case("quality-gate", ["--percentile", "150"], r"--percentile: must be in \(50, 100\]"),
    _case("quality-gate", ["--image-size", "8"], "--image-size: must be >= 32"),
    _case("quality-gate", ["--model", "nosuch"], "--model nosuch: unknown model"),
    _case("quality-gate", ["--keras-model", "{in}/missing.keras"], "missing.keras: no such file"),
    _case("quality-gate", ["--keras-model", "{in}/other.weights.h5"], "expected a .keras file"),
    _case("quality-gate", ["--keras-model", "{in}/other.keras", "--width", "0.5"],
          "--width applies to the model this tool trains"),
    _case("quality-gate", ["--keras-model", "{in}/truncated.keras", "--data-dir", str(
        REPO.parent / "shared" / "tfds")], "truncated.keras is not a complete .keras file",
          BUILD_CHECK_S),
    _case("quality-gate", ["--output-dir", "{in}/a_file/q"], "is a file, not a folder"),
    # train
    _case("train", ["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    _case("train", ["--batch-size", "-1"], "argument --batch-size: must be >= 1"),
    _case("train", ["--lr", "0"], "--lr: must be a positive number"),
    _case("train", ["--dropout", "1.5"], r"--dropout: must be in \[0, 1\)"),
    _case("train", ["--label-smoothing", "1"], r"--label-smoothing: must be in \[0, 1\)"),
    _case("train", ["--qat"], "--qat / --prune fine-tune a trained float model: pass --weights"),
    _case("train", ["--weights", "{in}/other.keras"], "--weights is the float model that --qat"),
    _case("train", ["--tpu", "grpc://x"], "--tpu names the TPU of --strategy tpu"),
    _case("train", ["--recipe", "nosuch"], "--recipe: No recipe 'nosuch'"),
    _case("train", ["--teacher", "{in}/missing.keras"], "--teacher .*missing.keras: no such file"),
    _case("train", ["--image-folder", "{in}/nowhere"], "--image-folder .*: no such folder"),
    _case("train", ["--data-dir", "{in}/nowhere"], "--data-dir .*: no such folder"),
    _case("train", ["--output-dir", "{in}/a_file/run"], "is a file, not a folder"),
    _case("train", ["--model", "ghostnet-100"], "--model ghostnet-100: unknown model"),
    # qat
    _case("qat", ["--weights", "{in}/missing.keras", "--output", "{out}/q.tflite"],
          "--weights .*missing.keras: no such file"),
    _case("qat", ["--weights", "{in}/other.keras", "--output", "{out}/q.h5"],
          "--output .*must end in .tflite"),
    _case("qat", ["--weights", "{in}/other.keras", "--output", "{out}/q.tflite", "--no-qat"],
          "--no-qat leaves nothing to do without --prune"),
    _case("qat", ["--weights", "{in}/other.keras", "--output", "{out}/q.tflite", "--prune",
                  "--target-sparsity", "1.5"], r"--target-sparsity: must be in \(0, 1\)"),
    _case("qat", ["--weights", "{in}/other.keras", "--output", "{out}/q.tflite", "--epochs",
                  "-1"], "--epochs: must be >= 0"),
    _case("qat", ["--weights", "{in}/other.weights.h5", "--output", "{out}/q.tflite"],
          "expected a .keras file"),
    _case("qat", ["--weights", "{in}/other.keras", "--output", "{in}/a_file/q.tflite"],
          "is a file, not a folder"),
]


def _work_reached(*args, **kwargs):
    raise AssertionError("a bad argument reached the long work")


@pytest.fixture
def no_long_work(monkeypatch):
    """Conversion, training, timing and the QAT worker fail the test if reached."""
    from keras_ghost.export import benchmark as bench_lib
    from keras_ghost.export import tflite
    from keras_ghost.quantization import api
    from keras_ghost.training import quality, trainer

    for owner, name in ((tflite, "convert"), (export, "convert"), (trainer, "train"),
                        (quality, "train"), (quality, "evaluate_int8"),
                        (bench_lib, "benchmark"), (api, "run_worker")):
        monkeypatch.setattr(owner, name, _work_reached)


@pytest.mark.parametrize("tool, argv, message, limit", CASES)
def test_bad_input_ends_in_one_line_before_the_work(tool, argv, message, limit, files,
                                                    tmp_path, no_long_work, capsys,
                                                    monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)  # default outputs (out/..., out/train/...) would land here
    argv = [a.format(**{"in": files, "out": out}) for a in argv]
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        TOOLS[tool].main(argv)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    # Stage lines ("data ... 0.1 s") may come first; the error is the one last line.
    lines = err.strip().splitlines()
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], err
    assert "Traceback" not in err and lines[-1] == str(exit_info.value)
    assert re.search(message, lines[-1]), lines[-1]
    assert elapsed < limit, f"{elapsed:.1f} s to fail"
    assert list(out.rglob("*")) == [], "files left behind"


def test_ctrl_c_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "convert", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        convert.main([*SMALL, "--output", str(tmp_path / "m.tflite"), "--quiet"])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["tflite/convert.py", "--output", "{tmp}/a_file/m.tflite"], "is a file, not a folder"),
    (["tflite/benchmark.py", "{tmp}/a_file"], "Not a valid TFLite model"),
])
def test_as_a_script_no_traceback_and_no_tensorflow_log(argv, message, tmp_path):
    (tmp_path / "a_file").write_text("x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    env = python_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # what a user's shell has: nothing set
    result = subprocess.run([sys.executable, str(REPO / argv[0]), *argv[1:]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
        result.stderr[-3000:])


def test_verbose_shows_what_is_hidden_by_default(tmp_path):
    (tmp_path / "a_file").write_text("x")
    env = python_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    result = subprocess.run([sys.executable, str(REPO / "tflite" / "convert.py"), "--verbose",
                             "--output", str(tmp_path / "a_file" / "m.tflite")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("error: ")
    assert len(lines) > 1, "TensorFlow's import log is not shown with --verbose"


def test_keras_ghost_dispatcher(capsys):
    from keras_ghost import cli

    assert cli.main(["--help"]) == 0
    assert "quality-gate" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["covnert"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown command 'covnert'; did you mean convert? (commands: convert, "
        "benchmark, compare, quality-gate, train, qat, predict)")


def test_same_seed_same_figures_with_stage_progress(tmp_path, capsys):
    """Random-init int8 conversions with one seed give the same model and fidelity; the
    stages and the calibration bar are on stderr, and --quiet hides them."""
    argv = [*SMALL, "--int8", "--calib-steps", "12", "--holdout", "6", "--seed", "3"]
    first = convert.main([*argv, "--output", str(tmp_path / "a.tflite")])
    err = capsys.readouterr().err
    for stage in ("data", "build", "optimize", "convert", "verify", "write"):
        assert any(line.startswith(stage) and line.endswith(" s") for line in err.splitlines()
                   ), (stage, err)
    assert "calibrate [" in err and "24/24" in err  # two passes over 12 images
    second = convert.main([*argv, "--output", str(tmp_path / "b.tflite"), "--quiet"])
    assert capsys.readouterr().err == ""
    assert first["fidelity"] == second["fidelity"] and first["seed"] == 3
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()
    # Another seed is another model.
    weights = [convert.build_model(convert.parse_args([*SMALL, "--seed", s]))[2].get_weights()[0]
               for s in ("3", "3", "4")]
    np.testing.assert_array_equal(weights[0], weights[1])
    assert not np.array_equal(weights[0], weights[2])


# --------------------------------------------------------------------------- the API

def test_api_bad_arguments_name_the_argument_and_the_fix(files):
    with pytest.raises(ValueError, match=r"classes must be a whole number >= 1 .* got 0"):
        keras_ghost.create_model("ghostnet_050", classes=0)
    with pytest.raises(TypeError, match=r"profile\(\) takes a Keras model or a registered "
                                        "variant name"):
        keras_ghost.profile(42)
    by_name = keras_ghost.profile("ghostnet_050", input_shape=(32, 32, 3))
    assert by_name.macs == keras_ghost.profile(
        keras_ghost.create_model("ghostnet_050", input_shape=(32, 32, 3))).macs > 0
    with pytest.raises(ValueError, match=r"other.keras does not fit 'ghostnet_050': layer "
                                         r"'stem_conv' .*\(3, 3, 3, 8\).*\(3, 3, 3, 16\)"):
        keras_ghost.create_model("ghostnet_050", input_shape=(32, 32, 3),
                                 weights=files / "other.keras")
    from keras_ghost.weights.loading import load_keras_model

    with pytest.raises(ValueError, match="truncated.keras is not a complete .keras file"):
        load_keras_model(files / "truncated.keras")
    with pytest.raises(ValueError, match="b_corrupt.jpg is not a readable image"):
        export.load_images(str(files / "images"))
    content = (files / "m.tflite").read_bytes()
    with pytest.raises(ValueError, match=r"images of shape \(2, 16, 16, 3\) do not fit the "
                                         r"\.tflite input \(1, 32, 32, 3\)"):
        export.run(content, np.zeros((2, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="runs must be a whole number >= 1, got 0"):
        export.benchmark.benchmark([files / "m.tflite"], runs=0)


def test_qat_jobs_cross_the_process_boundary_as_dataclasses():
    from keras_ghost.quantization import jobs

    job = jobs.ConvertJob(keras_model="m.keras", calibration="c.npy", output="o.tflite")
    text = jobs.to_json(job)
    assert json.loads(text)["task"] == "convert"
    assert jobs.from_json(text) == job
    with pytest.raises(TypeError):  # a field the dataclass does not have
        jobs.from_json(json.dumps({"task": "convert", "keras_model": "m", "nope": 1}))
