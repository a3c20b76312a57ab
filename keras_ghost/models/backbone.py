"""keras-hub backbones of every registered variant: `create_backbone("ghostnet_100")` is a
`keras_hub.models.FeaturePyramidBackbone`, so keras-hub's detectors (RetinaNet, ...) take it
as their `image_encoder`. Needs the optional `keras-hub` package (`pip install
keras-ghost[detection]`)."""

import keras

try:
    import keras_hub
except ImportError as error:  # the optional extra
    raise ImportError("keras_ghost.create_backbone needs keras-hub: pip install keras-hub "
                      "(or keras-ghost[detection]).") from error

from keras_ghost.models.registry import create_model


@keras.saving.register_keras_serializable(package="keras_ghost")
class GhostBackbone(keras_hub.models.FeaturePyramidBackbone):
    """A registered variant's `features_only` model as a keras-hub backbone.

    Its output is the deepest level; `pyramid_outputs` holds every level as
    `{"P1": ..., "P5": ...}` (Pn at stride 2**n). Saves and loads like keras-hub backbones
    (`.keras` files, `save_to_preset`); the config rebuilds the graph, the weights file
    fills it.

    Args:
        model_name: a registered variant (`keras_ghost.list_models()`).
        feature_levels: the levels to expose; default all the variant has.
        output_stride: 32, or 16 / 8 by dilation of the last stages.
        image_shape: input (height, width, channels); (None, None, 3) for any size.
        model_kwargs: more builder arguments (e.g. `include_preprocessing=True` for raw
            0..255 pixels, `weights=`, `feature_taps="timm"`). `weights` is used to build
            and not kept in the config (saved weights restore it).
    """

    def __init__(self, model_name, feature_levels=None, output_stride=32,
                 image_shape=(None, None, 3), model_kwargs=None, dtype=None, **kwargs):
        model_kwargs = dict(model_kwargs or {})
        reserved = {"features_only", "feature_levels", "output_stride", "input_shape",
                    "input_tensor"} & set(model_kwargs)
        if reserved:
            raise ValueError(f"GhostBackbone: pass {sorted(reserved)} as its own arguments "
                             "(feature_levels, output_stride, image_shape), not in "
                             "model_kwargs.")
        features = create_model(model_name, features_only=True, feature_levels=feature_levels,
                                output_stride=output_stride, input_shape=tuple(image_shape),
                                **model_kwargs)
        pyramid = dict(features.output)
        deepest = pyramid[sorted(pyramid)[-1]]
        kwargs.setdefault("name", f"{features.name}_backbone")
        super().__init__(inputs=features.inputs, outputs=deepest, dtype=dtype, **kwargs)
        self.model_name = model_name
        self.feature_levels = None if feature_levels is None else tuple(feature_levels)
        self.output_stride = output_stride
        self.image_shape = tuple(image_shape)
        self.model_kwargs = {k: v for k, v in model_kwargs.items() if k != "weights"}
        self.pyramid_outputs = pyramid

    def get_config(self):
        config = super().get_config()
        config.update({"model_name": self.model_name,
                       "feature_levels": (None if self.feature_levels is None
                                          else list(self.feature_levels)),
                       "output_stride": self.output_stride,
                       "image_shape": list(self.image_shape),
                       "model_kwargs": self.model_kwargs})
        return config


def create_backbone(name, feature_levels=None, output_stride=32, image_shape=(None, None, 3),
                    **model_kwargs):
    """A `GhostBackbone` (keras-hub `FeaturePyramidBackbone`) of the registered variant
    `name`; `model_kwargs` go to its builder (e.g. `weights="imagenet"`)."""
    return GhostBackbone(name, feature_levels=feature_levels, output_stride=output_stride,
                         image_shape=image_shape, model_kwargs=model_kwargs)
