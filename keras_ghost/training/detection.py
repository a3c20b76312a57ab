"""Object detection on the backbones: a synthetic detection set made from CIFAR-10,
keras-hub RetinaNet on a keras_ghost backbone (or keras.applications MobileNetV2), its
COCO-style mAP (pycocotools), and its int8 TFLite export with host-side decoding.

The data set (`pasted_objects`): CIFAR-10 images pasted at random sizes and positions on
canvases made from other CIFAR-10 images (cut into blocks and shuffled, so the background
has image statistics but no whole object), 1..`max_objects` per canvas, each box the
pasted image's rectangle and its CIFAR-10 class. Train canvases use the CIFAR-10 train
split, test canvases the test split; everything follows from `seed`.

Needs keras-hub and pycocotools (`pip install keras-ghost[detection]`).
"""

import dataclasses
from typing import Tuple

import numpy as np

from keras_ghost.layers.common import BN_MOMENTUM

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
BOX_FORMAT = "yxyx"  # pixels: (top, left, bottom, right), bottom/right exclusive


@dataclasses.dataclass(frozen=True)
class DetectionSet:
    """Canvases with their objects: `boxes[i, j]` (yxyx pixels) and `labels[i, j]` of
    object j of canvas i, padded with -1 past its objects (keras-hub's convention)."""

    images: np.ndarray  # (n, h, w, 3) uint8
    boxes: np.ndarray  # (n, max_objects, 4) float32
    labels: np.ndarray  # (n, max_objects) int32
    class_names: Tuple[str, ...] = CIFAR10_CLASSES

    def __len__(self):
        return len(self.images)

    def targets(self):
        """keras-hub's `y`: `{"boxes": ..., "labels": ...}`."""
        return {"boxes": self.boxes, "labels": self.labels}


def cifar10_arrays(split, data_dir=None, limit=None):
    """CIFAR-10 `split` as `(images uint8 (n, 32, 32, 3), labels int32 (n,))`, offline."""
    from keras_ghost.training.data import load_tfds

    ds, _, _ = load_tfds("cifar10", split if limit is None else f"{split}[:{limit}]",
                         data_dir)
    images, labels = [], []
    for image, label in ds.batch(4096).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels).astype("int32")


