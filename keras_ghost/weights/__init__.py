"""Weight loading: Keras files, reference PyTorch checkpoints and "imagenet" downloads."""

from keras_ghost.weights.loading import assign_weights, load_weights

__all__ = ["assign_weights", "load_weights"]
