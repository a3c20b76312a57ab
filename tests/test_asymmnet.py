"""AsymmNet: the asymmetrical bottleneck, equivalence with a PyTorch reference, and the
hard-swish rewrite that keeps int8 exports in one XNNPACK partition."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_ghost
from keras_ghost import export
from keras_ghost.export.optimize import optimize_for_inference
from keras_ghost.layers import asymm_bottleneck
from keras_ghost.layers.asymm import asymm_se_channels
from helpers import randomize_bn


def _block_model(in_channels=8, size=(12, 10), **kwargs):
    inputs = keras.Input((*size, in_channels))
    return keras.Model(inputs, asymm_bottleneck(inputs, name="b", **kwargs))


@pytest.mark.parametrize("rate,expand,dw", [(0, 40, 40), (1, 32, 48), (2, 24, 56), (3, 16, 64)])
def test_expansion_makes_mid_minus_r_in_and_reuses_the_input_on_both_sides(rate, expand, dw):
    model = _block_model(mid_channels=40, out_channels=16, asymm_rate=rate)
    assert model.get_layer("b_expand_conv").filters == expand
    assert model.get_layer("b_dw_conv").input.shape[-1] == dw  # mid + r * in
    if rate == 0:
        assert "b_reuse" not in [l.name for l in model.layers]
        return
    concat = model.get_layer("b_reuse")
    block_input, pw = model.inputs[0], model.get_layer("b_expand_relu").output
    expected = [block_input] * rate + [pw] + [block_input] * rate
    assert len(concat.input) == len(expected)
    assert all(a is b for a, b in zip(concat.input, expected))
    # The reused channels are the input itself, on both sides of the expansion.
    probe = keras.Model(model.inputs, concat.output)
    x = np.random.RandomState(0).randn(2, 12, 10, 8).astype("float32")
    y = probe.predict(x, verbose=0)
    for start in [8 * i for i in range(rate)] + [dw - 8 * (i + 1) for i in range(rate)]:
        np.testing.assert_array_equal(y[..., start:start + 8], x)


def test_activation_placement_and_linear_projection():
    model = _block_model(mid_channels=40, out_channels=16, activation="hard_swish", se=True)
    names = {l.name for l in model.layers}
    assert {"b_expand_hard_swish", "b_dw_hard_swish", "b_se_gate"} <= names
    assert not any(n.startswith("b_pw_") and n not in ("b_pw_conv", "b_pw_bn") for n in names)
    assert model.get_layer("b_se_gate").activation.__name__ == "hard_sigmoid"


def test_no_expansion_when_mid_equals_input():
    model = _block_model(in_channels=16, mid_channels=16, out_channels=16)
    names = [l.name for l in model.layers]
    assert "b_expand_conv" not in names and "b_reuse" not in names
    assert model.get_layer("b_dw_conv").input is model.inputs[0]


def test_identity_residual_only_for_same_shape():
    same = _block_model(mid_channels=40, out_channels=8)
    add = same.get_layer("b_add")
    assert add.input[0] is same.inputs[0] and add.input[1] is same.get_layer("b_pw_bn").output
    for kwargs in (dict(out_channels=16), dict(out_channels=8, strides=2)):
        names = [l.name for l in _block_model(mid_channels=40, **kwargs).layers]
        assert "b_add" not in names


def test_se_width_rounds_up_like_the_reference():
    # dw sees 96 + 8 = 104 channels: 104 // 4 = 26 rounds up to 32 (nearest would be 24).
    model = _block_model(mid_channels=96, out_channels=8, se=True)
    assert model.get_layer("b_se_reduce").filters == 32 == asymm_se_channels(104)
    assert asymm_se_channels(1120) == 280 and asymm_se_channels(72) == 24


@pytest.mark.parametrize("kwargs,match", [
    (dict(mid_channels=12, out_channels=8, asymm_rate=2), "mid_channels=12"),
    (dict(mid_channels=40, out_channels=8, activation="gelu"), "activation"),
    (dict(mid_channels=40, out_channels=8, asymm_rate=1.5), "asymm_rate"),
])
def test_bad_block_arguments_raise_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _block_model(**kwargs)


def test_mxnet_count_is_the_same_network_with_one_kernel_dimension_missing():
    """The MXNet summary's 5,991,776 for Large 1.0x counts k x k kernels as `out * in * k`."""
    model = keras_ghost.AsymmNetLarge()
    mxnet_style = 0
    for layer in model.layers:
        params = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
            params -= int(np.prod(layer.kernel.shape)) // layer.kernel_size[1] * (
                layer.kernel_size[1] - 1)
        mxnet_style += params
    assert keras_ghost.profile(model).params == 6_076_608
    assert mxnet_style == 5_991_776



