"""Every registered variant: fidelity goldens, forward, gradients, serialization."""

import functools

import numpy as np
import pytest

import keras_ghost
from helpers import (assert_builtin_layers_only, registry_sweep, run_config_roundtrip, run_forward,
                     run_save_load, run_train_step)

# Reference figures of ../shared/reference/ARCHITECTURES.md: trainable params as PyTorch
# counts them (exact) and MACs of conv/linear layers for one 224x224 image (within 1%).
GOLDEN = {
    "ghostnet_050": (2_587_292, 42.3e6),
    "ghostnet_100": (5_182_508, 141.2e6),
    "ghostnet_130": (7_358_820, 227.0e6),
    "ghostnetv2_100": (6_156_908, 167.0e6),
    "ghostnetv2_130": (8_960_404, 269.3e6),
    "ghostnetv2_160": (12_392_698, 398.6e6),
    # GhostNetV3 in training form: timm's parameter counts (ARCHITECTURES.md); MACs of every
    # branch (our count: the deployed form, tests/test_ghostnetv3.py, has V2's MACs).
    "ghostnetv3_050": (3_395_384, 117.5e6),
    "ghostnetv3_100": (8_129_028, 404.1e6),
    "ghostnetv3_130": (12_217_720, 654.8e6),
    "ghostnetv3_160": (17_275_700, 971.6e6),
    # C-Ghost plug-in models at their registered input size (32x32 for CIFAR). Plain nets:
    # counted by hand from the papers' definitions (He et al. option-A ResNet-56: 853,018;
    # Li et al. VGG-16: 14,987,722); ghost ones: our counts, checked against the GhostNet
    # paper's rounded figures in tests/test_ghost_plugin.py.
    "resnet56_cifar": (853_018, 125.5e6),
    "ghost_resnet56_cifar": (438_010, 65.1e6),
    "vgg16_cifar": (14_987_722, 313.5e6),
    "ghost_vgg16_cifar": (7_651_498, 158.1e6),
    "ghost_resnet50_s2": (13_953_576, 2033.0e6),
    "ghost_resnet50_s4": (8_151_816, 1120.6e6),
    # AsymmNet: PyTorch port's counts; 0.35x / 1.25x (not in ARCHITECTURES.md) counted on
    # tests/torch_refs/asymmnet.py, which builds the port's modules.
    "asymmnet_large_035": (2_207_376, 42.6e6),
    "asymmnet_large_050": (2_844_976, 67.2e6),
    "asymmnet_large_075": (4_290_672, 142.1e6),
    "asymmnet_large_100": (6_076_608, 216.9e6),
    "asymmnet_large_125": (8_391_712, 349.8e6),
    "asymmnet_small_035": (1_735_032, 15.2e6),
    "asymmnet_small_050": (1_964_472, 20.6e6),
    "asymmnet_small_075": (2_495_128, 40.8e6),
    "asymmnet_small_100": (3_131_896, 57.7e6),
    "asymmnet_small_125": (3_974_672, 91.7e6),
    # G-GhostNet: released G-Ghost RegNetX (ARCHITECTURES.md). ResNet34: torchvision's
    # count; G-Ghost ResNet34 (no released code): counted on tests/torch_refs/g_ghost_regnet.py.
    "g_ghost_regnetx_002": (1_825_440, 130.9e6),
    "g_ghost_regnetx_004": (2_884_456, 221.2e6),
    "g_ghost_regnetx_006": (4_029_776, 389.8e6),
    "g_ghost_regnetx_008": (5_248_328, 528.6e6),
    "g_ghost_regnetx_016": (7_109_660, 1021.4e6),
    "g_ghost_regnetx_032": (10_511_000, 1801.7e6),
    "g_ghost_regnetx_040": (15_726_268, 2228.4e6),
    "g_ghost_regnetx_064": (17_993_748, 4055.3e6),
    "g_ghost_regnetx_080": (24_586_928, 4149.7e6),
    "g_ghost_regnetx_120": (30_627_208, 7377.5e6),
    "g_ghost_regnetx_160": (32_381_704, 8997.4e6),
    "g_ghost_regnetx_320": (62_815_448, 17157.8e6),
    "resnet34": (21_797_672, 3663.8e6),
    "g_ghost_resnet34": (14_759_848, 2459.9e6),
    "g_ghost_resnet34_nomix": (14_360_744, 2459.5e6),
}
MODELS = keras_ghost.list_models()


def test_every_variant_has_a_golden():
    assert sorted(GOLDEN) == MODELS


