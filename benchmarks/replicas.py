"""Training throughput of Sparse VD models on 1 and 2 replicas (MirroredStrategy).

On a machine without GPUs the CPU is split into 2 logical devices (both
share the same cores, so this measures the engine's overhead, not a
speed-up); with 2 or more GPUs the replicas are the first two GPUs. For each
model (LeNet-300-100, LeNet-5-Caffe, Sparse VD, KL on) a one-device twin and
a `tf.distribute.MirroredStrategy` twin train with ``model.fit`` on the same
random examples (global batch 100), interleaved in rounds; the figures are
medians of examples per second, and the ratio is the median per-round ratio.

Usage:

    python -m benchmarks.replicas [--quick] [--json OUT.json]
        [--models lenet300,lenet5] [--rounds N] [--round-seconds S]
"""

from __future__ import annotations

import argparse
import sys

import tensorflow as tf

_GPUS = tf.config.list_physical_devices("GPU")
if len(_GPUS) < 2:
    # Before any other TensorFlow call: devices are fixed at start-up.
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sparsevd as ksvd  # noqa: E402
from benchmarks import common  # noqa: E402
from examples import models as zoo  # noqa: E402

MODELS = ("lenet300", "lenet5")
BATCH_SIZE = 100
DEFAULTS = {"rounds": 7, "round_seconds": 2.0}
QUICK = {"rounds": 2, "round_seconds": 0.5}


def _twin(model_name: str, strategy) -> keras.Model:
    with strategy.scope():
        model = zoo.BUILDERS[model_name](sparse=True)
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    ksvd.set_kl_weight(model, 1.0 / 60000)
    return model


def replica_devices() -> list:
    """The first two GPUs, or the two logical CPU devices."""
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return (
        gpus[:2]
        if len(gpus) >= 2
        else [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    )


def measure(model_name: str, settings: dict, strategies: dict) -> dict:
    rng = np.random.default_rng(0)
    x = rng.random((10 * BATCH_SIZE, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, len(x))
    fns = {}
    for name, strategy in strategies.items():
        model = _twin(model_name, strategy)
        model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)  # warm-up

        def fit(model=model):
            model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)

        fns[name] = fit
    calls = {
        n: common.calls_per_round(f, settings["round_seconds"]) for n, f in fns.items()
    }
    samples = common.interleaved(fns, calls, settings["rounds"])
    per_second = {n: [len(x) / s for s in v] for n, v in samples.items()}
    return {
        "examples_per_second": {n: common.median(v) for n, v in per_second.items()},
        "ratio_2_to_1": common.paired_ratio(
            per_second["2 replicas"], per_second["1 replica"]
        ),
    }


def main(argv: list | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replicas")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--round-seconds", type=float, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    settings, models = common.settings_and_models(
        parser, args, DEFAULTS, QUICK, MODELS, ("lenet300",)
    )
    devices = replica_devices()
    # One strategy for the whole run: a second MirroredStrategy over the same
    # devices would reuse the first one's collective keys.
    strategies = {
        "1 replica": tf.distribute.get_strategy(),
        "2 replicas": tf.distribute.MirroredStrategy(devices),
    }
    results = {name: measure(name, settings, strategies) for name in models}
    rows = [
        (
            name,
            f"{r['examples_per_second']['1 replica']:,.0f}",
            f"{r['examples_per_second']['2 replicas']:,.0f}",
            f"{r['ratio_2_to_1']:.2f}x",
        )
        for name, r in results.items()
    ]
    print(f"devices: {devices}")
    print(
        common.format_table(
            ("model", "1 replica ex/s", "2 replicas ex/s", "2 / 1"), rows
        )
    )
    report = {
        "environment": common.environment(),
        "settings": settings,
        "devices": devices,
        "results": results,
    }
    common.save_report(args.json, report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
