"""Training recipes: the papers' ImageNet settings and a CIFAR-10 one, as JSON files in
`keras_ghost/training/recipes/` (or any path); command-line flags override their values.

Learning rates are given for `base_batch_size` and scaled linearly with the global batch.
`weight_decay` is Keras' decoupled decay (`w -= lr * wd * w`); the papers' PyTorch runs
use coupled L2, so each file's `source` says how its value was converted.
"""

import dataclasses
import json
from pathlib import Path
from typing import Optional, Tuple

RECIPE_DIR = Path(__file__).parent / "recipes"
OPTIMIZERS = ("sgd", "rmsprop_tf", "adamw")
SCHEDULES = ("cosine", "step")


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    source: str = ""  # where the values come from
    dataset: str = "imagenet2012"
    train_split: str = "train"
    eval_split: str = "validation"
    image_size: Optional[int] = None  # None: the model's registry input size
    epochs: int = 100
    batch_size: int = 256  # global
    optimizer: str = "sgd"
    lr: float = 0.1
    base_batch_size: int = 256  # `lr` is for this global batch size
    momentum: float = 0.9
    nesterov: bool = False
    rmsprop_rho: float = 0.9
    epsilon: float = 1e-3  # RMSProp-TF: inside the square root, as Keras' RMSprop does
    weight_decay: float = 0.0
    no_decay_on_bn_bias: bool = True
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    decay_epochs: float = 2.4  # step schedule
    decay_rate: float = 0.97  # step schedule
    label_smoothing: float = 0.0
    dropout: Optional[float] = None  # None: the builder's default
    ema_decay: Optional[float] = None  # None: no EMA of the weights
    gradient_accumulation_steps: Optional[int] = None
    crop: str = "random_resized"
    crop_scale: Tuple[float, float] = (0.08, 1.0)
    randaugment_magnitude: Optional[float] = None
    erasing_prob: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    eval_crop_pct: Optional[float] = None  # None: the model's registry crop_pct
    # Knowledge distillation: a recipe that relies on it names its weight and temperature
    # (None: train.py's defaults) and may require a teacher (train.py --teacher).
    distill_alpha: Optional[float] = None
    distill_temperature: Optional[float] = None
    teacher_required: bool = False

    def __post_init__(self):
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        from keras_ghost.training.data import CROPS

        _check_choice("crop", self.crop, CROPS)
        object.__setattr__(self, "crop_scale", tuple(self.crop_scale))

    def replace(self, **overrides):
        """A copy with `overrides` applied; `None` values leave a field as it is (argparse
        flags that were not given)."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"Unknown recipe fields {unknown}.")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def scaled_lr(self, global_batch_size):
        return self.lr * global_batch_size / self.base_batch_size

    def to_dict(self):
        return dataclasses.asdict(self)


def _check_choice(field, value, choices):
    if value not in choices:
        raise ValueError(f"Recipe field '{field}' must be one of {choices}, got {value!r}.")


def list_recipes():
    """Names of the bundled recipes."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.json"))


def load_recipe(name_or_path):
    """A bundled recipe by name (`list_recipes()`) or a JSON file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(f"No recipe {name_or_path!r}: bundled recipes are {list_recipes()}; "
                         "or pass the path of a JSON file with Recipe fields.")
    fields = json.loads(path.read_text())
    fields.setdefault("name", path.stem)
    try:
        return Recipe(**fields)
    except TypeError as e:  # unknown keys
        raise ValueError(f"Recipe {path}: {e}. Known fields: "
                         f"{[f.name for f in dataclasses.fields(Recipe)]}.") from None
