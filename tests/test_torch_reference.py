"""Numerical equivalence with the reference PyTorch implementation (timm's ghostnet.py).

timm's models use the official huawei-noah key names, so loading their state_dict
through `weights=` exercises the same converter as the released checkpoints.
"""

import numpy as np
import pytest

import keras_ghost

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytestmark = pytest.mark.torch


def randomized_reference(name, seed=0):
    """timm model in eval mode with non-trivial BN statistics and large logits, so that
    a wrong conversion cannot hide under a small tolerance."""
    from torch_refs import randomize

    torch.manual_seed(seed)
    model = timm.create_model(name)
    return randomize(model, model.classifier, seed)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            model = randomized_reference(name)
            path = tmp_path_factory.mktemp(name) / f"{name}.pth"
            torch.save(model.state_dict(), path)
            cache[name] = (model, path)
        return cache[name]

    return get


# timm implements GhostNet / GhostNetV2 under our variant names; the other families are
# compared with their own references (tests/torch_refs/).
TIMM_MODELS = [n for n in keras_ghost.list_models()
               if keras_ghost.get_spec(n).family in ("GhostNet", "GhostNetV2")]


@pytest.mark.parametrize("name", TIMM_MODELS)
@pytest.mark.parametrize("size", [(224, 224), (193, 257)])
def test_logits_match_timm(name, size, checkpoints):
    from torch_refs import assert_same_logits

    reference, path = checkpoints(name)
    model = keras_ghost.create_model(name, weights=str(path), input_shape=(*size, 3),
                                     classifier_activation=None)
    assert_same_logits(model, reference, size, name)


def test_official_checkpoint_layout(checkpoints, tmp_path):
    """Official GhostNetV2 files wrap the weights in 'state_dict', may carry a 'module.'
    prefix and thop's total_ops/total_params counters; all of that must load."""
    reference, _ = checkpoints("ghostnetv2_100")
    from torch_refs import save_official_checkpoint

    path = tmp_path / "ck_ghostnetv2_10.pth.tar"
    save_official_checkpoint(path, reference, reference.state_dict(), epoch=450)
    model = keras_ghost.GhostNetV2(weights=str(path), input_shape=(64, 64, 3),
                                   classifier_activation=None)
    x = np.random.RandomState(1).randn(1, 64, 64, 3).astype("float32")
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), theirs, atol=1e-4)


def test_include_top_false_skips_the_head(checkpoints):
    reference, path = checkpoints("ghostnet_100")
    model = keras_ghost.GhostNet(weights=str(path), include_top=False, input_shape=(64, 64, 3))
    x = np.random.RandomState(2).randn(1, 64, 64, 3).astype("float32")
    with torch.no_grad():
        theirs = reference.forward_features(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), theirs.transpose(0, 2, 3, 1),
                               atol=1e-4)


@pytest.mark.parametrize("out_channels,ratio,dw_size", [(7, 2, 3), (10, 3, 5), (1, 2, 3)])
def test_ghost_module_odd_channels_matches_timm(out_channels, ratio, dw_size, tmp_path):
    import keras
    from timm.models.ghostnet import GhostModule

    torch.manual_seed(0)
    reference = GhostModule(6, out_channels, ratio=ratio, dw_size=dw_size).eval()
    path = tmp_path / "module.pth"
    torch.save({f"m.{k}": v for k, v in reference.state_dict().items()}, path)

    inputs = keras.Input((9, 11, 6))
    outputs = keras_ghost.layers.ghost_module(inputs, out_channels, ratio=ratio, dw_size=dw_size,
                                              name="m")
    model = keras.Model(inputs, outputs)
    from keras_ghost.models.ghostnet import torch_name_rules
    keras_ghost.weights.load_weights(model, str(path), torch_rules=torch_name_rules())
    x = np.random.RandomState(0).randn(2, 9, 11, 6).astype("float32")
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert model.output_shape[-1] == out_channels
    np.testing.assert_allclose(model.predict(x, verbose=0), theirs.transpose(0, 2, 3, 1), atol=1e-5)
