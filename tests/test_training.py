"""Training: recipes, optimizer, input pipelines, distillation, the train.py command
(end to end, resume after SIGKILL, distribution) and the benchmark scripts' CPU paths."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import keras
import tensorflow as tf

import keras_ghost
from conftest import REPO, SHARED
from helpers import JAX_FAST_COMPILE, free_port, python_env
from keras_ghost.training import data, optim, recipes
from keras_ghost.training.distill import Distiller
from keras_ghost.training.trainer import TrainOptions, train

DATA_DIR = SHARED / "tfds"
TRAIN = REPO / "training" / "train.py"
needs_cifar = pytest.mark.skipif(not (DATA_DIR / "cifar10").is_dir(),
                                 reason="CIFAR-10 TFDS copy not in ../shared/tfds")
TINY = ["--model", "ghostnet_050", "--width", "0.25", "--image-size", "32",
        "--data-dir", str(DATA_DIR), "--no-tensorboard", "--fit-verbose", "2"]


def tiny_model(classes=10, seed=0):
    keras.utils.set_random_seed(seed)
    return keras_ghost.create_model("ghostnet_050", width=0.25, input_shape=(32, 32, 3),
                                    classes=classes, classifier_activation=None)


# --- recipes and optimizer ---------------------------------------------------------------

def test_every_bundled_recipe_loads_and_flags_override():
    names = recipes.list_recipes()
    assert {"cifar10", "ghostnet_sgd", "ghostnet_rmsproptf", "ghostnetv2_rmsproptf",
            "g_ghostnet_sgd", "asymmnet_sgd", "ghostnetv3"} <= set(names)
    for name in names:
        recipe = recipes.load_recipe(name)
        assert recipe.source, f"{name} cites no source"
        optim.build_schedule(recipe, steps_per_epoch=10, global_batch_size=recipe.batch_size)
    v2 = recipes.load_recipe("ghostnetv2_rmsproptf")
    assert (v2.optimizer, v2.epochs, v2.ema_decay) == ("rmsprop_tf", 450, 0.9999)
    changed = v2.replace(epochs=3, lr=None)  # None: flag not given
    assert (changed.epochs, changed.lr) == (3, v2.lr)
    with pytest.raises(ValueError, match="Unknown recipe fields"):
        v2.replace(epoch=3)
    with pytest.raises(ValueError, match="optimizer"):
        v2.replace(optimizer="lamb")
    with pytest.raises(ValueError, match="bundled recipes are"):
        recipes.load_recipe("no_such_recipe")


def test_step_schedule_warms_up_then_decays():
    schedule = optim.WarmupStepDecay(0.1, decay_steps=10, decay_rate=0.5, warmup_steps=4,
                                     warmup_lr=0.02)
    lr = [float(schedule(s)) for s in (0, 2, 4, 9, 10, 25)]
    np.testing.assert_allclose(lr, [0.02, 0.06, 0.1, 0.1, 0.05, 0.025], rtol=1e-6)
    clone = optim.WarmupStepDecay.from_config(schedule.get_config())
    assert float(clone(12)) == float(schedule(12))


def test_weight_decay_skips_bn_and_bias():
    recipe = recipes.load_recipe("cifar10").replace(weight_decay=0.1, warmup_epochs=0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization()])
    for v in model.trainable_variables:
        v.assign(np.ones(v.shape, "float32"))
    optimizer = optim.build_optimizer(recipe, steps_per_epoch=100, global_batch_size=128)
    optimizer.apply_gradients([(np.zeros(v.shape, "float32"), v)
                               for v in model.trainable_variables])
    changed = {v.path.split("/")[-1]: not np.allclose(v.numpy(), 1.0)
               for v in model.trainable_variables}
    assert changed == {"kernel": True, "bias": False, "gamma": False, "beta": False}


def test_rmsprop_tf_recipe_builds_ema_optimizer():
    recipe = recipes.load_recipe("ghostnetv2_rmsproptf").replace(gradient_accumulation_steps=2)
    optimizer = optim.build_optimizer(recipe, steps_per_epoch=100, global_batch_size=1024)
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.9999
    assert (optimizer.epsilon, optimizer.rho, optimizer.momentum) == (1e-3, 0.9, 0.9)
    assert optimizer.gradient_accumulation_steps == 2


# --- input pipelines ---------------------------------------------------------------------

def _first_batch(ds):
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


@needs_cifar
def test_train_pipeline_is_reproducible_with_a_seed():
    source, classes, _ = data.load_tfds("cifar10", "train[:256]", DATA_DIR)
    kwargs = dict(batch_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=classes,
                  randaugment_magnitude=9, erasing_prob=0.5, mixup_alpha=0.8, cutmix_alpha=1.0)
    a = _first_batch(data.train_pipeline(source, 24, seed=3, **kwargs))
    b = _first_batch(data.train_pipeline(source, 24, seed=3, **kwargs))
    c = _first_batch(data.train_pipeline(source, 24, seed=4, **kwargs))
    assert a[0].shape == (32, 24, 24, 3) and a[1].shape == (32, 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_allclose(a[1].sum(1), 1.0, atol=1e-5)  # mixed labels stay distributions


def test_resize_center_crop_keeps_the_center():
    image = np.zeros((40, 80, 3), "uint8")
    image[15:25, 35:45] = 255  # a 10x10 square at the center
    out = data.resize_center_crop(tf.constant(image), (20, 20), crop_pct=0.5,
                                  method="nearest").numpy()
    # Covers 40x40 (shorter side 40 = 20 / 0.5), keeps the center 20x20: square at 5..15.
    assert out.shape == (20, 20, 3)
    assert out[10, 10, 0] == 255 and out[2, 2, 0] == 0 and out[10, 17, 0] == 0
    assert out[5:15, 5:15].min() == 255


def test_image_folder_loads_with_sorted_classes_and_clear_errors(tmp_path):
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(3):
            png = tf.io.encode_png(np.full((8, 6, 3), 100 * label, "uint8")).numpy()
            (tmp_path / "train" / name / f"{i}.png").write_bytes(png)
    ds, classes, count = data.load_folder(tmp_path, "train")
    assert (classes, count) == (["cat", "dog"], 6)
    pairs = [(x.numpy(), int(y)) for x, y in ds]
    assert all(x.shape == (8, 6, 3) and x.max() == 100 * y for x, y in pairs)
    with pytest.raises(FileNotFoundError, match=r"ROOT/<split>/<class>"):
        data.load_folder(tmp_path, "val")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="No images"):
        data.load_folder(tmp_path, "empty")


# --- distillation ------------------------------------------------------------------------

def test_distiller_loss_is_task_loss_plus_scaled_kl():
    student = tiny_model(seed=1)
    teacher = tiny_model(seed=2)
    x = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype("float32")
    y = keras.ops.one_hot(np.arange(8) % 10, 10)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    distiller = Distiller(student, teacher, alpha=0.3, temperature=2.0)
    distiller.compile(optimizer="sgd", loss=loss_fn)
    s, t = student(x, training=False), teacher(x, training=False)
    got = float(distiller.compute_loss(x, y, s, training=False))
    p = keras.ops.softmax(t / 2.0)
    kl = keras.ops.mean(keras.ops.sum(p * (keras.ops.log(p) - keras.ops.log_softmax(s / 2.0)), -1))
    expected = 0.7 * float(loss_fn(y, s)) + 0.3 * 4.0 * float(kl)
    assert abs(got - expected) < 1e-4 * max(1.0, abs(expected))
    # Teacher == student: nothing to distil, the KL term vanishes.
    self_distil = Distiller(student, tiny_model(seed=1), alpha=1.0, temperature=2.0)
    self_distil.compile(optimizer="sgd", loss=loss_fn)
    assert abs(float(self_distil.compute_loss(x, y, s, training=False))) < 1e-5
    before = [w.numpy().copy() for w in teacher.weights]
    distiller.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, teacher.weights))
    with pytest.raises(ValueError, match="same classes"):
        Distiller(student, tiny_model(classes=5))


# --- train.py end to end -----------------------------------------------------------------

def _run_train(args, out, **kwargs):
    return subprocess.run([sys.executable, str(TRAIN), *TINY, *args, "--output-dir", str(out)],
                          capture_output=True, text=True, env=python_env(), **kwargs)


@needs_cifar
def test_train_cli_end_to_end_with_distillation_and_int8_export(tmp_path):
    sys.path.insert(0, str(TRAIN.parent))
    import train as train_cli

    teacher = tiny_model(seed=5)
    teacher.save(tmp_path / "teacher.keras")
    report = train_cli.main([*TINY, "--limit-train", "256", "--limit-eval", "100",
                             "--batch-size", "64", "--epochs", "2", "--ema-decay", "0.9",
                             "--teacher", str(tmp_path / "teacher.keras"),
                             "--export", "int8", "--calib-images", "16",
                             "--output-dir", str(tmp_path / "run")])
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["top1"] == report["top1"] and 0.0 <= report["top1"] <= report["top5"] <= 1.0
    assert (report["epochs_run"], report["optimizer_steps"]) == (2, 2 * (256 // 64))
    assert report["ema"] and report["distillation"]["alpha"] == 0.5
    last = keras.saving.load_model(tmp_path / "run" / "last.keras", safe_mode=True)
    assert last.name == report["model"] and last.output_shape == (None, 10)
    assert (tmp_path / "run" / "best.keras").is_file()
    assert not (tmp_path / "run" / "backup").exists()  # removed after a finished run
    assert report["export"]["calibration_images"] == 16
    assert (tmp_path / "run" / f"{report['model']}_int8.tflite").stat().st_size > 10_000


@needs_cifar
@pytest.mark.parametrize("model", [
    "ghostnet_050",  # the recipe's logic; GhostNetV3's train step: tests/test_models.py
    pytest.param("ghostnetv3_050", marks=pytest.mark.slow)])  # 892 layers to trace: ~2 min
def test_ghostnetv3_recipe_distils_from_a_teacher(model, tmp_path):
    """The `ghostnetv3` recipe: distillation (its alpha and temperature), no mixup / cutmix;
    without --teacher it is one clear error; one tiny step runs with a teacher."""
    sys.path.insert(0, str(TRAIN.parent))
    import train as train_cli

    recipe = recipes.load_recipe("ghostnetv3")
    assert recipe.teacher_required and (recipe.mixup_alpha, recipe.cutmix_alpha) == (0.0, 0.0)
    assert (recipe.distill_alpha, recipe.distill_temperature) == (0.5, 1.0)
    argv = ["--model", model, "--width", "0.25", "--image-size", "32",
            "--recipe", "ghostnetv3", "--dataset", "cifar10", "--eval-split", "test",
            "--data-dir", str(DATA_DIR), "--no-tensorboard", "--fit-verbose", "0",
            "--limit-train", "32", "--limit-eval", "16", "--batch-size", "16",
            "--epochs", "1", "--steps-per-epoch", "1", "--output-dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match="^error: recipe 'ghostnetv3' trains by distillation"):
        train_cli.main(argv)
    teacher = tiny_model(seed=5)
    teacher.save(tmp_path / "teacher.keras")
    report = train_cli.main([*argv, "--teacher", str(tmp_path / "teacher.keras")])
    assert report["distillation"] == {"teacher": str(tmp_path / "teacher.keras"),
                                      "alpha": 0.5, "temperature": 1.0}
    assert report["optimizer_steps"] == 1 and report["recipe"]["name"] == "ghostnetv3"
    assert keras.saving.load_model(tmp_path / "run" / "last.keras", safe_mode=True)


@needs_cifar
def test_mixed_precision_with_gradient_accumulation_exports_a_float32_model(tmp_path):
    """bfloat16 compute on CPU, two micro-batches per update, and a TFLite export that
    rebuilds the model in float32 with the trained weights."""
    sys.path.insert(0, str(TRAIN.parent))
    import train as train_cli

    try:
        report = train_cli.main([*TINY, "--limit-train", "256", "--limit-eval", "64",
                                 "--batch-size", "32", "--epochs", "1", "--mixed-precision",
                                 "--grad-accum", "2", "--export", "fp32",
                                 "--output-dir", str(tmp_path / "run")])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert report["precision_policy"] == "mixed_bfloat16"
    assert report["optimizer_steps"] == (256 // 32) // 2  # updates, not micro-batches
    assert report["recipe"]["gradient_accumulation_steps"] == 2
    last = keras.saving.load_model(tmp_path / "run" / "last.keras", safe_mode=True)
    # Trained in bfloat16, with float32 logits for the loss and metrics.
    assert last.get_layer("head_classifier").dtype_policy.name == "mixed_bfloat16"
    assert keras.backend.standardize_dtype(last.outputs[0].dtype) == "float32"
    content = (tmp_path / "run" / f"{report['model']}_fp32.tflite").read_bytes()
    from keras_ghost import export

    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    keras.mixed_precision.set_global_policy("float32")
    fp32 = tiny_model()
    fp32.set_weights(last.get_weights())
    # The .tflite is the float32 twin of the trained weights (not the bf16 graph).
    np.testing.assert_allclose(export.run(content, images), fp32.predict(images, verbose=0),
                               atol=1e-4)


@needs_cifar
def test_benchmark_input_and_missing_dataset_errors(tmp_path):
    result = subprocess.run([sys.executable, str(TRAIN), *TINY, "--benchmark-input", "5",
                             "--limit-train", "512", "--batch-size", "32"],
                            capture_output=True, text=True, env=python_env())
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["images"] == 5 * 32 and figures["images_per_second"] > 0
    missing = _run_train(["--data-dir", str(tmp_path)], tmp_path / "out")
    assert missing.returncode != 0 and "tfds build cifar10" in missing.stderr
    # An ImageNet recipe's "validation" split on CIFAR-10: the error names the flag to set.
    split = _run_train(["--recipe", "ghostnet_sgd", "--dataset", "cifar10"], tmp_path / "out")
    assert split.returncode != 0
    assert "bad split 'validation" in split.stderr and "with --eval-split" in split.stderr


def test_qat_flags_hand_over_to_the_quantization_tool(tmp_path):
    no_weights = _run_train(["--qat"], tmp_path / "out")
    assert no_weights.returncode != 0 and "pass --weights" in no_weights.stderr
    bad = tmp_path / "float.h5"
    bad.write_bytes(b"not a model")
    wrong = _run_train(["--qat", "--weights", str(bad)], tmp_path / "out")
    assert wrong.returncode != 0 and "expected a .keras file" in wrong.stderr
    missing = _run_train(["--qat", "--weights", str(tmp_path / "float.keras")], tmp_path / "out")
    assert missing.returncode != 0 and "float.keras: no such file" in missing.stderr


@needs_cifar
def test_tiny_model_learns_cifar10(tmp_path):
    """A few hundred steps lift a width-0.25 GhostNet clearly above chance (10%)."""
    recipe = recipes.load_recipe("cifar10").replace(epochs=3, batch_size=64)
    options = TrainOptions(output_dir=tmp_path, data_dir=DATA_DIR,
                           steps_per_epoch=100, limit_eval=1000, cache=True,
                           tensorboard=False, verbose=0)
    report = train(lambda recipe, classes: tiny_model(classes), recipe, options)
    assert report["optimizer_steps"] == 300
    assert report["top1"] > 0.25, report["top1"]


@needs_cifar
def test_time_budget_stop_keeps_the_ema_weights(tmp_path):
    """A run stopped early by --max-seconds ends with the EMA weights, as its checkpoints
    do: the final model (here its fp32 export) equals last.keras."""
    recipe = recipes.load_recipe("cifar10").replace(epochs=3, batch_size=32, ema_decay=0.5)
    options = TrainOptions(output_dir=tmp_path, data_dir=DATA_DIR, steps_per_epoch=4,
                           limit_train=256, limit_eval=32, max_seconds=1e-9, export="fp32",
                           tensorboard=False, verbose=0)
    report = train(lambda recipe, classes: tiny_model(classes), recipe, options)
    assert report["epochs_run"] == 1 and report["ema"]
    last = keras.saving.load_model(tmp_path / "last.keras", safe_mode=True)
    content = (tmp_path / f"{report['model']}_fp32.tflite").read_bytes()
    from keras_ghost import export

    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(export.run(content, images), last.predict(images, verbose=0),
                               atol=1e-4)


@pytest.mark.slow
@needs_cifar
def test_resume_after_sigkill_continues_from_the_backup(tmp_path):
    out = tmp_path / "run"
    args = ["--limit-train", "512", "--limit-eval", "64", "--batch-size", "64", "--epochs", "3",
            "--save-freq", "3"]  # 8 steps per epoch, a backup every 3 steps
    cmd = [sys.executable, str(TRAIN), *TINY, *args, "--output-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=python_env())
    metadata = out / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metadata.is_file() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 1:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # a crash: no cleanup, no final save
    proc.wait()
    saved = json.loads(metadata.read_text())
    assert saved["epoch"] >= 1 and not (out / "report.json").exists()

    resumed = _run_train(args, out)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    # Restarts at the saved epoch with the optimizer step of the last backup (a multiple of
    # --save-freq, within that epoch), and finishes all 3 epochs.
    start = report["started_at"]
    assert start["epoch"] == saved["epoch"]
    assert start["optimizer_step"] % 3 == 0
    assert saved["epoch"] * 8 <= start["optimizer_step"] <= saved["epoch"] * 8 + 8
    assert report["last_epoch"] == 3
    assert report["optimizer_steps"] == (report["started_at"]["optimizer_step"]
                                         + (3 - saved["epoch"]) * 8)
    assert not (out / "backup").exists()


# --- distribution ------------------------------------------------------------------------

MIRRORED_SCRIPT = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import train
report = train.main(sys.argv[2:])
assert report["replicas"] == 2, report["replicas"]
"""


