"""keras-hub backbones and detectors: `create_backbone` as a FeaturePyramidBackbone that
RetinaNet takes unchanged (forward, one training step, save/load), the pasted-CIFAR-10
detection set, COCO-style mAP, and the int8 export of a small detector."""

import keras
import numpy as np
import pytest

import keras_ghost

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("pycocotools")

from keras_ghost.training import detection  # noqa: E402 (needs keras-hub)

SIZE = 64


def tiny_set(n=8, seed=0, canvas=SIZE):
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, (40, 32, 32, 3)).astype("uint8")
    labels = rng.randint(0, 10, 40).astype("int32")
    return detection.pasted_objects(images, labels, n, canvas, max_objects=3,
                                    object_size=(16, 40), seed=seed)


def test_backbone_is_a_feature_pyramid_backbone_and_saves(tmp_path):
    backbone = keras_ghost.create_backbone("g_ghost_regnetx_002", image_shape=(SIZE, 96, 3))
    assert isinstance(backbone, keras_hub.models.FeaturePyramidBackbone)
    assert {k: tuple(v.shape[1:3]) for k, v in backbone.pyramid_outputs.items()} == {
        f"P{n}": (-(-SIZE // 2 ** n), 96 // 2 ** n) for n in range(1, 6)}
    x = np.random.RandomState(0).uniform(-1, 1, (2, SIZE, 96, 3)).astype("float32")
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(backbone) and list(loaded.pyramid_outputs) == list(
        backbone.pyramid_outputs)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), backbone.predict(x, verbose=0),
                               atol=1e-5)
    with pytest.raises(ValueError, match="own arguments"):
        keras_ghost.create_backbone("ghostnet_050", input_shape=(SIZE, SIZE, 3))


def test_retinanet_forward_and_one_training_step(tmp_path):
    """keras-hub's RetinaNet, as the README builds it, on our backbone: raw outputs per
    anchor, one fit step that changes the backbone's weights, decoded predictions, and
    a save/load round trip of the whole detector."""
    backbone = keras_ghost.create_backbone("ghostnet_050", image_shape=(SIZE, SIZE, 3),
                                           include_preprocessing=True)
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=keras_hub.models.RetinaNetBackbone(image_encoder=backbone, min_level=3,
                                                    max_level=7, use_p5=False),
        num_classes=10, bounding_box_format="yxyx", pre_logits_num_conv_layers=1)
    data = tiny_set(4)
    raw = detector(data.images.astype("float32"))
    anchors = 9 * sum((SIZE // 2 ** n) ** 2 for n in range(3, 7)) + 9  # P7 is 1x1
    assert tuple(raw["bbox_regression"].shape) == (4, anchors, 4)
    assert tuple(raw["cls_logits"].shape) == (4, anchors, 10)
    stem = backbone.get_layer("stem_conv")
    before = stem.get_weights()[0].copy()
    detection.compile_detector(detector, steps=1)
    detector.run_eagerly = True  # one step: tracing the train function costs more
    history = detector.fit(data.images.astype("float32"), data.targets(), batch_size=4,
                           epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(stem.get_weights()[0], before)
    found = detection.detect(detector, data.images)
    assert found.boxes.shape[:2] == found.scores.shape[:2] and len(found.counts) == 4
    path = tmp_path / "detector.keras"
    detector.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(data.images.astype("float32"))["cls_logits"]),
        keras.ops.convert_to_numpy(detector(data.images.astype("float32"))["cls_logits"]),
        atol=1e-4)


def test_pasted_objects_is_deterministic_and_boxes_hold_their_objects():
    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, (30, 32, 32, 3)).astype("uint8")
    labels = np.arange(30, dtype="int32") % 10
    a = detection.pasted_objects(images, labels, 6, 96, seed=3)
    b = detection.pasted_objects(images, labels, 6, 96, seed=3)
    c = detection.pasted_objects(images, labels, 6, 96, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.images, c.images)
    valid = a.labels >= 0
    assert valid[:, 0].all() and (valid.sum(1) <= 4).all()
    boxes = a.boxes[valid]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 96).all()
    sides = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))  # object_size: the mean side
    assert (sides >= 23).all() and (sides <= 65).all()
    # The last object pasted on a canvas is not covered: its box shows a resized source
    # image of its class.
    for i in range(6):
        j = valid[i].sum() - 1
        top, left, bottom, right = a.boxes[i, j].astype(int)
        patch = a.images[i, top:bottom, left:right]
        sources = [k for k in range(30) if labels[k] == a.labels[i, j]]
        rows = np.arange(bottom - top) * 32 // (bottom - top)
        cols = np.arange(right - left) * 32 // (right - left)
        assert any(np.array_equal(patch, images[k][rows][:, cols]) for k in sources)
    with pytest.raises(ValueError, match="canvas_size"):
        detection.pasted_objects(images, labels, 1, 30)


