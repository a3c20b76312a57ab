"""What every deploy-time rewrite shares: the graph it matches on, how it is applied, and
the kernel arithmetic (float64, one step per edit) that its replacements use."""

import dataclasses

import numpy as np

from keras_ghost.graph import connections, copy_call, rebuild

FOLDABLE_CONVS = ("Conv2D", "DepthwiseConv2D")


def kind(layer):
    return type(layer).__name__


def pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def activation_name(layer):
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", str(fn))


def plain_relu(layer):
    """"relu" or "relu6" for a layer that computes exactly that, else None."""
    if kind(layer) == "Activation" and activation_name(layer) in ("relu", "relu6"):
        return activation_name(layer)
    if kind(layer) == "ReLU" and not layer.negative_slope and not layer.threshold:
        return {None: "relu", 6.0: "relu6"}.get(
            None if layer.max_value is None else float(layer.max_value))
    return None


@dataclasses.dataclass
class Graph:
    """A functional model's connectivity, by layer name, for matching patterns."""

    model: object
    consumers: dict
    producers: dict
    inputs_of: dict

    @classmethod
    def of(cls, model):
        return cls(model, *connections(model))

    def users(self, layer):
        return self.consumers.get(layer.name, [])

    def only_consumer(self, layer):
        users = self.users(layer)
        return users[0] if len(users) == 1 else None

    def producer(self, layer):
        return self.producers.get(layer.name)

    def inputs(self, layer):
        return self.inputs_of.get(layer.name, [])

    def is_output(self, layer):
        return any(t._keras_history.operation is layer for t in self.model.outputs)

    def layers(self, *kinds):
        return [layer for layer in self.model.layers if not kinds or kind(layer) in kinds]


def copy_as(layer, x, name):
    """A copy of `layer` (same config and weights) under another name, called on `x`."""
    new = type(layer).from_config({**layer.get_config(), "name": name})
    y = new(x)
    if layer.get_weights():
        new.set_weights(layer.get_weights())
    return y


def passthrough(layer, x):
    """The replacement of a layer that goes away: its (single) input is its output."""
    return x[0] if isinstance(x, (list, tuple)) else x


class Rewrite:
    """One deploy-time rewrite. `find(graph)` returns `{layer name: replacement}` for its
    matches, where `replacement(layer, inputs)` builds that layer's new output from the
    rewritten inputs; calling the rewrite on a model returns the rewritten copy, or the
    model itself when nothing matches."""

    def find(self, graph):
        raise NotImplementedError

    def __call__(self, model):
        replacements = self.find(Graph.of(model))
        if not replacements:
            return model

        def call(layer, *args, **kwargs):
            replace = replacements.get(layer.name)
            if replace is None:
                return copy_call(layer, *args, **kwargs)
            return replace(layer, args[0])

        return rebuild(model, call)

    def __repr__(self):
        fields = getattr(self, "__dataclass_fields__", {})
        settings = ", ".join(f"{f}={getattr(self, f)!r}" for f in fields)
        return f"{type(self).__name__}({settings})"


# Kernel arithmetic. Kernels are (kh, kw, in, out) for Conv2D, (kh, kw, in, multiplier)
# for DepthwiseConv2D and (in, out) for Dense; biases are flat over the outputs.

def weights_of(layer):
    """(kernel, bias) in float64; a layer without bias gets zeros."""
    weights = layer.get_weights()
    kernel = weights[0].astype("float64")
    outputs = kernel.shape[2] * kernel.shape[3] if kind(layer) == "DepthwiseConv2D" else kernel.shape[-1]
    bias = weights[1].astype("float64") if getattr(layer, "use_bias", False) else np.zeros(outputs)
    return kernel, bias


def bn_is_channel_last(bn):
    """Whether the BN normalizes the last axis only (the one a kernel's outputs follow)."""
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    return axis in (-1, len(bn.input.shape) - 1)


def bn_scale_shift(bn):
    """The per-channel affine map `y = scale * x + shift` of an inference-mode BN."""
    mean, var = (np.asarray(w, dtype="float64") for w in (bn.moving_mean, bn.moving_variance))
    gamma = np.asarray(bn.gamma, "float64") if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta, "float64") if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def scale_outputs(kernel, bias, scale, shift=0.0):
    """The layer followed by `y * scale + shift` (per output channel). A depthwise
    kernel's outputs are its last two axes (channel, multiplier), flattened as the bias."""
    depthwise = kernel.ndim == 4 and kernel.shape[-1] != bias.size
    shape = kernel.shape[2:] if depthwise else (-1,)
    return kernel * np.reshape(scale, shape), bias * scale + shift


def scale_inputs(kernel, factor):
    """The layer applied to `x * factor` (per input channel; axis 2 of conv kernels)."""
    shape = (1, 1, -1, 1) if kernel.ndim == 4 else (-1, 1)
    return kernel * np.reshape(factor, shape)


def rebuilt(layer, x, kernel, bias, name=None, **config):
    """A copy of the conv / dense `layer` with this kernel and bias (and config changes),
    called on `x`."""
    config = {**layer.get_config(), **config, "use_bias": True, "bias_initializer": "zeros"}
    if kernel.ndim == 4:
        config["kernel_size"] = kernel.shape[:2]
    if kind(layer) == "Conv2D":
        config["filters"] = kernel.shape[-1]
    elif kind(layer) == "Dense":
        config["units"] = kernel.shape[-1]
    if name is not None:
        config["name"] = name
    new = type(layer).from_config(config)
    y = new(x)
    new.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return y


def constant_depthwise(x, kernel, name, bias=None, **config):
    """A new DepthwiseConv2D with a constant kernel (kh, kw, channels, 1), called on `x`."""
    from keras import layers

    conv = layers.DepthwiseConv2D(kernel.shape[:2], use_bias=bias is not None, name=name,
                                  **config)
    y = conv(x)
    weights = [kernel] if bias is None else [kernel, bias]
    conv.set_weights([np.asarray(w, "float32") for w in weights])
    return y
