"""The jobs the QAT worker process runs: one dataclass per task, written by
`quantization.api` and read by `quantization.pipeline`, as JSON across the process
boundary (`to_json` / `from_json`)."""

import dataclasses
import json
from typing import ClassVar, Dict, List, Optional


@dataclasses.dataclass(frozen=True)
class FinetuneJob:
    """`quantization.finetune`: prune and/or QAT fine-tune, convert, evaluate."""

    task: ClassVar[str] = "finetune"
    keras_model: str  # the float model's .keras file
    output: str  # the int8 .tflite to write
    dataset: str
    data_dir: Optional[str]
    epochs: int
    batch_size: int
    learning_rate: float
    qat: bool
    prune: bool
    target_sparsity: float
    prune_epochs: int
    prune_end_fraction: float
    calib_images: int
    io_type: str
    mean: List[float]
    std: List[float]
    deploy_graph: bool
    limit_train: Optional[int] = None
    limit_test: Optional[int] = None
    evaluate: bool = True
    seed: int = 0
    # more .tflite paths -> [mode, sparse]
    extra_outputs: Dict[str, list] = dataclasses.field(default_factory=dict)
    verbose: int = 2


@dataclasses.dataclass(frozen=True)
class ConvertJob:
    """`quantization.quantize_aware`: QAT-wrap without training and convert."""

    task: ClassVar[str] = "convert"
    keras_model: str
    calibration: str  # a .npy of float32 images
    output: str
    io_type: str = "int8"
    deploy_graph: bool = True
    qat_model: Optional[str] = None  # an .h5 path for the tfmot model, or None


@dataclasses.dataclass(frozen=True)
class TranslationJob:
    """`quantization.check_translation`: Keras 3 -> tf_keras, weights and outputs compared."""

    task: ClassVar[str] = "check_translation"
    keras_models: List[str]
    graphs: List[str] = dataclasses.field(default_factory=lambda: ["raw"])
    quantize: bool = False


JOB_TYPES = {cls.task: cls for cls in (FinetuneJob, ConvertJob, TranslationJob)}


def to_json(job):
    """The job as JSON text, its task named."""
    return json.dumps({"task": job.task, **dataclasses.asdict(job)})


def from_json(text):
    """The job dataclass back from `to_json`'s text."""
    fields = json.loads(text)
    task = fields.pop("task")
    if task not in JOB_TYPES:
        raise ValueError(f"Unknown QAT worker task {task!r}; known: {sorted(JOB_TYPES)}.")
    return JOB_TYPES[task](**fields)
