"""Where a LeNet-5-shaped net spends its TFLite time, layer by layer.

Each prefix of the net (input to rescaling, to the mean-image subtraction,
to conv1, ...) is converted on its own and timed with one thread, all
prefixes interleaved over several rounds; a layer's share is the difference
between the median times of consecutive prefixes. Random weights: the time
depends on the shapes only. The differences are rough (a shorter prefix has
another output to copy, and XNNPACK may fuse across the cut), but they say
which layer dominates.

Usage:

    python -m benchmarks.tflite_prefix_profile --filters 5,14,94 [--rounds 15]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import keras
import numpy as np

from benchmarks.inference import tflite_flatbuffer, tflite_function


def lenet5_layers(conv1: int, conv2: int, fc1: int) -> list:
    """LeNet-5-Caffe's layers with these widths, preprocessing included."""
    ones = np.ones((28, 28, 1), "float32")
    return [
        keras.layers.Rescaling(255 / 256, name="rescale"),
        keras.layers.Normalization(
            axis=(1, 2, 3), mean=0 * ones, variance=ones, name="subtract_mean"
        ),
        keras.layers.Conv2D(conv1, 5, name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(conv2, 5, name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(fc1, activation="relu", name="fc1"),
        keras.layers.Dense(10, name="fc2"),
    ]


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tflite_prefix_profile")
    parser.add_argument("--filters", default="20,50,500", help="conv1,conv2,fc1")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    widths = [int(v) for v in args.filters.split(",")]
    layers = lenet5_layers(*widths)
    folder = tempfile.mkdtemp()
    calls = {}
    for k in range(1, len(layers) + 1):
        prefix = keras.Sequential([keras.Input((28, 28, 1))] + layers[:k])
        flatbuffer = tflite_flatbuffer(prefix, folder, f"prefix{k}")
        for batch in (1, 100):
            x = np.random.default_rng(0).random((batch, 28, 28, 1), "float32")
            calls[(k, batch)] = tflite_function(flatbuffer, x, 1)
    times = {key: [] for key in calls}
    for _ in range(args.rounds):
        for (k, batch), call in calls.items():
            repeats = 300 if batch == 1 else 15
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            times[(k, batch)].append((time.perf_counter() - start) / repeats)
    for batch in (1, 100):
        previous = 0.0
        for k, layer in enumerate(layers, start=1):
            us = float(np.median(times[(k, batch)])) * 1e6
            print(
                f"batch {batch:3d}  up to {layer.name:13s} {us:9.1f} us  "
                f"(this layer {us - previous:+8.1f})"
            )
            previous = us


if __name__ == "__main__":
    main()