def test_coco_map_of_the_truth_is_one_and_of_shifted_boxes_less():
    data = tiny_set(6)
    counts = (data.labels >= 0).sum(1)
    truth = detection.Detections(data.boxes, np.ones(data.labels.shape, "float32"),
                                 data.labels, counts)
    assert detection.coco_map(data, truth).ap == pytest.approx(1.0)
    shifted = detection.Detections(data.boxes + 6.0, truth.scores, data.labels, counts)
    scores = detection.coco_map(data, shifted)
    assert scores.ap < 0.9 and scores.ap50 <= 1.0
    wrong = detection.Detections(data.boxes, truth.scores, (data.labels + 1) % 10, counts)
    assert detection.coco_map(data, wrong).ap == 0.0


def test_int8_detector_export_runs_in_one_partition_and_decodes():
    """Backbone + FPN + heads to full-int8 TFLite in one XNNPACK partition; its raw
    outputs equal the detector's in float and stay close in int8; host decoding gives
    the detector's own detections from float raw outputs."""
    from keras_ghost import export

    detector = detection.retinanet(detection.backbone_for("ghostnet_050", (SIZE, SIZE, 3)),
                                   10, head_convs=1)
    data = tiny_set(16, seed=2)
    x = data.images.astype("float32")
    raw_model = detection.export_model(detector)
    out = detector(x)
    keras_raw = keras.ops.convert_to_numpy(raw_model(x))
    np.testing.assert_allclose(keras_raw[..., :4], keras.ops.convert_to_numpy(
        out["bbox_regression"]), atol=1e-5)
    np.testing.assert_allclose(keras_raw[..., 4:], keras.ops.convert_to_numpy(
        out["cls_logits"]), atol=1e-5)
    int8 = export.convert(raw_model, "int8", calibration=x, io_type="int8")
    assert export.op_histogram(int8, xnnpack=True)["DELEGATE"] == 1
    int8_raw = export.run(int8, x)
    assert export.fidelity(keras_raw, int8_raw)["mean_cosine"] > 0.98
    host = detection.decode_raw(detector, keras_raw, data.images)
    direct = detection.detect(detector, data.images)
    np.testing.assert_array_equal(host.counts, direct.counts)
    np.testing.assert_allclose(host.boxes, direct.boxes, atol=1e-3)


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps"),
    (["--confidence-threshold", "1.5"], "--confidence-threshold"),
    (["--backbone", "ghostnet_100", "--canvas", "16"], "--canvas"),
])
def test_detection_script_bad_input_is_one_line(argv, message, capsys):
    from helpers import load_script

    script = load_script("training/detection.py")
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_detection_script_finds_the_data_dir_from_any_folder(tmp_path, monkeypatch):
    """Its default is the checkout's ../shared/tfds, not one relative to the current folder."""
    from helpers import load_script

    from keras_ghost.cli import common

    script = load_script("training/detection.py")
    monkeypatch.chdir(tmp_path)
    assert script.parse_args([]).data_dir == common.default_data_dir()
    if common.default_data_dir() is not None:
        assert (script.parse_args([]).data_dir / "cifar10").is_dir()
