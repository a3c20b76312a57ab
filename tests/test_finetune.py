"""From a user's own photos to a labelled .tflite: image folders (formats, unreadable files,
the seeded split), reference weights of another class count, the two-phase fine-tune,
class names inside .keras / .tflite, and `keras-ghost predict` on both."""

import json
import re

import numpy as np
import pytest

import keras
import tensorflow as tf

import keras_ghost
from keras_ghost import image_folder, metadata
from keras_ghost.cli import predict as predict_cli
from keras_ghost.cli import train as train_cli
from keras_ghost.training import data

TINY = dict(width=0.25, input_shape=(32, 32, 3), classifier_activation=None)
COLORS = {"apple": (220, 30, 30), "leaf": (30, 200, 40), "sky": (40, 60, 230)}


def _encode(image, suffix):
    if suffix == ".png":
        return tf.io.encode_png(image).numpy()
    return tf.io.encode_jpeg(image, quality=95).numpy()


def write_folder(root, per_class=8, seed=0, size=(40, 48)):
    """Class folders of noisy solid-color images, JPEG and PNG, of odd sizes."""
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-25, 25, (*size, 3))
            image = np.clip(np.array(color) + noise, 0, 255).astype("uint8")
            suffix = ".png" if i % 2 else ".jpg"
            (root / name / f"{i}{suffix}").write_bytes(_encode(image, suffix))
    return root


