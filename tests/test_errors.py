"""Bad input gets a clear error that names the problem and the fix."""

import numpy as np
import pytest

import keras_ghost
from keras_ghost.models.registry import get_spec
from keras_ghost.weights import loading


@pytest.mark.parametrize("width", [0, -1.0, "1.0", None, True])
def test_bad_width(width):
    with pytest.raises(ValueError, match="width must be a positive number"):
        keras_ghost.GhostNet(width=width)


def test_imagenet_weights_with_other_class_count_get_a_new_classifier(tmp_path, monkeypatch):
    """timm's `pretrained=True, num_classes=10`: the backbone from the (here: cached)
    reference conversion, a fresh 10-class classifier."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from keras_ghost.models.ghostnet import torch_name_rules
    from keras_ghost.weights import torch_convert

    torch.manual_seed(0)
    state = {k: v.numpy() for k, v in timm.create_model("ghostnetv2_100").state_dict().items()
             if not k.endswith("num_batches_tracked")}
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    loading.save_npz(torch_convert.group_by_layer(state, torch_name_rules()),
                     tmp_path / loading.CACHE_SUBDIR / "ghostnetv2_100.npz")
    model = keras_ghost.GhostNetV2(weights="imagenet", classes=10, input_shape=(64, 64, 3))
    assert model.output_shape == (None, 10)
    stem = model.get_layer("stem_conv").get_weights()[0]
    assert np.array_equal(stem, state["conv_stem.weight"].transpose(2, 3, 1, 0))


def test_imagenet_weights_for_unregistered_width():
    with pytest.raises(ValueError, match="registered variant with reference weights"):
        keras_ghost.GhostNet(width=0.75, weights="imagenet")


@pytest.mark.parametrize("shape", [(16, 16, 3), (224, 31, 3)])
def test_input_too_small(shape):
    with pytest.raises(ValueError, match="too small.*at least 32"):
        keras_ghost.GhostNetV2(input_shape=shape)


def test_bad_pooling():
    with pytest.raises(ValueError, match="pooling must be"):
        keras_ghost.GhostNet(include_top=False, pooling="mean")


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="Unknown model 'ghostnet_v2_100'.*'ghostnetv2_100'"):
        keras_ghost.create_model("ghostnet_v2_100")


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="Weights file not found"):
        keras_ghost.GhostNet(weights=tmp_path / "nope.weights.h5")


def test_keras_weights_of_another_variant(tmp_path):
    path = tmp_path / "half.weights.h5"
    keras_ghost.GhostNet(width=0.5, input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(ValueError, match=r"\(3, 3, 3, 16\).*\(3, 3, 3, 8\)"):
        keras_ghost.GhostNet(width=1.0, input_shape=(32, 32, 3), weights=path)


def _npz_of(model, path):
    """Writes a model's weights in the converted-checkpoint cache format (PyTorch layout)."""
    grouped = {}
    for layer in model.layers:
        if layer.weights:
            params = _torch_params(layer)
            grouped[layer.name] = {p: (f"{layer.name}.{p}", a) for p, a in params.items()}
    loading.save_npz(grouped, path)


def _torch_params(layer):
    import keras
    w = [v.numpy() for v in layer.weights]
    if isinstance(layer, keras.layers.BatchNormalization):
        return dict(zip(("weight", "bias", "running_mean", "running_var"), w))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, c, m = w[0].shape
        out = {"weight": w[0].transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)}
    elif isinstance(layer, keras.layers.Conv2D):
        out = {"weight": w[0].transpose(3, 2, 0, 1)}
    else:
        out = {"weight": w[0].T}
    if len(w) > 1:
        out["bias"] = w[1]
    return out


def test_converted_weights_of_another_variant_name_both_shapes(tmp_path):
    path = tmp_path / "v1_050.npz"
    _npz_of(keras_ghost.GhostNet(width=0.5, input_shape=(32, 32, 3)), path)
    with pytest.raises(ValueError, match=r"expects .*\(3, 3, 3, 16\).*has shape \(8, 3, 3, 3\)"):
        keras_ghost.GhostNet(width=1.0, input_shape=(32, 32, 3), weights=path)


def test_converted_weights_of_another_architecture(tmp_path):
    path = tmp_path / "v1.npz"
    _npz_of(keras_ghost.GhostNet(input_shape=(32, 32, 3)), path)
    with pytest.raises(ValueError, match="no weights for layer 'stage2_block0_ghost1_dfc_conv'"):
        keras_ghost.GhostNetV2(input_shape=(32, 32, 3), weights=path)


def test_npz_roundtrip_loads_exactly(tmp_path):
    path = tmp_path / "v2.npz"
    source = keras_ghost.GhostNetV2(input_shape=(32, 32, 3))
    _npz_of(source, path)
    target = keras_ghost.GhostNetV2(input_shape=(32, 32, 3), weights=path)
    x = np.random.RandomState(0).rand(1, 32, 32, 3).astype("float32")
    np.testing.assert_array_equal(target.predict(x, verbose=0), source.predict(x, verbose=0))


def test_imagenet_uses_the_converted_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    source = keras_ghost.GhostNet(input_shape=(32, 32, 3))
    _npz_of(source, tmp_path / loading.CACHE_SUBDIR / "ghostnet_100.npz")
    model = keras_ghost.GhostNet(weights="imagenet", input_shape=(32, 32, 3))
    x = np.random.RandomState(0).rand(1, 32, 32, 3).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), source.predict(x, verbose=0))


def test_imagenet_offline_says_how_to_pass_a_local_file(tmp_path, monkeypatch):
    import dataclasses
    from keras_ghost.models import registry

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # Port 9 on loopback refuses at once, as an offline machine does.
    spec = dataclasses.replace(get_spec("ghostnetv2_100"),
                               weights_url="http://127.0.0.1:9/ck_ghostnetv2_10.pth.tar")
    monkeypatch.setitem(registry._REGISTRY, "ghostnetv2_100", spec)
    with pytest.raises(RuntimeError, match=r"offline.*weights='/path/to/ck_ghostnetv2_10.pth.tar'"):
        keras_ghost.GhostNetV2(weights="imagenet", input_shape=(32, 32, 3))
    assert not list((tmp_path / loading.CACHE_SUBDIR).glob("*.npz"))


def test_corrupt_torch_checkpoint(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        keras_ghost.GhostNet(weights=path, input_shape=(32, 32, 3))


def test_ghost_module_rejects_bad_arguments():
    import keras
    with pytest.raises(ValueError, match="ratio >= 2"):
        keras_ghost.layers.ghost_module(keras.Input((8, 8, 4)), 8, ratio=1)


def test_argument_the_builder_does_not_take():
    # e.g. convert.py / train.py --width for a variant without a width multiplier
    with pytest.raises(ValueError, match=r"'resnet34' \(ResNet34\) takes no argument 'width'"):
        keras_ghost.create_model("resnet34", width=0.5)


def test_timm_argument_names_point_to_the_keras_applications_ones():
    with pytest.raises(TypeError, match=r"GhostNetV2\(\) got an unexpected keyword argument "
                                        r"'num_classes' \(the keras.applications name: "
                                        r"classes= for num_classes\)"):
        keras_ghost.GhostNetV2(num_classes=5)
    with pytest.raises(TypeError, match=r"'colour'\.$"):  # no alias: no hint
        keras_ghost.GGhostRegNet(colour=5)
    with pytest.raises(ValueError, match=r"takes no argument 'pretrained' \(the "
                                         r"keras.applications name: weights= for pretrained\)"):
        keras_ghost.create_model("ghostnet_050", pretrained=True)