@functools.lru_cache(maxsize=None)
def _profile(name):
    """Built once per variant: the goldens and the README table use the same counts."""
    return keras_ghost.profile(keras_ghost.create_model(name))


@pytest.mark.parametrize("name", MODELS)
def test_params_and_macs_match_reference(name):
    params, macs = GOLDEN[name]
    profile = _profile(name)
    assert profile.params == params
    assert abs(profile.macs - macs) / macs < 0.01, profile.macs


@pytest.mark.parametrize("name", MODELS)
def test_forward_train_step_and_structure(name):
    model = keras_ghost.create_model(name, input_shape=(32, 32, 3), classes=10)
    run_forward(model)
    assert_builtin_layers_only(model)
    run_train_step(model, classes=10)


@pytest.mark.parametrize("name", registry_sweep(everything=False))
@pytest.mark.parametrize("shape", [(33, 47, 3), (64, 40, 3), (97, 97, 3)])
def test_non_square_and_odd_sizes(name, shape):
    model = keras_ghost.create_model(name, input_shape=shape, include_top=False, pooling="avg")
    _, features = run_forward(model)
    assert features.shape[1] == model.output_shape[-1]


@pytest.mark.parametrize("name", registry_sweep(everything=False))
def test_config_roundtrip_and_save_load(name, tmp_path):
    model = keras_ghost.create_model(name, input_shape=(48, 48, 3), classes=7)
    run_config_roundtrip(model)
    run_save_load(model, tmp_path)


@pytest.mark.parametrize("name", registry_sweep(everything=False))
def test_any_size_model_equals_the_fixed_size_one(name):
    """A (None, None, 3) model at 32x32 (1x1 maps in the last stage: GhostNetV2's DFC gate
    must not pool there), 33x33 and 57x40 computes what a model built for that size does."""
    import keras

    from helpers import randomize_bn

    keras.utils.set_random_seed(0)
    dynamic = randomize_bn(keras_ghost.create_model(name, input_shape=(None, None, 3),
                                                    classifier_activation=None))
    for size in [(32, 32), (33, 33), (57, 40)]:
        fixed = keras_ghost.create_model(name, input_shape=(*size, 3), classifier_activation=None)
        fixed.set_weights(dynamic.get_weights())
        x = np.random.default_rng(size[1]).standard_normal((2, *size, 3)).astype("float32")
        expected = np.asarray(fixed(x, training=False))
        scale = np.abs(expected).max()
        assert scale > 1e-3, "outputs too small to compare"
        for actual in (np.asarray(dynamic(x, training=False)), dynamic.predict(x, verbose=0)):
            np.testing.assert_allclose(actual, expected, atol=1e-5 * scale, rtol=0)


def test_dynamic_input_size():
    model = keras_ghost.GhostNetV2(input_shape=(None, None, 3), include_top=False, pooling="max")
    for size in [(64, 64), (70, 90)]:
        out = model.predict(np.zeros((1, *size, 3), "float32"), verbose=0)
        assert out.shape == (1, model.output_shape[-1])


def test_keras_applications_signature():
    model = keras_ghost.GhostNet(width=1.3, input_shape=(160, 192, 3), classes=10)
    assert model.output_shape == (None, 10)
    assert model.name == "ghostnet_130"
    assert np.allclose(model.predict(np.zeros((1, 160, 192, 3)), verbose=0).sum(), 1.0, atol=1e-5)

    features = keras_ghost.create_model("ghostnetv2_160", include_top=False)
    assert features.output_shape == (None, 7, 7, 1536)
    pooled = keras_ghost.create_model("ghostnetv2_160", include_top=False, pooling="avg")
    assert pooled.output_shape == (None, 1536)

    custom = keras_ghost.GhostNet(width=0.75)  # any positive width builds
    assert custom.name == "ghostnet_w0.75"

    import keras
    tensor = keras.Input((64, 64, 3))
    on_tensor = keras_ghost.GhostNet(input_tensor=tensor, classes=3, classifier_activation=None)
    assert on_tensor.inputs[0] is tensor


# The keras.applications arguments every builder takes, with their keras.applications
# defaults (classes and dropout_rate: the builder's own).
APPLICATION_DEFAULTS = dict(include_top=True, weights=None, input_shape=None, input_tensor=None,
                            pooling=None, classifier_activation="softmax",
                            include_preprocessing=False, name=None)
