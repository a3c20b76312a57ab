"""Reads reference PyTorch checkpoints and converts them to Keras layer weights.

torch (or safetensors) is an optional extra, imported only here and only when needed.
"""

import re
from pathlib import Path

import numpy as np
from keras import layers

TORCH_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".ckpt", ".safetensors")
# Keys that carry no weights: BN step counters and the profiling counters (thop) found in
# the official GhostNetV2 checkpoints.
_IGNORED_KEYS = re.compile(r"(^|\.)(num_batches_tracked|total_ops|total_params)$")
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def is_torch_checkpoint(path):
    return str(path).endswith(TORCH_SUFFIXES)


def read_checkpoint(path):
    """Returns `{key: np.ndarray}` of a checkpoint, unwrapped and without counters."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ImportError("Reading .safetensors needs the 'safetensors' package: "
                              "pip install 'keras-ghost[torch]'.") from e
        state = load_file(str(path))
    else:
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"Converting the PyTorch checkpoint {path} needs torch: "
                              "pip install 'keras-ghost[torch]'.") from e
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: "
                             f"{e}).") from e
    state = _unwrap(state, path)
    return {
        _strip_prefix(key): _to_numpy(value)
        for key, value in state.items()
        if not _IGNORED_KEYS.search(key)
    }


def _unwrap(state, path):
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} holds no state_dict (found {type(state).__name__}).")
    return state


def _strip_prefix(key):
    return key[len("module."):] if key.startswith("module.") else key


def _to_numpy(value):
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def group_by_layer(state, rules):
    """Maps `{torch_key: array}` to `{keras_layer_name: {param_name: array}}` with the
    (regex, replacement) `rules`, applied in order to each key's module path.

    The rules map onto the layers' dotted hierarchy (`stage0.block1.ghost1.primary.conv`);
    layer names join its parts with `_`, since a "." is illegal in PyTorch parameter
    names and Keras 3's torch backend names its parameters after the layers."""
    grouped = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        for pattern, replacement in rules:
            module = re.sub(pattern, replacement, module)
        grouped.setdefault(module.replace(".", "_"), {})[param] = (key, value)
    return grouped


def keras_arrays(layer, params):
    """Converts one layer's PyTorch params to the layout of `layer.get_weights()`.

    Returns a list of `(torch_key, array)` in Keras weight order.
    """
    def take(name):
        if name not in params:
            raise KeyError(f"layer '{layer.name}' needs '{name}' but the checkpoint has only "
                           f"{sorted(params)} for it.")
        return params[name]

    if isinstance(layer, layers.BatchNormalization):
        names = ("weight", "bias", "running_mean", "running_var")
        return [take(n) for n in names]
    if isinstance(layer, layers.DepthwiseConv2D):
        key, w = take("weight")
        multiplier = layer.depth_multiplier
        # (C * m, 1, kh, kw) -> (kh, kw, C, m); output channel c * m + j in both layouts.
        w = w.reshape(w.shape[0] // multiplier, multiplier, *w.shape[2:]).transpose(2, 3, 0, 1)
        out = [(key, w)]
    elif isinstance(layer, layers.Conv2D):
        key, w = take("weight")
        # (O, I / groups, kh, kw) -> (kh, kw, I / groups, O); both frameworks give group g
        # the g-th contiguous slices of input and output channels, so grouped convs map too.
        out = [(key, w.transpose(2, 3, 1, 0))]
    elif isinstance(layer, layers.Dense):
        key, w = take("weight")
        out = [(key, w.T)]
    else:
        raise NotImplementedError(f"no PyTorch conversion for {type(layer).__name__} "
                                  f"('{layer.name}').")
    if layer.use_bias:
        out.append(take("bias"))
    return out
