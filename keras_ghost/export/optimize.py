"""Deploy-time graph optimization: the same function as a cheaper graph for TFLite/XNNPACK.

`optimize_for_inference(model)` rebuilds a functional model layer by layer and rewrites
patterns that cost time on device without changing what the model computes:

- BatchNormalization after a conv, depthwise conv or dense layer is folded into its kernel
  and bias.
- Ghost modules on large maps lose their concat (`merge_ghost_min_size`), and a concat
  feeding a strided depthwise conv moves after it: the depthwise conv runs on each part,
  so the copy happens on the 4x smaller map.
- ZeroPadding2D before a conv goes away where that is free (`remove_pad`): PyTorch padding
  `k // 2` equals Keras "same" padding wherever "same" pads symmetrically (stride 1, or
  stride 2 on an odd input), and on an even input a stride-2 conv with kernel `k` and
  padding `k // 2` equals a "same" conv with kernel `k + 1` whose last row/column is zero.
- AveragePooling2D (DFC gate) becomes a depthwise conv with constant weights: XNNPACK runs
  int8 depthwise convs, but not int8 AVERAGE_POOL_2D. The gate's nearest upsampling and
  the multiply by it become one `UpsampledMultiply` (a broadcast 6-D MUL).
- A hard-sigmoid gate `x * relu6(z + 3) / 6` feeding only convs loses its `/ 6` (scaled
  into the convs' kernels) and its `+ 3` (moved into the bias of the conv computing `z`),
  so TFLite fuses the ReLU6 into that conv and no MUL by 1/6 is left.
- Hard-swish `x * relu6(x + 3) / 6` becomes `x * relu6(x + 3)` with the `/ 6` scaled into
  the convs / dense layers that read it (through pools, concats, SE multiplies): XNNPACK
  (LiteRT 2.3) runs no int8 HARD_SWISH, which splits the graph. `relu6(x + 3)` is a 1x1
  depthwise conv (weight 1, bias 3, fused ReLU6), not an ADD: XNNPACK rejects an int8 ADD
  whose input scale is below 2^-10 of its output scale (small activations, [0, 6] out).
  Where the output reaches anything else (an add, the model output), a constant 1x1
  depthwise conv applies the `/ 6`.
- A ReLU / ReLU6 that no op before it can fuse (after a concat, e.g. a ghost module that
  replaced a conv + BN + ReLU) becomes a 1x1 identity depthwise conv with that fused
  activation: XNNPACK (LiteRT 2.3) runs no standalone int8 RELU, which split the graph.

Everything else is copied with its weights. Training-only layers (Dropout) pass through.
"""

import numpy as np

from keras_ghost.graph import check_functional, connections, copy_call, rebuild
from keras_ghost.layers.shape_ops import UpsampledMultiply

FOLDABLE_CONVS = ("Conv2D", "DepthwiseConv2D")
HARD_SWISH_NAMES = ("hard_silu", "hard_swish")
# Layers with f(c * x) = c * f(x) per channel for c > 0: a scale passes through them.
SCALE_COMMUTING = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "AveragePooling2D",
                   "MaxPooling2D", "ZeroPadding2D", "Dropout")


MERGE_GHOST_MIN_SIZE = 112


def deploy_settings(mode):
    """optimize_for_inference's settings for an export mode, chosen on exact emulated-ARM
    instruction counts (Cortex-A53 / A76, README): the hard-swish split (XNNPACK has no
    int8 HARD_SWISH) and the ghost-concat merge pay off in int8 only; in fp32 the merge
    costs 1.5-3% (ghostnet_100: 74.85M vs 73.68M instructions on the A76)."""
    int8 = mode == "int8"
    return {"split_hard_swish": int8, "merge_ghost_min_size": MERGE_GHOST_MIN_SIZE if int8 else None}


