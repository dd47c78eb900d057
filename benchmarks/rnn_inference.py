"""CPU inference speed of a compacted Sparse VD LSTM against the dense LSTM.

For a trained ``examples.lstm_mnist`` model (LSTM(128) on 28 rows of 28
pixels, then Dense(10); the structured W+G+N model is the one whose hidden
units go) this compares:

- ``dense``: the dense model of the same architecture from plain Keras
  layers (``examples.lstm_mnist.build_model("dense")``, fresh weights): what
  a user would serve without Sparse VD; speed depends only on its shapes;
- ``compact``: ``keras_sparsevd.compact_model(model)``: plain `LSTM` and
  `Dense` without the hidden units nothing reads;
- ``compact, inputs dropped``: the same with ``drop_unread_inputs=True``
  (a gather in front of the LSTM keeps the pixel columns it reads).

Before timing, the compact models' predictions on the MNIST test set are
compared with the Sparse VD model's (evaluation mode): the number of test
images whose predicted class differs and the largest logit difference are
reported (and a difference in class stops the run).

Two runtimes, as `benchmarks.inference`: Keras (``model(x,
training=False)`` in one ``tf.function`` per variant and batch size, output
fetched as numpy) and TFLite (`keras_sparsevd.export_tflite` of the model
with its LSTM unrolled, since TFLite's builtin ops cannot loop; float32,
``tf.lite.Interpreter(num_threads=1)``, input resized to the batch size).
Latency at batch 1, throughput at batch 100. All variants of a runtime and
batch size run interleaved in alternating order for a number of rounds;
speed-ups are medians of per-round ratios of the dense time to the variant's.
TensorFlow backend only.

Usage::

    python -m benchmarks.rnn_inference MODEL.keras [--rounds N]
        [--round-seconds S] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

import keras
import numpy as np

import keras_sparsevd as ksvd
from benchmarks import common
from benchmarks.inference import (
    check_tflite_output,
    inference_function,
    tflite_flatbuffer,
    tflite_function,
)
from examples import data, lstm_mnist


def unrolled(model: keras.Model) -> keras.Model:
    """`model` with its LSTM unrolled over the 28 steps, same weights.

    TFLite's builtin ops have no loop over a TensorList: a rolled LSTM
    would need the Flex delegate, so every variant is converted unrolled.
    """

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, keras.layers.LSTM):
            config["unroll"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def variants(model: keras.Model) -> dict:
    """``{"dense": ..., "compact": ..., "compact, inputs dropped": ...}``."""
    return {
        "dense": lstm_mnist.build_model("dense", seed=0),
        "compact": ksvd.compact_model(model),
        "compact, inputs dropped": ksvd.compact_model(model, drop_unread_inputs=True),
    }


def shapes(model: keras.Model) -> dict:
    """Hidden units and LSTM kernel shapes of a plain model."""
    lstm = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)][0]
    return {
        "units": int(lstm.units),
        "kernel": list(lstm.cell.kernel.shape),
        "recurrent_kernel": list(lstm.cell.recurrent_kernel.shape),
        "params": int(model.count_params()),
    }


def check_predictions(model: keras.Model, small: dict, x: np.ndarray) -> dict:
    """Class changes and max logit difference of each compact model."""
    want = model.predict(x, batch_size=1000, verbose=0)
    out = {}
    for label, variant in small.items():
        if label == "dense":
            continue
        got = variant.predict(x, batch_size=1000, verbose=0)
        changed = int(np.sum(np.argmax(got, 1) != np.argmax(want, 1)))
        out[label] = {
            "classes_changed": changed,
            "max_abs_logit_diff": float(np.max(np.abs(got - want))),
        }
        if changed:
            raise RuntimeError(f"{label}: {changed} test predictions differ.")
    return out


def time_runtime(fns: dict, rounds: int, round_seconds: float) -> dict:
    """Interleaved timings; ms per call and speed-up against ``dense``."""
    calls = {
        name: common.calls_per_round(fn, round_seconds) for name, fn in fns.items()
    }
    samples = common.interleaved(fns, calls, rounds)
    return {
        name: {
            "ms_per_call": 1e3 * common.median(samples[name]),
            "speedup_vs_dense": common.paired_ratio(samples["dense"], samples[name]),
        }
        for name in fns
    }


def run(path: str, rounds: int, round_seconds: float) -> dict:
    model = keras.saving.load_model(path, compile=False)
    (_, _), (x_test, _) = data.load("mnist", None)
    x_test = x_test.reshape(-1, 28, 28).astype("float32")
    small = variants(model)
    report: dict[str, Any] = {
        "benchmark": "rnn_inference",
        "model": os.path.basename(path),
        "settings": {"rounds": rounds, "round_seconds": round_seconds},
        "environment": common.environment(),
        "shapes": {label: shapes(m) for label, m in small.items()},
        "predictions": check_predictions(model, small, x_test),
        "keras": {},
        "tflite": {},
    }
    with tempfile.TemporaryDirectory() as directory:
        buffers = {
            label: tflite_flatbuffer(unrolled(m), directory, f"v{i}")
            for i, (label, m) in enumerate(small.items())
        }
        report["tflite_bytes"] = {label: len(b) for label, b in buffers.items()}
    for batch in (1, 100):
        x = np.ascontiguousarray(x_test[:batch])
        keras_fns = {}
        for label, m in small.items():
            fn = inference_function(m)
            fn(x)

            def call(fn: Any = fn, x: np.ndarray = x) -> Any:
                return keras.ops.convert_to_numpy(fn(x))

            keras_fns[label] = call
        report["keras"][f"batch{batch}"] = time_runtime(
            keras_fns, rounds, round_seconds
        )
        lite_fns = {}
        for label, m in small.items():
            fn = tflite_function(buffers[label], x, threads=1)
            check_tflite_output(label, fn(), m.predict(x, verbose=0))
            lite_fns[label] = fn
        report["tflite"][f"batch{batch}"] = time_runtime(
            lite_fns, rounds, round_seconds
        )
    return report


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .keras model written by examples.lstm_mnist")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--round-seconds", type=float, default=0.5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    report = run(args.model, args.rounds, args.round_seconds)
    common.save_report(args.json, report)
    print(json.dumps({k: v for k, v in report.items() if k != "environment"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
