"""tf.data input pipelines for image classification from TFDS datasets.

`load_tfds` reads a prepared dataset (offline: nothing is downloaded) and
`classification_pipeline` turns its `(uint8 image, label)` pairs into normalized model
batches, with CIFAR-style augmentation for training.
"""

import difflib

import numpy as np

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow at module import


class DatasetNotPreparedError(FileNotFoundError, ValueError):
    """A known TFDS dataset that is not prepared in the data dir (a missing file, and a
    bad argument value of whoever named that dir)."""


def load_tfds(name, split, data_dir=None):
    """Reads split `split` (any TFDS split string, e.g. "train[:1000]") of the prepared
    TFDS dataset `name` in `data_dir`, in file order.

    Returns `(dataset, num_classes, num_examples)`; the dataset yields `(image, label)`
    with uint8 HxWxC images. Raises ValueError for an unknown dataset or split, or one
    that is not prepared in `data_dir`.
    """
    import tensorflow_datasets as tfds

    builders = tfds.list_builders()
    base = name.split("/")[0].split(":")[0]  # "imagenet_resized/32x32", "cifar10:3.0.2"
    if base not in builders:
        close = difflib.get_close_matches(base, builders, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown TFDS dataset '{name}'.{hint} "
                         "tfds.list_builders() lists the known names.")
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        where = data_dir or builder.data_dir
        raise DatasetNotPreparedError(
            f"TFDS dataset '{name}' is not prepared in {where}. Prepare it with `tfds build "
            f"{name} --data_dir {where}` (or tfds.load(..., download=True) with internet "
            "access), or pass the data dir that holds it.")
    info = builder.info
    if info.supervised_keys is None or len(info.supervised_keys) != 2:
        raise ValueError(f"TFDS dataset '{name}' has no (image, label) supervised keys.")
    label_key = info.supervised_keys[1]
    try:
        num_examples = info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        raise ValueError(f"TFDS dataset '{name}': bad split {split!r} ({e}). Splits: "
                         f"{', '.join(sorted(info.splits))}.") from None
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    return ds, info.features[label_key].num_classes, num_examples


def classification_pipeline(ds, image_size, *, training, batch_size, mean, std, seed=None,
                            padding=4, shuffle_buffer=10_000, cache=False):
    """Batches `(uint8 image, label)` pairs as `(float32 normalized image, int label)`.

    Images are resized to `image_size` (an int or `(height, width)`) when their size
    differs and normalized as `(x / 255 - mean) / std`. With `training`, the examples are
    shuffled and augmented the CIFAR way (zero-pad by `padding` pixels, random crop back
    to the source size, random horizontal flip); the last partial batch is dropped.
    With a `seed`, shuffling and augmentation are reproducible (epoch by epoch) despite
    the parallel map. `cache` keeps the decoded source images in memory, which pays off
    from the second epoch on for small datasets such as CIFAR.
    """
    import tensorflow as tf

    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    mean = tf.constant(np.asarray(mean, "float32") * 255.0)
    std = tf.constant(np.asarray(std, "float32") * 255.0)
    resize = tuple(ds.element_spec[0].shape[:2]) != size

    def finish(image, label):
        image = tf.cast(image, tf.float32)
        if resize:
            # Bilinear, as keras_ghost.export.to_model_input resizes calibration images.
            image = tf.image.resize(image, size, method="bilinear")
        return (image - mean) / std, label

    def augment(element, seeds):
        image, label = element
        source = tf.shape(image)
        padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
        # Stateless ops keyed by a per-example seed keep the parallel map deterministic.
        crop_seed, flip_seed = tf.unstack(tf.reshape(seeds, (2, 2)))
        image = tf.image.stateless_random_crop(padded, source, seed=crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return finish(image, label)

    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        # Fresh augmentation seeds every epoch, reproducible from `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4)
        ds = tf.data.Dataset.zip(ds, seeds).map(augment, num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(finish, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)