APPLICATION = {*APPLICATION_DEFAULTS, "classes", "dropout_rate"}
BUILDERS = sorted({keras_ghost.get_spec(name).builder for name in MODELS},
                  key=lambda b: b.__name__)


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_builders_take_and_document_the_shared_arguments(builder):
    """Every builder takes the shared keras.applications arguments (and `width` where its
    variants are defined by one), with the same defaults, and documents each of its
    arguments (the shared ones come from one block) or points to the builder whose
    arguments it shares."""
    import inspect

    doc, params = inspect.getdoc(builder), inspect.signature(builder).parameters
    by_width = any("width" in keras_ghost.get_spec(n).kwargs for n in MODELS
                   if keras_ghost.get_spec(n).builder is builder)
    shared = APPLICATION | ({"width"} if by_width else set())
    assert not shared - set(params), sorted(shared - set(params))
    assert {k: params[k].default for k in APPLICATION_DEFAULTS} == APPLICATION_DEFAULTS

    assert doc and "{application_args}" not in doc
    if "Args:" in doc:
        missing = [p for p in params if f"\n    {p}: " not in doc]
    elif "as in keras.applications" in doc:  # and its own arguments in the text
        missing = [p for p in params if p not in APPLICATION and f"`{p}`" not in doc]
    else:
        assert "Same arguments as `" in doc
        missing = []
    assert not missing, missing


def test_preprocessing_inside_graph_matches_preprocess_input():
    raw = np.random.RandomState(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    inside = keras_ghost.GhostNet(input_shape=(64, 64, 3), include_preprocessing=True)
    outside = keras_ghost.GhostNet(input_shape=(64, 64, 3))
    outside.set_weights([w for l in inside.layers if l.name != "preprocess" for w in l.get_weights()])
    expected = outside.predict(keras_ghost.preprocess_input(raw, "ghostnet_100"), verbose=0)
    np.testing.assert_allclose(inside.predict(raw, verbose=0), expected, atol=1e-5)


def test_profile_table_and_dynamic_models():
    model = keras_ghost.GhostNet(input_shape=(None, None, 3), include_top=False)
    with pytest.raises(ValueError, match="input_shape"):
        keras_ghost.profile(model)
    at_224 = keras_ghost.profile(model, input_shape=(224, 224, 3))
    static = keras_ghost.profile(keras_ghost.GhostNet(include_top=False))
    assert (at_224.params, at_224.macs, at_224.activations) == (
        static.params, static.macs, static.activations)
    stem = next(p for p in static.layers if p.name == "stem_conv")
    assert stem.macs == 112 * 112 * 3 * 3 * 3 * 16 and stem.activations == 112 * 112 * 16
    table = static.table()
    assert "stem_conv" in table and f"{static.macs:,}" in table.splitlines()[-1]


def test_readme_table_is_generated_from_the_registry():
    from conftest import REPO
    from keras_ghost.models.table import markdown_table

    assert markdown_table(profiler=_profile) in (REPO / "README.md").read_text()


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_weights_argument_loads_keras_files(suffix, tmp_path):
    source = keras_ghost.GhostNetV2(input_shape=(40, 40, 3), classes=5)
    path = tmp_path / f"trained{suffix}"
    source.save_weights(path) if suffix == ".weights.h5" else source.save(path)
    loaded = keras_ghost.GhostNetV2(input_shape=(40, 40, 3), classes=5, weights=path)
    x = np.random.RandomState(3).rand(2, 40, 40, 3).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), source.predict(x, verbose=0))


def test_ghostnetv3_save_load_and_deployed_save_load(tmp_path):
    """GhostNetV3 is in SLOW_FAMILIES (its sweeps run with -m slow): its training form and
    its re-parameterized form both load from `.keras` with safe_mode and compute the same.
    Eager calls, not predict: tracing the 892-layer graph costs more than the check."""
    import keras

    from helpers import randomize_bn

    model = randomize_bn(keras_ghost.create_model("ghostnetv3_050", input_shape=(48, 48, 3),
                                                  classes=7, classifier_activation=None))
    deployed = keras_ghost.reparameterize(model, name="ghostnetv3_050_deployed")
    x = np.random.RandomState(0).uniform(-1, 1, (2, 48, 48, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    assert np.abs(expected).max() > 1e-3
    for m in (model, deployed):
        path = tmp_path / f"{m.name}.keras"
        m.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        assert [layer.name for layer in loaded.layers] == [layer.name for layer in m.layers]
        np.testing.assert_allclose(np.asarray(loaded(x, training=False)), expected,
                                   atol=1e-5 * np.abs(expected).max())
