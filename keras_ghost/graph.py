"""Rebuilding functional Keras graphs layer by layer, with some layers rewritten.

Shared by the deploy-time optimization (`keras_ghost.export.optimize_for_inference`) and
`keras_ghost.ghostify`.
"""


def check_functional(model, who):
    """Raises a TypeError unless `model` is a functional Keras model (a graph to walk)."""
    import keras

    if (not isinstance(model, keras.Model) or isinstance(model, keras.Sequential)
            or not hasattr(model, "_nodes_by_depth")):
        raise TypeError(f"{who} needs a functional Keras model (keras.Model(inputs, outputs)), "
                        f"got {type(model).__name__}; subclassed and Sequential models have no "
                        "graph to rewrite. Rebuild it functionally, e.g. "
                        "`keras.Model(inputs, model.call(inputs))`.")


def rebuild(model, call):
    """A new functional model: `call(layer, *args, **kwargs)` makes each layer's output."""
    import keras

    return keras.models.clone_model(model, clone_function=lambda layer: layer,
                                    call_function=call)


def copy_call(layer, *args, **kwargs):
    """Calls a fresh copy of `layer` (same config and weights) on new inputs."""
    new = type(layer).from_config(layer.get_config())
    outputs = new(*args, **kwargs)
    weights = layer.get_weights()
    if weights:
        new.set_weights(weights)
    return outputs


def connections(model):
    """`consumers[name]` (layers fed by it), `producers[name]` (its input layer, for
    single-input layers) and `inputs_of[name]` (all its input layers, in order)."""
    consumers, producers, inputs_of = {}, {}, {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            sources = [t._keras_history.operation for t in node.input_tensors]
            for source in sources:
                consumers.setdefault(source.name, []).append(layer)
            inputs_of[layer.name] = sources
            if len(sources) == 1:
                producers[layer.name] = sources[0]
    return consumers, producers, inputs_of
