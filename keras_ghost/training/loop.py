"""A custom distributed training loop for tf.distribute strategies, used where Keras 3's
`fit()` does not run: MultiWorkerMirroredStrategy (keras-team/keras#20585,
tensorflow#72388: fit fails on the first batch with "Attempt to convert a value
(PerReplica ..."). It works under MirroredStrategy and the default strategy too.

`DistributedLoop.fit` drives the same `keras.callbacks` list as `fit()` (BackupAndRestore,
SwapEMAWeights, checkpoints, progress logging, time budget), so the trainer's recipe,
optimizer and callbacks are shared by both paths. Per step, on every replica:
forward pass, per-example loss averaged over the *global* batch
(`tf.nn.compute_average_loss`) plus the model's regularization losses divided by the
replica count (`tf.nn.scale_regularization_loss`), gradients under `tf.GradientTape`, then
the Keras optimizer's `apply_gradients`, which in a replica context all-reduces (sums) the
gradients itself (keras/src/backend/tensorflow/optimizer.py, `_all_reduce_sum_gradients`)
and updates the mirrored variables identically on every replica and worker. Loss and
top-1/top-k counts are summed over replicas with `strategy.reduce`.

BatchNormalization: each replica normalizes with its own (per-replica) batch statistics,
as under `fit()` with a MirroredStrategy (no SyncBatchNorm). Keras 3 creates the moving
mean/variance with aggregation "none", so under a strategy they are mirrored variables
that each replica assigns locally: during an epoch each replica's (and worker's) moving
statistics follow its own shard of the data and drift apart, while the trainable weights
stay identical. At the end of every epoch, before validation and the checkpoints, the loop
replaces every floating-point non-trainable model variable by its mean over all replicas
(`average_non_trainable`): evaluation and the saved files then agree on every worker. The
mean of the moving means is exactly the moving average of the global-batch means; the mean
of the moving variances leaves out the (small) spread of the means between replicas.
"""

import tensorflow as tf


def _counts(y, logits, top_k):
    """(top-1 correct, top-k correct, examples) of a batch; soft (mixup) labels count
    their argmax, as keras.metrics.CategoricalAccuracy does."""
    target = tf.argmax(y, axis=-1, output_type=tf.int32)
    logits = tf.cast(logits, tf.float32)
    top1 = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                          target), tf.float32))
    topk = tf.reduce_sum(tf.cast(tf.math.in_top_k(target, logits, top_k), tf.float32))
    return top1, topk, tf.cast(tf.shape(y)[0], tf.float32)


def make_steps(model, optimizer, loss_fn, strategy, top_k=5, jit=False):
    """`(train_step(iterator), eval_step(x, y))`, each returning replica-summed stats.

    `loss_fn` must return per-example losses (reduction=None)."""
    sum_ = tf.distribute.ReduceOp.SUM

    def replica_train(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_example = loss_fn(y, tf.cast(logits, tf.float32))
            loss = tf.nn.compute_average_loss(per_example)  # / global batch size
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)  # loss scaling under mixed_float16
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        # Keras' TF optimizer all-reduces (sums) the gradients across replicas and
        # workers in a replica context: the per-replica losses above sum to the mean.
        optimizer.apply_gradients(zip(grads, variables))
        return (loss, *_counts(y, logits, top_k))

    def replica_eval(x, y):
        logits = model(x, training=False)
        loss = tf.reduce_sum(loss_fn(y, tf.cast(logits, tf.float32)))
        return (loss, *_counts(y, logits, top_k))

    if jit:  # the step's math, not the iterator read (XLA has no IteratorGetNext)
        replica_train = tf.function(replica_train, jit_compile=True, reduce_retracing=True)

    @tf.function
    def train_step(iterator):
        x, y = next(iterator)
        stats = strategy.run(replica_train, args=(x, y))
        return [strategy.reduce(sum_, s, axis=None) for s in stats]

    @tf.function
    def eval_step(x, y):
        stats = strategy.run(replica_eval, args=(x, y))
        return [strategy.reduce(sum_, s, axis=None) for s in stats]

    return train_step, eval_step


