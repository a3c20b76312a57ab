"""Model builders and the registry of named variants."""

from keras_ghost.models.ghostnet import GhostNet, GhostNetV2
from keras_ghost.models.registry import ModelSpec, create_model, get_spec, list_models, register

__all__ = ["GhostNet", "GhostNetV2", "ModelSpec", "create_model", "get_spec", "list_models",
           "register"]
