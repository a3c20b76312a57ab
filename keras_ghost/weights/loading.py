"""`weights=` handling of every builder: Keras files, PyTorch checkpoints, "imagenet"."""

import collections
import contextlib
import io
import json
import logging
import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np

from keras_ghost.io_utils import atomic_path
from keras_ghost.weights import torch_convert

log = logging.getLogger("keras_ghost")
CACHE_SUBDIR = "keras_ghost"
# Layers that exist only with include_top=True; their weights are skipped without it.
TOP_LAYER_PREFIX = "head_"


class WeightsDownloadError(RuntimeError):
    """The reference checkpoint of `weights="imagenet"` could not be downloaded."""


def load_weights(model, weights, spec=None, torch_rules=()):
    """Loads `weights` ("imagenet", a Keras weights file or a PyTorch checkpoint) into `model`.

    A file whose classifier has another number of classes loads everything but the
    classifier, which keeps its fresh initialization (timm's `num_classes` with
    `pretrained=True`): the way to fine-tune on other classes."""
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
    found, expected = _keras_weight_shapes(path), _own_weight_shapes(model)
    new_head = _head_only_mismatch(model, found, expected)
    if new_head:
        return _load_keras_backbone(model, path, new_head)
    check_keras_weights_fit(model, path, found, expected)
    try:
        with warnings.catch_warnings():  # Keras' per-layer notes: the check said it all
            warnings.simplefilter("ignore")
            model.load_weights(str(path))
    except Exception as e:
        raise ValueError(f"Could not load {path} into '{model.name}': {' '.join(str(e).split())[:300]} "
                         "A weights file saved from another variant, width or input config "
                         "does not fit; build the model the file was saved from.") from e
    return model


def load_keras_model(path):
    """`keras.saving.load_model(path, safe_mode=True)` with one-line errors naming the
    file: missing, not a complete .keras archive (truncated), or not loadable.

    Files written by keras_ghost 0.1 name layers with dots (`stem.conv`), which the
    PyTorch backend cannot hold; they load with today's names (`stem_conv`). A file
    saved on any backend loads on the others (see `_portable`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}.")
    _keras_weight_shapes(path)  # the archive is complete and holds weights
    try:
        with warnings.catch_warnings(), _portable_archive(path) as loadable:
            warnings.simplefilter("ignore")
            return keras.saving.load_model(loadable, safe_mode=True)
    except Exception as e:
        raise ValueError(f"Could not load the Keras model {path}: {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]}") from e


def legacy_layer_name(name):
    """Today's name of a layer that keras_ghost 0.1 named `name`."""
    return name.replace(".", "_")


def _portable(config):
    """A saved model config that loads on this backend: dotted layer names renamed
    everywhere (the layers' own names and every reference to them), and optimizer classes
    of another backend (`keras.src.backend.torch.optimizers...`, which would import torch
    into a TensorFlow process) named by their public `keras.optimizers` path. None when
    nothing needs to change."""
    dotted = set()

    def collect(node):
        if isinstance(node, dict):
            if "class_name" in node and isinstance(node.get("config"), dict):
                name = node["config"].get("name")
                if isinstance(name, str) and "." in name:
                    dotted.add(name)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    changed = []

    def fix(node):
        if isinstance(node, dict):
            node = {key: fix(value) for key, value in node.items()}
            module = node.get("module")
            if (isinstance(module, str) and module.startswith("keras.src.backend.")
                    and ".optimizers." in module):
                changed.append(module)
                node["module"] = "keras.optimizers"
            return node
        if isinstance(node, list):
            return [fix(value) for value in node]
        if isinstance(node, str) and node in dotted:
            changed.append(node)
            return legacy_layer_name(node)
        return node

    collect(config.get("config", {}).get("layers", []))  # the model's own name may keep dots
    config = fix(config)
    return config if changed else None


@contextlib.contextmanager
def _portable_archive(path):
    """Yields `path`, or a temporary copy whose config `_portable` changed."""
    with zipfile.ZipFile(path) as archive:
        config = _portable(json.loads(archive.read("config.json")))
        if config is None:
            yield path
            return
        with tempfile.TemporaryDirectory() as tmp:
            renamed = Path(tmp) / path.name
            with zipfile.ZipFile(renamed, "w") as out:
                for item in archive.infolist():
                    data = (json.dumps(config).encode() if item.filename == "config.json"
                            else archive.read(item))
                    out.writestr(item, data)
            yield renamed


def _keras_weight_shapes(path):
    """`{h5 path: shape}` of the layer weights in a `.keras` archive or a `.weights.h5`
    file; ValueError naming the file when it is neither (e.g. truncated)."""
    import h5py

    path = Path(path)
    try:
        if path.name.endswith(".keras"):
            if not zipfile.is_zipfile(path):
                raise ValueError(f"{path} is not a complete .keras file: it is not a zip "
                                 "archive (truncated, or not written by model.save()); "
                                 "copy or save it again.")
            with zipfile.ZipFile(path) as archive:
                if "model.weights.h5" not in archive.namelist():
                    raise ValueError(f"{path} is a zip archive without model.weights.h5, not "
                                     "a .keras file written by model.save().")
                store = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        else:
            if not h5py.is_hdf5(path):
                raise ValueError(f"{path} is not an HDF5 weights file (truncated, or not "
                                 "written by model.save_weights()); save it again.")
            store = h5py.File(path, "r")
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is damaged ({type(e).__name__}: {e}); copy or save it "
                         "again.") from e
    shapes = {}
    with store:
        store.visititems(lambda name, item: shapes.__setitem__(name, tuple(item.shape))
                         if isinstance(item, h5py.Dataset) and name.startswith("layers/")
                         else None)
    return shapes