def make_average_non_trainable(model, strategy):
    """A function that sets each floating-point non-trainable variable of `model` (BN
    moving statistics) on every replica to its mean over all replicas and workers."""
    variables = [v for v in model.non_trainable_variables
                 if tf.as_dtype(v.dtype).is_floating]

    def replica_average():
        context = tf.distribute.get_replica_context()
        means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                   [tf.identity(v.value) for v in variables])
        for variable, mean in zip(variables, means):
            variable.assign(mean)  # aggregation "none": each replica its local copy

    @tf.function
    def average():
        if variables:
            strategy.run(replica_average)

    return average


def _logs(sums, prefix=""):
    """Keras-named logs (loss, accuracy, top5) from summed stats; the loss is a sum of
    per-step means for training (`steps` in sums[4]) and of per-example losses for eval."""
    loss, top1, topk, count, denominator = sums
    return {f"{prefix}loss": loss / max(denominator, 1.0),
            f"{prefix}accuracy": top1 / max(count, 1.0),
            f"{prefix}top5": topk / max(count, 1.0)}


class DistributedLoop:
    """`fit` and `evaluate` with `strategy.run` steps for a model and optimizer built under
    `strategy.scope()`; `loss_fn` returns per-example losses (reduction=None). The model
    must be compiled with `optimizer` (the callbacks read `model.optimizer`)."""

    def __init__(self, model, optimizer, loss_fn, strategy, top_k=5, jit=False):
        with strategy.scope():
            optimizer.build(model.trainable_variables)  # mirrored optimizer variables
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.train_step, self.eval_step = make_steps(model, optimizer, loss_fn, strategy,
                                                     top_k, jit)
        self.average_non_trainable = make_average_non_trainable(model, strategy)

    def evaluate(self, eval_ds):
        """`{"loss", "accuracy", "top5"}` over the whole eval dataset of global batches
        (partial final batch included; every worker gets the same global values)."""
        import numpy as np

        sums = np.zeros(4)
        for x, y in self.strategy.experimental_distribute_dataset(eval_ds):
            sums += [float(s) for s in self.eval_step(x, y)]
        loss, top1, topk, count = sums
        return _logs((loss, top1, topk, count, count))

    def fit(self, train_ds, eval_ds, *, epochs, steps_per_epoch, callbacks, verbose="auto"):
        """Like `model.fit(train_ds, epochs=epochs, validation_data=eval_ds,
        steps_per_epoch=steps_per_epoch, callbacks=callbacks)`, the datasets yielding
        global batches (the strategy splits them); returns the `keras.callbacks.History`."""
        import keras
        import numpy as np

        model = self.model
        dist_train = self.strategy.experimental_distribute_dataset(train_ds)
        repeats = bool(train_ds.cardinality() == tf.data.INFINITE_CARDINALITY)
        callbacks = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0,
            verbose=1 if verbose == "auto" else verbose, epochs=epochs,
            steps=steps_per_epoch, model=model)
        model.stop_training = False
        model._initial_epoch = None
        callbacks.on_train_begin()
        initial_epoch = model._initial_epoch or 0  # set by BackupAndRestore on resume
        iterator = None
        for epoch in range(initial_epoch, epochs):
            callbacks.on_epoch_begin(epoch)
            if iterator is None or not repeats:
                iterator = iter(dist_train)
            sums = np.zeros(5)  # loss (sum of step means), top-1, top-k, examples, steps
            for step in range(steps_per_epoch):
                callbacks.on_train_batch_begin(step)
                sums += [*(float(s) for s in self.train_step(iterator)), 1.0]
                callbacks.on_train_batch_end(step, _logs(sums))
                if model.stop_training:
                    break
            epoch_logs = _logs(sums)
            callbacks.on_test_begin()  # (Throughput stops timing the training here)
            self.average_non_trainable()  # BN statistics agree before eval and checkpoints
            val_logs = self.evaluate(eval_ds)
            callbacks.on_test_end(val_logs)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            callbacks.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
        if epochs > 0:
            # As fit(): leaves the EMA weights in the model when the optimizer keeps them.
            self.optimizer.finalize_variable_values(model.trainable_variables)
        callbacks.on_train_end()
        return callbacks._history