def optimize_for_inference(model, remove_pad=None, merge_ghost_min_size=MERGE_GHOST_MIN_SIZE,
                           verify=True,
                           atol=1e-4, split_hard_swish=True, fold_hard_sigmoid=True,
                           move_concat=True):
    """Returns an inference-only copy of the functional `model` with the rewrites above.

    Args:
        remove_pad: absorb ZeroPadding2D into "same" convs: `None` (default) only where
            the kernel stays as it is (stride 1, or stride 2 on odd sizes), `True` also
            where it must grow by a zero row/column, `False` never. Growing is not the
            default: XNNPACK fuses a PAD into the conv after it for free, while 4x4 / 6x6
            kernels run far slower (ghostnet_100 int8 on x86, LiteRT 2.3: 6.15 ms with all
            PADs absorbed, 3.41 ms without, one interleaved run).
        merge_ghost_min_size: ghost modules working on maps at least this large (height
            and width) drop their concat: the primary conv also emits the copies of its
            maps that the cheap op reads, and one depthwise conv (identity kernels for the
            intrinsic maps) makes the whole output. Costs a few MACs, saves a full copy;
            pays off only on large maps. `None` turns it off.
        verify: run both models on a random batch; they must agree within `atol`
            (relative to the output scale). Needs a static input shape.
        split_hard_swish: rewrite hard-swish as above (int8 XNNPACK delegation).
        fold_hard_sigmoid: fold the hard-sigmoid gates' `/ 6` and `+ 3` into convs.
        move_concat: move a concat feeding a strided depthwise conv after it.
    """
    check_functional(model, "optimize_for_inference")
    plan = _Plan(model, remove_pad, merge_ghost_min_size, split_hard_swish, fold_hard_sigmoid,
                 move_concat)
    optimized = rebuild(model, plan.call)
    if verify:
        check_equivalent(model, optimized, atol=atol)
    return optimized


def check_equivalent(model, optimized, atol=1e-4, seed=0):
    """Raises if the two models' outputs differ on a random input by more than `atol`
    times the output scale."""
    shape = tuple(model.inputs[0].shape)
    if any(d is None for d in shape[1:]):
        return None
    x = np.random.default_rng(seed).standard_normal((2, *shape[1:])).astype("float32")
    expected = np.asarray(model(x, training=False))
    actual = np.asarray(optimized(x, training=False))
    diff = float(np.abs(expected - actual).max())
    scale = max(1.0, float(np.abs(expected).max()))
    if diff > atol * scale:
        raise AssertionError(f"Graph optimization changed the outputs of '{model.name}' "
                             f"(max abs diff {diff:.3g}); please report this as a bug.")
    return diff


