"""Multi-scale features for detection and segmentation: `features_only`, `feature_levels`
and `output_stride` of every builder.

A family declares its taps in one place: a `FeatureTaps` that names, for each level
`Pn` (stride 2**n, keras-hub's convention), the layer whose output is that level. The
default taps end each resolution (the last layer before the next stride); GhostNet also
offers timm's taps (`features_only` of timm: the stem conv before its BN and the strided
block of each stage). `finish` turns a built classifier-less model into the feature model.

`output_stride` 16 or 8 keeps the last stages at that resolution by dilation (DeepLab's
"atrous" backbones, timm's `output_stride`): `dilate` rewrites a built functional graph, so
it works for every family, ghostify's included. The rewrite is exact: every conv, BN,
activation, add and concat of a dilated stage, sampled every `2**k` pixels, gives the
undilated network's map (tests check it); global pools (SE, the G-Ghost mix) pool the
whole dilated map, as timm's dilated networks do. Branches that leave the trunk's
resolution and are resized back to it (GhostNetV2's DFC gate: 2x2/2 pool, convs, nearest
upsample) run per phase: the dilated map is split into its `d x d` sub-grids (`PhaseSplit`),
the branch runs on each as in the undilated net, and the results are interleaved back
(`PhaseMerge`), which is what a dilated conv computes, too.
"""

import dataclasses
from typing import Mapping, Optional, Tuple

LEVELS = ("P1", "P2", "P3", "P4", "P5")
OUTPUT_STRIDES = (8, 16, 32)
TAPS = ("default", "timm")


@dataclasses.dataclass(frozen=True)
class FeatureTaps:
    """The layer each feature level taps, by tap set: `levels["default"]["P3"]` is a layer
    name. A family without timm taps has only "default"."""

    levels: Mapping[str, Mapping[str, str]]

    def names(self, taps="default"):
        if taps not in self.levels:
            raise ValueError(f"taps must be one of {', '.join(map(repr, self.levels))}, got "
                             f"{taps!r}.")
        return self.levels[taps]


@dataclasses.dataclass(frozen=True)
class FeatureArgs:
    """The feature arguments of a builder call, checked (see `feature_args`)."""

    features_only: bool = False
    feature_levels: Optional[Tuple[str, ...]] = None
    output_stride: int = 32
    taps: str = "default"


def level(stride):
    """The level name of a stride: 8 -> "P3"."""
    n = int(stride).bit_length() - 1
    if stride < 2 or 2 ** n != stride:
        raise ValueError(f"a feature level needs a stride of 2**n >= 2, got {stride}.")
    return f"P{n}"


