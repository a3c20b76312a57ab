"""Runs one backend's side of tests/test_backends.py: `python backend_worker.py JOB.json`
with KERAS_BACKEND set. Reads the TensorFlow side's weights from the job's folder and
writes outputs there, named `{what}.{backend}.npy`."""

import dataclasses
import json
import sys
from pathlib import Path
from typing import List, Optional

import keras
import numpy as np

import keras_ghost


@dataclasses.dataclass
class Job:
    folder: str
    names: List[str]            # forward and features_only at `shape`, TF's weights
    shape: List[int]
    fit_name: Optional[str] = None  # fit, save, dynamic input size
    # (.keras file, .npy images) pairs: load the file, predict the images
    loads: List[List[str]] = dataclasses.field(default_factory=list)
    checkpoint: Optional[str] = None  # a timm state_dict of `fit_name`


def predict(model, images):
    return [np.asarray(y) for y in keras.tree.flatten(model.predict(images, verbose=0))]


def main(job):
    folder, backend = Path(job.folder), keras.backend.backend()
    out = {}
    images = np.load(folder / "images.npy")
    for name in job.names:
        model = keras_ghost.create_model(name, input_shape=tuple(job.shape), classes=10,
                                         classifier_activation=None)
        model.load_weights(folder / f"{name}.weights.h5")
        out[f"{name}.logits"] = predict(model, images)
        features = keras_ghost.create_model(name, input_shape=tuple(job.shape),
                                            features_only=True)
        features.load_weights(folder / f"{name}.features.weights.h5")
        out[f"{name}.features"] = predict(features, images)
    if job.fit_name:
        model = keras_ghost.create_model(job.fit_name, input_shape=(None, None, 3), classes=10,
                                         classifier_activation=None)
        model.load_weights(folder / f"{job.fit_name}.dynamic.weights.h5")
        for size in ((32, 32), (50, 40)):
            out[f"dynamic.{size[0]}x{size[1]}"] = predict(model, images[:, :size[0], :size[1]])
        x, y = np.load(folder / "fit_x.npy"), np.load(folder / "fit_y.npy")
        model.compile(keras.optimizers.SGD(0.02, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=len(x), epochs=5, shuffle=False, verbose=0)
        out["fit.loss"] = [np.asarray(history.history["loss"])]
        out["trained"] = predict(model, x)
        model.save(folder / f"trained.{backend}.keras")
    for path, inputs in job.loads:
        out[f"loaded.{Path(path).stem}"] = predict(keras_ghost.load_model(path), np.load(inputs))
    if job.checkpoint:
        model = keras_ghost.create_model(job.fit_name, weights=job.checkpoint,
                                         input_shape=(64, 64, 3), classifier_activation=None)
        out["checkpoint"] = predict(model, np.load(folder / "images64.npy"))
    for key, arrays in out.items():
        np.savez(folder / f"{key}.{backend}.npz", *arrays)


if __name__ == "__main__":
    main(Job(**json.loads(Path(sys.argv[1]).read_text())))
