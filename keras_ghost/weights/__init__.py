"""Weight loading: Keras files, reference PyTorch checkpoints and "imagenet" downloads."""

from keras_ghost.weights.loading import WeightsDownloadError, assign_weights, load_weights

__all__ = ["WeightsDownloadError", "assign_weights", "load_weights"]
