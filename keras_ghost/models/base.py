"""What every model builder shares: the keras.applications argument handling."""

import functools
import inspect
import numbers
import re
import textwrap

import keras
from keras import layers


# The keras.applications arguments every builder documents alike (see `builder_doc`).
APPLICATION_ARGS = """\
input_shape: (height, width, channels); defaults to (224, 224, 3). Use
    (None, None, 3) for any size. Height and width must be at least 32.
input_tensor: optional Keras tensor to build the model on.
pooling: without the top, None (4D features), "avg" or "max".
classes: number of classes of the classifier.
classifier_activation: activation of the classifier, None for logits.
dropout_rate: dropout before the classifier.
include_preprocessing: take raw 0..255 pixels and normalize inside the graph.
name: model name; defaults to the registered variant name.
features_only: return the multi-scale features instead: a model whose output is a
    dict {"P1": ..., "P5": ...}, Pn at stride 2**n (keras-hub's convention); the
    top arguments are ignored. `keras_ghost.feature_info(model)` lists each level's
    layer, channels and stride.
feature_levels: with features_only, the levels to return, e.g. ("P3", "P4", "P5").
output_stride: 32, or 16 / 8 to keep the last stages at that stride by dilation
    (Pn is then at stride min(2**n, output_stride))."""


def builder_doc(builder):
    """Decorator: writes APPLICATION_ARGS where the docstring has a `{application_args}`
    line, at that line's indentation (which Python 3.13 strips, older ones keep)."""
    builder.__doc__ = re.sub(r"^([ \t]*)\{application_args\}$",
                             lambda m: textwrap.indent(APPLICATION_ARGS, m.group(1)),
                             builder.__doc__, flags=re.M)
    return builder


def public_builder(fn):
    """A public builder that answers an unknown keyword (timm's `num_classes`, ...) with a
    TypeError naming the keras.applications argument to use, instead of Python's bare one."""
    from keras_ghost.models.registry import alias_hint

    accepted = inspect.signature(fn).parameters

    @functools.wraps(fn)
    def build(*args, **kwargs):
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            raise TypeError(f"{fn.__name__}() got an unexpected keyword argument "
                            f"{', '.join(repr(k) for k in unknown)}"
                            f"{alias_hint(unknown, accepted)}.")
        return fn(*args, **kwargs)

    return build


def check_width(width):
    if not isinstance(width, numbers.Real) or isinstance(width, bool) or not width > 0:
        raise ValueError(f"width must be a positive number (e.g. 0.5, 1.0, 1.3), got {width!r}.")
    return float(width)


def check_top_args(include_top, weights, classes, pooling, spec):
    if include_top and (not isinstance(classes, numbers.Integral) or isinstance(classes, bool)
                        or classes < 1):
        raise ValueError(f"classes must be a whole number >= 1 (the classifier's outputs, "
                         f"e.g. 10 for CIFAR-10), got {classes!r}; or include_top=False for "
                         "the features alone.")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}.")
    if weights == "imagenet":
        if spec is None or not spec.weights_url:
            raise ValueError("weights='imagenet' needs a registered variant with reference weights; "
                             "pass a local weights file or weights=None instead.")


def model_inputs(input_shape, input_tensor, default_shape, min_size, name):
    """Returns `(inputs, x)`: the model's Input(s) and the image tensor to build on.

    `input_shape` defaults to the variant's input size; `(None, None, 3)` makes a model
    for any image size. Static sizes below `min_size` raise.
    """
    if input_tensor is not None:
        shape = tuple(input_tensor.shape[1:])
        if keras.backend.is_keras_tensor(input_tensor):
            x = input_tensor
        else:
            x = layers.Input(tensor=input_tensor, shape=shape)
        inputs = keras.utils.get_source_inputs(x)
    else:
        shape = tuple(input_shape) if input_shape is not None else tuple(default_shape)
        x = inputs = layers.Input(shape=shape, name="image")
    if len(shape) != 3:
        raise ValueError(f"{name}: input_shape must be (height, width, channels), got {shape}.")
    small = [d for d in shape[:2] if d is not None and d < min_size]
    if small:
        raise ValueError(f"{name}: input size {shape[:2]} is too small; height and width must be "
                         f"at least {min_size} (the network downsamples by {min_size}).")
    return inputs, x


def preprocessing_layer(spec_mean, spec_std):
    """Maps raw 0..255 pixels to the reference normalization inside the graph."""
    mean = [255.0 * m for m in spec_mean]
    variance = [(255.0 * s) ** 2 for s in spec_std]
    return layers.Normalization(mean=mean, variance=variance, name="preprocess")


def classifier(x, classes, classifier_activation, dropout_rate, name="head_classifier",
               dropout_name="head_dropout"):
    """Dropout (when `dropout_rate` is nonzero), then the Dense classifier."""
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name=dropout_name)(x)
    return layers.Dense(classes, activation=classifier_activation, name=name)(x)


def classifier_top(x, include_top, pooling, classes, classifier_activation, dropout_rate):
    """keras.applications semantics: a Dense classifier, or the pooled / unpooled features."""
    if include_top:
        return classifier(x, classes, classifier_activation, dropout_rate)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="head_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="head_pool")(x)
    return x
