"""Magnitude pruning of the translated tf_keras model (tfmot), and keeping it sparse.

Imported only in the QAT worker process.
"""

import numpy as np
import tensorflow_model_optimization as tfmot

# Pruned: dense convs and the classifier. Depthwise kernels are a few percent of the
# weights, and XNNPACK's sparse inference speeds up 1x1 convs only.
PRUNABLE = ("Conv2D", "Dense")


def prunable(layer):
    return type(layer).__name__ in PRUNABLE and getattr(layer, "groups", 1) == 1


def wrap(model, *, target_sparsity, begin_step, end_step, frequency=100):
    """`model` with every prunable layer under `prune_low_magnitude` (PolynomialDecay
    from 0 to `target_sparsity` between `begin_step` and `end_step`)."""
    import tf_keras

    sparsity = tfmot.sparsity.keras
    schedule = sparsity.PolynomialDecay(initial_sparsity=0.0, final_sparsity=target_sparsity,
                                        begin_step=begin_step, end_step=end_step,
                                        frequency=frequency)
    return tf_keras.models.clone_model(
        model, clone_function=lambda layer: sparsity.prune_low_magnitude(
            layer, pruning_schedule=schedule) if prunable(layer) else layer)


def callbacks():
    return [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(model):
    return tfmot.sparsity.keras.strip_pruning(model)


def masks(model):
    """`{layer name: 0/1 kernel mask}` of the pruned layers of a stripped model."""
    return {layer.name: (layer.kernel.numpy() != 0).astype("float32")
            for layer in model.layers if prunable(layer)}


def sparsity_report(model):
    """Zero fraction of each pruned kernel and over all of them."""
    zeros = total = 0
    per_layer = {}
    for layer in model.layers:
        if prunable(layer):
            kernel = layer.kernel.numpy()
            per_layer[layer.name] = float(np.mean(kernel == 0))
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return {"pruned_layers": len(per_layer), "pruned_weights": total,
            "sparsity": zeros / max(total, 1), "per_layer": per_layer}


def kernel_variable(layer, shape):
    """The kernel variable of a layer or of its QuantizeWrapper: the wrapper rebinds the
    inner layer's `.kernel` to its fake-quantized tensor and tracks the variable itself."""
    for weight in layer.trainable_weights:
        if "kernel" in weight.name and tuple(weight.shape) == tuple(shape):
            return weight
    raise RuntimeError(f"No kernel variable of shape {tuple(shape)} in layer '{layer.name}'.")


def keep_sparse_callback(model, kernel_masks):
    """A callback re-applying the pruning masks after each training batch, so that QAT
    fine-tuning of a pruned model keeps its zeros (QuantizeWrapper holds the layer)."""
    import tf_keras

    targets = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in kernel_masks:
            targets.append((kernel_variable(layer, kernel_masks[inner.name].shape),
                            kernel_masks[inner.name]))

    class KeepSparse(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for variable, mask in targets:
                variable.assign(variable * mask)

    if len(targets) != len(kernel_masks):
        raise RuntimeError(f"Found {len(targets)} of {len(kernel_masks)} pruned kernels in "
                           "the QAT model; the layer names changed.")
    return KeepSparse()