def pasted_objects(images, labels, num_canvases, canvas_size=128, max_objects=4,
                   object_size=(24, 64), max_iou=0.2, seed=0):
    """A `DetectionSet` of `num_canvases` canvases pasted from `images` / `labels`
    (CIFAR-style arrays, see `cifar10_arrays`); deterministic in `seed`.

    Args:
        canvas_size: canvas height and width, a multiple of 4.
        max_objects: objects per canvas are 1..max_objects.
        object_size: (min, max) of sqrt(height * width) of a pasted object in pixels; its
            aspect (height / width) is 3:4 .. 4:3.
        max_iou: a new object overlapping an earlier one by more IoU is placed again.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise ValueError(f"images must be (n, h, w, 3) with one label each, got "
                         f"{images.shape} and {len(labels)} labels.")
    if canvas_size % 4 or canvas_size < 32:
        raise ValueError(f"canvas_size must be a multiple of 4 and >= 32, got {canvas_size}.")
    low, high = object_size
    if not 4 <= low <= high <= canvas_size:
        raise ValueError(f"object_size must be (min, max) with 4 <= min <= max <= canvas_size,"
                         f" got {object_size}.")
    rng = np.random.default_rng(seed)
    canvases = np.empty((num_canvases, canvas_size, canvas_size, 3), "uint8")
    boxes = np.full((num_canvases, max_objects, 4), -1, "float32")
    classes = np.full((num_canvases, max_objects), -1, "int32")
    for i in range(num_canvases):
        canvases[i] = _background(images[rng.integers(len(images))], canvas_size, rng)
        placed = []
        for _ in range(rng.integers(1, max_objects + 1)):
            for _attempt in range(10):
                side = rng.integers(low, high + 1)
                aspect = rng.uniform(0.75, 4 / 3)
                h = int(np.clip(round(side * np.sqrt(aspect)), 4, canvas_size))
                w = int(np.clip(round(side / np.sqrt(aspect)), 4, canvas_size))
                top, left = rng.integers(0, canvas_size - h + 1), rng.integers(0, canvas_size - w + 1)
                box = np.array([top, left, top + h, left + w], "float32")
                if all(_iou(box, other) <= max_iou for other in placed):
                    break
            else:
                continue
            source = rng.integers(len(images))
            canvases[i, top:top + h, left:left + w] = _resize_nearest(images[source], h, w)
            boxes[i, len(placed)] = box
            classes[i, len(placed)] = labels[source]
            placed.append(box)
    return DetectionSet(canvases, boxes, classes)


def _background(image, size, rng):
    """`image` scaled to `size` and cut into a 4x4 grid of shuffled blocks."""
    big = _resize_nearest(image, size, size)
    block = size // 4
    tiles = [big[r:r + block, c:c + block] for r in range(0, size, block)
             for c in range(0, size, block)]
    order = rng.permutation(len(tiles))
    rows = [np.concatenate([tiles[order[r * 4 + c]] for c in range(4)], 1) for r in range(4)]
    return np.concatenate(rows, 0)


def _resize_nearest(image, h, w):
    rows = np.arange(h) * image.shape[0] // h
    cols = np.arange(w) * image.shape[1] // w
    return image[rows][:, cols]


def _iou(a, b):
    inter = (max(0.0, min(a[2], b[2]) - max(a[0], b[0])) *
             max(0.0, min(a[3], b[3]) - max(a[1], b[1])))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def mobilenetv2_backbone(image_shape, alpha=1.0):
    """keras.applications MobileNetV2 (fresh weights, raw 0..255 pixels in) as a keras-hub
    `FeaturePyramidBackbone`, tapped like keras-cv's: P3..P5 are the last layers at strides
    8, 16 and 32 (the expansions before the strided blocks, and `out_relu`)."""
    import keras
    import keras_hub

    image = keras.Input(image_shape, name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(image)
    net = keras.applications.MobileNetV2(include_top=False, weights=None, input_tensor=x,
                                         alpha=alpha)
    # keras.applications averages BN statistics with momentum 0.999 (the keras_ghost
    # backbones: 0.9, PyTorch's 0.1): after a short run from fresh weights its moving
    # statistics are still mostly their initial values and the eval-mode detector finds
    # nothing. Same recipe, same BN averaging.
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    taps = {"P2": "block_3_expand_relu", "P3": "block_6_expand_relu",
            "P4": "block_13_expand_relu", "P5": "out_relu"}
    pyramid = {level: net.get_layer(name).output for level, name in taps.items()}
    backbone = keras_hub.models.FeaturePyramidBackbone(inputs=image, outputs=pyramid["P5"],
                                                       name="mobilenetv2_backbone")
    backbone.pyramid_outputs = pyramid
    return backbone


def backbone_for(name, image_shape):
    """The backbone of a detector: "mobilenetv2" or a registered keras_ghost variant
    (raw 0..255 pixels in, normalized inside the graph)."""
    if name == "mobilenetv2":
        return mobilenetv2_backbone(image_shape)
    from keras_ghost.models.backbone import create_backbone

    return create_backbone(name, feature_levels=("P3", "P4", "P5"), image_shape=image_shape,
                           include_preprocessing=True)


def retinanet(backbone, num_classes, head_convs=2, min_level=3, max_level=7,
              confidence_threshold=0.05, iou_threshold=0.5, max_detections=100):
    """keras-hub's RetinaNet (FPN P3..P7, `head_convs` convs before each head's output) on
    `backbone`, with NMS settings for COCO-style evaluation."""
    import keras_hub

    retina = keras_hub.models.RetinaNetBackbone(
        image_encoder=backbone, min_level=min_level, max_level=max_level, use_p5=False,
        image_shape=tuple(backbone.inputs[0].shape[1:]))
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format=BOX_FORMAT, from_logits=True, iou_threshold=iou_threshold,
        confidence_threshold=confidence_threshold, max_detections=max_detections)
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=retina, num_classes=num_classes, bounding_box_format=BOX_FORMAT,
        pre_logits_num_conv_layers=head_convs, prediction_decoder=decoder)


def compile_detector(detector, steps, learning_rate=1e-3, weight_decay=1e-4):
    """AdamW with a cosine schedule over `steps` and a 5% linear warmup, gradient clipping,
    and keras-hub's RetinaNet losses (focal + smooth L1)."""
    import keras

    warmup = max(1, steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate / warmup, max(1, steps - warmup), warmup_target=learning_rate,
        warmup_steps=warmup)
    detector.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay,
                                                      global_clipnorm=10.0),
                     box_loss="auto", classification_loss="auto")
    return detector


