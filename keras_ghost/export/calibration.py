"""Calibration and held-out images for post-training quantization.

Sources: the images bundled with the package (200 CIFAR-10 test images, 20 per class,
from the JPEG re-encoding of the CIFAR-10 test split; see keras_ghost/data/README.md),
a TFDS dataset `name[:split]` read from a local data dir, or a folder of image files.
"""

import re
from importlib import resources
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def bundled_images():
    """The bundled uint8 images, shape (200, 32, 32, 3)."""
    with resources.files("keras_ghost").joinpath("data/calibration_images.npz").open("rb") as f:
        with np.load(f) as data:
            return data["images"]


def load_images(source=None, data_dir=None, limit=256):
    """Returns up to `limit` uint8 RGB images (list of HxWx3 arrays) from `source`.

    `source` is None (bundled images), a TFDS name with optional split ("cifar10:train"),
    or a folder of image files.
    """
    if source is None:
        return list(bundled_images()[:limit])
    if Path(source).is_dir():
        return _folder_images(Path(source), limit)
    return _tfds_images(source, data_dir, limit)


def _folder_images(folder, limit):
    import tensorflow as tf

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}.")
    images = []
    for path in files:
        try:
            images.append(tf.io.decode_image(tf.io.read_file(str(path)), channels=3,
                                             expand_animations=False).numpy())
        except tf.errors.OpError as e:  # a corrupt or truncated file: name it
            # TF's message is "{{function_node ...}} jpeg::Uncompress failed. ... [Op:...]"
            reason = re.sub(r"\{\{.*?\}\}\s*", "", " ".join(e.message.split()))
            reason = reason.split(" [Op:")[0][:160]
            raise ValueError(f"{path} is not a readable image ({reason}); remove or replace "
                             f"it, or give --calib-data a folder without it.") from None
    return images


def _tfds_images(source, data_dir, limit):
    import tensorflow_datasets as tfds

    from keras_ghost.training.data import DatasetNotPreparedError, load_tfds

    name, _, split = str(source).partition(":")
    try:
        ds, _, _ = load_tfds(name, split or "train", data_dir)
    except DatasetNotPreparedError:
        raise
    except ValueError as e:
        raise ValueError(f"Unknown calibration source '{source}': not a folder and not a TFDS "
                         f"dataset ({e}). Use a folder of images or a TFDS name such as "
                         "'cifar10:train' with --data-dir.") from e
    return [image for image, _ in tfds.as_numpy(ds.take(limit))]


def to_model_input(images, input_shape, mean=None, std=None):
    """Resizes uint8 images to `input_shape` (h, w, c) and normalizes them with mean/std
    (omit both for models that take raw pixels). Returns float32 (n, h, w, c)."""
    import tensorflow as tf

    height, width, channels = input_shape
    batch = []
    for image in images:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != channels:
            raise ValueError(f"Calibration image of shape {image.shape} does not fit the model "
                             f"input {tuple(input_shape)}: images must be HxWx{channels}.")
        resized = tf.image.resize(image.astype("float32"), (height, width), method="bilinear")
        batch.append(resized.numpy())
    x = np.stack(batch).astype("float32")
    if mean is not None:
        x = (x / 255.0 - np.asarray(mean, "float32")) / np.asarray(std, "float32")
    return x
