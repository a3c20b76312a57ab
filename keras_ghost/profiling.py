"""Parameters, MACs and activation counts of a Keras model, per layer and in total.

MACs count convolutions and dense layers for one image (the convention of the papers);
activations are the summed output sizes of conv layers, the G-GhostNet paper's proxy for
GPU latency.
"""

import dataclasses
import math
from typing import List

import keras
from keras import layers


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    name: str
    kind: str
    output_shape: tuple
    params: int  # trainable
    macs: int
    activations: int


@dataclasses.dataclass(frozen=True)
class Profile:
    model_name: str
    input_shape: tuple
    layers: List[LayerProfile]

    @property
    def params(self):
        return sum(p.params for p in self.layers)

    @property
    def macs(self):
        return sum(p.macs for p in self.layers)

    @property
    def activations(self):
        return sum(p.activations for p in self.layers)

    def table(self, all_layers=False):
        """A plain-text table; only layers with params or MACs unless `all_layers`."""
        rows = [p for p in self.layers if all_layers or p.params or p.macs]
        width = max([len(p.name) for p in rows] + [5])
        lines = [f"{self.model_name}  input {self.input_shape}",
                 f"{'layer':<{width}}  {'type':<22} {'output':<20} {'params':>11} "
                 f"{'MACs':>14} {'activations':>12}"]
        for p in rows:
            shape = "x".join(str(d) for d in p.output_shape)
            lines.append(f"{p.name:<{width}}  {p.kind:<22} {shape:<20} {p.params:>11,} "
                         f"{p.macs:>14,} {p.activations:>12,}")
        lines.append(f"{'total':<{width}}  {'':<22} {'':<20} {self.params:>11,} "
                     f"{self.macs:>14,} {self.activations:>12,}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def profile(model, input_shape=None):
    """Profiles a functional Keras model (or a registered variant, by name) for one image.

    A model built for any image size (None height/width) is rebuilt at `input_shape`
    (height, width, channels) first; a name is built at `input_shape` (default: the
    variant's own size).
    """
    if isinstance(model, str):
        from keras_ghost.models.registry import create_model

        kwargs = {} if input_shape is None else {"input_shape": tuple(input_shape)}
        model = create_model(model, **kwargs)
        input_shape = None
    if not isinstance(model, keras.Model):
        raise TypeError(f"profile() takes a Keras model or a registered variant name (e.g. "
                        f"profile('ghostnet_100')), got {type(model).__name__}.")
    if input_shape is not None or _has_dynamic_shape(model):
        if input_shape is None:
            raise ValueError(f"'{model.name}' accepts any image size; pass input_shape=(h, w, c) "
                             "to profile it at one size.")
        model = _rebuilt_at(model, tuple(input_shape))
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        out_shape = tuple(layer.output.shape[1:])
        macs = _macs(layer, out_shape)
        is_conv = isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D))
        params = sum(math.prod(w.shape) for w in layer.trainable_weights)
        rows.append(LayerProfile(layer.name, type(layer).__name__, out_shape, params, macs,
                                 math.prod(out_shape) if is_conv else 0))
    return Profile(model.name, tuple(model.inputs[0].shape[1:]), rows)


def _macs(layer, out_shape):
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return math.prod(out_shape) * kh * kw
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        in_channels = layer.input.shape[-1]
        return math.prod(out_shape) * kh * kw * in_channels // layer.groups
    if isinstance(layer, layers.Dense):
        return math.prod(out_shape) * layer.input.shape[-1]
    return 0


def _has_dynamic_shape(model):
    return any(d is None for d in model.inputs[0].shape[1:])


def _rebuilt_at(model, input_shape):
    config = model.get_config()
    input_layers = [layer for layer in config["layers"] if layer["class_name"] == "InputLayer"]
    if len(input_layers) != 1:
        raise ValueError("profile(input_shape=...) supports models with one input.")
    input_layers[0]["config"]["batch_shape"] = (None, *input_shape)
    return model.__class__.from_config(config)
