"""Training utilities: TFDS input pipelines and the int8 quality gate."""

from keras_ghost.training.data import classification_pipeline, load_tfds

__all__ = ["classification_pipeline", "load_tfds"]
