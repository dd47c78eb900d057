"""Inference speed and size of a Sparse VD model, as trained and as exported.

For LeNet-300-100 and LeNet-5-Caffe this compares, side by side:

- ``svd (eval)``: the Sparse VD model itself in evaluation mode; every call
  recomputes ``log_alpha`` and the mask from the variables before its
  matmuls and convolutions;
- ``stripped``: `keras_sparsevd.strip_sparsevd(model)`, plain Keras layers
  whose kernels hold the pruned weights as zeros (same shapes);
- ``compact``: ``strip_sparsevd(model, compact=True)``, which also removes
  the units and filters that pruning left dead (smaller shapes);
- ``compact, inputs dropped``: the same with ``drop_unread_inputs=True``: a
  gather (`keras_sparsevd.export.SelectFeatures`) in front of the first
  layer keeps only the input features it reads, and its kernel shrinks to
  match (the same model as ``compact`` where every input is read);
- ``sparse .npz``: the compact model written with
  `keras_sparsevd.save_sparse` and read back with `load_sparse`. The file
  stores only the kept weights, but it loads into dense Keras layers, so it
  runs as fast as ``compact``: it is measured to show exactly that.

- ``dense``: the dense model of the same architecture built from plain
  Keras layers (``examples.models.<name>(sparse=False)``, fresh weights):
  what a user would serve without Sparse VD. Speed depends only on its
  shapes; speed-ups "vs dense" are against it.

Two runtimes (``--runtime``, default both):

- ``keras``: every variant above is called the same way:
  ``model(x, training=False)`` inside one ``tf.function`` per variant and
  batch size (no XLA, TensorFlow's own thread pools), its output fetched as
  numpy after each call. Each such call costs a fixed ~0.3 ms of
  TensorFlow overhead, so at batch 1 what compaction removes hardly shows.
- ``tflite``: ``dense``, ``compact`` and ``compact, inputs dropped`` are
  converted with `keras_sparsevd.export_tflite` (Keras' ``model.export``,
  float32, no quantization; the flatbuffer is read back into memory), their
  input resized to the batch size before ``allocate_tensors`` (static
  shapes), and run by ``tf.lite.Interpreter(num_threads=1)`` with its default
  CPU kernels (XNNPACK for the float ops). A call is ``set_tensor``,
  ``invoke``, ``get_tensor`` from Python. One thread (``--tflite-threads``
  may add more) gives a figure per core: the batch-1 nets are too small to
  split across threads, and with other processes on the machine a
  multi-threaded time says more about how many cores happened to be free
  than about the model. Before timing, each TFLite output must equal the
  Keras model's of the same variant, at both batch sizes, within
  ``TFLITE_ATOL + TFLITE_RTOL * max |Keras output|``; otherwise the run
  stops with `OutputMismatchError`.

Latency is at batch 1, throughput at batch 100. After tracing (Keras) and
allocation (TFLite), all variants of all runtimes run interleaved in
alternating order for a number of rounds; figures are medians over rounds,
speed-ups are medians of per-round ratios: against ``svd (eval)`` and
against ``dense`` for Keras, against the ``dense`` net of the same runtime,
thread count and batch size for TFLite. Bytes on disk come from
`keras_sparsevd.size_report`, the TFLite rows add their flatbuffer's bytes.

Models: the first ``*.keras`` file of ``--model-dir`` (default ``results/``)
whose name contains ``lenet300`` or ``lenet5`` (and ``--match``, if given,
e.g. ``--match structured``, or ``--match svd-seed0`` for the weights-only
models) and which holds Sparse VD layers. Without one,
a freshly initialised model is given the paper's per-layer sparsity by
setting ``log_sigma2`` (``log_alpha`` = +6 for pruned weights, -6 for kept
ones), with the kept weights placed at random among a
set of surviving units (`SYNTHETIC_PLANS`), as in a trained net where whole
units die. The output says which source each model came from. Speed depends
on the shapes only, except for the compact model, whose shapes depend on the
dead units.

Usage:

    python -m benchmarks.inference [--quick] [--json OUT.json]
        [--model-dir DIR] [--match TEXT] [--models lenet300,lenet5]
        [--runtime keras,tflite] [--tflite-threads 1[,all]]
        [--rounds N] [--round-seconds S]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

import keras_sparsevd as ksvd
from benchmarks import common
from examples import models as zoo
from keras_sparsevd.export import sizes as export_sizes

MODELS = ("lenet300", "lenet5")
VARIANTS = (
    "dense",
    "svd (eval)",
    "stripped",
    "compact",
    "compact, inputs dropped",
    "sparse .npz",
)
BATCHES = {"latency": 1, "throughput": 100}
RUNTIMES = ("keras", "tflite")
# The variants converted to TFLite: the baseline and the two compact exports.
TFLITE_VARIANTS = ("dense", "compact", "compact, inputs dropped")
# One thread: a per-core figure that does not depend on the machine's load.
TFLITE_THREADS = (1,)
# A TFLite output must equal the Keras model's within
# TFLITE_ATOL + TFLITE_RTOL * max |Keras output| (float32, other kernels).
TFLITE_ATOL = 1e-4
TFLITE_RTOL = 1e-4

# Per Sparse VD layer, in order: (kept weights, surviving output units).
# Kept counts: the paper's per-layer sparsity (Table 1: LeNet-300-100
# 98.9-97.2-62.0 %, LeNet-5-Caffe 67-98-99.8-95 %). Surviving units: for
# LeNet-5, close to the 14-19-131 units reported for Sparse VD by Neklyudov
# et al. (2017, "Structured Bayesian Pruning"); for LeNet-300-100 an
# assumption of the same order. They only shape what compaction removes.
SYNTHETIC_PLANS = {
    "lenet300": ((2587, 70), (840, 40), (380, 10)),
    "lenet5": ((165, 14), (500, 19), (800, 131), (250, 10)),
}
# log_alpha given to kept and pruned weights: well inside the clip range and
# far from the threshold 3.
KEPT_LOG_ALPHA = -6.0
PRUNED_LOG_ALPHA = 6.0

DEFAULTS = {"rounds": 9, "round_seconds": 0.2}
QUICK = {"rounds": 3, "round_seconds": 0.03}
QUICK_MODELS = ("lenet300",)


def find_trained_model(
    model_dir: str | os.PathLike, name: str, match: str | None = None
) -> str | None:
    """The first ``*.keras`` file in `model_dir` named for `name` (and
    containing `match`) with Sparse VD layers."""
    for path in sorted(glob.glob(os.path.join(os.fspath(model_dir), "*.keras"))):
        stem = os.path.basename(path).lower()
        if name not in stem or (name == "lenet5" and "lenet300" in stem):
            continue
        if match and match.lower() not in stem:
            continue
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception:  # noqa: BLE001 - an unreadable file is just skipped
            continue
        if ksvd.svd_layers(model):
            return path
    return None


def synthetic_sparse_model(name: str, seed: int = 0) -> keras.Model:
    """A Sparse VD model of `name` with paper-level sparsity set by hand.

    Builds ``examples.models.<name>(sparse=True)`` and sets each layer's
    ``log_sigma2`` so that exactly the weights chosen by `SYNTHETIC_PLANS`
    have ``log_alpha`` = -6 (kept) and all others +6 (pruned). Kept weights
    connect surviving inputs to surviving outputs only; every surviving
    unit keeps at least one incoming and one outgoing weight.

    Args:
        name: ``"lenet300"`` or ``"lenet5"``.
        seed: seed of the initial weights and of the choice of kept weights.

    Returns:
        The built Sparse VD model.
    """
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = zoo.BUILDERS[name](sparse=True)
    layers = ksvd.svd_layers(model)
    plan = SYNTHETIC_PLANS[name]
    if len(plan) != len(layers):
        raise ValueError(
            f"{name}: plan for {len(plan)} layers, model has {len(layers)}."
        )
    alive_channels = None  # surviving outputs of the previous SVD layer
    for layer, (kept, alive) in zip(layers, plan):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        fan_in = int(np.prod(kernel.shape[:-1]))
        units = kernel.shape[-1]
        # Which rows of the (fan_in, units) kernel read a surviving unit. The
        # channel is the fastest-varying index both of a convolution's
        # (kh, kw, in_channels) rows and of a flattened channels_last map.
        if alive_channels is None:
            rows_alive = np.ones(fan_in, bool)
        else:
            rows_alive = np.tile(alive_channels, fan_in // alive_channels.size)
        out_alive = np.zeros(units, bool)
        out_alive[rng.choice(units, size=alive, replace=False)] = True
        mask = _choose_kept(rows_alive, out_alive, kept, rng)
        theta_sq_log = np.log(np.square(kernel.reshape(fan_in, units)) + 1e-8)
        log_sigma2 = theta_sq_log + np.where(mask, KEPT_LOG_ALPHA, PRUNED_LOG_ALPHA)
        layer.log_sigma2.assign(log_sigma2.reshape(kernel.shape).astype("float32"))
        alive_channels = out_alive
    return model


def _choose_kept(
    rows_alive: np.ndarray, out_alive: np.ndarray, kept: int, rng: np.random.Generator
) -> np.ndarray:
    """A (fan_in, units) mask with `kept` ones inside rows_alive x out_alive."""
    rows = np.flatnonzero(rows_alive)
    cols = np.flatnonzero(out_alive)
    if kept > rows.size * cols.size:
        raise ValueError(
            f"Cannot keep {kept} weights in a {rows.size}x{cols.size} block."
        )
    mask = np.zeros((rows_alive.size, out_alive.size), bool)
    # Every surviving output gets an input and every surviving input of a
    # hidden layer an output, or compaction would remove them after all.
    mask[rng.choice(rows, size=cols.size), cols] = True
    if rows.size <= kept - cols.size:
        mask[rows, rng.choice(cols, size=rows.size)] = True
    block = np.flatnonzero(~mask[np.ix_(rows, cols)].ravel())
    missing = kept - int(mask.sum())
    if missing > 0:
        chosen = rng.choice(block, size=missing, replace=False)
        mask[rows[chosen // cols.size], cols[chosen % cols.size]] = True
    return mask


def load_or_make(
    name: str, model_dir: str | os.PathLike | None, match: str | None = None
) -> tuple:
    """(Sparse VD model, description of where it came from)."""
    path = find_trained_model(model_dir, name, match) if model_dir else None
    if path is not None:
        return keras.saving.load_model(path, compile=False), f"trained: {path}"
    plan = ", ".join(f"{k} kept/{a} units" for k, a in SYNTHETIC_PLANS[name])
    return (
        synthetic_sparse_model(name),
        "synthetic: fresh weights, paper-level sparsity forced through "
        f"log_sigma2 ({plan}); no trained model in {model_dir!r}",
    )


def make_variants(
    model: keras.Model, directory: str, name: str
) -> dict[str, keras.Model]:
    """The inference variants of a Sparse VD model (see module doc)."""
    compact = ksvd.strip_sparsevd(model, compact=True)
    sparse_path = os.path.join(directory, "compact_sparse.npz")
    ksvd.save_sparse(compact, sparse_path)
    return {
        "dense": zoo.BUILDERS[name](
            sparse=False, input_shape=tuple(model.input_shape[1:])
        ),
        "svd (eval)": model,
        "stripped": ksvd.strip_sparsevd(model),
        "compact": compact,
        "compact, inputs dropped": ksvd.strip_sparsevd(
            model, compact=True, drop_unread_inputs=True
        ),
        "sparse .npz": ksvd.load_sparse(sparse_path),
    }


def disk_sizes(model: keras.Model, directory: str) -> dict[str, int]:
    """Bytes of each file, through `keras_sparsevd.size_report`."""
    plain = ksvd.size_report(model, os.path.join(directory, "stripped"))
    compact = ksvd.size_report(model, os.path.join(directory, "compact"), compact=True)
    return {
        "dense float32 parameters": plain.size(export_sizes.DENSE_LABEL),
        "svd .keras": plain.size(export_sizes.SVD_LABEL),
        "stripped .keras": plain.size(export_sizes.STRIPPED_LABEL),
        "stripped .keras.gz": plain.size(export_sizes.GZIP_LABEL),
        "sparse .npz (stripped)": plain.size(export_sizes.SPARSE_LABEL),
        "compact .keras": compact.size(export_sizes.STRIPPED_LABEL),
        "compact .keras.gz": compact.size(export_sizes.GZIP_LABEL),
        "sparse .npz (compact)": compact.size(export_sizes.SPARSE_LABEL),
    }


class OutputMismatchError(RuntimeError):
    """A TFLite model does not compute what its Keras model computes."""


def tflite_flatbuffer(model: keras.Model, directory: str, stem: str) -> bytes:
    """`model` as a TFLite flatbuffer, through `keras_sparsevd.export_tflite`."""
    path = os.path.join(directory, f"{stem}.tflite")
    ksvd.export_tflite(model, path)
    with open(path, "rb") as f:
        return f.read()


def tflite_function(
    flatbuffer: bytes, x: np.ndarray, threads: int
) -> Callable[[], np.ndarray]:
    """A call of the TFLite model on `x`: set the input, invoke, copy the output.

    The input is resized to ``x.shape`` before ``allocate_tensors``, so the
    interpreter runs with static shapes at this batch size.
    """
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation
        interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=threads)
    (detail,) = interpreter.get_input_details()
    if tuple(detail["shape"]) != x.shape:
        interpreter.resize_tensor_input(detail["index"], x.shape, strict=True)
    interpreter.allocate_tensors()
    source, target = detail["index"], interpreter.get_output_details()[0]["index"]

    def call() -> np.ndarray:
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target)

    return call


def check_tflite_output(label: str, got: np.ndarray, want: np.ndarray) -> float:
    """Max |got - want|; raises `OutputMismatchError` beyond the tolerance."""
    if got.shape != want.shape:
        raise OutputMismatchError(
            f"TFLite {label}: output shape {got.shape}, Keras {want.shape}."
        )
    diff = float(np.max(np.abs(got - want)))
    tolerance = TFLITE_ATOL + TFLITE_RTOL * float(np.max(np.abs(want)))
    if not diff <= tolerance:  # also catches NaN
        raise OutputMismatchError(
            f"TFLite {label}: output differs from the Keras model's by up to "
            f"{diff:.3g} (tolerance {tolerance:.3g}); not timing a model that "
            "computes something else."
        )
    return diff


def thread_label(threads: int) -> str:
    return f"tflite, {threads} thread" + ("s" if threads != 1 else "")


def inference_function(model: keras.Model) -> Callable:
    """``model(x, training=False)`` in a tf.function, the same for every variant."""
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False), jit_compile=False)


def benchmark_model(
    name: str,
    model_dir: str | None,
    rounds: int,
    round_seconds: float,
    match: str | None = None,
    runtimes: tuple = RUNTIMES,
    tflite_threads: tuple = TFLITE_THREADS,
) -> dict:
    """Latency, throughput, bytes and agreement of the variants of one model."""
    model, source = load_or_make(name, model_dir, match)
    report = ksvd.sparsity_report(model).to_dict()
    rng = np.random.default_rng(1)
    input_shape = tuple(model.input_shape[1:])
    arrays = {
        use: rng.random((batch,) + input_shape, dtype=np.float32)
        for use, batch in BATCHES.items()
    }
    inputs = {use: keras.ops.convert_to_tensor(x) for use, x in arrays.items()}
    flatbuffers: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = make_variants(model, tmp, name)
        sizes = disk_sizes(model, tmp)
        if "tflite" in runtimes:
            for index, variant in enumerate(TFLITE_VARIANTS):
                flatbuffers[variant] = tflite_flatbuffer(
                    variants[variant], tmp, f"variant{index}"
                )
    keras_fns: dict[str, Callable[[], Any]] = {}
    for variant, net in variants.items():
        call = inference_function(net)
        for use, x in inputs.items():
            keras_fns[f"{variant}|{use}"] = lambda call=call, x=x: np.asarray(call(x))
    reference = keras_fns["svd (eval)|throughput"]()
    # The dense model has its own (fresh) weights: nothing to agree with.
    agreement = {
        variant: float(np.max(np.abs(keras_fns[f"{variant}|throughput"]() - reference)))
        for variant in variants
        if variant != "dense"
    }
    fns: dict[str, Callable[[], Any]] = {}
    if "keras" in runtimes:
        fns.update(keras_fns)
    tflite_agreement: dict[str, float] = {}
    for threads in tflite_threads if "tflite" in runtimes else ():
        for variant in TFLITE_VARIANTS:
            diffs = []
            for use, x in arrays.items():
                fn = tflite_function(flatbuffers[variant], x, threads)
                label = f"{variant!r} ({thread_label(threads)}), batch {len(x)}"
                diffs.append(
                    check_tflite_output(label, fn(), keras_fns[f"{variant}|{use}"]())
                )
                fns[f"tflite/{threads}|{variant}|{use}"] = fn
            tflite_agreement[f"tflite/{threads}|{variant}"] = max(diffs)
    for fn in fns.values():
        fn()  # trace
    calls = {key: common.calls_per_round(fn, round_seconds) for key, fn in fns.items()}
    samples = common.interleaved(fns, calls, rounds)
    rows = []
    for variant, net in variants.items() if "keras" in runtimes else ():
        lat = samples[f"{variant}|latency"]
        thr = samples[f"{variant}|throughput"]
        rows.append(
            {
                "variant": variant,
                "params": int(net.count_params()),
                "latency_ms_batch1": 1e3 * common.median(lat),
                "throughput_examples_per_s_batch100": BATCHES["throughput"]
                / common.median(thr),
                "throughput_ms_batch100": 1e3 * common.median(thr),
                "latency_speedup_vs_svd": common.paired_ratio(
                    samples["svd (eval)|latency"], lat
                ),
                "throughput_speedup_vs_svd": common.paired_ratio(
                    samples["svd (eval)|throughput"], thr
                ),
                "latency_speedup_vs_dense": common.paired_ratio(
                    samples["dense|latency"], lat
                ),
                "throughput_speedup_vs_dense": common.paired_ratio(
                    samples["dense|throughput"], thr
                ),
                "max_abs_diff_vs_svd_eval": agreement.get(variant),
                "calls_per_round": {
                    "latency": calls[f"{variant}|latency"],
                    "throughput": calls[f"{variant}|throughput"],
                },
            }
        )
    tflite_rows = []
    for threads in tflite_threads if "tflite" in runtimes else ():
        runtime = f"tflite/{threads}"
        for variant in TFLITE_VARIANTS:
            lat = samples[f"{runtime}|{variant}|latency"]
            thr = samples[f"{runtime}|{variant}|throughput"]
            row = {
                "runtime": "tflite",
                "threads": threads,
                "variant": variant,
                "params": int(variants[variant].count_params()),
                "flatbuffer_bytes": len(flatbuffers[variant]),
                "latency_ms_batch1": 1e3 * common.median(lat),
                "throughput_ms_batch100": 1e3 * common.median(thr),
                "throughput_examples_per_s_batch100": BATCHES["throughput"]
                / common.median(thr),
                "latency_speedup_vs_dense": common.paired_ratio(
                    samples[f"{runtime}|dense|latency"], lat
                ),
                "throughput_speedup_vs_dense": common.paired_ratio(
                    samples[f"{runtime}|dense|throughput"], thr
                ),
                "max_abs_diff_vs_keras": tflite_agreement[f"{runtime}|{variant}"],
                "calls_per_round": {
                    "latency": calls[f"{runtime}|{variant}|latency"],
                    "throughput": calls[f"{runtime}|{variant}|throughput"],
                },
            }
            if "keras" in runtimes:
                # The same model, Keras time / TFLite time.
                row["latency_speedup_vs_keras"] = common.paired_ratio(
                    samples[f"{variant}|latency"], lat
                )
                row["throughput_speedup_vs_keras"] = common.paired_ratio(
                    samples[f"{variant}|throughput"], thr
                )
            tflite_rows.append(row)
    return {
        "model": name,
        "source": source,
        "sparsity": {
            "total_weights": report.get("total_weights"),
            "kept_weights": report.get("total_kept"),
            "per_layer_kept": {
                layer["name"]: layer["kept"] for layer in report.get("layers", [])
            },
            "compression": report.get("compression"),
        },
        "variants": rows,
        "tflite_variants": tflite_rows,
        "bytes_on_disk": sizes,
    }


def run(
    models: tuple = MODELS,
    model_dir: str | None = "results",
    rounds: int = DEFAULTS["rounds"],
    round_seconds: float = DEFAULTS["round_seconds"],
    match: str | None = None,
    runtimes: tuple = RUNTIMES,
    tflite_threads: tuple = TFLITE_THREADS,
) -> dict:
    """Runs the benchmark and returns its JSON-serialisable report.

    Args:
        models: names from `MODELS`.
        model_dir: where to look for trained ``*.keras`` models; None to
            always use the synthetic ones.
        rounds: interleaved rounds per model.
        round_seconds: about how long each variant and batch size runs in
            each round.
        match: only model files whose name contains it.
        runtimes: names from `RUNTIMES`.
        tflite_threads: the ``num_threads`` of each TFLite interpreter.

    Returns:
        ``{"benchmark", "settings", "environment", "results"}``; ``results``
        holds one dict per model.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("benchmarks.inference times tf.functions: TF backend only.")
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown or not runtimes:
        raise ValueError(f"runtimes {list(runtimes)}: choose from {RUNTIMES}.")
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = [
        benchmark_model(
            n, model_dir, rounds, round_seconds, match, runtimes, tflite_threads
        )
        for n in models
    ]
    settings: dict[str, Any] = {}
    if "tflite" in runtimes:
        import tensorflow as tf

        settings["tflite"] = {
            "variants": list(TFLITE_VARIANTS),
            "threads": list(tflite_threads),
            "conversion": "keras_sparsevd.export_tflite (model.export, float32, "
            "no quantization), input resized to the batch size before "
            "allocate_tensors",
            "interpreter": f"tf.lite.Interpreter of TensorFlow {tf.__version__}, "
            "default op resolver (XNNPACK delegate for float ops)",
            "call": "set_tensor, invoke, get_tensor (a copy), from Python",
            "why_one_thread": "a per-core figure: the small nets do not split "
            "across threads at batch 1, and with other processes on the cores a "
            "multi-threaded time depends on how many happen to be free",
            "tolerance": f"max |TFLite - Keras| <= {TFLITE_ATOL:g} + "
            f"{TFLITE_RTOL:g} * max |Keras| at both batch sizes",
            "speedup": "median over rounds of the same runtime's dense time "
            "(same threads, same batch) / variant time",
        }
    return {
        "benchmark": "inference",
        "settings": {
            "models": list(models),
            "model_dir": model_dir,
            "match": match,
            "runtimes": list(runtimes),
            "call": "model(x, training=False) inside tf.function (no XLA), "
            "output fetched to numpy each call",
            "batch_sizes": BATCHES,
            "rounds": rounds,
            "round_seconds": round_seconds,
            "speedup": "median over rounds of svd (eval) time / variant time, "
            "variants interleaved in alternating order",
            **settings,
        },
        "environment": common.environment(),
        # environment() has the load average at the end; this, at the start.
        "load_average_1min_at_start": load_at_start,
        "elapsed_s": time.perf_counter() - started,
        "results": results,
    }


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def runtime_rows(result: dict) -> list[tuple]:
    """Rows of the by-runtime table: the TFLite variants in every runtime."""
    rows = []
    keras_rows = [r for r in result["variants"] if r["variant"] in TFLITE_VARIANTS]
    for r in keras_rows + result.get("tflite_variants", []):
        diff = r.get("max_abs_diff_vs_keras", r.get("max_abs_diff_vs_svd_eval"))
        rows.append(
            (
                thread_label(r["threads"]) if "threads" in r else "keras",
                r["variant"],
                f"{r['params']:,}",
                f"{r['latency_ms_batch1']:.4f}",
                _ratio(r["latency_speedup_vs_dense"]),
                f"{r['throughput_ms_batch100']:.3f}",
                f"{r['throughput_examples_per_s_batch100']:,.0f}",
                _ratio(r["throughput_speedup_vs_dense"]),
                "-" if diff is None else f"{diff:.1e}",
            )
        )
    return rows


