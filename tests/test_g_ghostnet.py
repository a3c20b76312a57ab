"""G-GhostNet: the G-Ghost stage, its RegNetX / ResNet34 models and their plain baselines.

Goldens of every registered variant live in test_models.py (GOLDEN); the sweeps there
cover forward, train step, odd sizes and save/load. Here: the stage's structure, the mix
ablation, other block types, parity of the plain models with keras.applications and
torchvision, and logits against a PyTorch reference with the released key names.
"""

import keras
import numpy as np
import pytest

import keras_ghost
from helpers import random_images, run_forward, run_save_load, run_train_step
from keras_ghost.layers import basic_block, g_ghost_stage, ghost_bottleneck, x_block
from keras_ghost.models.g_ghostnet import REGNETX_CONFIGS


def _stage_model(block, filters, depth, shape=(16, 16, 24), **kwargs):
    inputs = keras.Input(shape)
    outputs = g_ghost_stage(inputs, block, filters, depth, name="s", **kwargs)
    return keras.Model(inputs, outputs)


def _channels(model, layer_name):
    return model.get_layer(layer_name).output.shape[-1]


@pytest.mark.parametrize("filters,depth,group_width", [(152, 4, 8), (432, 15, 48), (90, 3, 16)])
def test_stage_split_follows_released_rule(filters, depth, group_width):
    model = _stage_model(x_block, filters, depth, group_width=group_width)
    narrow = int(group_width * 0.75)
    raw = int(filters * 0.5 / narrow) * narrow
    assert _channels(model, "s_complex_split") == raw
    assert _channels(model, "s_cheap_conv") == filters - raw
    assert model.get_layer("s_mix_reduce_conv").input.shape[-1] == filters + raw * (depth - 2)
    # Full-width blocks keep the stage's group width, the complex path the narrower one.
    assert model.get_layer("s_first_conv2_conv").groups == filters // group_width
    assert model.get_layer("s_last_conv2_conv").groups == filters // group_width
    assert model.get_layer("s_complex_block0_conv2_conv").groups == raw // narrow
    assert len([l for l in model.layers if l.name.endswith("_conv2_conv")]) == depth
    assert model.output_shape == (None, 8, 8, filters)
    # XNNPACK delegates concats of at most 5 inputs; the mix of deep stages is nested.
    concats = [l for l in model.layers if isinstance(l, keras.layers.Concatenate)]
    assert max(len(l._inbound_nodes[0].input_tensors) for l in concats) <= 5


def _cheap_output_depends_on_complex_path(model, stage):
    """Whether changing the complex path's weights changes the stage's cheap features."""
    probe = keras.Model(model.inputs, model.get_layer(f"{stage}_cheap_relu").output)
    x = random_images(model.input_shape[1:], seed=1)
    before = probe.predict(x, verbose=0)
    kernel = model.get_layer(f"{stage}_complex_block0_conv1_conv").kernel
    kernel.assign(kernel.numpy() * -3.0)
    return not np.allclose(before, probe.predict(x, verbose=0))


def test_mix_ablation():
    with_mix = keras_ghost.GGhostRegNet("002", input_shape=(64, 64, 3))
    without = keras_ghost.GGhostRegNet("002", mix=False, input_shape=(64, 64, 3))
    assert without.name == "g_ghost_regnetx_002_nomix"
    assert not [l.name for l in without.layers if "_mix_" in l.name]
    mix_params = sum(int(np.prod(w.shape)) for l in with_mix.layers if "_mix_" in l.name
                     for w in l.trainable_weights)
    assert mix_params > 0
    assert with_mix.count_params() - without.count_params() == (
        mix_params + sum(int(np.prod(w.shape)) for l in with_mix.layers if "_mix_" in l.name
                         for w in l.non_trainable_weights))
    # The mix is what lets the deep path inform the cheap features.
    assert _cheap_output_depends_on_complex_path(with_mix, "stage3")
    assert not _cheap_output_depends_on_complex_path(without, "stage3")