def test_scan_reads_every_format_and_lists_unreadable_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    cat, dog = tmp_path / "cat", tmp_path / "dog"
    cat.mkdir()
    dog.mkdir()
    Image.fromarray(rgb).save(cat / "a.webp", lossless=True)
    Image.fromarray(rgb).save(cat / "b.bmp")
    Image.fromarray(rgb).convert("RGBA").save(cat / "c.png")
    Image.fromarray(rgb[..., 0]).save(dog / "gray.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(dog / "sixteen.png")
    Image.fromarray(rgb).save(dog / "d.jpg")
    (dog / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (dog / "empty.png").write_bytes(b"")
    (dog / "notes.txt").write_text("not an image, not counted")

    folder = image_folder.scan(tmp_path, val_fraction=0.34, seed=3)
    assert folder.classes == ("cat", "dog") and folder.auto_split
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in folder.skipped) == ["broken.jpg", "empty.png"]
    assert "skipped 2 unreadable files" in folder.summary()
    assert len(folder.train) + len(folder.val) == 6
    assert {label for _, label in folder.val} == {0, 1}  # each class validates
    assert folder == image_folder.scan(tmp_path, val_fraction=0.34, seed=3)  # seeded
    some, three = image_folder.dataset(folder, "train", limit=3)
    assert three == 3 and len({int(y) for _, y in some}) == 2  # from both classes
    ds, count = image_folder.dataset(folder, "train")
    decoded = {path: image.numpy() for (image, _), (path, _) in zip(ds, folder.train)}
    assert count == len(decoded) == len(folder.train)
    for path, image in decoded.items():
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8, path
        if not path.endswith(".jpg"):  # lossless: the pixels come back as written
            expected = rgb if "gray" not in path and "sixteen" not in path else rgb[..., :1]
            assert np.array_equal(image, np.broadcast_to(expected, image.shape)), path


def test_scan_errors_name_the_problem(tmp_path):
    with pytest.raises(image_folder.ImageFolderError, match="no class subfolders"):
        image_folder.scan(tmp_path)
    write_folder(tmp_path / "photos", per_class=3)
    lonely = tmp_path / "photos" / "zebra"
    lonely.mkdir()
    (lonely / "0.png").write_bytes(_encode(np.zeros((8, 8, 3), "uint8"), ".png"))
    with pytest.raises(image_folder.ImageFolderError, match=r"class 'zebra' \(1\).*at least 2"):
        image_folder.scan(tmp_path / "photos")
    split = tmp_path / "split"
    write_folder(split / "train", per_class=2)
    write_folder(split / "val", per_class=1)
    folder = image_folder.scan(split)
    assert not folder.auto_split and (len(folder.train), len(folder.val)) == (6, 3)
    (split / "val" / "extra").mkdir()
    with pytest.raises(image_folder.ImageFolderError, match="classes that .* lacks: extra"):
        image_folder.scan(split)


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    path = tmp_path_factory.mktemp("timm") / "ghostnet_050.pth"
    torch.save(timm.create_model("ghostnet_050").state_dict(), path)
    return path


def _weights_by_layer(model):
    return {layer.name: [np.asarray(w) for w in layer.get_weights()]
            for layer in model.layers if layer.weights}


def test_reference_weights_load_with_a_new_classifier_for_other_classes(timm_checkpoint,
                                                                        tmp_path):
    shape = dict(input_shape=(64, 64, 3))
    full = _weights_by_layer(keras_ghost.create_model("ghostnet_050", weights=str(timm_checkpoint),
                                                      **shape))
    five = keras_ghost.create_model("ghostnet_050", weights=str(timm_checkpoint), classes=5,
                                    **shape)
    assert five.output_shape == (None, 5)
    for name, arrays in _weights_by_layer(five).items():
        if name == "head_classifier":
            assert arrays[0].shape == (1280, 5) and not np.allclose(arrays[0][:, :5], 0)
        else:
            assert all(np.array_equal(a, b) for a, b in zip(arrays, full[name])), name
    # Our own files of another class count: .keras and .weights.h5.
    ten = keras_ghost.create_model("ghostnet_050", classes=10, **TINY)
    ten.save(tmp_path / "ten.keras")
    ten.save_weights(tmp_path / "ten.weights.h5")
    for path in ("ten.keras", "ten.weights.h5"):
        three = keras_ghost.create_model("ghostnet_050", classes=3, weights=str(tmp_path / path),
                                         **TINY)
        ours, theirs = _weights_by_layer(three), _weights_by_layer(ten)
        assert ours["head_classifier"][0].shape == (1280, 3)
        assert all(np.array_equal(a, b) for name in ours if name != "head_classifier"
                   for a, b in zip(ours[name], theirs[name]))
    # Anything but the class count still has to fit.
    with pytest.raises(ValueError, match="does not fit"):
        keras_ghost.create_model("ghostnet_050", width=0.5, classes=3,
                                 weights=str(tmp_path / "ten.weights.h5"),
                                 input_shape=(32, 32, 3))


def test_head_phase_trains_the_head_alone_with_batchnorm_in_inference_mode():
    from keras_ghost.training.trainer import set_phase

    model = keras_ghost.create_model("ghostnet_050", classes=3, **TINY)
    before = _weights_by_layer(model)
    set_phase(model, "head")
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype("float32") * 3 + 1
    model.fit(x, np.arange(8) % 3, epochs=2, batch_size=4, verbose=0)
    after = _weights_by_layer(model)
    changed = sorted(name for name in before
                     if not all(np.array_equal(a, b) for a, b in zip(before[name], after[name])))
    assert changed == ["head_classifier", "head_conv"]  # BN statistics did not move either
    set_phase(model, "all")
    assert all(layer.trainable != isinstance(layer, keras.layers.BatchNormalization)
               for layer in model.layers if layer.weights)


def test_metadata_lives_inside_keras_and_tflite_files(tmp_path):
    from keras_ghost import export

    model = keras_ghost.create_model("ghostnet_050", classes=3, **TINY)
    card = metadata.ModelMetadata(labels=("apple", "leaf", "sky"), image_size=(32, 32),
                                  crop_pct=1.0, model="ghostnet_050")
    model.save(tmp_path / "m.keras")
    assert metadata.read(tmp_path / "m.keras") is None
    metadata.add_to_keras(tmp_path / "m.keras", card)
    assert metadata.read(tmp_path / "m.keras") == card
    assert keras_ghost.load_model(tmp_path / "m.keras").output_shape == (None, 3)
    plain = export.convert(model, "fp32")
    labelled = metadata.add_to_tflite(plain, card)
    (tmp_path / "m.tflite").write_bytes(labelled)
    assert metadata.read(tmp_path / "m.tflite") == card
    assert metadata.add_to_tflite(labelled, card) == labelled  # replaces, does not pile up
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    assert np.array_equal(export.run(plain, x), export.run(labelled, x))
    assert export.op_histogram(labelled, xnnpack=True).get("DELEGATE") == 1


def test_finetune_folder_to_labelled_int8_and_predict(tmp_path, capsys):
    photos = write_folder(tmp_path / "photos")
    (photos / "sky" / "truncated.jpg").write_bytes(b"\xff\xd8\xff")
    keras.utils.set_random_seed(1)
    pretrained = keras_ghost.create_model("ghostnet_050", classes=10, **TINY)
    noise = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype("float32")
    pretrained.compile("sgd", "sparse_categorical_crossentropy")
    pretrained.fit(noise, np.arange(8) % 10, epochs=1, verbose=0)  # BN statistics moved
    pretrained.save(tmp_path / "pretrained.keras")
    run = tmp_path / "run"
    report = train_cli.main([
        "--model", "ghostnet_050", "--width", "0.25", "--image-size", "32",
        "--image-folder", str(photos), "--init-weights", str(tmp_path / "pretrained.keras"),
        "--head-epochs", "1", "--epochs", "2", "--batch-size", "4", "--export", "int8",
        "--calib-images", "8", "--no-tensorboard", "--fit-verbose", "0",
        "--output-dir", str(run)])
    out = capsys.readouterr().out
    assert "3 classes, 18 training and 6 validation images" in out and "skipped 1" in out
    assert report["classes"] == ["apple", "leaf", "sky"] and report["head_epochs"] == 1
    assert report["epochs_run"] == 2 and len(report["skipped_files"]) == 1
    exported = report["export"]
    assert exported["xnnpack_partitions"] == 1 and exported["gate_images"] == 6
    assert isinstance(exported["gate_passed"], bool) and 0 <= exported["int8_accuracy"] <= 1
    tflite_path = run / f"{report['model']}_int8.tflite"
    assert exported["path"] == str(tflite_path)
    assert (run / "labels.txt").read_text() == "apple\nleaf\nsky\n"
    for path in (run / "best.keras", tflite_path):
        card = metadata.read(path)
        assert card.labels == ("apple", "leaf", "sky") and card.image_size == (32, 32)
    # The second phase trained the backbone; BatchNorm stayed frozen in both phases.
    before = _weights_by_layer(pretrained)
    after = _weights_by_layer(keras_ghost.load_model(run / "last.keras"))
    assert not np.array_equal(after["stem_conv"][0], before["stem_conv"][0])
    assert all(np.array_equal(a, b) for a, b in zip(after["stem_bn"], before["stem_bn"]))
    assert not (run / "head_phase.weights.h5").exists()  # a finished run leaves no marker

    # predict: the validation pipeline's preprocessing, read from the files themselves.
    val_paths, _ = image_folder.scan(photos).split("val")
    ds = image_folder.files_dataset(val_paths, [0] * len(val_paths))
    batches = data.eval_pipeline(ds, (32, 32), batch_size=64, mean=card.mean, std=card.std,
                                 num_classes=3, crop_pct=card.crop_pct,
                                 interpolation=card.interpolation)
    images = np.concatenate([x.numpy() for x, _ in batches])
    from keras_ghost import export

    for path, logits in ((tflite_path, export.run(tflite_path.read_bytes(), images)),
                         (run / "best.keras", keras_ghost.load_model(run / "best.keras")
                          .predict(images, verbose=0))):
        results = predict_cli.main([str(path), *val_paths, "--json"])
        printed = json.loads(capsys.readouterr().out)
        assert [r["image"] for r in printed] == val_paths
        expected = np.exp(logits - logits.max(1, keepdims=True))
        expected /= expected.sum(1, keepdims=True)
        for result, row in zip(results, expected):
            assert [i for _, i, _ in result.top_k] == list(np.argsort(-row)), path
            assert [s for _, _, s in result.top_k] == pytest.approx(sorted(row, reverse=True),
                                                                    abs=1e-5)
            assert result.top_k[0][0] == ("apple", "leaf", "sky")[result.top_k[0][1]]
    # A folder and a glob, with the unreadable file reported and skipped.
    results = predict_cli.main([str(tflite_path), str(photos / "sky"), "--top-k", "1"])
    assert len(results) == 8 and all(len(r.top_k) == 1 for r in results)
    assert "1 of 9 images skipped" in capsys.readouterr().err
    assert len(predict_cli.main([str(tflite_path), str(photos / "*" / "*.png")])) == 12
    # convert --keras-model carries the class names and the preprocessing into its .tflite.
    from keras_ghost.cli import convert as convert_cli

    converted = tmp_path / "converted" / "model_int8.tflite"
    convert_cli.main(["--keras-model", str(run / "best.keras"), "--int8", "--calib-data",
                      str(photos / "apple"), "--calib-steps", "4", "--holdout", "2",
                      "--output", str(converted), "--quiet"])
    assert metadata.read(converted) == metadata.read(run / "best.keras")
    assert (converted.parent / "labels.txt").read_text() == "apple\nleaf\nsky\n"
    assert len(predict_cli.main([str(converted), str(photos / "leaf")])) == 8


def test_finetune_mistakes_end_in_one_line_before_the_work(tmp_path, capsys):
    photos = write_folder(tmp_path / "photos", per_class=1)
    base = ["--model", "ghostnet_050", "--image-size", "32", "--image-folder", str(photos),
            "--output-dir", str(tmp_path / "run"), "--no-tensorboard"]
    cases = [
        (["--head-epochs", "1"], "--head-epochs trains a new head"),
        (["--init-weights", str(tmp_path / "missing.pth")], "no such file"),
        (["--init-weights", "imagenet", "--head-epochs", "3", "--epochs", "3"],
         "must be fewer than the epochs"),
        ([], r"too few readable images in class 'apple' \(1\)"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit):
            train_cli.main([*base, *extra])
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and re.search(message, err), (extra, err)
    assert not (tmp_path / "run").exists()
    # Weights of another width: named before any training starts.
    wide = keras_ghost.create_model("ghostnet_050", width=0.5, classes=3,
                                    input_shape=(32, 32, 3))
    wide.save_weights(tmp_path / "wide.weights.h5")
    enough = write_folder(tmp_path / "enough", per_class=2)
    with pytest.raises(SystemExit):
        train_cli.main([*base[:4], "--image-folder", str(enough), "--width", "0.25",
                        "--init-weights", str(tmp_path / "wide.weights.h5"),
                        "--output-dir", str(tmp_path / "run"), "--no-tensorboard"])
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "does not fit" in err and "Epoch" not in err
    plain = keras_ghost.create_model("ghostnet_050", classes=3, **TINY)
    plain.save(tmp_path / "plain.keras")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "notes.tflite").write_text("not a model")
    for argv, message in (([str(tmp_path / "plain.keras"), str(photos)], "no keras_ghost metadata"),
                          ([str(tmp_path / "plain.keras"), str(tmp_path / "nope*.jpg")],
                           "no such image file"),
                          ([str(tmp_path / "notes.txt"), str(photos)], "expected a .keras or"),
                          ([str(tmp_path / "notes.tflite"), str(photos)], "not a readable")):
        with pytest.raises(SystemExit):
            predict_cli.main(argv)
        assert message in capsys.readouterr().err