def tables(report: dict) -> str:
    """Speed and size tables as text."""
    out = []
    for result in report["results"]:
        s = result["sparsity"]
        out.append(
            f"{result['model']} ({result['source']})\n"
            f"kept {s['kept_weights']:,} of {s['total_weights']:,} weights, "
            f"{s['compression']:.0f}x"
        )
        rows = [
            (
                r["variant"],
                f"{r['params']:,}",
                f"{r['latency_ms_batch1']:.3f}",
                f"{r['latency_speedup_vs_svd']:.2f}x",
                f"{r['latency_speedup_vs_dense']:.2f}x",
                f"{r['throughput_examples_per_s_batch100']:,.0f}",
                f"{r['throughput_speedup_vs_svd']:.2f}x",
                f"{r['throughput_speedup_vs_dense']:.2f}x",
                "-"
                if r["max_abs_diff_vs_svd_eval"] is None
                else f"{r['max_abs_diff_vs_svd_eval']:.1e}",
            )
            for r in result["variants"]
        ]
        if rows:
            out.append("Keras runtime (tf.function):")
            out.append(
                common.format_table(
                    (
                        "variant",
                        "params",
                        "batch-1 ms",
                        "vs svd",
                        "vs dense",
                        "batch-100 ex/s",
                        "vs svd",
                        "vs dense",
                        "max |diff|",
                    ),
                    rows,
                )
            )
        if result.get("tflite_variants"):
            out.append(
                "\nBy runtime, ms per batch (vs dense: against the dense net of "
                "the same runtime and batch size; max |diff|: keras against svd "
                "(eval), tflite against the Keras model of the same variant):"
            )
            out.append(
                common.format_table(
                    (
                        "runtime",
                        "variant",
                        "params",
                        "batch-1 ms",
                        "vs dense",
                        "batch-100 ms",
                        "ex/s",
                        "vs dense",
                        "max |diff|",
                    ),
                    runtime_rows(result),
                )
            )
        out.append("")
        sizes = dict(result["bytes_on_disk"])
        for r in result.get("tflite_variants", []):
            sizes.setdefault(f"{r['variant']} .tflite", r["flatbuffer_bytes"])
        # Against the dense float32 model; results of earlier versions lack
        # it, and get it from the stripped model's parameter count.
        base = sizes.get("dense float32 parameters") or 4 * next(
            r["params"] for r in result["variants"] if r["variant"] == "stripped"
        )
        out.append(
            common.format_table(
                ("file", "bytes", "vs dense float32"),
                [(k, f"{v:,}", f"{base / v:.1f}x") for k, v in sizes.items()],
            )
            + "\n"
        )
    return "\n".join(out)


