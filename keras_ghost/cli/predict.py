"""Classifies images with a trained model: top-k class names and scores per image.

    keras-ghost predict out/train/ghostnet_100/best.keras photo.jpg
    keras-ghost predict out/train/ghostnet_100/ghostnet_100_int8.tflite photos/ --top-k 3
    keras-ghost predict model.tflite 'photos/*.png' --json > predictions.json

MODEL is a .keras or .tflite file (fp32 or int8) written by `keras-ghost train` (or
`convert --keras-model` of such a file): the class names and the preprocessing it was
trained with (input size, resize and center crop, mean/std) are read from the file
itself, so images are prepared exactly as in validation. IMAGE arguments are files,
folders (every image below them) or glob patterns. Unreadable images are listed and
skipped. (`python tflite/predict.py ...` from a checkout runs the same code.)
"""

import dataclasses
import glob
import json
import sys
from pathlib import Path

from keras_ghost.cli import common

MODEL_SUFFIXES = (".keras", ".tflite")
PROGRESS_FROM = 100  # images: fewer are read before a bar would be worth drawing


@dataclasses.dataclass(frozen=True)
class Prediction:
    image: str
    top_k: tuple  # ((label, class index, score), ...), best first

    def to_dict(self):
        return {"image": self.image, "top_k": [
            {"label": label, "index": index, "score": round(score, 6)}
            for label, index, score in self.top_k]}


def parse_args(argv=None):
    p = common.Parser(prog="keras-ghost predict", description=__doc__)
    p.add_argument("model", type=Path, help="a .keras or .tflite model with keras_ghost "
                                            "metadata (written by keras-ghost train)")
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--top-k", type=common.positive_int, default=5,
                   help="classes to list per image (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.add_argument("--batch-size", type=common.positive_int, default=32,
                   help="images per call of a .keras model (default %(default)s)")
    p.add_logging_flags()
    return p.parse_args(argv)


def image_paths(arguments):
    """Image files named by `arguments` (files, folders searched recursively, globs), in
    order, without repeats; UsageError for an argument that names nothing."""
    from keras_ghost.image_folder import IMAGE_EXTENSIONS

    found = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            matches = sorted(str(p) for p in path.rglob("*")
                             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not matches:
                raise common.UsageError(f"{argument}: a folder without images "
                                        f"({', '.join(IMAGE_EXTENSIONS)})")
        elif path.is_file():
            matches = [str(path)]
        else:
            matches = sorted(p for p in glob.glob(str(path), recursive=True)
                             if Path(p).is_file())
            if not matches:
                raise common.UsageError(f"{argument}: no such image file, folder or pattern")
        found += matches
    return list(dict.fromkeys(found))


def read_metadata(path):
    """The model file's `ModelMetadata`; UsageError when it has none."""
    from keras_ghost import metadata

    try:
        card = metadata.read(path)
    except (OSError, ValueError) as e:  # truncated, or another format
        raise common.UsageError(f"MODEL {e}; pass a file written by keras-ghost") from None
    if card is None:
        raise common.UsageError(
            f"{path} carries no keras_ghost metadata (class names, input size, mean/std), so "
            "its preprocessing is unknown: use a model written by `keras-ghost train` "
            "(best.keras, or its --export .tflite)")
    return card


def load_images(paths, card, progress=None):
    """`(images, readable paths, [(path, reason)])`, preprocessed as in validation;
    `progress(done, total)` after each image."""
    import numpy as np

    from keras_ghost.image_folder import read_image
    from keras_ghost.training.data import eval_image

    images, kept, skipped = [], [], []
    for path in paths:
        image, problem = read_image(path)  # the same check as training's folder scan
        if problem:
            skipped.append((path, problem))
        else:
            images.append(eval_image(image, card.image_size, mean=card.mean, std=card.std,
                                     crop_pct=card.crop_pct, interpolation=card.interpolation))
            kept.append(path)
        if progress:
            progress(len(kept) + len(skipped), len(paths))
    shape = (0, *card.image_size, 3)
    return (np.stack(images) if images else np.zeros(shape, "float32")), kept, skipped


def predict(model_path, images, card, *, batch_size=32):
    """Scores `(n, classes)` of preprocessed `images` (softmax of logits); a .tflite runs
    on LiteRT with XNNPACK, int8 inputs and outputs (de)quantized with their scales."""
    import numpy as np

    if model_path.suffix == ".tflite":
        from keras_ghost.export import tflite

        outputs = tflite.run(model_path.read_bytes(), images)
    else:
        from keras_ghost.weights.loading import load_keras_model

        outputs = np.asarray(load_keras_model(model_path).predict(
            images, batch_size=batch_size, verbose=0), "float32")
    if not card.logits:
        return outputs
    shifted = np.exp(outputs - outputs.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def top_k(scores, labels, k):
    import numpy as np

    order = np.argsort(-scores)[:k]
    return tuple((labels[i] if i < len(labels) else str(i), int(i), float(scores[i]))
                 for i in order)


def main(argv=None):
    """`keras-ghost predict`; returns the list of `Prediction`s."""
    return common.run(_main, argv)


def _main(argv):
    args = parse_args(argv)
    model = common.check_input_file(args.model, "MODEL", MODEL_SUFFIXES)
    paths = image_paths(args.images)
    card = read_metadata(model)
    progress = common.Progress(enabled=not args.quiet and len(paths) > PROGRESS_FROM)
    images, kept, skipped = load_images(paths, card, progress.bar("images"))
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if not kept:
        raise common.UsageError(f"none of the {len(paths)} images could be read")
    scores = predict(model, images, card, batch_size=args.batch_size)
    results = [Prediction(path, top_k(row, card.labels, args.top_k))
               for path, row in zip(kept, scores)]
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        for r in results:
            print(f"{r.image}: " + ", ".join(f"{label} {score:.3f}"
                                             for label, _, score in r.top_k))
    if skipped:
        print(f"{len(skipped)} of {len(paths)} images skipped (unreadable)", file=sys.stderr)
    return results