@needs_cifar
@pytest.mark.parametrize("loop", ["fit", pytest.param("custom", marks=pytest.mark.slow)])
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, loop):
    args = [*TINY, "--strategy", "mirrored", "--limit-train", "256", "--limit-eval", "64",
            "--batch-size", "64", "--epochs", "1", "--loop", loop, "--output-dir", str(tmp_path)]
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(TRAIN.parent), *args],
                            capture_output=True, text=True, env=python_env(), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["replicas"], report["optimizer_steps"], report["loop"]) == (2, 4, loop)


@pytest.mark.parametrize("jit", [False, True])
def test_custom_loop_step_trains_with_and_without_xla(jit):
    """The custom loop's train step (`--loop custom`, `--jit`): XLA compiles the step's
    math; the batch is read outside it (XLA has no iterator op)."""
    from keras_ghost.training.loop import make_steps

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None)
    strategy = tf.distribute.get_strategy()
    train_step, eval_step = make_steps(model, optimizer, loss, strategy, top_k=2, jit=jit)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[x[:, :3].argmax(1)]
    iterator = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat())
    before = float(eval_step(x, y)[0]) / len(x)
    for _ in range(20):
        step_loss, top1, topk, count = (float(v) for v in train_step(iterator))
        assert np.isfinite(step_loss) and count == 16 and 0 <= top1 <= topk <= 16
    assert float(eval_step(x, y)[0]) / len(x) < 0.8 * before
    assert int(optimizer.iterations) == 20


