"""Deploy-time graph optimization: the same function as a cheaper graph for TFLite/XNNPACK.

`optimize_for_inference(model)` runs an explicit, ordered pipeline of small rewrites
(`keras_ghost.export.rewrites`), each a pattern and its replacement, each rebuilding the
functional graph it is given; none changes what the model computes:

- `DropTrainingLayers`: Dropout / noise layers go.
- `FuseParallelBranches`: sums of parallel conv / BN / identity branches of one input
  (GhostNetV3, RepVGG / MobileOne style: `keras_ghost.reparameterize`) become one conv.
- `FoldBatchNorm`: a BatchNormalization after a conv, depthwise conv or dense layer goes
  into its kernel and bias.
- `AbsorbPadding`: PyTorch padding (ZeroPadding2D(k // 2) + "valid") becomes "same" where
  that is free (stride 1, or stride 2 on an odd size), or everywhere with a zero-grown
  kernel (`remove_pad=True`).
- `FoldHardSigmoid`: the SE gate `x * relu6(z + 3) / 6` loses its `+ 3` (into the bias of
  the conv computing `z`) and its `/ 6` (into the convs reading the product).
- `SplitHardSwish`: `x * relu6(x + 3) / 6` becomes a 1x1 depthwise conv (bias 3, fused
  ReLU6) and a MUL, with the `/ 6` in the layers reading it (XNNPACK has no int8
  HARD_SWISH).
- `UpsampledGateMultiply`: the DFC gate's nearest upsampling and the multiply by it become
  one `UpsampledMultiply` (a broadcast 6-D MUL).
- `PoolAsDepthwise`: AveragePooling2D becomes a constant depthwise conv (XNNPACK has no
  int8 AVERAGE_POOL_2D).
- `MoveConcatAfterDepthwise`: a concat feeding a strided depthwise conv moves after it.
- `MergeGhostConcat`: ghost modules on large maps (`merge_ghost_min_size`) lose their
  concat.
- `FuseReluAfterConcat`: a ReLU with nothing to fuse into becomes a 1x1 identity depthwise
  conv with a fused ReLU (XNNPACK has no standalone int8 RELU).

The order is part of the design: a rewrite matches on the graph the previous ones left
(see `deploy_pipeline`).
"""

import numpy as np

from keras_ghost.graph import check_functional, copy_call, rebuild
from keras_ghost.export import rewrites

MERGE_GHOST_MIN_SIZE = 112


def deploy_settings(mode):
    """optimize_for_inference's settings for an export mode, chosen on exact emulated-ARM
    instruction counts (Cortex-A53 / A76, README): the hard-swish split (XNNPACK has no
    int8 HARD_SWISH) and the ghost-concat merge pay off in int8 only; in fp32 the merge
    costs 1.5-3% (ghostnet_100: 74.85M vs 73.68M instructions on the A76)."""
    int8 = mode == "int8"
    return {"split_hard_swish": int8, "merge_ghost_min_size": MERGE_GHOST_MIN_SIZE if int8 else None}


def deploy_pipeline(remove_pad=None, merge_ghost_min_size=MERGE_GHOST_MIN_SIZE,
                    split_hard_swish=True, fold_hard_sigmoid=True, move_concat=True,
                    reparameterize=True):
    """The ordered rewrites `optimize_for_inference` runs with these settings (same
    arguments). Each entry is a callable `model -> model`; a list of your own (or this one
    edited) runs with `apply_rewrites`."""
    steps = [
        rewrites.DropTrainingLayers(),
        # Before the BN fold: a branch's BN goes with its branch (a BN-only identity branch
        # has no conv of its own to fold into).
        rewrites.FuseParallelBranches() if reparameterize else None,
        # Before everything that matches conv -> activation: the BN is gone from between.
        rewrites.FoldBatchNorm(),
        # Before the concat move: a pad the conv absorbed is not copied onto every part.
        rewrites.AbsorbPadding(grow_kernels=True) if remove_pad else
        None if remove_pad is False else rewrites.AbsorbPadding(),
        rewrites.FoldHardSigmoid() if fold_hard_sigmoid else None,
        # Before PoolAsDepthwise: the / 6 passes through average pools, not convs.
        rewrites.SplitHardSwish() if split_hard_swish else None,
        rewrites.UpsampledGateMultiply(),
        rewrites.PoolAsDepthwise(),
        rewrites.MoveConcatAfterDepthwise() if move_concat else None,
        # After the concat move: a concat before a strided depthwise conv is moved, not
        # merged.
        rewrites.MergeGhostConcat(merge_ghost_min_size) if merge_ghost_min_size else None,
        # Last: only the concats still there need their ReLU as a conv.
        rewrites.FuseReluAfterConcat(),
    ]
    return [step for step in steps if step is not None]


