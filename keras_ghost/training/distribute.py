"""Distribution: tf.distribute strategies on TensorFlow, keras.distribution on JAX."""

import contextlib
import json
import os

STRATEGIES = ("auto", "none", "mirrored", "multiworker", "tpu", "jax-data-parallel")


def make_strategy(name="auto", tpu=None):
    """The `tf.distribute.Strategy` for `name` (TensorFlow backend), or None for
    "jax-data-parallel", which `enter_distribution` sets up instead.

    "auto": TPUStrategy when `tpu` or `TPU_NAME` is set, MultiWorkerMirroredStrategy when
    `TF_CONFIG` lists more than one worker, MirroredStrategy with several GPUs, else the
    default (single-device) strategy. "multiworker" reads the cluster from `TF_CONFIG`;
    Keras 3.15's fit() does not run under it (keras-team/keras#20585, tensorflow#72388), so
    the trainer trains through the custom loop of keras_ghost/training/loop.py there.
    """
    import keras

    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
    backend = keras.backend.backend()
    if name == "jax-data-parallel":
        if backend != "jax":
            raise ValueError("--strategy jax-data-parallel needs the JAX backend; run with "
                             "KERAS_BACKEND=jax.")
        return None
    if backend != "tensorflow":
        if name in ("auto", "none"):
            return None
        raise ValueError(f"--strategy {name} is a tf.distribute strategy and needs "
                         f"KERAS_BACKEND=tensorflow (this run uses {backend}); on JAX use "
                         "--strategy jax-data-parallel.")
    import tensorflow as tf

    if name == "auto":
        name = _auto(tpu)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker reads the cluster from the TF_CONFIG "
                             "environment variable, which is not set; see "
                             "https://www.tensorflow.org/guide/distributed_training.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()  # the default strategy


def _auto(tpu):
    if tpu or os.environ.get("TPU_NAME"):
        return "tpu"
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        return "multiworker"
    import tensorflow as tf

    return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"


def enter_distribution(strategy, name):
    """A context for building and compiling the model: the strategy's scope on TensorFlow;
    on JAX with "jax-data-parallel", sets keras.distribution.DataParallel over all devices."""
    if name == "jax-data-parallel":
        import keras

        keras.distribution.set_distribution(keras.distribution.DataParallel())
        return contextlib.nullcontext()
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def replicas(strategy):
    """Replicas in sync (global batch = per-replica batch x this)."""
    if strategy is not None:
        return strategy.num_replicas_in_sync
    import keras

    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    return distribution.device_mesh.shape[0]


def is_chief(strategy):
    """True on the worker that writes the shared outputs (always True outside multi-worker)."""
    resolver = getattr(getattr(strategy, "extended", None), "_cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())