def test_resnet34_mix_ablation_registered():
    with_mix = keras_ghost.profile(keras_ghost.create_model("g_ghost_resnet34"))
    without = keras_ghost.profile(keras_ghost.create_model("g_ghost_resnet34_nomix"))
    # Per G-Ghost stage (filters C, depth n, raw = C/2, cheap c = C - raw): the mix adds
    # (C + raw (n - 2)) c + c^2 conv weights and 2 BNs of c channels.
    expected = sum((c + c // 2 * (n - 2)) * (c - c // 2) + (c - c // 2) ** 2 + 4 * (c - c // 2)
                   for n, c in [(4, 128), (6, 256), (3, 512)])
    assert with_mix.params - without.params == expected


def _ghost_block(x, filters, strides=1, name="block"):
    return ghost_bottleneck(x, mid_channels=2 * filters, out_channels=filters, strides=strides,
                            name=name)


def test_stage_over_another_block_type(tmp_path):
    """Any block function: here GhostNet's ghost bottleneck, cheap ratio 0.25."""
    inputs = keras.Input((32, 32, 16))
    x = g_ghost_stage(inputs, _ghost_block, 40, 4, cheap_ratio=0.25, name="s")
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    assert _channels(model, "s_complex_split") == 30
    assert _channels(model, "s_cheap_conv") == 10
    assert model.get_layer("s_complex_block1_ghost1_primary_conv").input.shape[-1] == 30
    assert model.get_layer("s_first_dw_conv").strides == (2, 2)
    run_forward(model)
    run_train_step(model, classes=5)
    run_save_load(model, tmp_path)


def test_basic_block_stage_has_no_rounding_multiple():
    model = _stage_model(basic_block, 50, 3, cheap_ratio=0.3)
    assert _channels(model, "s_complex_split") == 35
    assert _channels(model, "s_cheap_conv") == 15


@pytest.mark.parametrize("kwargs,match", [
    (dict(depth=2), "depth >= 3"),
    (dict(cheap_ratio=1.0), "cheap_ratio"),
    (dict(group_width=1), "group_width"),
])
def test_stage_rejects_bad_arguments(kwargs, match):
    args = dict(block=x_block, filters=64, depth=4, group_width=16)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        _stage_model(**args)


def test_builder_errors():
    with pytest.raises(ValueError, match="Unknown RegNetX variant '033'.*032"):
        keras_ghost.GGhostRegNet("033")
    with pytest.raises(ValueError, match="cheap_ratio"):
        keras_ghost.GGhostResNet34(cheap_ratio=0)
    with pytest.raises(ValueError, match="weights='imagenet' needs a registered variant"):
        keras_ghost.GGhostRegNet("002", weights="imagenet")  # no released checkpoint


def test_names_and_registered_weights():
    assert keras_ghost.RegNetX("002", input_shape=(64, 64, 3)).name == "regnetx_002"
    assert keras_ghost.GGhostResNet34(cheap_ratio=0.25, input_shape=(64, 64, 3)).name == (
        "g_ghost_resnet34_r0.25")
    released = {n for n in keras_ghost.list_models("g_ghost_regnetx_*")
                if keras_ghost.get_spec(n).weights_url}
    assert released == {f"g_ghost_regnetx_{v}" for v in ("032", "040", "080", "160")}


def _conv_table_and_macs(model):
    """Conv (kernel shape, groups, strides) sorted, and conv + dense MACs for one image;
    works on Keras 3 and tf_keras models alike."""
    convs, macs = [], 0
    for layer in model.layers:
        if type(layer).__name__ == "Conv2D":
            kernel = tuple(layer.kernel.shape)
            convs.append((kernel, layer.groups, tuple(layer.strides)))
            macs += int(np.prod(layer.output.shape[1:])) * int(np.prod(kernel[:3]))
        elif type(layer).__name__ == "Dense":
            macs += int(np.prod(layer.kernel.shape))
    return sorted(convs), macs


@pytest.mark.parametrize("variant", ["002", "004", "032"])
def test_plain_regnetx_matches_keras_applications(variant):
    """G-Ghost off = RegNetX. Keras 3.15 dropped RegNet from keras.applications; tf_keras
    still ships the same code (tf_keras.applications.RegNetX*). It has the same stem
    (3x3/2 to 32), X blocks and head (global pool + Dense), pads "same" where we pad like
    PyTorch, and adds a parameter-free Rescaling layer. So trainable params, every conv's
    kernel shape, groups and stride, and the MACs must be equal."""
    tf_keras = pytest.importorskip("tf_keras")
    theirs = getattr(tf_keras.applications, f"RegNetX{variant}")(weights=None)
    ours = keras_ghost.RegNetX(variant)
    assert _conv_table_and_macs(ours) == _conv_table_and_macs(theirs)
    theirs_params = sum(int(np.prod(w.shape)) for w in theirs.trainable_weights)
    ours_profile = keras_ghost.profile(ours)
    assert ours_profile.params == theirs_params
    assert ours_profile.macs == _conv_table_and_macs(theirs)[1]
    g_ghost = keras_ghost.profile(keras_ghost.GGhostRegNet(variant))
    assert g_ghost.params < ours_profile.params and g_ghost.macs < ours_profile.macs


@pytest.mark.torch
@pytest.mark.parametrize("variant", ["002", "032"])
def test_plain_regnetx_params_match_timm(variant):
    timm = pytest.importorskip("timm")
    reference = timm.create_model(f"regnetx_{variant}")
    ours = keras_ghost.profile(keras_ghost.RegNetX(variant))
    assert ours.params == sum(p.numel() for p in reference.parameters())


def test_regnetx_configs_match_keras_applications():
    regnet = pytest.importorskip("tf_keras.src.applications.regnet")
    for variant, config in REGNETX_CONFIGS.items():
        theirs = regnet.MODEL_CONFIGS[f"x{variant}"]
        assert [s.depth for s in config.stages] == theirs["depths"], variant
        assert [s.filters for s in config.stages] == theirs["widths"], variant
        assert config.group_width == theirs["group_width"], variant


# ---------------------------------------------------------------- PyTorch reference


def _randomized(model, seed=0):
    """Eval mode, non-trivial BN statistics and large logits, so that a wrong conversion
    cannot hide under the tolerance."""
    from torch_refs import randomize

    return randomize(model, model.fc, seed)


def _reference(name):
    import torchvision
    from torch_refs import g_ghost_regnet as refs

    builders = {
        "g_ghost_regnetx_002": lambda: refs.g_ghost_regnetx("002"),
        "g_ghost_regnetx_032": lambda: refs.g_ghost_regnetx("032"),
        "g_ghost_resnet34": refs.g_ghost_resnet34,
        "g_ghost_resnet34_nomix": lambda: refs.g_ghost_resnet34(mix=False),
        "resnet34": lambda: torchvision.models.resnet34(),
    }
    return builders[name]()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch = pytest.importorskip("torch")
    cache = {}

    def get(name):
        if name not in cache:
            model = _randomized(_reference(name))
            path = tmp_path_factory.mktemp(name) / f"{name}.pth"
            torch.save(model.state_dict(), path)
            cache[name] = (model, path)
        return cache[name]

    return get


@pytest.mark.torch
@pytest.mark.parametrize("name,size", [
    ("g_ghost_regnetx_002", (224, 224)),
    ("g_ghost_regnetx_002", (193, 257)),
    ("g_ghost_regnetx_032", (193, 257)),
    ("g_ghost_resnet34", (224, 224)),
    ("g_ghost_resnet34", (193, 257)),
    ("g_ghost_resnet34_nomix", (161, 130)),
    ("resnet34", (193, 257)),
])
def test_logits_match_torch_reference(name, size, checkpoints):
    pytest.importorskip("torch")
    from torch_refs import assert_same_logits

    reference, path = checkpoints(name)
    model = keras_ghost.create_model(name, weights=str(path), input_shape=(*size, 3),
                                     classifier_activation=None)
    assert_same_logits(model, reference, size, name)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["g_ghost_regnetx_002", "g_ghost_resnet34",
                                  "g_ghost_resnet34_nomix", "resnet34"])