@pytest.mark.parametrize("include_top", [True, False])
def test_hard_swish_rewrite_keeps_the_outputs(include_top):
    shape = (57, 64, 3)
    model = randomize_bn(keras_ghost.create_model(
        "asymmnet_large_050", input_shape=shape, include_top=include_top,
        classifier_activation=None))
    if include_top:  # large logits, so that a small tolerance means something
        classifier = model.get_layer("head_classifier")
        classifier.kernel.assign(classifier.kernel * 30.0)
    optimized = optimize_for_inference(model, verify=False)
    hard_swish = [l for l in optimized.layers if isinstance(l, layers.Activation)
                  and l.activation.__name__ in ("hard_silu", "hard_swish")]
    assert not hard_swish
    # The stem's output also feeds a residual add (and without the top, the features are
    # the output): there a 1x1 depthwise conv divides by 6; everywhere else the consumers do.
    divided = sorted(l.name for l in optimized.layers if l.name.endswith("_div6"))
    expected = ["stem_hard_swish_div6"] + ([] if include_top else ["features_hard_swish_div6"])
    assert divided == sorted(expected)
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype("float32")
    expected_out = np.asarray(model(x))
    assert np.abs(expected_out).max() > 1.0
    np.testing.assert_allclose(np.asarray(optimized(x)), expected_out, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(0).standard_normal((4, 64, 64, 3)).astype("float32")


def test_int8_export_runs_in_one_xnnpack_partition(calibration):
    model = keras_ghost.create_model("asymmnet_small_050", input_shape=(64, 64, 3),
                                     classifier_activation=None)
    int8 = export.convert(model, "int8", calibration)
    assert "HARD_SWISH" not in export.op_histogram(int8)
    assert export.op_histogram(int8, xnnpack=True)["DELEGATE"] == 1
    # Without the rewrite the converter emits HARD_SWISH and XNNPACK splits the graph.
    kept = optimize_for_inference(model, split_hard_swish=False)
    plain = export.convert(kept, "int8", calibration, optimize=False)
    assert export.op_histogram(plain)["HARD_SWISH"] > 0
    assert export.op_histogram(plain, xnnpack=True)["DELEGATE"] > 1


@pytest.mark.torch
@pytest.mark.parametrize("name,rate,size", [
    ("asymmnet_large_100", 1, (224, 224)),
    ("asymmnet_small_075", 1, (193, 257)),
    ("asymmnet_small_050", 2, (97, 131)),
])
def test_logits_match_the_pytorch_reference(name, rate, size, tmp_path):
    torch = pytest.importorskip("torch")
    from torch_refs import assert_same_logits, randomize
    from torch_refs.asymmnet import AsymmNet

    spec = keras_ghost.get_spec(name)
    mode = "large" if spec.builder is keras_ghost.AsymmNetLarge else "small"
    torch.manual_seed(0)
    reference = AsymmNet(mode, spec.kwargs["width"], rate=rate)
    randomize(reference, reference.output)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    model = keras_ghost.create_model(name, weights=str(path), input_shape=(*size, 3),
                                     classifier_activation=None, asymm_rate=rate)
    assert_same_logits(model, reference, size, f"{name} r={rate}")
