"""Structural re-parameterization of functional Keras models (RepVGG, MobileOne,
GhostNetV3): every sum of parallel linear branches of one input becomes one conv with bias.

`reparameterize(model)` rebuilds the graph layer by layer; an `Add` whose inputs are all
branches of the same tensor `x` is replaced by a single conv. A branch is one of

- `[ZeroPadding2D ->] Conv2D / DepthwiseConv2D [-> BatchNormalization]` of `x`
  (linear activation, any bias), each of its layers used by nothing else;
- `BatchNormalization(x)` or `x` itself (an identity, as a kernel with one centre tap);
- another such `Add` (nested sums are flattened).

Kernels of different sizes are aligned by where they read the input: a branch with kernel
`k` and leading padding `p` lands at offset `P - p` in the largest branch's kernel `K`
(padding `P`), so a 1x1 "scale" branch lands at the centre of a PyTorch-padded k x k one.
BN folds into its branch (`w * g / sqrt(v + eps)`, `(b - m) * g / sqrt(v + eps) + beta`)
and the branches' kernels and biases add. Sums that do not match (other branch kinds,
different strides or conv types, kernels that do not nest) are left as they are.
"""

import dataclasses
from typing import List, Optional

import numpy as np

from keras_ghost.graph import check_functional, connections, copy_call, rebuild

CONVS = ("Conv2D", "DepthwiseConv2D")


@dataclasses.dataclass
class _Branch:
    """One linear branch of a sum: `bn(conv(pad(x)))` with any part absent."""

    pad: object = None
    conv: object = None
    bn: object = None

    @property
    def layers(self):
        return [layer for layer in (self.pad, self.conv, self.bn) if layer is not None]


@dataclasses.dataclass
class _Fusion:
    """A planned sum -> conv: the branches, the one whose kernel holds all the others,
    and the fused layers' names."""

    add: object
    branches: List[_Branch]
    widest: _Branch
    name: str
    pad_name: Optional[str]
    absorbed: List[object] = dataclasses.field(default_factory=list)


def reparameterize(model, verify=True, atol=1e-5, name=None):
    """Returns a new functional model in deployed form: every sum of parallel conv / BN /
    identity branches of one input (see the module docstring) fused into one conv with
    bias; all other layers keep their weights. With `verify` (and a static input shape),
    both models run on a random batch in inference mode and must agree within `atol`
    times the output scale.

    A model without such sums comes back as an equal copy. The fused conv of a sum named
    `X.add` is named `X.conv` (`X.pad` for its padding), else `{sum name}.conv`.
    """
    check_functional(model, "reparameterize")
    fusions = _plan(model)
    by_add = {f.add.name: f for f in fusions}
    absorbed = {layer.name for f in fusions for layer in f.absorbed}

    def call(layer, *args, **kwargs):
        if layer.name in by_add:
            return _fused_conv(by_add[layer.name], _first(args[0]))
        if layer.name in absorbed:
            # Every absorbed layer lies between the sum's input and the sum: hand the input on.
            return _first(args[0])
        return copy_call(layer, *args, **kwargs)

    deployed = rebuild(model, call)
    if name:
        import keras

        deployed = keras.Model(deployed.inputs, deployed.outputs, name=name)
    if verify:
        _check_same_outputs(model, deployed, atol)
    return deployed


def fusable_sums(model):
    """Names of the Add layers `reparameterize` would fuse (for inspection and tests)."""
    check_functional(model, "fusable_sums")
    return [f.add.name for f in _plan(model)]


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _kind(layer):
    return type(layer).__name__


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _plan(model):
    consumers, producers, inputs_of = connections(model)
    outputs = {id(t._keras_history.operation) for t in model.outputs}
    names = {layer.name for layer in model.layers}

    def private(layer):
        """Used once, by one call, and not a model output: safe to fold away."""
        return (len(layer._inbound_nodes) == 1 and len(consumers.get(layer.name, [])) == 1
                and id(layer) not in outputs)

    fusions, taken = [], set()
    for add in model.layers:
        if _kind(add) != "Add" or len(add._inbound_nodes) != 1 or add.name in taken:
            continue
        found = _branches(add, producers, inputs_of, private)
        if found is None:
            continue
        source, branches, nested = found
        fusion = _fusion(add, source, branches, names)
        if fusion is None:
            continue
        fusion.absorbed = [layer for b in branches for layer in b.layers] + nested
        fusions.append(fusion)
        taken.update(layer.name for layer in fusion.absorbed)
    # An outer sum may have absorbed an inner one planned first: keep the outer.
    return [f for f in fusions if f.add.name not in taken]