def test_params_and_macs_match_torch_reference(name):
    """Counted on the PyTorch side with forward hooks: the goldens of the ResNet34 family
    come from here, and grouped convs are counted the same way on both sides."""
    torch = pytest.importorskip("torch")
    reference = _reference(name).eval()
    macs = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs.append(output.numel() * kh * kw * module.in_channels // module.groups)
        elif isinstance(module, torch.nn.Linear):
            macs.append(output.numel() * module.in_features)

    for module in reference.modules():
        module.register_forward_hook(count)
    with torch.no_grad():
        reference(torch.zeros(1, 3, 224, 224))
    ours = keras_ghost.profile(keras_ghost.create_model(name))
    assert ours.params == sum(p.numel() for p in reference.parameters())
    assert ours.macs == sum(macs)


@pytest.mark.torch
def test_features_without_top_match_reference(checkpoints):
    torch = pytest.importorskip("torch")
    reference, path = checkpoints("g_ghost_regnetx_002")
    model = keras_ghost.GGhostRegNet("002", weights=str(path), include_top=False,
                                     input_shape=(96, 80, 3))
    x = np.random.RandomState(2).randn(1, 96, 80, 3).astype("float32")
    with torch.no_grad():
        t = reference.conv1(torch.from_numpy(x.transpose(0, 3, 1, 2)))
        t = torch.relu(reference.bn1(t))
        for index in range(1, 5):
            t = getattr(reference, f"layer{index}")(t)
    np.testing.assert_allclose(model.predict(x, verbose=0), t.numpy().transpose(0, 2, 3, 1),
                               atol=1e-4)
