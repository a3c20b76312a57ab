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


class UnknownSplitError(ValueError):
    """A split that the dataset does not have (the message lists the ones it has)."""


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
        raise UnknownSplitError(f"TFDS dataset '{name}': bad split {split!r} ({e}). "
                                f"Splits: {', '.join(sorted(info.splits))}.") from None
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    return ds, info.features[label_key].num_classes, num_examples


def tfds_label_names(name, data_dir=None):
    """The class names of a prepared TFDS dataset's label feature, or None."""
    import tensorflow_datasets as tfds

    try:
        info = tfds.builder(name, data_dir=data_dir).info
        return list(info.features[info.supervised_keys[1]].names)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None  # no class names (no supervised keys, a label without ClassLabel)


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


# ---------------------------------------------------------------------------------------
# Training input: any TFDS image-classification dataset or a folder of class subfolders,
# ImageNet-style augmentation, eval resize + center crop, and a throughput benchmark.

CROPS = ("random_resized", "pad_crop")


def load_folder(root, split=None):
    """Reads a folder of images in class subfolders (`root/<class>/*.jpg`, or
    `root/<split>/<class>/*.jpg` when `split` is given), decoding in parallel, without the
    checks and the validation split of `keras_ghost.image_folder.scan` (what `train` uses).

    Returns `(dataset, class_names, num_examples)` like `load_tfds`; classes are the sorted
    subfolder names, so train and eval folders with the same classes agree on labels.
    """
    from pathlib import Path

    from keras_ghost import image_folder

    folder = Path(root) / split if split else Path(root)
    layout = "ROOT/<split>/<class>/*.jpg" if split else "ROOT/<class>/*.jpg"
    if not folder.is_dir():
        raise DatasetNotPreparedError(
            f"Image folder {folder} does not exist. Arrange the images as {layout} "
            "(one subfolder per class), or pass a TFDS dataset name instead.")
    files = image_folder.class_files(folder)
    paths = [p for names in files.values() for p in names]
    labels = [label for label, names in enumerate(files.values()) for _ in names]
    if not paths:
        raise DatasetNotPreparedError(
            f"No images ({', '.join(image_folder.IMAGE_EXTENSIONS)}) in class subfolders of "
            f"{folder}; arrange them as {layout}.")
    return image_folder.files_dataset(paths, labels), list(files), len(paths)


def load_dataset(name=None, split="train", data_dir=None, folder=None):
    """`load_tfds(name, split, data_dir)`, or `load_folder(folder, split)` when `folder`
    is given. Returns `(dataset, num_classes, num_examples)`."""
    if folder is not None:
        ds, classes, count = load_folder(folder, split)
        return ds, len(classes), count
    if name is None:
        raise ValueError("Pass a TFDS dataset name (e.g. 'cifar10') or an image folder.")
    return load_tfds(name, split, data_dir)


def _size2(image_size):
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def random_resized_crop(image, size, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        method="bilinear"):
    """Inception-style crop: a random box of `scale` of the area and `ratio` aspect,
    resized to `size`; stateless, so keyed by `seed` (shape (2,))."""
    import tensorflow as tf

    whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), whole, seed=seed, min_object_covered=0.0, aspect_ratio_range=ratio,
        area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, extent)
    return tf.image.resize(tf.cast(crop, tf.float32), size, method=method)


def resize_center_crop(image, size, crop_pct=0.875, method="bicubic"):
    """The eval transform: resize (keeping the aspect ratio) so the image covers
    `size / crop_pct`, then crop `size` from the center (timm's eval transform)."""
    import tensorflow as tf

    target = tf.constant([size[0] / crop_pct, size[1] / crop_pct], tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.reduce_max(target / shape)
    new = tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32)
    new = tf.maximum(new, tf.constant(size, tf.int32))
    image = tf.image.resize(tf.cast(image, tf.float32), new, method=method)
    # Bicubic overshoots; keep the 0..255 range the normalization expects.
    image = tf.clip_by_value(image, 0.0, 255.0)
    top = (new[0] - size[0]) // 2
    left = (new[1] - size[1]) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size[0], size[1])


