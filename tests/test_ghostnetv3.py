"""GhostNetV3 against timm's `ghostnetv3_*` (1.0.31) in both forms: the training form loads
timm's and the official state_dicts and gives the same logits; `reparameterize` gives
timm's `convert_to_deploy()` model (same parameter count, same logits)."""

import copy

import numpy as np
import pytest

import keras_ghost

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytestmark = pytest.mark.torch

# Trainable parameters of timm's models (ARCHITECTURES.md, measured with timm 1.0.31):
# training form -> convert_to_deploy().
TIMM_PARAMS = {
    "ghostnetv3_050": (3_395_384, 2_853_176),
    "ghostnetv3_100": (8_129_028, 6_147_588),
    "ghostnetv3_130": (12_217_720, 8_948_296),
    "ghostnetv3_160": (17_275_700, 12_377_778),
}
# The default run checks the 1.0x (the released weights); all four under -m slow.
SWEEP = [pytest.param(n, marks=() if n == "ghostnetv3_100"
                      else (pytest.mark.slow,), id=n) for n in sorted(TIMM_PARAMS)]


def test_registry_has_the_timm_variants():
    assert keras_ghost.list_models("ghostnetv3*") == sorted(TIMM_PARAMS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """timm model with randomized BN and a scaled classifier, and its state_dict file."""
    from torch_refs import randomize

    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            model = timm.create_model(name)
            randomize(model, model.classifier, 0)
            path = tmp_path_factory.mktemp(name) / f"{name}.pth"
            torch.save(model.state_dict(), path)
            cache[name] = (model, path)
        return cache[name]

    return get


@pytest.mark.parametrize("name", SWEEP)
def test_both_forms_match_timm(name, reference):
    """Training form: params equal, logits within 1e-4 at 224x224 and 193x257 with timm's
    weights. Deployed form (`reparameterize`): params equal to timm's deployed model,
    logits equal to it."""
    from torch_refs import assert_same_logits

    model_ref, path = reference(name)
    train_params, deploy_params = TIMM_PARAMS[name]
    assert sum(p.numel() for p in model_ref.parameters()) == train_params
    deployed_ref = copy.deepcopy(model_ref)
    deployed_ref.convert_to_deploy()
    assert sum(p.numel() for p in deployed_ref.parameters()) == deploy_params

    for size in [(224, 224), (193, 257)]:
        model = keras_ghost.create_model(name, weights=str(path), input_shape=(*size, 3),
                                         classifier_activation=None)
        assert keras_ghost.profile(model).params == train_params
        assert_same_logits(model, model_ref, size, name)
    deployed = keras_ghost.reparameterize(model)
    assert keras_ghost.profile(deployed).params == deploy_params
    # Deployed, it is GhostNetV2's graph: the same MACs.
    width = keras_ghost.get_spec(name).kwargs["width"]
    v2 = keras_ghost.GhostNetV2(width=width, input_shape=(*size, 3))
    assert keras_ghost.profile(deployed).macs == keras_ghost.profile(v2).macs
    assert_same_logits(deployed, deployed_ref, size, f"{name} deployed")
    # Deployed: no multi-branch sum and no BN left inside the ghost modules and dw convs.
    names = [layer.name for layer in deployed.layers]
    assert not [n for n in names if "_branch" in n or "_scale_" in n or n.endswith("_skip")]
    assert "stage1_block0_dw_conv" in names and "stage8_block3_ghost2_cheap_conv" in names


def test_official_checkpoint_key_names(reference, tmp_path):
    """The official ghostnetv3_pytorch names a branch's BN `bn` (timm: `bn1`), and its files
    wrap the weights in 'state_dict' with 'module.' prefixes and thop's counters."""
    from torch_refs import save_official_checkpoint

    model_ref, _ = reference("ghostnetv3_100")
    state = {}
    for key, value in model_ref.state_dict().items():
        if "_rpr_" in key:
            key = key.replace(".bn1.", ".bn.")  # the inverse of timm's checkpoint_filter_fn
        state[key] = value
    assert any(".primary_rpr_conv.0.bn.weight" in k for k in state)
    path = tmp_path / "ghostnetv3-1.0.pth.tar"
    save_official_checkpoint(path, model_ref, state, epoch=600)
    model = keras_ghost.GhostNetV3(weights=str(path), input_shape=(64, 80, 3),
                                   classifier_activation=None)
    x = np.random.RandomState(1).randn(2, 64, 80, 3).astype("float32")
    with torch.no_grad():
        theirs = model_ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert np.abs(theirs).max() > 1.0
    np.testing.assert_allclose(model.predict(x, verbose=0), theirs, atol=1e-4)


def test_ghost_module_v3_matches_timm(tmp_path):
    """The block alone, at an odd map size, in both DFC modes and without ReLU."""
    import keras
    from timm.models.ghostnet import GhostModuleV3
    from torch_refs import randomize

    from keras_ghost.models.ghostnet import v3_torch_name_rules

    for mode, relu in (("shortcut", True), ("original", False)):
        torch.manual_seed(0)
        ref = GhostModuleV3(6, 12, mode=mode,
                            act_layer=torch.nn.ReLU if relu else torch.nn.Identity)
        conv = torch.nn.Conv2d(1, 1, 1)  # randomize() scales a classifier; a dummy here
        randomize(ref, conv)
        path = tmp_path / f"{mode}.pth"
        torch.save({f"m.{k}": v for k, v in ref.state_dict().items()}, path)
        inputs = keras.Input((9, 11, 6))
        outputs = keras_ghost.layers.ghost_module(inputs, 12, relu=relu, branches=3,
                                                  dfc=mode == "shortcut", name="m")
        model = keras.Model(inputs, outputs)
        keras_ghost.weights.load_weights(model, str(path), torch_rules=v3_torch_name_rules())
        x = np.random.RandomState(0).randn(2, 9, 11, 6).astype("float32")
        with torch.no_grad():
            theirs = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(model.predict(x, verbose=0), theirs, atol=1e-5)
        deployed = keras_ghost.reparameterize(model)
        np.testing.assert_allclose(deployed.predict(x, verbose=0), theirs, atol=1e-5)