def train_dataset(data, batch_size, seed=0):
    """Shuffled, repeated batches of `(float32 images, targets)` with random horizontal
    flips (boxes flipped with them)."""
    import tensorflow as tf

    width = data.images.shape[2]

    def flip(image, target):
        do = tf.random.uniform((), seed=None) < 0.5
        boxes = target["boxes"]
        flipped = tf.stack([boxes[:, 0], width - boxes[:, 3], boxes[:, 2], width - boxes[:, 1]], -1)
        valid = target["labels"][:, None] >= 0
        boxes = tf.where(do & valid, flipped, boxes)
        image = tf.cond(do, lambda: tf.reverse(image, [1]), lambda: image)
        return tf.cast(image, tf.float32), {"boxes": boxes, "labels": target["labels"]}

    tf.random.set_seed(seed)
    ds = tf.data.Dataset.from_tensor_slices((data.images, data.targets()))
    ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True).repeat()
    return ds.map(flip, num_parallel_calls=2).batch(batch_size, drop_remainder=True).prefetch(2)


@dataclasses.dataclass(frozen=True)
class Detections:
    """Per canvas: `boxes[i, :n[i]]` (yxyx pixels), `scores`, `labels`."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    counts: np.ndarray


def detect(detector, images, batch_size=32):
    """The detector's decoded detections (keras-hub decoding and NMS) of uint8 `images`."""
    images = np.asarray(images, "float32")
    # Equal batches: keras-hub's NMS fails when predict retraces with an unknown batch size
    # (a smaller last batch), so the last one is padded and cut off again.
    batch_size = min(batch_size, len(images))
    pad = -len(images) % batch_size
    padded = np.concatenate([images, np.zeros((pad, *images.shape[1:]), "float32")])
    out = detector.predict(padded, batch_size=batch_size, verbose=0)
    n = len(images)
    return Detections(out["boxes"][:n], out["confidence"][:n], out["labels"][:n],
                      out["num_detections"][:n])


def decode_raw(detector, raw, images):
    """Host-side step of the exported detector: raw head outputs `(n, anchors, 4 + classes)`
    (box deltas, class logits, as `export_model` concatenates them) -> `Detections`, with the
    detector's own anchors, box decoding and NMS."""
    import keras

    raw = np.asarray(raw, "float32")
    predictions = {"bbox_regression": raw[..., :4], "cls_logits": raw[..., 4:]}
    out = detector.decode_predictions(predictions, keras.ops.convert_to_tensor(
        np.asarray(images, "float32")))
    out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    return Detections(out["boxes"], out["confidence"], out["labels"], out["num_detections"])


def export_model(detector):
    """The detector's backbone + FPN + heads as one functional model of raw outputs,
    `(batch, anchors, 4 + classes)`: what runs on the device (decoding and NMS do not).

    The same layers and weights as `detector`, with keras-hub's FPN laid out as a graph of
    its own conv layers (as `FeaturePyramid.call` runs them) so that its 2x upsampling can
    be `UpsampleNearest`: Keras' UpSampling2D becomes TFLite TILE, which XNNPACK does not
    run, and the deploy pass rebuilds nested layers from their config."""
    import keras

    from keras_ghost.layers.shape_ops import UpsampleNearest

    retina = detector.backbone
    fpn = retina.feature_pyramid
    encoder = retina.image_encoder
    levels = [f"P{i}" for i in range(retina.min_level, retina.max_level + 1)]
    encoder_levels = sorted(lv for lv in encoder.pyramid_outputs
                            if retina.min_level <= int(lv[1:]) <= retina.max_level)
    features = keras.Model(encoder.inputs, {lv: encoder.pyramid_outputs[lv]
                                            for lv in encoder_levels}, name=encoder.name)
    image = keras.Input(tuple(detector.inputs[0].shape[1:]), name="image")
    inputs = features(image)
    top = int(encoder_levels[-1][1:])
    maps = {}
    for i in range(top, retina.min_level - 1, -1):
        level = f"P{i}"
        x = fpn.lateral_conv_layers[level](inputs[level])
        if i < top:
            up = UpsampleNearest(2, name=f"fpn.upsample_{level}")(maps[f"P{i + 1}"])
            x = keras.layers.Add(name=f"fpn.merge_{level}")([x, up])
        maps[level] = fpn.lateral_batch_norm_layers[level](x) if fpn.use_batch_norm else x
    for i in range(top, retina.min_level - 1, -1):
        maps[f"P{i}"] = fpn.output_conv_layers[f"P{i}"](maps[f"P{i}"])
    for i in range(top + 1, retina.max_level + 1):
        x = inputs[f"P{i - 1}"] if i == top + 1 and fpn.use_p5 else maps[f"P{i - 1}"]
        if i > top + 1:
            x = _delegable_activation(x, fpn.activation, f"fpn.act_P{i}")
        x = fpn.output_conv_layers[f"P{i}"](x)
        maps[f"P{i}"] = fpn.output_batch_norms[f"P{i}"](x) if fpn.use_batch_norm else x
    # One copy of each (shared) head per level: graph rewrites copy a layer per call.
    boxes = [keras.layers.Reshape((-1, 4), name=f"box_pred_{lv}")(
        _copy(detector.box_head, f"box_head_{lv}", maps[lv])) for lv in levels]
    logits = [keras.layers.Reshape((-1, detector.num_classes), name=f"cls_pred_{lv}")(
        _copy(detector.classification_head, f"classification_head_{lv}", maps[lv]))
        for lv in levels]
    raw = keras.layers.Concatenate(name="raw_outputs")([
        keras.layers.Concatenate(axis=1, name="bbox_regression")(boxes),
        keras.layers.Concatenate(axis=1, name="cls_logits")(logits)])
    return keras.Model(image, raw, name=f"{encoder.name}_retinanet")


