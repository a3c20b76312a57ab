"""Model builders and the registry of named variants."""

from keras_ghost.models.asymmnet import AsymmNetLarge, AsymmNetSmall
from keras_ghost.models.ghost_plugin import CifarResNet56, CifarVGG16, GhostResNet50
from keras_ghost.models.ghostnet import GhostNet, GhostNetV2, GhostNetV3
from keras_ghost.models.g_ghostnet import GGhostRegNet, GGhostResNet34, RegNetX, ResNet34
from keras_ghost.models.registry import ModelSpec, create_model, get_spec, list_models, register

__all__ = ["AsymmNetLarge", "AsymmNetSmall", "CifarResNet56", "CifarVGG16", "GhostResNet50",
           "GGhostRegNet", "GGhostResNet34", "RegNetX", "ResNet34",
           "GhostNet", "GhostNetV2", "GhostNetV3", "ModelSpec",
           "create_model", "get_spec", "list_models", "register"]
