"""The README's benchmark scripts (benchmarks/): their logic on made-up cells; the
measurements themselves are the scripts' job, not the tests'."""

import pytest

from helpers import load_script

backends = load_script("benchmarks/backends.py")


def _cell(model, runtime, train):
    return backends.CellResult(model, runtime, train_224=train, train_32=10.0, infer_b1=1.0,
                               infer_b32=2.0, first_step_s=0.5)


def test_goals_compare_the_fastest_keras_backend_with_timm_and_mobilenetv2():
    results = [_cell("ghostnet_100", "tf", 30.0), _cell("ghostnet_100", "jax", 4.0),
               _cell("ghostnet_100", "timm", 25.0), _cell("ghostnet_100", "timm-compile", 40.0),
               _cell("mobilenetv2", "tf", 20.0), _cell("mobilenetv2", "jax", 35.0)]
    goals = {text: (round(ratio, 3), met, cells)
             for text, ratio, met, cells in backends.goals(results)}
    assert goals["ghostnet_100 training, fastest Keras backend (tf) / timm"][:2] == (1.2, True)
    ratio, met, cells = goals["ghostnet_100 training, fastest Keras backend (tf) / timm-compile"]
    assert (ratio, met) == (0.75, False)  # missed: both cells get profiled
    assert cells == [("ghostnet_100", "tf"), ("ghostnet_100", "timm-compile")]
    assert goals["ghostnet_100 / MobileNetV2 training on tf"][:2] == (1.5, True)
    text = backends.markdown(results, backends.goals(results), backends.Cell("", ""))
    assert "| ghostnet_100 | timm-compile | 40 | 10 | 1 | 2 | 0.5 |" in text
    assert "| ghostnet_100 / MobileNetV2 training on tf | 1.50x | yes |" in text
    failed = backends.CellResult("ghostnet_100", "torch", error="over 900 s")
    assert "| ghostnet_100 | torch | failed: over 900 s |" in backends.markdown(
        [failed], [], backends.Cell("", ""))
    assert backends.goals([failed]) == []  # nothing measured, no goal claimed


def test_backends_arguments_are_checked(capsys):
    with pytest.raises(SystemExit):
        backends.parse_args(["--runs", "0"])
    assert "must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="give MODEL:RUNTIME"):
        backends.main(["--profile", "ghostnet_100:tpu"])