def _load(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inference",
        description="Latency, throughput and bytes of Sparse VD exports.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="LeNet-300-100 only, 3 short rounds: a smoke test, not a measurement",
    )
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument(
        "--model-dir",
        default="results",
        help="folder of trained *.keras models (default: results)",
    )
    parser.add_argument(
        "--models", default=None, help=f"comma-separated subset of {','.join(MODELS)}"
    )
    parser.add_argument(
        "--match", default=None, help="only model files whose name contains this"
    )
    parser.add_argument(
        "--runtime",
        default=",".join(RUNTIMES),
        help=f"comma-separated subset of {','.join(RUNTIMES)} (default: both)",
    )
    parser.add_argument(
        "--tflite-threads",
        default=",".join(map(str, TFLITE_THREADS)),
        help="comma-separated num_threads of the TFLite interpreters; 'all' is "
        "every core (default: 1, a per-core figure)",
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--round-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    settings, models = common.settings_and_models(
        parser, args, DEFAULTS, QUICK, MODELS, QUICK_MODELS
    )
    runtimes = tuple(r.strip() for r in args.runtime.split(",") if r.strip())
    if not runtimes or set(runtimes) - set(RUNTIMES):
        parser.error(f"--runtime {args.runtime!r}: choose from {RUNTIMES}")
    threads = []
    for text in args.tflite_threads.split(","):
        text = text.strip().lower()
        if text == "all":
            threads.append(os.cpu_count() or 1)
        elif text.isdigit() and int(text) > 0:
            threads.append(int(text))
        elif text:
            parser.error(f"--tflite-threads: {text!r} is not a positive count")
    runtimes = tuple(dict.fromkeys(runtimes))
    report = run(
        models,
        args.model_dir,
        match=args.match,
        runtimes=runtimes,
        tflite_threads=tuple(dict.fromkeys(threads)) or TFLITE_THREADS,
        **settings,
    )
    print(tables(report))
    env = report["environment"]
    print(
        f"{env['cpu']}, {env['cpu_count']} cores, TF {env.get('tensorflow')}, "
        f"Keras {env['keras']}; load average (1 min) "
        f"{_load(report['load_average_1min_at_start'])} at the start, "
        f"{_load(env.get('load_average_1min'))} at the end; "
        f"{settings['rounds']} interleaved rounds, {report['elapsed_s']:.0f} s. "
        f"Keras calls: {report['settings']['call']}. "
        "Speed-ups: median per-round ratios."
    )
    common.save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
