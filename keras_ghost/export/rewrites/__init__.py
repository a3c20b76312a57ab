"""The deploy-time rewrites, one small object each (`find` a pattern, build its
replacement); `keras_ghost.export.deploy_pipeline` orders them."""

from keras_ghost.export.rewrites.activations import (FoldHardSigmoid, FuseReluAfterConcat,
                                                     SplitHardSwish)
from keras_ghost.export.rewrites.base import Graph, Rewrite
from keras_ghost.export.rewrites.branches import FuseParallelBranches
from keras_ghost.export.rewrites.concat import MergeGhostConcat, MoveConcatAfterDepthwise
from keras_ghost.export.rewrites.folding import AbsorbPadding, DropTrainingLayers, FoldBatchNorm
from keras_ghost.export.rewrites.gate import PoolAsDepthwise, UpsampledGateMultiply

__all__ = ["AbsorbPadding", "DropTrainingLayers", "FoldBatchNorm", "FoldHardSigmoid", "FuseParallelBranches",
           "FuseReluAfterConcat", "Graph", "MergeGhostConcat", "MoveConcatAfterDepthwise",
           "PoolAsDepthwise", "Rewrite", "SplitHardSwish", "UpsampledGateMultiply"]
