"""keras_ghost: the Ghost family of mobile CNNs (GhostNet, GhostNetV2, ...) for Keras 3."""

from keras_ghost import layers
from keras_ghost.models import AsymmNetLarge, AsymmNetSmall
from keras_ghost.models import CifarResNet56, CifarVGG16, GhostResNet50
from keras_ghost.models import GhostNet, GhostNetV2, GhostNetV3, ModelSpec, create_model, get_spec, list_models
from keras_ghost.models import GGhostRegNet, GGhostResNet34, RegNetX, ResNet34
from keras_ghost.layers.g_ghost import g_ghost_stage
from keras_ghost.models.features import FeatureInfo, feature_info
from keras_ghost.models.ghostify import ghostify
from keras_ghost.preprocessing import preprocess_input
from keras_ghost.profiling import Profile, profile
from keras_ghost.reparam import reparameterize

__version__ = "0.1.0"


def load_model(path):
    """Loads a `.keras` model file safely (`safe_mode=True`) with one-line errors; files
    written by keras_ghost 0.1 (dotted layer names) load with today's names."""
    from keras_ghost.weights.loading import load_keras_model

    return load_keras_model(path)


def create_backbone(name, **kwargs):
    """A keras-hub `FeaturePyramidBackbone` of the registered variant `name` (see
    `keras_ghost.models.backbone.GhostBackbone` for the arguments); needs keras-hub."""
    from keras_ghost.models.backbone import create_backbone as create

    return create(name, **kwargs)


__all__ = [
    "GGhostRegNet",
    "GGhostResNet34",
    "RegNetX",
    "ResNet34",
    "AsymmNetLarge",
    "AsymmNetSmall",
    "CifarResNet56",
    "CifarVGG16",
    "GhostNet",
    "GhostNetV2",
    "GhostNetV3",
    "GhostResNet50",
    "FeatureInfo",
    "load_model",
    "ModelSpec",
    "Profile",
    "create_backbone",
    "create_model",
    "feature_info",
    "g_ghost_stage",
    "get_spec",
    "ghostify",
    "layers",
    "list_models",
    "preprocess_input",
    "profile",
    "reparameterize",
]