def _branches(add, producers, inputs_of, private):
    """(source tensor, branches, nested Adds) when every input of `add` is a linear branch
    of one tensor, else None."""
    branches, nested, sources = [], [], []
    pending = list(zip(add._inbound_nodes[0].input_tensors, inputs_of[add.name]))
    while pending:
        tensor, layer = pending.pop(0)
        if _kind(layer) == "Add" and private(layer) and len(layer._inbound_nodes) == 1:
            nested.append(layer)
            pending.extend(zip(layer._inbound_nodes[0].input_tensors, inputs_of[layer.name]))
            continue
        branch = _Branch()
        if _kind(layer) == "BatchNormalization" and private(layer) and _bn_ok(layer):
            branch.bn, tensor, layer = layer, layer.input, producers.get(layer.name)
        if layer is not None and _kind(layer) in CONVS and private(layer) and _conv_ok(layer):
            branch.conv, tensor, layer = layer, layer.input, producers.get(layer.name)
            if layer is not None and _kind(layer) == "ZeroPadding2D" and private(layer):
                branch.pad, tensor = layer, layer.input
        branches.append(branch)
        sources.append(tensor)
    if any(s is not sources[0] for s in sources) or len(branches) < 2:
        return None
    if not any(b.conv is not None for b in branches):
        return None
    return sources[0], branches, nested


def _bn_ok(bn):
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    return axis in (-1, len(bn.input.shape) - 1)


def _conv_ok(conv):
    return (getattr(conv.activation, "__name__", "") == "linear"
            and _pair(conv.dilation_rate) == (1, 1) and conv.data_format == "channels_last")


