"""Multi-scale features (`features_only`, `feature_levels`), `output_stride` by dilation and
the keras-hub backbone: levels, strides and shapes over the registry, exactness of the
dilated networks, save/load, JAX, and equality with timm's features and dilated ResNet."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_ghost
from helpers import assert_builtin_layers_only, randomize_bn, registry_sweep

SHAPE = (64, 96, 3)  # non-square; every level of a stride-32 net is at least 2x3
CIFAR_SHAPE = (32, 48, 3)
# The levels each family has (CIFAR ResNet-56 downsamples by 4).
LEVELS = {"CifarResNet56": ("P1", "P2")}
ALL = ("P1", "P2", "P3", "P4", "P5")


def shape_for(name):
    return CIFAR_SHAPE if keras_ghost.get_spec(name).dataset == "cifar10" else SHAPE


def images(shape, batch=2, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, (batch, *shape)).astype("float32")


def as_numpy(outputs):
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


@pytest.mark.parametrize("name", registry_sweep(everything=False))
def test_features_levels_strides_and_shapes(name):
    """Every variant: the documented levels, each at stride 2**n of a non-square input,
    with the channels of the layer it taps, built-in layers only."""
    shape = shape_for(name)
    model = keras_ghost.create_model(name, features_only=True, input_shape=shape)
    family = keras_ghost.get_spec(name).family
    assert list(model.output) == list(LEVELS.get(family, ALL))
    for info in keras_ghost.feature_info(model):
        n = int(info.level[1:])
        assert info.stride == 2 ** n, info
        tensor = model.output[info.level]
        for size, full in zip(tensor.shape[1:3], shape[:2]):  # convs round up, pools down
            assert size in (full // 2 ** n, -(-full // 2 ** n)), (info, tensor.shape)
        assert info.channels == model.get_layer(info.layer).output.shape[-1]
    assert_builtin_layers_only(model)


def test_ghostnetv3_features_survive_reparameterization():
    """V3's taps are GhostNet's layer names; the deployed form keeps them and its maps."""
    model = randomize_bn(keras_ghost.create_model("ghostnetv3_050", features_only=True,
                                                  input_shape=SHAPE))
    assert [i.stride for i in keras_ghost.feature_info(model)] == [2, 4, 8, 16, 32]
    deployed = keras_ghost.reparameterize(model)
    x = images(SHAPE)
    expected, got = as_numpy(model(x)), as_numpy(deployed(x))
    assert list(got) == list(ALL)
    for level in ALL:
        np.testing.assert_allclose(got[level], expected[level], rtol=1e-4,
                                   atol=1e-4 * np.abs(expected[level]).max())


def test_feature_levels_pick_and_order():
    model = keras_ghost.GhostNet(features_only=True, feature_levels=("P3", "P4", "P5"),
                                 input_shape=SHAPE)
    assert list(model.output) == ["P3", "P4", "P5"]
    picked = as_numpy(model(images(SHAPE)))
    assert picked["P5"].shape == (2, 2, 3, 960)
    assert [i.layer for i in keras_ghost.feature_info(model)] == [
        "stage4_block0_add", "stage6_block4_add", "features_relu"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(features_only=True, feature_levels=("P6",)), "feature_levels"),
    (dict(features_only=True, feature_levels=()), "feature_levels"),
    (dict(feature_levels=("P3",)), "features_only=True"),
    (dict(features_only=True, pooling="avg"), "pooling=None"),
    (dict(output_stride=12), "output_stride"),
    (dict(features_only=True, feature_taps="mmdet"), "feature_taps|taps"),
    (dict(features_only="yes"), "features_only"),
])
def test_bad_feature_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_ghost.create_model("ghostnet_050", input_shape=SHAPE, **kwargs)


def test_missing_level_and_undilatable_pool_say_why():
    with pytest.raises(ValueError, match="no level P3"):
        keras_ghost.create_model("resnet56_cifar", features_only=True, feature_levels=("P3",))
    with pytest.raises(ValueError, match="pool 'stage4_pool'"):
        keras_ghost.create_model("vgg16_cifar", features_only=True, output_stride=8)


def test_features_save_load(tmp_path):
    model = randomize_bn(keras_ghost.create_model("ghostnetv2_100", features_only=True,
                                                  output_stride=16, input_shape=SHAPE))
    path = tmp_path / "features.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = images(SHAPE)
    expected, got = as_numpy(model(x)), as_numpy(loaded(x))
    assert list(got) == list(expected)
    for level in expected:
        np.testing.assert_allclose(got[level], expected[level], atol=1e-5)


def copy_weights(source, target):
    """By layer name: the dilated graph has more layers (the DFC gate's phase split)."""
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def constant_gates(model):
    """SE / G-Ghost-mix gates made input-independent (expand conv kernel 0): their global
    pool covers the whole dilated map, as in timm's dilated nets, so only without them is
    the sampled dilated map equal to the undilated one."""
    for layer in model.layers:
        if layer.name.endswith(("_se_expand", "_mix_expand_conv")):
            weights = layer.get_weights()
            weights[0][:] = 0.0
            layer.set_weights(weights)
    return model


# One variant per family (and GhostNetV2 at both strides: its DFC gate runs per phase).
DILATED = [("ghostnetv2_100", 16), ("ghostnetv2_100", 8), ("ghostnet_100", 16),
           ("g_ghost_regnetx_002", 8), ("asymmnet_small_100", 16), ("ghost_vgg16_cifar", 16),
           pytest.param("g_ghost_resnet34", 8, marks=pytest.mark.slow),
           pytest.param("resnet34", 16, marks=pytest.mark.slow),
           pytest.param("asymmnet_large_100", 8, marks=pytest.mark.slow),
           pytest.param("ghost_resnet50_s2", 16, marks=pytest.mark.slow)]


@pytest.mark.parametrize("name, output_stride", DILATED)
def test_output_stride_is_exact_dilation(name, output_stride):
    """The dilated net keeps its last levels at `output_stride`, and sampled every
    2**n / output_stride pixels they equal the undilated net's maps (same weights)."""
    shape = shape_for(name)
    plain = constant_gates(randomize_bn(keras_ghost.create_model(
        name, features_only=True, input_shape=shape)))
    dilated = keras_ghost.create_model(name, features_only=True, input_shape=shape,
                                       output_stride=output_stride)
    copy_weights(plain, dilated)
    x = images(shape)
    expected, got = as_numpy(plain(x)), as_numpy(dilated(x))
    for level, ref in expected.items():
        step = max(1, 2 ** int(level[1:]) // output_stride)
        if step > 1:  # the level is denser (a pool made stride 1 drops its last row)
            assert np.prod(got[level].shape[1:3]) > np.prod(ref.shape[1:3]), level
        sampled = got[level][:, ::step, ::step]
        assert np.abs(ref).max() > 1e-2, level  # a map, not zeros
        np.testing.assert_allclose(sampled, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(),
                                   err_msg=f"{name} {level}")
    def strided(model):
        return sum(max(getattr(layer, "strides", (1,))) > 1 for layer in model.layers)

    assert strided(dilated) < strided(plain)  # strides turned into dilation


def test_dilated_model_deploys_and_exports_int8_in_one_partition():
    """The deploy pass and int8 export take the dilated depthwise convs and the phase-split
    DFC gates: same outputs after the deploy pass, one XNNPACK partition, close int8."""
    from keras_ghost import export

    model = randomize_bn(keras_ghost.create_model(
        "ghostnetv2_100", input_shape=(64, 64, 3), output_stride=16, classes=10,
        classifier_activation=None))
    x = images((64, 64, 3), batch=8)
    deploy = export.optimize_for_inference(model, **export.deploy_settings("int8"))
    np.testing.assert_allclose(deploy.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-4)
    int8 = export.convert(model, "int8", calibration=x, io_type="int8")
    assert export.op_histogram(int8, xnnpack=True)["DELEGATE"] == 1
    assert export.fidelity(model.predict(x, verbose=0), export.run(int8, x))["mean_cosine"] > 0.99


JAX_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    import keras_ghost
    assert keras.backend.backend() == "jax", keras.backend.backend()
    shape, folder = tuple(json.loads(sys.argv[1])), sys.argv[2]
    model = keras_ghost.create_model("ghostnetv2_100", features_only=True, output_stride=16,
                                     input_shape=shape)
    model.load_weights(f"{folder}/m.weights.h5")
    out = model.predict(np.load(f"{folder}/x.npy"), verbose=0)
    np.savez(f"{folder}/jax.npz", **{k: np.asarray(v) for k, v in out.items()})
""")


def test_jax_backend_features_match_tensorflow(tmp_path):
    model = randomize_bn(keras_ghost.create_model("ghostnetv2_100", features_only=True,
                                                  output_stride=16, input_shape=SHAPE))
    model.save_weights(tmp_path / "m.weights.h5")
    x = images(SHAPE)
    np.save(tmp_path / "x.npy", x)
    expected = as_numpy(model(x))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_backend_optimization_level=0 "
                        "--xla_llvm_disable_expensive_passes=true"}
    subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(SHAPE), str(tmp_path)],
                   check=True, env=env, timeout=600)
    got = np.load(tmp_path / "jax.npz")
    assert sorted(got.files) == sorted(expected)
    for level in expected:
        np.testing.assert_allclose(got[level], expected[level], rtol=1e-4,
                                   atol=1e-4 * np.abs(expected[level]).max())


# timm: its features_only taps and its dilated ResNet, with the same weights.

@pytest.mark.torch
@pytest.mark.parametrize("name", ["ghostnet_100", "ghostnetv2_100", "ghostnetv3_100"])
def test_timm_taps_equal_timm_features(name, tmp_path):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from torch_refs import randomize

    reference = timm.create_model(name)
    randomize(reference, reference.classifier)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    theirs = timm.create_model(name, features_only=True).eval()
    # FeatureListNet flattens `blocks.i` to `blocks_i`; the head is not part of it.
    state = {k.replace("blocks.", "blocks_", 1): v for k, v in reference.state_dict().items()}
    state = {k: v for k, v in state.items() if k in theirs.state_dict()}
    assert set(state) == set(theirs.state_dict())
    theirs.load_state_dict(state)
    ours = keras_ghost.create_model(name, weights=str(path), features_only=True,
                                    feature_taps="timm", input_shape=SHAPE)
    info = keras_ghost.feature_info(ours)
    assert [i.channels for i in info] == theirs.feature_info.channels()
    assert [i.stride for i in info] == theirs.feature_info.reduction()
    x = images(SHAPE)
    with torch.no_grad():
        expected = [t.numpy().transpose(0, 2, 3, 1)
                    for t in theirs(torch.from_numpy(x.transpose(0, 3, 1, 2)))]
    got = as_numpy(ours(x))
    for (level, value), ref in zip(got.items(), expected):
        assert np.abs(ref).max() > 1e-1, level
        np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(),
                                   err_msg=level)


@pytest.mark.torch
@pytest.mark.parametrize("output_stride", [16, 8])
def test_output_stride_equals_timm_dilated_resnet34(output_stride, tmp_path):
    """timm's own dilated ResNet-34 (`output_stride=`), same torchvision-layout weights."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from torch_refs import randomize

    reference = timm.create_model("resnet34", output_stride=output_stride)
    randomize(reference, reference.fc)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    ours = keras_ghost.create_model("resnet34", weights=str(path), include_top=False,
                                    output_stride=output_stride, input_shape=SHAPE)
    x = images(SHAPE, batch=1)
    with torch.no_grad():
        expected = reference.forward_features(
            torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    got = keras.ops.convert_to_numpy(ours(x))
    assert got.shape == expected.shape == (1, SHAPE[0] // output_stride,
                                           SHAPE[1] // output_stride, 512)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