@needs_cifar
def test_multiworker_mirrored_two_processes_end_with_identical_weights(tmp_path):
    """Two worker processes on 127.0.0.1 train through the custom strategy.run loop
    (Keras 3's fit() fails under MultiWorkerMirroredStrategy, keras-team/keras#20585)."""
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    args = ["--strategy", "multiworker", "--limit-train", "256", "--limit-eval", "64",
            "--batch-size", "64", "--epochs", "2", "--output-dir", str(tmp_path)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(subprocess.Popen(
            [sys.executable, str(TRAIN), *TINY, *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=python_env(TF_CONFIG=json.dumps(config))))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    chief = keras.saving.load_model(tmp_path / "last.keras")
    other = keras.saving.load_model(tmp_path / "worker1" / "last.keras")
    # The all-reduced gradients keep the trainable weights identical on both workers, and
    # the loop averages the BN moving statistics over the workers after each epoch.
    for a, b in zip(chief.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    fresh = tiny_model()
    assert not all(np.array_equal(a.numpy(), b.numpy())
                   for a, b in zip(chief.trainable_weights, fresh.trainable_weights))  # trained
    reports = [json.loads(p.read_text()) for p in (tmp_path / "report.json",
                                                   tmp_path / "worker1" / "report.json")]
    assert [(r["replicas"], r["loop"]) for r in reports] == [(2, "custom")] * 2
    assert reports[0]["optimizer_steps"] == reports[1]["optimizer_steps"] == 2 * (256 // 64)


# --- train.py on the JAX and PyTorch backends ---------------------------------------------

ONE_STEP = ["--limit-train", "64", "--limit-eval", "32", "--batch-size", "32", "--epochs", "1",
            "--steps-per-epoch", "1"]


def _train_on(backend, strategy, out, xla_flags=""):
    result = subprocess.run(
        [sys.executable, str(TRAIN), *TINY, *ONE_STEP, "--strategy", strategy,
         "--output-dir", str(out)], capture_output=True, text=True, timeout=1200,
        env=python_env(KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
                       XLA_FLAGS=f"{xla_flags} {JAX_FAST_COMPILE}".strip()))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@needs_cifar
def test_train_cli_on_pytorch(tmp_path):
    report = _train_on("torch", "auto", tmp_path)
    assert (report["backend"], report["replicas"], report["optimizer_steps"]) == ("torch", 1, 1)
    assert np.isfinite(report["train_loss"][0]) and report["train_loss"][0] > 0
    last = keras_ghost.load_model(tmp_path / "last.keras")  # the PyTorch file, on TensorFlow
    assert last.output_shape == (None, 10)


@needs_cifar
@pytest.mark.slow  # two JAX compiles of the training step: ~5 minutes; its own CI step
def test_jax_data_parallel_first_step_matches_one_device(tmp_path):
    two_devices = "--xla_force_host_platform_device_count=2"
    parallel = _train_on("jax", "jax-data-parallel", tmp_path / "parallel", two_devices)
    single = _train_on("jax", "auto", tmp_path / "single", two_devices)
    assert (parallel["replicas"], single["replicas"]) == (2, 1)
    assert parallel["train_loss"][0] == pytest.approx(single["train_loss"][0], rel=1e-5)
    assert parallel["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-4)


# --- benchmark scripts ---------------------------------------------------------------------

BENCH_GPU = REPO / "training" / "benchmark_gpu.py"
TINY_BENCH = ["--models", "ghostnet_100", "mobilenetv3large", "no_such_model",
              "--batch-sizes", "2", "--input-size", "32", "--warmup", "1", "--runs", "2"]


@pytest.mark.parametrize("backend", ["tensorflow",
                                     pytest.param("jax", marks=pytest.mark.slow)])  # jit: minutes
def test_benchmark_gpu_cpu_path(tmp_path, backend):
    pytest.importorskip(backend)
    result = subprocess.run([sys.executable, str(BENCH_GPU), *TINY_BENCH, "--backend", backend,
                             "--output", str(tmp_path / "bench")],
                            capture_output=True, text=True, env=python_env(), timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "skipping no_such_model is not registered" in result.stdout
    report = json.loads((tmp_path / f"bench_{backend}.json").read_text())
    assert report["backend"] == backend and report["device"] == "cpu"
    assert [r["name"] for r in report["results"]] == ["ghostnet_100", "mobilenetv3large"]
    for r in report["results"]:
        assert r["inference"]["latency_ms"] > 0 and r["training"]["images_per_second"]["2"] > 0
    ours = keras_ghost.create_model("ghostnet_100", input_shape=(32, 32, 3))
    assert report["results"][0]["activations"] == keras_ghost.profile(ours).activations
    ratio = report["ratios"]["ghostnet_100 / mobilenetv3large"]
    first, second = report["results"]
    assert ratio["inference_latency"] == pytest.approx(
        first["inference"]["latency_ms"] / second["inference"]["latency_ms"], rel=1e-2)
    assert (tmp_path / f"bench_{backend}.md").read_text().count("|") > 20