def _class(layer):
    return type(layer).__name__


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class _Plan:
    """Decisions taken on the original graph, applied while it is re-run layer by layer."""

    def __init__(self, model, remove_pad=None, merge_ghost_min_size=None,
                 split_hard_swish=False, fold_hard_sigmoid=True, move_concat=True):
        self.remove_pad = remove_pad
        self.consumers, self.producers, self.inputs_of = connections(model)
        self._outputs = list(model.outputs)
        self.skip = set()          # layers whose call is replaced by the identity
        self.fold_bn = {}          # conv name -> BatchNormalization layer folded into it
        self.same_padding = {}     # conv name -> ZeroPadding2D it absorbs
        self.kernel_scale = {}     # conv name -> factor on its input (hard-sigmoid / 6)
        self.bias_shift = {}       # conv name -> constant added to its output (+ 3)
        self.relu6 = set()         # hard-sigmoid activations turned into ReLU6
        self.duplicate = {}        # primary conv name -> channels it appends as copies
        self.identity_prefix = {}  # cheap depthwise conv name -> identity channels in front
        self.concat_source = {}    # merged concat name -> index of the input it becomes
        self.gate_multiply = set()  # Multiply layers that take over the gate's resize
        self.split_depthwise = {}  # concat name -> (pad or None, strided depthwise conv)
        self.hard_swish = {}       # hard-swish activation name -> its / 6 was folded away
        self.input_scale = {}      # conv / dense name -> per-input-channel factor (1 / 6)
        self.relu_as_depthwise = {}  # standalone ReLU name -> "relu" or "relu6"
        for layer in model.layers:
            kind = _class(layer)
            if kind in FOLDABLE_CONVS:
                self._plan_conv(layer)
            elif kind == "Dense" and _activation_name(layer) == "linear":
                self._plan_bn_fold(layer)
            elif (fold_hard_sigmoid and kind == "Activation"
                  and _activation_name(layer) == "hard_sigmoid"):
                self._plan_hard_sigmoid(layer)
            elif (split_hard_swish and kind == "Activation"
                  and _activation_name(layer) in HARD_SWISH_NAMES):
                self._plan_hard_swish(layer)
            elif kind == "ResizeNearestLike":
                self._plan_gate_resize(layer)
        concats = [layer for layer in model.layers if _class(layer) == "Concatenate"]
        for layer in concats if move_concat else ():
            self._plan_concat_depthwise(layer)
        if merge_ghost_min_size:
            for layer in concats:
                if layer.name not in self.split_depthwise:
                    self._plan_ghost_concat(layer, merge_ghost_min_size)
        for layer in model.layers:
            source, relu = self.producers.get(layer.name), _plain_relu(layer)
            if (relu and layer.name not in self.skip and source is not None
                    and _class(source) == "Concatenate" and source.name not in self.concat_source
                    and self._only_consumer(source) is layer):
                self.relu_as_depthwise[layer.name] = relu

    def _only_consumer(self, layer):
        users = self.consumers.get(layer.name, [])
        return users[0] if len(users) == 1 else None

    def _plan_bn_fold(self, layer):
        bn = self._only_consumer(layer)
        if bn is not None and _class(bn) == "BatchNormalization" and _bn_is_channel_last(bn):
            self.fold_bn[layer.name] = bn
            self.skip.add(bn.name)

    def _plan_conv(self, conv):
        self._plan_bn_fold(conv)
        pad = self.producers.get(conv.name)
        if (self.remove_pad is not False and pad is not None and _class(pad) == "ZeroPadding2D"
                and self._only_consumer(pad) is conv and _pad_is_torch_same(pad, conv)):
            grows = any(_kernel_growth(pad.input.shape, _pair(conv.strides)))
            if self.remove_pad or not grows:
                self.same_padding[conv.name] = pad
                self.skip.add(pad.name)

    def _plan_hard_sigmoid(self, act):
        source, mul = self.producers.get(act.name), self._only_consumer(act)
        if source is None or mul is None or _class(mul) != "Multiply":
            return
        if (_class(source) != "Conv2D" or not source.use_bias or source.activation.__name__
                != "linear" or self._only_consumer(source) is not act):
            return
        targets = self.consumers.get(mul.name, [])
        if not targets or any(_class(t) not in FOLDABLE_CONVS for t in targets):
            return
        self.relu6.add(act.name)
        self.bias_shift[source.name] = 3.0
        for t in targets:
            self.kernel_scale[t.name] = self.kernel_scale.get(t.name, 1.0) / 6.0

    def _plan_hard_swish(self, act):
        """Finds where the `/ 6` of hard-swish can go: every path from it must end in a
        conv or dense layer, through layers that commute with a positive per-channel
        scale. The scales are committed only if all paths qualify."""
        channels = act.output.shape[-1]
        sinks = {}
        if self._scale_sinks(act, np.full(channels, 1.0 / 6.0), sinks, set()):
            for name, factor in sinks.items():
                self.input_scale[name] = self.input_scale.get(name, 1.0) * factor
            self.hard_swish[act.name] = True
        else:
            self.hard_swish[act.name] = False

    def _scale_sinks(self, layer, factor, sinks, seen):
        """Walks the consumers of `layer`, whose output channels are to be multiplied by
        `factor`; records `sinks[name] = factor on its input channels`. False where a path
        reaches a layer that cannot take the factor (or a layer twice, e.g. x * f(x))."""
        users = {u.name: u for u in self.consumers.get(layer.name, [])}
        if not users or any(o._keras_history.operation is layer for o in self._outputs):
            return False
        for user in users.values():
            if user.name in seen:
                return False
            seen.add(user.name)
            kind = _class(user)
            if kind == "Concatenate" and user.axis in (-1, 3):
                parts = [factor if source is layer else np.ones(source.output.shape[-1])
                         for source in self.inputs_of[user.name]]
                ok = self._scale_sinks(user, np.concatenate(parts), sinks, seen)
            elif kind == "Multiply":
                # A gate times the scaled map: only one factor may pass through.
                ok = (self.inputs_of[user.name].count(layer) == 1
                      and self._scale_sinks(user, factor, sinks, seen))
            elif kind == "Flatten" and all(d is not None for d in user.input.shape[1:]):
                repeat = int(np.prod(user.input.shape[1:-1]))
                ok = self._scale_sinks(user, np.tile(factor, repeat), sinks, seen)
            elif kind in SCALE_COMMUTING:
                ok = self._scale_sinks(user, factor, sinks, seen)
            elif kind in FOLDABLE_CONVS + ("Dense",) and getattr(user, "groups", 1) == 1:
                sinks[user.name] = factor
                ok = True
            else:
                ok = False
            if not ok:
                return False
        return True

    def _plan_gate_resize(self, resize):
        """resize([gate, like]) feeding only Multiply([like, resized]) -> one
        UpsampledMultiply that never builds the full-size gate."""
        mul = self._only_consumer(resize)
        like = self.inputs_of[resize.name][1]
        if mul is None or _class(mul) != "Multiply":
            return
        if self.inputs_of[mul.name] != [like, resize]:
            return
        self.skip.add(resize.name)
        self.gate_multiply.add(mul.name)

    def _plan_concat_depthwise(self, concat):
        """concat -> [pad] -> strided depthwise conv: a depthwise conv works per channel, so
        it runs on each part and the concat moves after it, onto the smaller map."""
        if concat.axis not in (-1, 3):
            return
        after = self._only_consumer(concat)
        pad = after if after is not None and _class(after) == "ZeroPadding2D" else None
        dw = self._only_consumer(pad) if pad is not None else after
        if (dw is None or _class(dw) != "DepthwiseConv2D" or dw.depth_multiplier != 1
                or max(_pair(dw.strides)) < 2):
            return
        # A ReLU after the (BN-folded) conv runs per part too: TFLite fuses it into each
        # part's conv, while a standalone int8 RELU after the concat is not XNNPACK's.
        bn = self.fold_bn.get(dw.name)
        act = self._only_consumer(bn if bn is not None else dw)
        if act is None or not (_class(act) == "ReLU" or (
                _class(act) == "Activation" and _activation_name(act) in ("relu", "relu6"))):
            act = None
        self.split_depthwise[concat.name] = (None if pad is None or pad.name in self.skip
                                             else pad, dw, act)
        self.skip.add(dw.name)
        if pad is not None:
            self.skip.add(pad.name)
        if act is not None:
            self.skip.add(act.name)

    def _split_depthwise(self, concat, parts):
        from keras import layers

        pad, dw, act = self.split_depthwise[concat.name]
        outputs, start = [], 0
        for i, part in enumerate(parts):
            channels = slice(start, start + part.shape[-1])
            start = channels.stop
            if pad is not None:
                part = layers.ZeroPadding2D(pad.padding, name=f"{pad.name}.part{i}")(part)
            part = self._conv(dw, part, channels, name=f"{dw.name}.part{i}")
            if act is not None:
                config = {**act.get_config(), "name": f"{act.name}.part{i}"}
                part = type(act).from_config(config)(part)
            outputs.append(part)
        return layers.Concatenate(name=concat.name)(outputs)

    def _chain(self, layer, kinds):
        """Walks single-input producers back from `layer` through optional layers of the
        given kinds (in order); returns `{kind: layer}` and the layer reached."""
        found = {}
        for kind in kinds:
            if _class(layer) == kind or (kind == "Activation" and _class(layer) == "ReLU"):
                found[kind] = layer
                layer = self.producers.get(layer.name)
                if layer is None:
                    return found, None
        return found, layer

    def _plan_ghost_concat(self, concat, min_size):
        """Matches concat(P, act(bn(dw(P)))[:, :, :, :n]) with P = act(bn(conv(x)))."""
        inputs = self.inputs_of.get(concat.name, [])
        if len(inputs) != 2 or concat.axis not in (-1, 3):
            return
        primary_end, cheap_end = inputs
        cheap, source = self._chain(cheap_end, ("ChannelSlice", "Activation",
                                                "BatchNormalization", "DepthwiseConv2D"))
        primary, _ = self._chain(primary_end, ("Activation", "BatchNormalization", "Conv2D"))
        dw, conv = cheap.get("DepthwiseConv2D"), primary.get("Conv2D")
        if dw is None or conv is None or source is not primary_end:
            return
        if (dw.depth_multiplier != 1 or _pair(dw.strides) != (1, 1) or dw.padding != "same"
                or any(k % 2 == 0 for k in _pair(dw.kernel_size)) or conv.groups != 1
                or dw.name not in self.fold_bn or conv.name not in self.fold_bn):
            return
        if _act_key(primary.get("Activation")) != _act_key(cheap.get("Activation")):
            return  # the identity half must see the same activation twice
        if sorted(c.name for c in self.consumers.get(primary_end.name, [])) != sorted(
                (concat.name, dw.name)):
            return
        if any(layer is not None and len(self.consumers.get(layer.name, [])) != 1
               for layer in (conv, dw, *primary.values(), *cheap.values())
               if layer is not primary_end):
            return
        height, width = concat.output.shape[1:3]
        if height is None or width is None or min(height, width) < min_size:
            return
        init = conv.filters
        extra = concat.output.shape[-1] - init
        self.duplicate[conv.name] = extra
        self.identity_prefix[dw.name] = init
        self.concat_source[concat.name] = 1
        if "ChannelSlice" in cheap:
            self.skip.add(cheap["ChannelSlice"].name)

    def call(self, layer, *args, **kwargs):
        from keras import layers

        name, kind = layer.name, _class(layer)
        if name in self.skip:
            # Single-input layers pass their input on; a skipped resize hands over its gate.
            return args[0][0] if isinstance(args[0], (list, tuple)) else args[0]
        if name in self.gate_multiply:
            like, resize_input = args[0]
            return UpsampledMultiply(name=name)([like, resize_input])
        if name in self.concat_source:
            return args[0][self.concat_source[name]]
        if name in self.split_depthwise:
            return self._split_depthwise(layer, args[0])
        if kind in FOLDABLE_CONVS and (name in self.fold_bn or name in self.same_padding
                                       or name in self.kernel_scale or name in self.bias_shift
                                       or name in self.duplicate or name in self.input_scale):
            return self._conv(layer, args[0])
        if kind == "Dense" and (name in self.input_scale or name in self.fold_bn):
            return self._dense(layer, args[0])
        if name in self.relu6:
            return layers.ReLU(6.0, name=name)(args[0])
        if name in self.relu_as_depthwise:
            return _identity_depthwise(args[0], self.relu_as_depthwise[name], name)
        if name in self.hard_swish:
            return _split_hard_swish(args[0], folded=self.hard_swish[name], name=name)
        if kind == "AveragePooling2D" and _is_plain_pool(layer):
            return _pool_as_depthwise(layer, args[0])
        if kind == "Dropout":
            return args[0]
        return copy_call(layer, *args, **kwargs)

    def _dense(self, dense, x):
        """The Dense layer with its planned input scale and BN fold."""
        kernel, *rest = (w.astype("float64") for w in dense.get_weights())
        bias = rest[0] if dense.use_bias else np.zeros(kernel.shape[-1])
        if dense.name in self.input_scale:
            kernel = kernel * np.reshape(self.input_scale[dense.name], (-1, 1))
        bn = self.fold_bn.get(dense.name)
        if bn is not None:
            gamma, beta, mean, var = _bn_arrays(bn)
            scale = gamma / np.sqrt(var + bn.epsilon)
            kernel, bias = kernel * scale, (bias - mean) * scale + beta
        new = type(dense).from_config({**dense.get_config(), "use_bias": True})
        y = new(x)
        new.set_weights([kernel.astype("float32"), bias.astype("float32")])
        return y

    def _conv(self, conv, x, channels=None, name=None):
        """The conv with its planned folds; `channels` (a slice) keeps part of a depthwise
        conv's channels, under the layer name `name`."""
        config = conv.get_config()
        weights = conv.get_weights()
        kernel = weights[0].astype("float64")
        bias = weights[1].astype("float64") if conv.use_bias else None
        depthwise = _class(conv) == "DepthwiseConv2D"
        out_shape = kernel.shape[-2:] if depthwise else kernel.shape[-1:]
        if bias is None:
            bias = np.zeros(out_shape).reshape(-1)
        kernel = kernel * self.kernel_scale.get(conv.name, 1.0)
        if conv.name in self.input_scale:
            # Input channels are axis 2 of both kernels: (kh, kw, in, out or multiplier).
            kernel = kernel * np.reshape(self.input_scale[conv.name], (1, 1, -1, 1))
        bias = bias + self.bias_shift.get(conv.name, 0.0)
        bn = self.fold_bn.get(conv.name)
        if bn is not None:
            gamma, beta, mean, var = _bn_arrays(bn)
            scale = gamma / np.sqrt(var + bn.epsilon)
            kernel = kernel * scale.reshape(out_shape)
            bias = (bias - mean) * scale + beta
        if channels is not None:
            kernel, bias = kernel[:, :, channels], bias[channels]
            config["name"] = name
        if conv.name in self.same_padding:
            in_shape = self.same_padding[conv.name].input.shape
            kernel = _extend_kernel(kernel, in_shape, _pair(conv.strides))
            config["padding"] = "same"
        if conv.name in self.duplicate:
            extra = self.duplicate[conv.name]
            kernel = np.concatenate([kernel, kernel[..., :extra]], axis=-1)
            bias = np.concatenate([bias, bias[:extra]])
            config["filters"] = kernel.shape[-1]
        if conv.name in self.identity_prefix:
            # Cheap maps keep their kernels; the intrinsic maps in front pass through.
            n = self.identity_prefix[conv.name]
            kh, kw = kernel.shape[:2]
            identity = np.zeros((kh, kw, n, 1))
            identity[kh // 2, kw // 2] = 1.0
            kernel = np.concatenate([identity, kernel[:, :, : x.shape[-1] - n]], axis=2)
            bias = np.concatenate([np.zeros(n), bias[: x.shape[-1] - n]])
        config.update(use_bias=True, kernel_size=kernel.shape[:2], bias_initializer="zeros")
        new = type(conv).from_config(config)
        y = new(x)
        new.set_weights([kernel.astype("float32"), bias.astype("float32")])
        return y


def _act_key(layer):
    if layer is None:
        return None
    if _class(layer) == "ReLU":
        return ("relu", layer.max_value, layer.negative_slope, layer.threshold)
    return (_activation_name(layer), None, 0.0, 0.0)


def _activation_name(layer):
    fn = layer.activation
    return getattr(fn, "__name__", str(fn))


def _bn_is_channel_last(bn):
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    return axis in (-1, len(bn.input.shape) - 1) and bn.center and bn.scale


def _bn_arrays(bn):
    gamma, beta, mean, var = (np.asarray(w, dtype="float64") for w in
                              (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return gamma, beta, mean, var


def _pad_is_torch_same(pad, conv):
    """Whether `conv(pad(x))` equals a "same" conv (possibly with a zero-extended kernel)."""
    (top, bottom), (left, right) = pad.padding
    kernel, strides = _pair(conv.kernel_size), _pair(conv.strides)
    if conv.padding != "valid" or _pair(conv.dilation_rate) != (1, 1):
        return False
    for (before, after), k, s in zip(((top, bottom), (left, right)), kernel, strides):
        if not (k % 2 == 1 and before == after == k // 2 and s in (1, 2)):
            return False
    return all(d is not None for d in pad.input.shape[1:3])


def _kernel_growth(in_shape, strides):
    """Per spatial axis, 1 where a stride-2 "same" conv on an even size pads one less
    before than PyTorch does, so the kernel needs a zero row/column at its end."""
    return [int(s == 2 and n % 2 == 0) for n, s in zip(in_shape[1:3], strides)]


def _extend_kernel(kernel, in_shape, strides):
    pads = [(0, grow) for grow in _kernel_growth(in_shape, strides)]
    return np.pad(kernel, pads + [(0, 0)] * (kernel.ndim - 2))


def _is_plain_pool(pool):
    return (pool.padding == "valid" and _pair(pool.pool_size) == _pair(pool.strides)
            and pool.data_format == "channels_last")


def _pool_as_depthwise(pool, x):
    from keras import layers

    size = _pair(pool.pool_size)
    if size == (1, 1):
        return x
    conv = layers.DepthwiseConv2D(size, strides=size, padding="valid", use_bias=False,
                                  name=pool.name)
    y = conv(x)
    channels = x.shape[-1]
    conv.set_weights([np.full((*size, channels, 1), 1.0 / (size[0] * size[1]), "float32")])
    return y


def _plain_relu(layer):
    """"relu" or "relu6" for a layer that computes exactly that, else None."""
    kind = _class(layer)
    if kind == "Activation" and _activation_name(layer) in ("relu", "relu6"):
        return _activation_name(layer)
    if kind == "ReLU" and not layer.negative_slope and not layer.threshold:
        return {None: "relu", 6.0: "relu6"}.get(
            None if layer.max_value is None else float(layer.max_value))
    return None


def _identity_depthwise(x, activation, name):
    """A 1x1 depthwise conv with weight 1 (exact in int8 too) and a fused `activation`."""
    from keras import layers

    conv = layers.DepthwiseConv2D(1, use_bias=False, activation=activation, name=name)
    y = conv(x)
    conv.set_weights([np.ones((1, 1, x.shape[-1], 1), "float32")])
    return y


def _split_hard_swish(x, folded, name):
    """`x * relu6(x + 3)`, i.e. 6 x hard-swish, as a 1x1 depthwise conv with fused ReLU6
    and a MUL, which the converter does not fuse back into HARD_SWISH. Unless the
    consumers took the `/ 6` (`folded`), a constant 1x1 depthwise conv applies it."""
    from keras import layers

    channels = x.shape[-1]
    shift = layers.DepthwiseConv2D(1, activation="relu6", name=f"{name}.relu6")
    gate = shift(x)
    shift.set_weights([np.ones((1, 1, channels, 1), "float32"), np.full(channels, 3.0, "float32")])
    y = layers.Multiply(name=name)([x, gate])
    if folded:
        return y
    conv = layers.DepthwiseConv2D(1, use_bias=False, name=f"{name}.div6")
    y = conv(y)
    conv.set_weights([np.full((1, 1, x.shape[-1], 1), 1.0 / 6.0, "float32")])
    return y