def last_at_each_stride(trunk):
    """The default taps from a family's trunk, `[(layer name, stride of its output), ...]`
    in graph order: for each stride >= 2, the last layer at it."""
    return {level(stride): name for name, stride in trunk if stride >= 2}


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One level of a features model: its name, the layer it taps, channels and stride
    (None for a model of unknown input size)."""

    level: str
    layer: str
    channels: int
    stride: Optional[int]


def feature_info(model):
    """`FeatureInfo` of each level of a `features_only` model, in order."""
    outputs = model.output
    if not isinstance(outputs, dict):
        raise ValueError(f"'{model.name}' is not a features model; build it with "
                         "features_only=True.")
    height = model.inputs[0].shape[1]
    info = []
    for name, tensor in outputs.items():
        out = tensor.shape[1]
        stride = height // out if height and out else None
        info.append(FeatureInfo(name, tensor._keras_history.operation.name, tensor.shape[-1],
                                stride))
    return tuple(info)


def feature_args(features_only=False, feature_levels=None, output_stride=32, taps="default",
                 pooling=None):
    """Checks the feature arguments of a builder; returns a `FeatureArgs`."""
    if not isinstance(features_only, bool):
        raise ValueError(f"features_only must be True or False, got {features_only!r}.")
    if output_stride not in OUTPUT_STRIDES or isinstance(output_stride, bool):
        raise ValueError(f"output_stride must be 32 (no dilation), 16 or 8, got "
                         f"{output_stride!r}.")
    if taps not in TAPS:
        raise ValueError(f"taps must be 'default' or 'timm' (timm's features_only taps), got "
                         f"{taps!r}.")
    if feature_levels is not None:
        if not features_only:
            raise ValueError("feature_levels needs features_only=True.")
        if isinstance(feature_levels, str):
            feature_levels = (feature_levels,)
        feature_levels = tuple(feature_levels)
        bad = [lv for lv in feature_levels if lv not in LEVELS]
        if not feature_levels or bad:
            raise ValueError(f"feature_levels must be a non-empty subset of {LEVELS}, got "
                             f"{feature_levels!r}.")
    if taps != "default" and not features_only:
        raise ValueError("taps needs features_only=True.")
    if features_only and pooling is not None:
        raise ValueError(f"features_only=True gives 4D maps; pass pooling=None, got "
                         f"{pooling!r}.")
    return FeatureArgs(features_only, feature_levels, output_stride, taps)


def finish(model, taps, args):
    """The model for `args`: `model` as it is, dilated to `args.output_stride`, and with
    `features_only` a model of the dict `{level: map}` that `taps` (a `FeatureTaps`) names."""
    import keras

    if args.output_stride != 32:
        model = dilate(model, args.output_stride)
    if not args.features_only:
        return model
    names = taps.names(args.taps)
    levels = args.feature_levels or tuple(lv for lv in LEVELS if lv in names)
    missing = [lv for lv in levels if lv not in names]
    if missing:
        raise ValueError(f"'{model.name}' has no level {', '.join(missing)}: its levels are "
                         f"{', '.join(names)} (a 32x32 CIFAR net downsamples less).")
    outputs = {lv: model.get_layer(names[lv]).output for lv in levels}
    return keras.Model(model.inputs, outputs, name=model.name)


@dataclasses.dataclass(frozen=True)
class _Grid:
    """Where a rewritten tensor lives: its stride (rewritten net), its density (how many
    times finer than the undilated net's map), and whether it is split into phases."""

    stride: int
    density: int
    phased: bool = False


_GLOBAL = _Grid(0, 1)  # globally pooled: no spatial grid


def dilate(model, output_stride):
    """`model` with the strides that would take its trunk below `output_stride` turned into
    dilation (same layers, names and weights). See the module docstring for what is exact."""
    import keras

    from keras_ghost.graph import check_functional, connections, copy_call, rebuild
    from keras_ghost.layers.shape_ops import PhaseMerge, PhaseSplit, ResizeNearestLike

    check_functional(model, "output_stride")
    consumers, producers, _ = connections(model)
    branch = _resized_branches(model, consumers, producers, ResizeNearestLike)
    grids = {}  # id(new tensor) -> _Grid

    def grid_of(tensors):
        found = [grids.get(id(t), _Grid(1, 1)) for t in tensors]
        spatial = {g for g in found if g is not _GLOBAL}
        if len(spatial) > 1:
            raise ValueError(f"output_stride: inputs at different grids {spatial}; the graph "
                             "cannot be dilated.")
        return spatial.pop() if spatial else _GLOBAL

    def call(layer, *args, **kwargs):
        inputs = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
        kind = type(layer).__name__
        if isinstance(layer, ResizeNearestLike) and grids.get(id(inputs[0]), _GLOBAL).phased:
            gate, like = inputs
            d = grids[id(gate)].density
            if d == 1:
                out = copy_call(layer, inputs)
                grids[id(out)] = grid_of([like])
                return out
            resized = copy_call(layer, [gate, PhaseSplit(d, name=f"{layer.name}_split")(like)])
            out = PhaseMerge(d, name=f"{layer.name}_merge")([resized, like])
            grids[id(out)] = grid_of([like])
            return out
        grid = grid_of(inputs)
        if layer.name in branch and not grid.phased and grid is not _GLOBAL:
            # Entering a resized branch: it runs per phase, as in the undilated net.
            if grid.density > 1:
                inputs = [PhaseSplit(grid.density, name=f"{layer.name}_split")(inputs[0])]
                args = (inputs[0], *args[1:])
            grid = _Grid(grid.stride, grid.density, phased=True)
        new_grid = grid
        config = None
        if grid.phased or grid is _GLOBAL:
            pass
        elif kind in ("Conv2D", "DepthwiseConv2D"):
            config, new_grid = _dilated_conv(layer, grid, output_stride)
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            config, new_grid = _dilated_pool(layer, grid, output_stride)
        elif kind == "ZeroPadding2D" and grid.density > 1:
            config = layer.get_config()
            config["padding"] = tuple(tuple(p * grid.density for p in pair)
                                      for pair in layer.padding)
        elif kind.startswith("Global"):
            new_grid = _GLOBAL
        elif kind in ("Conv2DTranspose", "UpSampling2D", "Resizing", "SeparableConv2D",
                      "Cropping2D", "GatePool") and grid.density > 1:
            raise ValueError(f"output_stride: cannot dilate '{layer.name}' ({kind}).")
        if config is None:
            out = copy_call(layer, *args, **kwargs)
        else:
            new = type(layer).from_config(config)
            out = new(*args, **kwargs)
            if layer.get_weights():
                new.set_weights(layer.get_weights())
        for t in keras.tree.flatten(out):
            grids[id(t)] = new_grid
        return out

    dilated = rebuild(model, call)
    leaks = [t for t in keras.tree.flatten(dilated.outputs) if grids.get(id(t), _GLOBAL).phased]
    if leaks:
        raise ValueError("output_stride: a branch that is not resized back ends the model.")
    return keras.Model(dilated.inputs, dilated.outputs, name=model.name)


def _dilated_conv(layer, grid, output_stride):
    stride = _square(layer.strides, layer.name, "strides")
    kernel = max(layer.kernel_size)
    if stride > 1 and grid.stride * stride > output_stride:
        if layer.padding == "same" and kernel > 1:
            # Keras' "same" pads a strided conv by the input size's parity, a stride-1
            # dilated conv symmetrically: the taps would shift.
            raise ValueError(f"output_stride: '{layer.name}' is a strided 'same' conv; pad it "
                             "explicitly (ZeroPadding2D + 'valid') to dilate it.")
        config = layer.get_config()
        config["strides"] = (1, 1)
        if kernel > 1:
            config["dilation_rate"] = _scaled(layer.dilation_rate, grid.density)
        return config, _Grid(grid.stride, grid.density * stride)
    if grid.density > 1 and kernel > 1:
        config = layer.get_config()
        config["dilation_rate"] = _scaled(layer.dilation_rate, grid.density)
        return config, grid
    return None, _Grid(grid.stride * stride, grid.density)


def _dilated_pool(layer, grid, output_stride):
    stride = _square(layer.strides, layer.name, "strides")
    if stride > 1 and grid.stride * stride > output_stride:
        if grid.density > 1 or layer.padding != "valid":
            raise ValueError(f"output_stride: cannot dilate the pool '{layer.name}' (pools "
                             "have no dilation); use a larger output_stride.")
        return {**layer.get_config(), "strides": (1, 1)}, _Grid(grid.stride, stride)
    if grid.density > 1 and max(layer.pool_size) > 1:
        raise ValueError(f"output_stride: cannot dilate the pool '{layer.name}'.")
    return None, _Grid(grid.stride * stride, grid.density)


def _resized_branches(model, consumers, producers, resize_type):
    """Names of the layers on a branch that ends in a nearest resize (its first input) and
    forks from the trunk: walked back while each layer feeds only the next one."""
    names = set()
    for layer in model.layers:
        if not isinstance(layer, resize_type):
            continue
        source = layer._inbound_nodes[0].input_tensors[0]._keras_history.operation
        while source is not None and len(consumers.get(source.name, [])) == 1:
            names.add(source.name)
            source = producers.get(source.name)
    return names


def _square(value, name, what):
    value = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if value[0] != value[1]:
        raise ValueError(f"output_stride: '{name}' has non-square {what} {value}.")
    return value[0]


def _scaled(rate, factor):
    rate = tuple(rate) if isinstance(rate, (tuple, list)) else (rate, rate)
    return tuple(r * factor for r in rate)
