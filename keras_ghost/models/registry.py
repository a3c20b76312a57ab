"""One registry of named model variants (timm style); every test sweeps it."""

import dataclasses
import difflib
import fnmatch
import inspect
from typing import Callable, Mapping, Optional, Tuple

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A named variant: its builder, the builder arguments that define it, and its
    default config (input size, preprocessing, reference accuracy and weights)."""

    name: str
    builder: Callable
    kwargs: Mapping = dataclasses.field(default_factory=dict)
    input_size: Tuple[int, int, int] = (224, 224, 3)
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    top1: Optional[float] = None  # published top-1 (%) on `dataset`
    dataset: str = "imagenet"  # what the variant is made for and `top1` is measured on
    weights_url: Optional[str] = None  # reference PyTorch checkpoint
    weights_sha256: Optional[str] = None

    @property
    def family(self):
        return self.builder.__name__


_REGISTRY: dict = {}


def register(name, builder, **fields):
    """Registers a variant: `register("ghostnet_100", GhostNet, kwargs=dict(width=1.0))`."""
    if name in _REGISTRY:
        raise ValueError(f"Model '{name}' is already registered.")
    _REGISTRY[name] = ModelSpec(name=name, builder=builder, **fields)
    return _REGISTRY[name]


def list_models(pattern="*"):
    """Sorted names of the registered variants, optionally filtered by a glob pattern."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def get_spec(name):
    """The `ModelSpec` of a registered variant; unknown names raise with suggestions."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown model '{name}'.{hint} "
                         f"keras_ghost.list_models() lists all {len(_REGISTRY)}.") from None


def find_spec(builder, **kwargs):
    """The registered variant built by `builder` with these defining arguments, or None."""
    for spec in _REGISTRY.values():
        if spec.builder is builder and all(kwargs.get(k) == v for k, v in spec.kwargs.items()):
            return spec
    return None


def create_model(name, **kwargs):
    """Builds a registered variant by name; `kwargs` go to its builder (keras.applications
    arguments such as `include_top`, `weights`, `input_shape`, `pooling`, `classes`)."""
    spec = get_spec(name)
    # A CLI flag the builder has no argument for (e.g. --width for a ResNet): say so
    # instead of a TypeError traceback.
    accepted = inspect.signature(spec.builder).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ValueError(f"'{name}' ({spec.family}) takes no argument "
                         f"{', '.join(repr(k) for k in unknown)}"
                         f"{alias_hint(unknown, accepted)}; it takes {', '.join(accepted)}.")
    return spec.builder(**{**spec.kwargs, **kwargs})


# Argument names from timm / PyTorch that people reach for -> the keras.applications ones.
ARGUMENT_ALIASES = {"num_classes": "classes", "pretrained": "weights", "in_chans": "input_shape",
                    "img_size": "input_shape", "drop_rate": "dropout_rate",
                    "global_pool": "pooling"}


def alias_hint(unknown, accepted):
    """` (the keras.applications name is classes=)` for unknown names with a known alias."""
    hints = [f"{ARGUMENT_ALIASES[k]}= for {k}" for k in unknown
             if ARGUMENT_ALIASES.get(k) in accepted]
    return f" (the keras.applications name: {', '.join(hints)})" if hints else ""