def train_pipeline(ds, image_size, *, batch_size, mean, std, num_classes, crop="random_resized",
                   crop_scale=(0.08, 1.0), padding=4, interpolation="bilinear",
                   randaugment_magnitude=None, randaugment_ops=2, erasing_prob=0.0,
                   mixup_alpha=0.0, cutmix_alpha=0.0, seed=None, deterministic=None,
                   shuffle_buffer=10_000, cache=False, repeat=False):
    """Training batches `(float32 normalized image, one-hot float label)`.

    `crop` is "random_resized" (Inception crop to `image_size`, ImageNet) or "pad_crop"
    (zero-pad by `padding`, random crop back, CIFAR); then a random horizontal flip.
    Options: RandAugment (`randaugment_magnitude` 0..10 as timm's `rand-m9`), random
    erasing with probability `erasing_prob`, and per batch mixup or cutmix (one of them,
    chosen at random, when both alphas are set). Labels are one-hot so label smoothing and
    mixing work on them. With a `seed` everything is reproducible; `deterministic` (default:
    True when seeded) keeps the element order fixed despite parallel maps.
    """
    import keras
    import tensorflow as tf

    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}.")
    size = _size2(image_size)
    deterministic = seed is not None if deterministic is None else deterministic
    mean = tf.constant(np.asarray(mean, "float32") * 255.0)
    std = tf.constant(np.asarray(std, "float32") * 255.0)
    # Keras' random layers draw from a stateful seed generator: reproducible only when
    # they see the examples in order, so they run sequentially in deterministic mode.
    layer_calls = None if deterministic else AUTOTUNE

    def crop_flip(element, seeds):
        (image, label) = element
        channels = image.shape[-1]
        crop_seed, flip_seed = tf.unstack(tf.reshape(seeds, (2, 2)))
        if crop == "random_resized":
            image = random_resized_crop(image, size, crop_seed, scale=crop_scale,
                                        method=interpolation)
        else:
            if tuple(image.shape[:2]) != size:
                image = tf.image.resize(tf.cast(image, tf.float32), size, method=interpolation)
            padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
            image = tf.image.stateless_random_crop(padded, (*size, 3), seed=crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        image = tf.ensure_shape(image, (*size, channels))  # the crop loses the static shape
        return tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0), label

    if cache:
        ds = ds.cache()
    if repeat:
        ds = ds.repeat()
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # Per-example seeds for the stateless ops: fresh every epoch, reproducible from `seed`.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4)
    ds = tf.data.Dataset.zip(ds, seeds).map(crop_flip, num_parallel_calls=AUTOTUNE)
    if randaugment_magnitude:
        randaugment = keras.layers.RandAugment(value_range=(0, 255), num_ops=randaugment_ops,
                                               factor=randaugment_magnitude / 10.0, seed=seed)
        ds = ds.map(lambda x, y: (randaugment(x), y), num_parallel_calls=layer_calls)
    if erasing_prob:
        erasing = keras.layers.RandomErasing(factor=erasing_prob, value_range=(0, 255),
                                             seed=seed)
        ds = ds.map(lambda x, y: (erasing(x), y), num_parallel_calls=layer_calls)

    def normalize(image, label):
        return (image - mean) / std, tf.one_hot(label, num_classes)

    ds = ds.map(normalize, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=True)
    mixers = []
    if mixup_alpha:
        mixers.append(keras.layers.MixUp(alpha=mixup_alpha, seed=seed))
    if cutmix_alpha:
        mixers.append(keras.layers.CutMix(factor=cutmix_alpha, seed=seed))
    if mixers:
        ds = ds.map(_mix_batch(mixers, seed), num_parallel_calls=layer_calls)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)


def _mix_batch(mixers, seed):
    """A batch map that applies one of `mixers` (Keras MixUp / CutMix), picked at random."""
    import tensorflow as tf

    def mix(images, labels):
        def apply(layer):
            out = layer({"images": images, "labels": labels})
            return out["images"], out["labels"]

        if len(mixers) == 1:
            return apply(mixers[0])
        pick = tf.random.uniform((), seed=seed) < 0.5  # timm switches with probability 0.5
        return tf.cond(pick, lambda: apply(mixers[0]), lambda: apply(mixers[1]))

    return mix


def eval_pipeline(ds, image_size, *, batch_size, mean, std, num_classes, crop_pct=0.875,
                  interpolation="bicubic"):
    """Eval batches `(float32 normalized image, one-hot label)`: resize + center crop with
    the model's crop ratio (`resize_center_crop`); images already at `image_size` with
    `crop_pct` 1 pass unchanged. Keeps the last partial batch."""
    import tensorflow as tf

    size = _size2(image_size)
    mean = tf.constant(np.asarray(mean, "float32") * 255.0)
    std = tf.constant(np.asarray(std, "float32") * 255.0)
    unchanged = tuple(ds.element_spec[0].shape[:2]) == size and crop_pct == 1.0

    def transform(image, label):
        if unchanged:
            image = tf.cast(image, tf.float32)
        else:
            image = resize_center_crop(image, size, crop_pct, interpolation)
        return (image - mean) / std, tf.one_hot(label, num_classes)

    return ds.map(transform, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)


def eval_image(image, image_size, *, mean, std, crop_pct=0.875, interpolation="bicubic"):
    """One decoded uint8 image as `eval_pipeline` prepares it: float32 HxWx3 numpy."""
    import tensorflow as tf

    size = _size2(image_size)
    if tuple(image.shape[:2]) == size and crop_pct == 1.0:
        image = tf.cast(image, tf.float32)
    else:
        image = resize_center_crop(image, size, crop_pct, interpolation)
    mean = np.asarray(mean, "float32") * 255.0
    std = np.asarray(std, "float32") * 255.0
    return ((image.numpy() - mean) / std).astype("float32")


def benchmark_input(ds, steps, warmup=5):
    """Pulls `steps` batches from `ds` after `warmup` untimed ones; returns a dict with
    batches, images and images per second (the input pipeline alone, no model)."""
    import time

    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    images = 0
    start = time.perf_counter()
    for _ in range(steps):
        x, _ = next(iterator)
        images += int(x.shape[0])
    seconds = time.perf_counter() - start
    return {"batches": steps, "images": images, "seconds": round(seconds, 3),
            "images_per_second": round(images / seconds, 1)}