def _delegable_activation(x, activation, name):
    """`activation(x)` as an identity 1x1 depthwise conv with that activation fused: XNNPACK
    runs a lone int8 RELU op only in TFLite's own kernels (a second partition)."""
    import keras

    conv = keras.layers.DepthwiseConv2D(1, use_bias=False, activation=activation, name=name)
    y = conv(x)
    conv.set_weights([np.ones((1, 1, x.shape[-1], 1), "float32")])
    return y


def _copy(layer, name, x):
    new = type(layer).from_config({**layer.get_config(), "name": name})
    y = new(x)
    new.set_weights(layer.get_weights())
    return y


def tflite_macs(model_content):
    """Multiply-accumulates of one invoke of a TFLite model: its CONV_2D, DEPTHWISE_CONV_2D
    and FULLY_CONNECTED ops, from their tensor shapes (counts nested Keras layers too, which
    `keras_ghost.profile` does not see)."""
    from keras_ghost.export.tflite import interpreter

    it = interpreter(model_content, xnnpack=False)
    shapes = {t["index"]: t["shape"] for t in it.get_tensor_details()}
    macs = 0
    for op in it._get_ops_details():
        name = op["op_name"]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        out = shapes[op["outputs"][0]]
        weights = shapes[op["inputs"][1]]
        if name == "CONV_2D":  # (out, kh, kw, in) per output element
            macs += int(np.prod(out)) * int(np.prod(weights[1:]))
        elif name == "DEPTHWISE_CONV_2D":  # (1, kh, kw, channels)
            macs += int(np.prod(out)) * int(weights[1] * weights[2])
        else:  # (out, in)
            macs += int(np.prod(out)) * int(weights[1])
    return macs


@dataclasses.dataclass(frozen=True)
class COCOScores:
    """COCO-style box AP (pycocotools): `ap` is AP@[.5:.95], `ap50` AP@.5, `ap75` AP@.75."""

    ap: float
    ap50: float
    ap75: float


def coco_map(data, detections):
    """pycocotools' box mAP of `detections` against `data`'s ground truth."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i in range(len(data)):
        images.append({"id": i, "height": data.images.shape[1], "width": data.images.shape[2]})
        for box, label in zip(data.boxes[i], data.labels[i]):
            if label < 0:
                continue
            y1, x1, y2, x2 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i,
                                "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for j in range(int(detections.counts[i])):
            y1, x1, y2, x2 = (float(v) for v in detections.boxes[i, j])
            results.append({"image_id": i, "category_id": int(detections.labels[i, j]),
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(detections.scores[i, j])})
    truth = {"images": images, "annotations": annotations,
             "categories": [{"id": c, "name": n} for c, n in enumerate(data.class_names)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        if not results:
            return COCOScores(0.0, 0.0, 0.0)
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return COCOScores(float(stats[0]), float(stats[1]), float(stats[2]))


__all__ = ["BOX_FORMAT", "COCOScores", "DetectionSet", "Detections", "backbone_for",
           "cifar10_arrays", "coco_map", "compile_detector", "decode_raw", "detect",
           "export_model", "mobilenetv2_backbone", "pasted_objects", "retinanet", "tflite_macs",
           "train_dataset"]
