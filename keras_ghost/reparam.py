"""Structural re-parameterization of functional Keras models (RepVGG, MobileOne,
GhostNetV3): the deploy rewrite `keras_ghost.export.rewrites.FuseParallelBranches`
(which documents the branches it fuses) as a function of its own."""

from keras_ghost.graph import check_functional, copy_call, rebuild


def reparameterize(model, verify=True, atol=1e-5, name=None):
    """Returns a new functional model in deployed form: every sum of parallel conv / BN /
    identity branches of one input fused into one conv with bias; all other layers keep
    their weights. With `verify`, both models run on a random batch in inference mode and
    must agree within `atol` times the output scale. A model without such sums comes back
    as an equal copy. The export path (`optimize_for_inference`) does this first."""
    import keras

    from keras_ghost.export.optimize import check_equivalent
    from keras_ghost.export.rewrites import FuseParallelBranches

    check_functional(model, "reparameterize")
    deployed = FuseParallelBranches()(model)
    if deployed is model:
        deployed = rebuild(model, copy_call)
    if name:
        deployed = keras.Model(deployed.inputs, deployed.outputs, name=name)
    if verify:
        check_equivalent(model, deployed, atol=atol, who="reparameterize")
    return deployed


def fusable_sums(model):
    """Names of the Add layers `reparameterize` would fuse (for inspection and tests)."""
    from keras_ghost.export.rewrites import Graph
    from keras_ghost.export.rewrites.branches import plan_fusions

    check_functional(model, "fusable_sums")
    return [f.add.name for f in plan_fusions(Graph.of(model))]


__all__ = ["fusable_sums", "reparameterize"]
