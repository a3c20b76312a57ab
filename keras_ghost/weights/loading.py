"""`weights=` handling of every builder: Keras files, PyTorch checkpoints, "imagenet"."""

import os
from pathlib import Path

import keras
import numpy as np

from keras_ghost.io_utils import atomic_path
from keras_ghost.weights import torch_convert

CACHE_SUBDIR = "keras_ghost"
# Layers that exist only with include_top=True; their weights are skipped without it.
TOP_LAYER_PREFIX = "head."


class WeightsDownloadError(RuntimeError):
    """The reference checkpoint of `weights="imagenet"` could not be downloaded."""


def load_weights(model, weights, spec=None, torch_rules=()):
    """Loads `weights` ("imagenet", a Keras weights file or a PyTorch checkpoint) into `model`."""
    if weights == "imagenet":
        return _load_imagenet(model, spec, torch_rules)
    path = Path(os.fspath(weights)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Weights file not found: {path}. Pass weights=None, 'imagenet' "
                                "or the path of a .weights.h5 / .keras / .pth file.")
    if torch_convert.is_torch_checkpoint(path):
        state = torch_convert.read_checkpoint(path)
        grouped = torch_convert.group_by_layer(state, torch_rules)
        return assign_weights(model, grouped, source=str(path))
    if path.name.endswith(".npz"):
        return _load_npz(model, path)
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise ValueError(f"Could not load {path} into '{model.name}': {e}\nA weights file "
                         "saved from another variant, width or input config does not fit; "
                         "build the model the file was saved from.") from e
    return model


def assign_weights(model, grouped, source):
    """Sets each layer's weights from `grouped[layer.name][param] = (key, array)`.

    Every layer with weights must be covered and every entry used, except the top's
    entries when the model has no top. Shapes are checked, naming both sides.
    """
    new_values = []
    unused = dict(grouped)
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in grouped:
            raise ValueError(f"{source} has no weights for layer '{layer.name}' of "
                             f"'{model.name}'; is it a checkpoint of this architecture?")
        params = unused.pop(layer.name)
        file_shapes = {key: array.shape for key, array in params.values()}
        for variable, (key, array) in zip(layer.weights, torch_convert.keras_arrays(layer, params)):
            if tuple(variable.shape) != array.shape:
                raise ValueError(
                    f"{source} does not fit '{model.name}': layer '{layer.name}' expects "
                    f"{variable.path} of shape {tuple(variable.shape)}, the file's '{key}' has "
                    f"shape {file_shapes[key]} ({array.shape} in Keras layout). The file is "
                    "for another variant, width or number of classes.")
            new_values.append((variable, array))
    leftover = [name for name in unused if not name.startswith(TOP_LAYER_PREFIX)]
    if leftover:
        raise ValueError(f"{source} has weights that '{model.name}' has no layer for: "
                         f"{leftover[:5]}{' ...' if len(leftover) > 5 else ''}. "
                         "Is it a checkpoint of another architecture?")
    for variable, array in new_values:
        variable.assign(array.astype(variable.dtype))
    return model


def _load_npz(model, path):
    with np.load(path) as data:
        grouped = {}
        for key in data.files:
            layer_name, _, param = key.rpartition("/")
            grouped.setdefault(layer_name, {})[param] = (key, data[key])
    return assign_weights(model, grouped, source=str(path))


def _load_imagenet(model, spec, torch_rules):
    """Downloads the reference checkpoint once, converts it and caches the conversion."""
    cache_dir = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / CACHE_SUBDIR
    converted = cache_dir / f"{spec.name}.npz"
    if converted.is_file():
        return _load_npz(model, converted)
    fname = spec.weights_url.rsplit("/", 1)[-1]
    try:
        path = keras.utils.get_file(fname, spec.weights_url, file_hash=spec.weights_sha256,
                                    cache_subdir=CACHE_SUBDIR)
    except Exception as e:
        raise WeightsDownloadError(
            f"Could not download the reference weights of {spec.name} from {spec.weights_url} "
            f"({type(e).__name__}: {e}). If this machine is offline, download that file "
            f"elsewhere and pass its path: weights='/path/to/{fname}'.") from e
    state = torch_convert.read_checkpoint(path)
    grouped = torch_convert.group_by_layer(state, torch_rules)
    save_npz(grouped, converted)
    return assign_weights(model, grouped, source=path)


def save_npz(grouped, path):
    """Writes `{layer: {param: (key, array)}}` as `layer/param` arrays, atomically."""
    arrays = {f"{layer}/{param}": array
              for layer, params in grouped.items() for param, (_, array) in params.items()}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
