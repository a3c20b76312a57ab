"""C-Ghost as a plug-in: swap the convolutions of any functional Keras model for ghost
modules with the same output shape (the GhostNet paper's Ghost-VGG / Ghost-ResNet)."""

import fnmatch

from keras_ghost.graph import check_functional, connections, copy_call, rebuild
from keras_ghost.layers.ghost import ghost_module


def ghostify(model, ratio=2, dw_size=3, relu=False, skip=(), skip_first=True, skip_last=False,
             replace_bn=True, verbose=True, name=None):
    """Returns a new functional model in which every eligible `Conv2D` of `model` is a
    ghost module (`ratio` s, cheap depthwise kernel `dw_size` d) of the same output shape.

    Eligible: a trainable plain conv (groups 1, dilation 1, odd kernel), padding "same" or
    "valid" after a ZeroPadding2D of k // 2 on each side (PyTorch style), or a 1x1 conv with
    any padding: all keep the output size a ghost module gives. The conv's own
    activation is kept after the module; `relu` adds ReLUs inside it, as in GhostNet's
    expansion modules (off by default: a conv is linear). Skipped: the model's first
    Conv2D (`skip_first`: the stem, as in the paper), its last Conv2D (`skip_last`: for a
    conv classifier; Dense layers are never touched) and layers whose name matches one
    of the fnmatch patterns in `skip`. With `replace_bn`, a BatchNormalization that is the
    only consumer of a replaced linear conv goes too: the ghost module ends in its own BNs
    and replaces conv + BN, as in the paper. Other layers keep their weights; the ghost
    modules start from fresh weights, to be trained. With `verbose`, prints params and MACs
    before and after.
    """
    import keras

    from keras_ghost.profiling import profile

    check_functional(model, "ghostify")
    if not isinstance(ratio, int) or ratio < 2 or not isinstance(dw_size, int) or dw_size < 1:
        raise ValueError(f"ghostify needs an integer ratio >= 2 and dw_size >= 1, got "
                         f"ratio={ratio!r}, dw_size={dw_size!r}.")
    patterns = (skip,) if isinstance(skip, str) else tuple(skip)
    consumers, producers, _ = connections(model)
    convs = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    # PyTorch-style convs (an explicit symmetric pad, then "valid") are eligible with their
    # pad: the ghost module pads its primary conv the same way.
    pads = {c.name: producers[c.name] for c in convs if _torch_pad(c, producers, consumers)}
    ends = {convs[0].name if convs and skip_first else None,
            convs[-1].name if convs and skip_last else None}
    chosen = {c.name for c in convs if (_eligible(c) or c.name in pads) and c.name not in ends
              and not any(fnmatch.fnmatchcase(c.name, p) for p in patterns)}
    if not chosen:
        raise ValueError(f"'{model.name}' has no Conv2D to replace ({len(convs)} Conv2D, none "
                         "eligible or all skipped); check skip / skip_first / skip_last.")
    absorbed = {pads[name].name for name in chosen if name in pads}
    if replace_bn:
        for conv in convs:
            users = consumers.get(conv.name, [])
            if (conv.name in chosen and _is_linear(conv) and len(users) == 1
                    and type(users[0]) is keras.layers.BatchNormalization):
                absorbed.add(users[0].name)

    def call(layer, *args, **kwargs):
        if layer.name in absorbed:
            return args[0]
        if layer.name not in chosen:
            return copy_call(layer, *args, **kwargs)
        y = ghost_module(args[0], layer.filters, ratio=ratio, kernel_size=layer.kernel_size,
                         dw_size=dw_size, strides=layer.strides, relu=relu,
                         name=f"{layer.name}_ghost")
        if tuple(y.shape) != tuple(layer.output.shape):
            raise AssertionError(f"ghost module for '{layer.name}' gives {y.shape}, the conv "
                                 f"{layer.output.shape}; please report this as a bug.")
        if not _is_linear(layer):
            y = keras.layers.Activation(layer.activation, name=f"{layer.name}_act")(y)
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


def _torch_pad(conv, producers, consumers):
    import keras

    pad = producers.get(conv.name)
    kernel = tuple(conv.kernel_size)
    return (type(pad) is keras.layers.ZeroPadding2D and conv.padding == "valid"
            and len(consumers.get(pad.name, [])) == 1 and conv.groups == 1 and conv.trainable
            and tuple(conv.dilation_rate) == (1, 1) and all(k % 2 for k in kernel)
            and tuple(map(tuple, pad.padding)) == tuple((k // 2, k // 2) for k in kernel))


def _is_linear(conv):
    return getattr(conv.activation, "__name__", "") == "linear"


def _eligible(layer):
    if layer.groups != 1 or not layer.trainable:  # frozen convs are fixed maps, keep them
        return False
    if tuple(layer.dilation_rate) != (1, 1) or layer.data_format != "channels_last":
        return False
    kernel = tuple(layer.kernel_size)
    return layer.padding == "same" and all(k % 2 for k in kernel) or kernel == (1, 1)
