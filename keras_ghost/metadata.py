"""What a trained model needs beside its weights to be used correctly: class names and the
preprocessing it was trained with. Stored inside the files themselves, so `predict` (or
any LiteRT user) cannot feed a model wrongly by accident:

- `.keras`: a `keras_ghost.json` entry in the archive (Keras ignores unknown entries);
- `.tflite`: a flatbuffer `metadata` entry named `keras_ghost` (the schema's list of
  named buffers, beside the converter's own `min_runtime_version`), plus `labels.txt`
  written next to the file by the tools.
"""

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Optional, Tuple

from keras_ghost.io_utils import atomic_path
from keras_ghost.models.registry import IMAGENET_MEAN, IMAGENET_STD

ENTRY = "keras_ghost.json"  # inside a .keras archive
TFLITE_NAME = "keras_ghost"  # the flatbuffer metadata entry


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """Class names and eval preprocessing: decode to RGB, resize keeping the aspect ratio
    so the image covers `image_size / crop_pct` (`interpolation`), center-crop
    `image_size`, then `(x / 255 - mean) / std`. `logits`: outputs are logits (scores
    come from a softmax), else probabilities."""

    labels: Tuple[str, ...]
    image_size: Tuple[int, int]
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    logits: bool = True
    model: Optional[str] = None  # registered variant it was built from

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text):
        fields = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()
                  if k in known}
        return cls(**fields)


def add_to_keras(path, metadata):
    """Writes `metadata` into the `.keras` archive at `path` (atomically: a reader sees
    the old file or the new one)."""
    path = Path(path)
    with zipfile.ZipFile(path) as source, atomic_path(path, suffix=".keras") as tmp:
        with zipfile.ZipFile(tmp, "w") as out:
            for item in source.infolist():
                if item.filename != ENTRY:
                    out.writestr(item, source.read(item))
            out.writestr(ENTRY, metadata.to_json())
    return path


def add_to_tflite(content, metadata):
    """The `.tflite` flatbuffer `content` with `metadata` as its `keras_ghost` entry."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    model.metadata = model.metadata or []
    data = list(metadata.to_json().encode())
    for entry in model.metadata:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == TFLITE_NAME:  # replace in place: writing twice gives the same file
            model.buffers[entry.buffer].data = data
            break
    else:
        buffer = schema.BufferT()
        buffer.data = data
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = TFLITE_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _from_tflite(content):
    from tensorflow.lite.python import schema_py_generated as schema

    if content[4:8] != b"TFL3":  # the schema's file identifier
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = schema.Model.GetRootAsModel(bytearray(content), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == TFLITE_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return ModelMetadata.from_json(bytes(data).decode())
    return None


def read(path):
    """The `ModelMetadata` stored in a `.keras` or `.tflite` file, or None; ValueError
    for a file that is neither (truncated, another format)."""
    import struct

    path = Path(path)
    try:
        if path.suffix == ".tflite":
            return _from_tflite(path.read_bytes())
        with zipfile.ZipFile(path) as archive:
            if ENTRY not in archive.namelist():
                return None
            return ModelMetadata.from_json(archive.read(ENTRY).decode())
    except (zipfile.BadZipFile, struct.error, IndexError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable {path.suffix} file ({e})") from None


def write_labels(labels, path):
    """`labels.txt`: one class name per line, in output order."""
    from keras_ghost.io_utils import write_atomic

    return write_atomic("".join(f"{label}\n" for label in labels), path)


def read_labels(path):
    return tuple(line.rstrip("\n") for line in Path(path).read_text().splitlines())
