"""Training utilities: tf.data/TFDS input pipelines, recipes, optimizers, distillation,
distribution, the training run behind training/train.py, and the int8 quality gate."""

from keras_ghost.training.data import (classification_pipeline, eval_pipeline, load_dataset,
                                       load_folder, load_tfds, train_pipeline)
from keras_ghost.training.recipes import Recipe, list_recipes, load_recipe

__all__ = ["Recipe", "classification_pipeline", "eval_pipeline", "list_recipes", "load_dataset",
           "load_folder", "load_recipe", "load_tfds", "train_pipeline"]
