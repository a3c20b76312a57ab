"""Callbacks the Keras set lacks: atomic best/last `.keras` checkpoints, a resume report."""

import time
from pathlib import Path

import keras


def save_keras(model, path, metadata=None):
    """Saves a `.keras` file atomically (`model.save` insists on the `.keras` suffix),
    with `metadata` (class names, preprocessing) inside when given."""
    from keras_ghost import metadata as metadata_lib
    from keras_ghost.io_utils import atomic_path

    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        if metadata is not None:
            metadata_lib.add_to_keras(tmp, metadata)
    return Path(path)


def exportable(model):
    """The model to save: a Distiller's student, else the model itself."""
    return getattr(model, "student", model)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Writes `last.keras` every epoch and `best.keras` when `monitor` improves, each
    atomically (keras.callbacks.ModelCheckpoint writes in place, so a crash mid-save
    leaves a corrupt file). Place it after SwapEMAWeights to save the EMA weights."""

    def __init__(self, directory, monitor="val_accuracy", mode="max", metadata=None):
        super().__init__()
        self.directory = Path(directory)
        self.metadata = metadata  # a keras_ghost.metadata.ModelMetadata to store inside
        self.monitor = monitor
        self.better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        model = exportable(self.model)
        save_keras(model, self.directory / "last.keras", self.metadata)
        value = (logs or {}).get(self.monitor)
        if value is not None and (self.best is None or self.better(value, self.best)):
            self.best = float(value)
            save_keras(model, self.directory / "best.keras", self.metadata)


class ResumeReport(keras.callbacks.Callback):
    """Prints where training starts (after BackupAndRestore restored its backup), e.g.
    `training starts at epoch 2, optimizer step 50`."""

    def __init__(self):
        super().__init__()
        self.reported = False
        self.start = None

    def on_epoch_begin(self, epoch, logs=None):
        if not self.reported:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self.start = {"epoch": epoch, "optimizer_step": step}
            print(f"training starts at epoch {epoch}, optimizer step {step}", flush=True)
            self.reported = True


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` after the first epoch that ends past `seconds` (a fixed benchmark budget)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


class EMAWeights(keras.callbacks.SwapEMAWeights):
    """`SwapEMAWeights(swap_on_epoch=True)` that also ends a run stopped before its last
    epoch (`TimeBudget`, placed before it) with the EMA weights in the model: Keras hands
    them over for good only after the last epoch, so an early stop left the raw weights
    in the model that the final evaluation and the export see, unlike the checkpoints."""

    def __init__(self):
        super().__init__(swap_on_epoch=True)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.model.stop_training and epoch != self.params["epochs"] - 1:
            self._finalize_ema_values()


class Throughput(keras.callbacks.Callback):
    """Training images per second over the training steps of each epoch, validation
    excluded (it runs between the last step and on_epoch_end). The first epoch (tracing,
    pipeline fill) counts only when it is the only one."""

    def __init__(self, global_batch):
        super().__init__()
        self.global_batch = global_batch
        self.epochs = []  # (images, seconds) per epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.t_eval, self.steps = time.perf_counter(), None, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_test_begin(self, logs=None):
        if getattr(self, "t0", None) is not None and self.t_eval is None:
            self.t_eval = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = (self.t_eval or time.perf_counter()) - self.t0
        self.epochs.append((self.steps * self.global_batch, seconds))

    @property
    def images_per_second(self):
        timed = self.epochs[1:] or self.epochs
        seconds = sum(s for _, s in timed)
        return sum(i for i, _ in timed) / seconds if seconds else 0.0
