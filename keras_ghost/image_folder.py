"""A folder of a user's own images, one subfolder per class, as training and validation
lists: checked once up front (unreadable files listed and skipped, classes with too
few images named), split reproducibly when there is no validation folder.

Layouts: `DIR/<class>/*` (a seeded, per-class validation split), or `DIR/train/<class>/*`
with `DIR/val/<class>/*` (used as they are). Formats: whatever `decode_image` reads:
JPEG, PNG (gray, RGBA and 16-bit included), WEBP, BMP and GIF (first frame).
"""

import concurrent.futures
import dataclasses
from pathlib import Path
from typing import Tuple

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
MIN_IMAGES = 2  # per class with an automatic split: one to train on, one to validate


class ImageFolderError(ValueError):
    """A folder that cannot be trained on (the message says what to change)."""


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The checked content of a folder: `(path, label)` pairs per split, labels indexing
    `classes` (sorted subfolder names), and the files skipped with the reason."""

    root: Path
    classes: Tuple[str, ...]
    train: Tuple[Tuple[str, int], ...]
    val: Tuple[Tuple[str, int], ...]
    skipped: Tuple[Tuple[str, str], ...] = ()
    auto_split: bool = True

    def summary(self):
        how = "split automatically" if self.auto_split else "from its val folder"
        line = (f"{self.root}: {len(self.classes)} classes, {len(self.train)} training and "
                f"{len(self.val)} validation images ({how})")
        if self.skipped:
            shown = "; ".join(f"{Path(p).name}: {why}" for p, why in self.skipped[:3])
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            line += f"; skipped {len(self.skipped)} unreadable files ({shown}{more})"
        return line

    def split(self, name):
        """`(paths, labels)` of "train" or "val"."""
        pairs = {"train": self.train, "val": self.val}[name]
        return [p for p, _ in pairs], [label for _, label in pairs]


def decode_image(data):
    """RGB uint8 HxWx3 tensor from encoded image bytes (a scalar string tensor)."""
    import tensorflow as tf

    return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)


def read_image(path):
    """`(RGB uint8 HxWx3 tensor, None)` for a readable image file, else `(None, why)`."""
    import tensorflow as tf

    try:
        data = tf.io.read_file(path)
        if int(tf.strings.length(data)) == 0:
            return None, "empty file"
        image = decode_image(data)
        if min(image.shape[:2]) < 1:
            return None, "no pixels"
    except (tf.errors.OpError, ValueError) as e:
        return None, " ".join(str(getattr(e, "message", e)).split())[:80] or type(e).__name__
    return image, None


def class_files(folder):
    """`{class: sorted image paths}` of `folder`'s class subfolders (any depth below each)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {name: sorted(str(p) for p in (folder / name).rglob("*")
                         if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            for name in classes}


def _check(files_by_class, progress=None):
    """Drops unreadable files: `({class: readable files}, ((path, reason), ...))`."""
    every = [f for files in files_by_class.values() for f in files]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # TF's decoders release the GIL
        problems = {}
        problems_of = pool.map(lambda path: read_image(path)[1], every)
        for done, (path, problem) in enumerate(zip(every, problems_of), 1):
            if problem:
                problems[path] = problem
            if progress:
                progress(done, len(every))
    kept = {name: [f for f in files if f not in problems]
            for name, files in files_by_class.items()}
    return kept, tuple(problems.items())


def scan(root, *, val_fraction=0.2, seed=0, train_dir="train", val_dir="val", progress=None):
    """Checks the folder `root` and returns its `ImageFolder`; raises ImageFolderError
    naming the problem (no class subfolders, no images, a class with too few, validation
    classes that training lacks). `progress(done, total)` follows the files checked."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageFolderError(f"image folder {root} does not exist")
    if not 0 < val_fraction < 1:
        raise ImageFolderError(f"the validation fraction must be between 0 and 1, got "
                               f"{val_fraction}")
    has_splits = (root / train_dir).is_dir()
    train_root = root / train_dir if has_splits else root
    train_files = class_files(train_root)
    if not train_files:
        raise ImageFolderError(
            f"{train_root} has no class subfolders: arrange the images as "
            f"{root}/<class>/*.jpg (one subfolder per class, e.g. {root}/cat, {root}/dog)")
    val_root = root / val_dir
    val_files = class_files(val_root) if has_splits and val_root.is_dir() else None
    if val_files is not None:
        extra = sorted(set(val_files) - set(train_files))
        if extra:
            raise ImageFolderError(f"{val_root} has classes that {train_root} lacks: "
                                   f"{', '.join(extra[:5])}; the two must have the same "
                                   "class subfolders")
    if not any(train_files.values()):
        raise ImageFolderError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class "
                               f"subfolders of {train_root}")
    train_files, skipped = _check(train_files, progress)
    if val_files is not None:
        val_files, val_skipped = _check(val_files, progress)
        skipped += val_skipped
    classes = tuple(train_files)
    least = 1 if val_files is not None else MIN_IMAGES
    few = [(name, len(files)) for name, files in train_files.items() if len(files) < least]
    if few:
        listed = ", ".join(f"'{name}' ({n})" for name, n in few[:5])
        raise ImageFolderError(
            f"too few readable images in class {listed}: each class needs at least {least}"
            + (" (one to train on, one to validate)" if least > 1 else "")
            + "; add images or remove the subfolder")
    if val_files is not None:
        train = [(f, i) for i, name in enumerate(classes) for f in train_files[name]]
        val = [(f, classes.index(name)) for name, files in val_files.items() for f in files]
        if not val:
            raise ImageFolderError(f"no readable images in {val_root}")
        return ImageFolder(root, classes, tuple(train), tuple(val), skipped, auto_split=False)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label, name in enumerate(classes):
        files = list(train_files[name])
        rng.shuffle(files)
        # At least one of each class on both sides.
        n_val = min(max(1, round(val_fraction * len(files))), len(files) - 1)
        val += [(f, label) for f in sorted(files[:n_val])]
        train += [(f, label) for f in sorted(files[n_val:])]
    return ImageFolder(root, classes, tuple(train), tuple(val), skipped, auto_split=True)


def dataset(folder, split, limit=None, seed=0):
    """`tf.data` of `(uint8 image, int64 label)` for `folder.split(split)` ("train" or
    "val"), decoded in parallel, in file order (which is class order). With `limit`, a
    seeded random `limit` of the files, so that every class is among them (calibration
    images, a shorter evaluation). Returns `(dataset, num_examples)`."""
    paths, labels = folder.split(split)
    if limit and limit < len(paths):
        keep = np.sort(np.random.default_rng(seed).permutation(len(paths))[:limit])
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return files_dataset(paths, labels), len(paths)


def files_dataset(paths, labels):
    """`tf.data` of `(uint8 RGB image, int64 label)` decoding `paths` in parallel."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((list(paths), tf.constant(labels, tf.int64)))
    return ds.map(lambda p, y: (decode_image(tf.io.read_file(p)), y),
                  num_parallel_calls=tf.data.AUTOTUNE)
