"""The `keras-ghost` console script after a non-editable install into a fresh venv.

The wheel is built from a copy of the package files (nothing is written into the checkout)
and installed without dependencies into a venv that sees this environment's site-packages
through a .pth line (TensorFlow and the rest are not installed again; the editable
keras_ghost there is not activated, since only the fresh venv's own .pth files run).
Then `keras-ghost convert` runs from a folder outside the repo. About a minute: slow, and
its own step of .ci/run.
"""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import python_env

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ["pyproject.toml", "README.md", "keras_ghost_cli.py", "keras_ghost"]


def _run(argv, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, (argv, result.stdout[-2000:], result.stderr[-3000:])
    return result


@pytest.mark.slow
def test_console_script_after_a_non_editable_install(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in PACKAGE_FILES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name)
    for cache in source.rglob("__pycache__"):
        shutil.rmtree(cache)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "dist"), str(source)])
    wheel, = (tmp_path / "dist").glob("keras_ghost-*.whl")

    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
                     ).stdout.strip())
    (site / "outer_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
          str(wheel)])

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = python_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    env.pop("PYTHONPATH", None)
    where = _run([str(python), "-c", "import keras_ghost; print(keras_ghost.__file__)"],
                 cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    script = venv / "bin" / "keras-ghost"
    help_text = _run([str(script), "convert", "--help"], cwd=work, env=env).stdout
    assert "--calib-steps" in help_text and "--seed" in help_text
    converted = _run([str(script), "convert", "--int8", "--model", "ghostnet_050",
                      "--input-size", "32", "--calib-steps", "8", "--holdout", "4"],
                     cwd=work, env=env)
    assert (work / "out" / "ghostnet_050_int8.tflite").stat().st_size > 10_000
    assert "XNNPACK partitions: 1" in converted.stdout
    # Stages on stderr; none of TensorFlow's import lines.
    assert converted.stderr.splitlines()[0].startswith("data ")
    assert not [line for line in converted.stderr.splitlines()
                if line.startswith(("I0000", "W0000", "E0000", "WARNING: All log"))], (
        converted.stderr)
    bad = subprocess.run([str(script), "benchmark", "--runs", "0", "x.tflite"], cwd=work,
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: argument --runs: must be >= 1, got 0 (see keras-ghost benchmark --help)"]
