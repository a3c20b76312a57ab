"""C-Ghost as a plug-in: swap the convolutions of any functional Keras model for ghost
modules with the same output shape (the GhostNet paper's Ghost-VGG / Ghost-ResNet)."""

import fnmatch

from keras_ghost.graph import check_functional, copy_call, rebuild
from keras_ghost.layers.ghost import ghost_module


def ghostify(model, ratio=2, dw_size=3, relu=False, skip=(), skip_first=True, skip_last=False,
             verbose=True, name=None):
    """Returns a new functional model in which every eligible `Conv2D` of `model` is a
    ghost module (`ratio` s, cheap depthwise kernel `dw_size` d) of the same output shape.

    Eligible: a plain conv (groups 1, dilation 1) whose padding is "same", or any padding
    with a 1x1 kernel (both keep the output size a ghost module gives). The conv's own
    activation is kept after the module; `relu` adds ReLUs inside it, as in GhostNet's
    expansion modules (off by default: a conv is linear). Skipped: the model's first
    Conv2D (`skip_first`: the stem, as in the paper), its last Conv2D (`skip_last`: for a
    conv classifier; Dense layers are never touched) and layers whose name matches one
    of the fnmatch patterns in `skip`. Other layers keep their
    weights; the ghost modules start from fresh weights, to be trained. With `verbose`,
    prints params and MACs before and after.
    """
    import keras

    from keras_ghost.profiling import profile

    check_functional(model, "ghostify")
    if not isinstance(ratio, int) or ratio < 2 or not isinstance(dw_size, int) or dw_size < 1:
        raise ValueError(f"ghostify needs an integer ratio >= 2 and dw_size >= 1, got "
                         f"ratio={ratio!r}, dw_size={dw_size!r}.")
    patterns = (skip,) if isinstance(skip, str) else tuple(skip)
    convs = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    ends = {convs[0].name if convs and skip_first else None,
            convs[-1].name if convs and skip_last else None}
    chosen = {c.name for c in convs if _eligible(c) and c.name not in ends
              and not any(fnmatch.fnmatchcase(c.name, p) for p in patterns)}
    if not chosen:
        raise ValueError(f"'{model.name}' has no Conv2D to replace ({len(convs)} Conv2D, none "
                         "eligible or all skipped); check skip / skip_first / skip_last.")

    def call(layer, *args, **kwargs):
        if layer.name not in chosen:
            return copy_call(layer, *args, **kwargs)
        y = ghost_module(args[0], layer.filters, ratio=ratio, kernel_size=layer.kernel_size,
                         dw_size=dw_size, strides=layer.strides, relu=relu,
                         name=f"{layer.name}.ghost")
        if tuple(y.shape) != tuple(layer.output.shape):
            raise AssertionError(f"ghost module for '{layer.name}' gives {y.shape}, the conv "
                                 f"{layer.output.shape}; please report this as a bug.")
        if getattr(layer.activation, "__name__", "") != "linear":
            y = keras.layers.Activation(layer.activation, name=f"{layer.name}.act")(y)
        return y

    ghosted = rebuild(model, call)
    if name:
        ghosted = keras.Model(ghosted.inputs, ghosted.outputs, name=name)
    if verbose:
        before, after = profile(model), profile(ghosted)
        print(f"ghostify '{model.name}': {len(chosen)} of {len(convs)} convs -> ghost modules "
              f"(s={ratio}, d={dw_size}); params {before.params:,} -> {after.params:,} "
              f"({after.params / before.params:.2f}x), MACs {before.macs / 1e6:.1f}M -> "
              f"{after.macs / 1e6:.1f}M ({after.macs / before.macs:.2f}x)")
    return ghosted


def _eligible(layer):
    if layer.groups != 1:
        return False
    if tuple(layer.dilation_rate) != (1, 1) or layer.data_format != "channels_last":
        return False
    kernel = tuple(layer.kernel_size)
    return layer.padding == "same" and all(k % 2 for k in kernel) or kernel == (1, 1)