def _leading_pad(branch):
    """(top, left) zeros the branch's conv reads before the input, or None if unknown."""
    conv = branch.conv
    before = [0, 0]
    if branch.pad is not None:
        (top, _), (left, _) = branch.pad.padding
        before = [top, left]
    if conv.padding == "valid":
        return tuple(before)
    # "same": TF pads max((out - 1) * s + k - n, 0) in total, the smaller half first.
    size = conv.input.shape[1:3]
    result = []
    for axis, (k, s) in enumerate(zip(_pair(conv.kernel_size), _pair(conv.strides))):
        n = size[axis]
        if s == 1:
            total = k - 1
        elif n is None:
            return None
        else:
            total = max((-(-n // s) - 1) * s + k - n, 0)
        result.append(before[axis] + total // 2)
    return tuple(result)


def _signature(conv):
    """What must be equal for two convs' kernels to add up."""
    if _kind(conv) == "DepthwiseConv2D":
        return ("dw", conv.depth_multiplier, _pair(conv.strides))
    return ("conv", conv.filters, conv.groups, _pair(conv.strides))


def _fusion(add, source, branches, names):
    convs = [b for b in branches if b.conv is not None]
    if len({_signature(b.conv) for b in convs}) != 1:
        return None
    widest = max(convs, key=lambda b: np.prod(_pair(b.conv.kernel_size)))
    big = _pair(widest.conv.kernel_size)
    big_pad = _leading_pad(widest)
    if big_pad is None:
        return None
    for b in branches:
        if b.conv is None:
            # Identity: stride 1, same channels, and the centre tap inside the kernel.
            if (_pair(widest.conv.strides) != (1, 1)
                    or add.output.shape[-1] != source.shape[-1]
                    or (_kind(widest.conv) == "DepthwiseConv2D"
                        and widest.conv.depth_multiplier != 1)
                    or not all(0 <= p < k for p, k in zip(big_pad, big))):
                return None
            continue
        pad = _leading_pad(b)
        if pad is None:
            return None
        for p, k, P, K in zip(pad, _pair(b.conv.kernel_size), big_pad, big):
            if not (0 <= P - p and P - p + k <= K):
                return None
    prefix = add.name[: -len(".add")] if add.name.endswith(".add") else None
    name = f"{prefix}.conv" if prefix and f"{prefix}.conv" not in names else f"{add.name}.conv"
    pad_name = None
    if widest.pad is not None:
        pad_name = (f"{prefix}.pad" if prefix and f"{prefix}.pad" not in names
                    else f"{add.name}.pad")
    return _Fusion(add, branches, widest, name, pad_name)


def _bn_scale_shift(bn):
    """Per-channel (scale, shift) of an inference-mode BN."""
    channels = bn.input.shape[-1]
    gamma = np.asarray(bn.gamma, "float64") if bn.scale else np.ones(channels)
    beta = np.asarray(bn.beta, "float64") if bn.center else np.zeros(channels)
    mean = np.asarray(bn.moving_mean, "float64")
    var = np.asarray(bn.moving_variance, "float64")
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _branch_kernel(branch, fusion, source_channels):
    """The branch as (kernel in the widest conv's layout and size, bias)."""
    widest = fusion.widest.conv
    K = _pair(widest.kernel_size)
    P = _leading_pad(fusion.widest)
    depthwise = _kind(widest) == "DepthwiseConv2D"
    if depthwise:
        shape = (*K, source_channels, widest.depth_multiplier)
    else:
        shape = (*K, source_channels // widest.groups, widest.filters)
    kernel = np.zeros(shape)
    out_channels = shape[2] * shape[3] if depthwise else shape[3]
    bias = np.zeros(out_channels)
    if branch.conv is None:  # identity: one centre tap per channel
        if depthwise:
            kernel[P[0], P[1], :, 0] = 1.0
        else:
            per_group = shape[2]
            for o in range(out_channels):
                kernel[P[0], P[1], o % per_group, o] = 1.0
    else:
        conv = branch.conv
        weights = conv.get_weights()
        small = weights[0].astype("float64")
        pad = _leading_pad(branch)
        top, left = P[0] - pad[0], P[1] - pad[1]
        kernel[top: top + small.shape[0], left: left + small.shape[1]] = small
        if conv.use_bias:
            bias = weights[1].astype("float64").reshape(-1)
    if branch.bn is not None:
        scale, shift = _bn_scale_shift(branch.bn)
        # Output channel c * m + j of a depthwise kernel is kernel[..., c, j].
        kernel = kernel * (scale.reshape(shape[2:]) if depthwise else scale)
        bias = bias * scale + shift
    return kernel, bias


def _fused_conv(fusion, x):
    """Calls the fused [padding +] conv on `x`, the rebuilt input of the sum."""
    from keras import layers

    widest = fusion.widest.conv
    channels = x.shape[-1]
    kernel, bias = 0.0, 0.0
    for branch in fusion.branches:
        k, b = _branch_kernel(branch, fusion, channels)
        kernel, bias = kernel + k, bias + b
    if fusion.widest.pad is not None:
        x = layers.ZeroPadding2D(fusion.widest.pad.padding, name=fusion.pad_name)(x)
    config = {**widest.get_config(), "name": fusion.name, "use_bias": True,
              "bias_initializer": "zeros", "trainable": True}
    conv = type(widest).from_config(config)
    y = conv(x)
    conv.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return y


def _check_same_outputs(model, deployed, atol):
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    if any(d is None for s in shapes for d in s):
        return
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((2, *s)).astype("float32") for s in shapes]
    x = x[0] if len(x) == 1 else x
    expected = [np.asarray(t) for t in _as_list(model(x, training=False))]
    actual = [np.asarray(t) for t in _as_list(deployed(x, training=False))]
    for e, a in zip(expected, actual):
        diff = float(np.abs(e - a).max())
        scale = max(1.0, float(np.abs(e).max()))
        if diff > atol * scale:
            raise AssertionError(f"reparameterize changed the outputs of '{model.name}' (max abs "
                                 f"diff {diff:.3g}, scale {scale:.3g}); please report this as "
                                 "a bug.")


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


__all__ = ["fusable_sums", "reparameterize"]