def apply_rewrites(model, steps, verify_each=False, atol=1e-4):
    """Runs the rewrites in order; `verify_each` checks the outputs after every one (and
    names the rewrite that changed them)."""
    for step in steps:
        rewritten = step(model)
        if verify_each and rewritten is not model:
            check_equivalent(model, rewritten, atol=atol, who=repr(step))
        model = rewritten
    return model


def optimize_for_inference(model, remove_pad=None, merge_ghost_min_size=MERGE_GHOST_MIN_SIZE,
                           verify=True, atol=1e-4, split_hard_swish=True, fold_hard_sigmoid=True,
                           move_concat=True, reparameterize=True):
    """Returns an inference-only copy of the functional `model` with the rewrites above.

    Args:
        remove_pad: absorb ZeroPadding2D into "same" convs: `None` (default) only where
            the kernel stays as it is (stride 1, or stride 2 on odd sizes), `True` also
            where it must grow by a zero row/column, `False` never. Growing is not the
            default: XNNPACK fuses a PAD into the conv after it for free, while 4x4 / 6x6
            kernels run far slower (ghostnet_100 int8 on x86, LiteRT 2.3: 6.15 ms with all
            PADs absorbed, 3.41 ms without, one interleaved run).
        merge_ghost_min_size: ghost modules working on maps at least this large (height
            and width) drop their concat: the primary conv also emits the copies of its
            maps that the cheap op reads, and one depthwise conv (identity kernels for the
            intrinsic maps) makes the whole output. Costs a few MACs, saves a full copy;
            pays off only on large maps. `None` turns it off.
        verify: run both models on a random batch; they must agree within `atol`
            (relative to the output scale). Needs a static input shape.
        split_hard_swish: rewrite hard-swish as above (int8 XNNPACK delegation).
        fold_hard_sigmoid: fold the hard-sigmoid gates' `/ 6` and `+ 3` into convs.
        move_concat: move a concat feeding a strided depthwise conv after it.
        reparameterize: fuse multi-branch training-form blocks (GhostNetV3) into single
            convs first; `False` keeps the branches.
    """
    check_functional(model, "optimize_for_inference")
    steps = deploy_pipeline(remove_pad=remove_pad, merge_ghost_min_size=merge_ghost_min_size,
                            split_hard_swish=split_hard_swish,
                            fold_hard_sigmoid=fold_hard_sigmoid, move_concat=move_concat,
                            reparameterize=reparameterize)
    optimized = apply_rewrites(model, steps)
    if optimized is model:  # nothing matched: still hand back a copy, as documented
        optimized = rebuild(model, copy_call)
    if verify:
        check_equivalent(model, optimized, atol=atol)
    return optimized


def check_equivalent(model, optimized, atol=1e-4, seed=0, who="Graph optimization"):
    """Raises if the two models' outputs differ on a random input by more than `atol`
    times the output scale."""
    import keras

    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    if any(d is None for shape in shapes for d in shape):
        return None
    rng = np.random.default_rng(seed)
    x = [rng.standard_normal((2, *shape)).astype("float32") for shape in shapes]
    x = x[0] if len(x) == 1 else x
    # Several outputs (a feature pyramid) compare one by one.
    expected = [np.asarray(y) for y in keras.tree.flatten(model(x, training=False))]
    actual = [np.asarray(y) for y in keras.tree.flatten(optimized(x, training=False))]
    diff = max(float(np.abs(e - a).max()) for e, a in zip(expected, actual))
    scale = max(1.0, max(float(np.abs(e).max()) for e in expected))
    if diff > atol * scale:
        raise AssertionError(f"{who} changed the outputs of '{model.name}' "
                             f"(max abs diff {diff:.3g}); please report this as a bug.")
    return diff
