"""Generic translation of a functional Keras 3 model into an identical tf_keras model.

tfmot 0.8 quantizes and prunes tf_keras (Keras 2) models only. Each layer is rebuilt from
its class name and `get_config()` in `tf_keras.layers` (our registered shape layers and
Keras 3's `hard_sigmoid` map to twins in `twins.py`) and gets the same weights; the graph
is re-wired node by node. Imported only in the QAT worker process.
"""

import inspect

import numpy as np

# Config keys of Keras 3 layers that tf_keras does not know, with the value that means
# "off"; any other value cannot be translated faithfully and raises.
_DROPPABLE = {"lora_rank": None, "lora_alpha": None, "quantization_config": None,
              "synchronized": False, "renorm": False, "seed": None}
# Keyword arguments every tf_keras layer takes (tf_keras' Layer.__init__ checks them).
_BASE_KWARGS = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape",
                "batch_input_shape", "batch_size", "weights", "activity_regularizer",
                "autocast", "implementation"}


def to_tf_keras(model):
    """Returns a tf_keras functional model with `model`'s graph, layer names and weights."""
    import keras
    import tf_keras

    from keras_ghost.graph import check_functional

    check_functional(model, "to_tf_keras")
    tensors = {}
    inputs = []
    for tensor in model.inputs:
        layer = tensor._keras_history.operation
        new = tf_keras.Input(shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=layer.name)
        tensors[id(tensor)] = new
        inputs.append(new)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        new = translate_layer(layer)
        for node in layer._inbound_nodes:
            if not all(id(t) in tensors for t in node.input_tensors):
                continue  # a node of another model sharing this layer
            args, kwargs = keras.tree.map_structure(
                lambda v: tensors[id(v)] if isinstance(v, keras.KerasTensor) else v,
                (node.arguments.args, node.arguments.kwargs))
            outputs = new(*args, **kwargs)
            for old, out in zip(keras.tree.flatten(node.output_tensors),
                                keras.tree.flatten(outputs)):
                tensors[id(old)] = out
        _copy_weights(layer, new)
    outputs = [tensors[id(t)] for t in model.outputs]
    return tf_keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)


def translate_layer(layer):
    """A new (unbuilt) tf_keras layer equivalent to the Keras 3 `layer`."""
    import tf_keras

    from keras_ghost.quantization import twins

    kind = type(layer).__name__
    config = layer.get_config()
    if kind == "Activation" and config.get("activation") in twins.ACTIVATIONS:
        return twins.ACTIVATIONS[config["activation"]](name=layer.name)
    if kind in twins.LAYERS:
        cls = twins.LAYERS[kind]
    else:
        cls = getattr(tf_keras.layers, kind, None)
        if cls is None or not inspect.isclass(cls):
            raise TypeError(
                f"Cannot translate layer '{layer.name}' ({type(layer).__module__}.{kind}) to "
                "tf_keras for quantization-aware training: tf_keras.layers has no such class. "
                "Add a twin for it to keras_ghost/quantization/twins.py.")
    for key, value in config.items():
        if key == "activation" and value in twins.ACTIVATIONS:
            raise TypeError(f"Layer '{layer.name}' has a fused {value!r} activation, which "
                            "tf_keras computes differently; use a separate Activation layer.")
    return cls.from_config(_tf_keras_config(cls, config, layer.name))


def _tf_keras_config(cls, config, name):
    """Keras 3 config -> tf_keras config: plain dtype names, `{class_name, config}`
    serializations, and Keras 3-only keys dropped when they hold their neutral value."""
    # Subclasses forward **kwargs to their bases (BatchNormalization -> its V2 base).
    accepted = set(_BASE_KWARGS)
    for base in cls.__mro__:
        if "__init__" in vars(base):
            accepted |= set(inspect.signature(base.__init__).parameters)
    result = {}
    for key, value in config.items():
        if key.endswith("_initializer"):
            continue  # the weights are copied; Keras 3 initializers have extra arguments
        if key not in accepted:
            if key in _DROPPABLE and value == _DROPPABLE[key]:
                continue
            raise TypeError(f"Cannot translate layer '{name}' to tf_keras: its config has "
                            f"{key}={value!r}, which {cls.__name__} in tf_keras does not "
                            "support.")
        result[key] = _plain(value)
    if isinstance(config.get("dtype"), dict):
        result["dtype"] = config["dtype"].get("config", {}).get("name", "float32")
    result.pop("build_config", None)
    return result


def _plain(value):
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        return {"class_name": value["class_name"],
                "config": {k: _plain(v) for k, v in value["config"].items()}}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _copy_weights(layer, new):
    weights = layer.get_weights()
    if not weights and not new.weights:
        return
    shapes = [tuple(w.shape) for w in new.get_weights()]
    if shapes != [tuple(np.shape(w)) for w in weights]:
        raise ValueError(f"Layer '{layer.name}': the tf_keras translation has weights of shapes "
                         f"{shapes}, the Keras 3 layer {[np.shape(w) for w in weights]}.")
    new.set_weights(weights)