def _snake_case(name):
    # Keras' own naming of a layer list's entries in a weights file (class name, snake case).
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_of_key(model):
    """`{"layers/conv2d_3": layer}` as Keras lays out a functional model's weights."""
    counts, keys = collections.Counter(), {}
    for layer in model.layers:
        base = _snake_case(type(layer).__name__)
        keys[f"layers/{base}" + (f"_{counts[base]}" if counts[base] else "")] = layer
        counts[base] += 1
    return keys


def _own_weight_shapes(model):
    """`_keras_weight_shapes` of the file `model` itself would write."""
    with tempfile.TemporaryDirectory() as tmp:
        own = Path(tmp) / "own.weights.h5"
        model.save_weights(own)
        return _keras_weight_shapes(own)


def check_keras_weights_fit(model, path, found=None, expected=None):
    """Raises ValueError naming the first layer whose weights in the Keras file `path`
    differ from `model`'s (both shapes), before Keras' loader prints per-layer notes.
    `found` / `expected`: the two files' shapes, when the caller has them already."""
    found = _keras_weight_shapes(path) if found is None else found
    expected = _own_weight_shapes(model) if expected is None else expected
    if found == expected:
        return
    layers = _layer_of_key(model)
    order = {group: n for n, group in enumerate(layers)}
    differ = sorted((k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)),
                    key=lambda k: (order.get(k.rpartition("/vars/")[0], len(order)), k))
    key = differ[0]
    group, _, index = key.rpartition("/vars/")
    layer = layers.get(group)
    what = (f"layer '{layer.name}' expects {layer.weights[int(index)].path} of shape "
            f"{expected[key]}" if layer is not None and key in expected and index.isdigit()
            and int(index) < len(layer.weights) else
            f"'{key}' should be {expected.get(key, 'absent')}")
    raise ValueError(f"{path} does not fit '{model.name}': {what}, the file has "
                     f"{found.get(key, 'none')} ({len(differ)} of {len(expected)} weights "
                     "differ). The file is for another variant, width, input config or "
                     "number of classes: build the model it was saved from.")


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
        arrays = list(torch_convert.keras_arrays(layer, params))
        if layer.name.startswith(TOP_LAYER_PREFIX) and _other_classes(layer, arrays):
            _note_new_head(model, layer, source)
            continue
        for variable, (key, array) in zip(layer.weights, arrays):
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


def _other_classes(layer, arrays):
    """True when the file's weights of classifier `layer` differ from it in the last
    (class) dimension only."""
    ours = [tuple(v.shape) for v in layer.weights]
    theirs = [tuple(a.shape) for _, a in arrays]
    return (len(ours) == len(theirs) and ours != theirs
            and all(a[:-1] == b[:-1] for a, b in zip(ours, theirs)))


def _note_new_head(model, layer, source):
    log.info("%s: '%s' keeps its fresh initialization for %d classes (the file %s has "
             "another number)", model.name, layer.name, layer.weights[0].shape[-1], source)


def _head_only_mismatch(model, found, expected):
    """The h5 groups of the classifier layers when a Keras file's weight shapes (`found`)
    differ from `model`'s (`expected`) in their class dimension only, else None (then the
    strict check runs)."""
    if found.keys() != expected.keys() or found == expected:
        return None
    layers = _layer_of_key(model)
    differ = {k.rpartition("/vars/")[0] for k in expected if expected[k] != found[k]}
    for group in differ:
        layer = layers.get(group)
        if layer is None or not layer.name.startswith(TOP_LAYER_PREFIX):
            return None
        keys = [k for k in expected if k.startswith(group + "/vars/")]
        if not all(expected[k][:-1] == found[k][:-1] for k in keys):
            return None
    return differ


def _load_keras_backbone(model, path, new_head):
    """Assigns every layer's weights from the Keras file but those of `new_head` groups."""
    import h5py

    if path.name.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            store = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    else:
        store = h5py.File(path, "r")
    with store:
        for group, layer in _layer_of_key(model).items():
            if not layer.weights:
                continue
            if group in new_head:
                _note_new_head(model, layer, str(path))
                continue
            for i, variable in enumerate(layer.weights):
                variable.assign(np.asarray(store[f"{group}/vars/{i}"]).astype(variable.dtype))
    return model


def _load_npz(model, path):
    with np.load(path) as data:
        grouped = {}
        for key in data.files:
            layer_name, _, param = key.rpartition("/")
            # Caches converted by keras_ghost 0.1 carry its dotted layer names.
            grouped.setdefault(legacy_layer_name(layer_name), {})[param] = (key, data[key])
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
