"""Model speed on the current Keras backend: batch-1 latency and batched throughput in
inference and training, beside activation counts (G-GhostNet's GPU-latency proxy).

Timing runs Keras' compiled predict/train functions (`predict_on_batch`,
`train_on_batch`), which return host numpy values, so every timed call ends with the
device synchronized; warmup calls (tracing, autotuning) are not timed.
"""

import statistics
import time

import numpy as np

# keras.applications peers by the names the benchmark uses (weights=None, same classes).
PEERS = {
    "regnetx032": "RegNetX032",
    "resnet50": "ResNet50",
    "mobilenetv3large": "MobileNetV3Large",
    "mobilenetv2": "MobileNetV2",
}


def available(name):
    """True when `name` is a registered variant or a keras.applications peer."""
    import keras_ghost

    return name in PEERS or name in keras_ghost.list_models()


def build(name, input_size, classes=1000):
    """A registered variant or keras.applications peer, random weights, logits out."""
    import keras

    import keras_ghost

    shape = (input_size, input_size, 3)
    if name in PEERS:
        return getattr(keras.applications, PEERS[name])(
            weights=None, input_shape=shape, classes=classes, classifier_activation=None)
    return keras_ghost.create_model(name, input_shape=shape, classes=classes,
                                    classifier_activation=None)


def median_seconds(fn, warmup, runs):
    """Median wall seconds of `runs` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # returns host values: the device is synchronized
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model, batch_sizes, *, jit=False, warmup=3, runs=10, classes=1000):
    """Latency (batch 1, ms) and throughput (images/s per batch size) for inference and
    one SGD training step, plus params/MACs/activations from keras_ghost.profile."""
    import keras

    import keras_ghost

    rng = np.random.default_rng(0)
    shape = tuple(model.input_shape[1:])
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    result = {"model": model.name}
    for mode in ("inference", "training"):
        per_batch = {}
        for batch in sorted({1, *batch_sizes}):
            x = rng.standard_normal((batch, *shape), dtype=np.float32)
            y = rng.integers(0, classes, batch)
            if mode == "inference":
                seconds = median_seconds(lambda: model.predict_on_batch(x), warmup, runs)
            else:
                seconds = median_seconds(lambda: model.train_on_batch(x, y), warmup, runs)
            per_batch[batch] = seconds
        result[mode] = {
            "latency_ms": round(1000 * per_batch[1], 3),
            "images_per_second": {str(b): round(b / s, 1) for b, s in per_batch.items()
                                  if b in batch_sizes}}
    prof = keras_ghost.profile(model)
    result.update(params=prof.params, macs=prof.macs, activations=prof.activations)
    return result


def ratios(results, pairs):
    """`{"a / b": {...}}` latency and throughput ratios for each (a, b) in `pairs` that
    both were measured (same run, so machine state hits both alike)."""
    by_name = {r["name"]: r for r in results}
    out = {}
    for a, b in pairs:
        if a not in by_name or b not in by_name:
            continue
        ra, rb = by_name[a], by_name[b]
        entry = {}
        for mode in ("inference", "training"):
            entry[f"{mode}_latency"] = round(ra[mode]["latency_ms"] / rb[mode]["latency_ms"], 3)
            for batch, ips in ra[mode]["images_per_second"].items():
                entry[f"{mode}_throughput_b{batch}"] = round(
                    ips / rb[mode]["images_per_second"][batch], 3)
        entry["activations"] = round(ra["activations"] / rb["activations"], 3)
        out[f"{a} / {b}"] = entry
    return out
