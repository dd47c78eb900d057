"""Every way to ship a trained Sparse VD LeNet: bytes, error, latency.

For LeNet-5-Caffe and LeNet-300-100, one row per format:

- ``Keras dense float32``: a plain Keras model of the same architecture,
  trained without Sparse VD (``--dense-model``), saved as ``.keras``: what a
  user would ship without Sparse VD;
- ``Keras stripped`` (`keras_sparsevd.strip_sparsevd`, zeros stored) and
  ``Keras compact`` (`keras_sparsevd.compact_model`, dead units removed),
  ``.keras`` files;
- ``Keras int8`` / ``Keras int4``: `keras_sparsevd.quantize_model` (Keras'
  own ``Model.quantize`` on the stripped model; Dense layers only),
  ``.keras`` files;
- ``LiteRT ...``: `keras_sparsevd.export_tflite` of the dense model, of the
  stripped model (float32; full-integer int8 calibrated on 200 training
  images; each with and without ``EXPERIMENTAL_SPARSITY``) and of the compact
  model (float32, int8);
- ``sparse v1 .npz``: `keras_sparsevd.save_sparse` version 1 (float32);
- ``sparse v2 .ksvd, k bits``: version 2 at k = 32, 16, 8, 6, 5, 4, 3, 2
  bits per kept kernel value (``linear`` and, below 16, also ``kmeans``),
  biases and the mean image at ``min(k, 8)`` bits (float32 at 16 and 32);
- ``smallest .ksvd``: ``results/<net>-smallest.ksvd`` if present (from
  ``python -m benchmarks.smallest``).

Bytes are the file's size; the ratio is the dense float32 parameters
(4 bytes per weight of the architecture: 1,724,320 B and 1,066,440 B)
over it. Error: the MNIST test set, each file read back first
(`keras.models.load_model`, `keras_sparsevd.load_sparse`, or the TFLite
interpreter). Latency: seconds per call at batch 1 and batch 100, all
formats of a net interleaved round by round (`benchmarks.common.interleaved`),
medians over rounds; TensorFlow limited to one thread, the TFLite
interpreter given ``num_threads=1``. Keras models run as
``model(x, training=False)`` in a ``tf.function``. A TFLite file whose
sparse int8 tensors XNNPACK cannot take runs on TFLite's built-in kernels
(the row says so).

Usage:

    python -m benchmarks.formats [--quick] [--nets lenet5,lenet300]
        [--rounds N] [--round-seconds S]

Writes ``benchmarks/results/formats.json``, ``formats.md`` (the table) and
``formats.png`` (error against bytes, log x axis, both nets).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import warnings

import keras
import numpy as np

import keras_sparsevd as ksvd
from benchmarks import common
from benchmarks.inference import inference_function
from examples import data
from keras_sparsevd import files

DENSE_BYTES = {"lenet5": 1_724_320, "lenet300": 1_066_440}
NAMES = {"lenet5": "LeNet-5-Caffe", "lenet300": "LeNet-300-100"}
SVD_MODELS = {
    "lenet5": "results/lenet5-mnist-svd-seed0.keras",
    "lenet300": "results/lenet300-mnist-svd-densestart-seed1.keras",
}
DENSE_MODELS = {
    "lenet5": "results/lenet5-mnist-dense-e10-seed0.keras",
    "lenet300": "results/lenet300-mnist-dense-e20-seed0.keras",
}
V2_BITS = (32, 16, 8, 6, 5, 4, 3, 2)
DEFAULTS = {"rounds": 7, "round_seconds": 0.15}
QUICK = {"rounds": 2, "round_seconds": 0.02}


def _set_one_thread() -> None:
    # Environment first: it also holds if TensorFlow's context already started.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised: the environment variables above hold


def error_percent(predict: object, x: np.ndarray, y: np.ndarray) -> float:
    logits = predict(x)
    return 100.0 * float(np.mean(np.argmax(logits, -1) != y))


def keras_predict(model: keras.Model) -> object:
    return lambda x: model.predict(x, batch_size=1000, verbose=0)


def tflite_interpreter(flatbuffer: bytes, batch_shape: tuple) -> tuple:
    """``(interpreter, note)``; XNNPACK first, TFLite's own kernels if it refuses."""
    import tensorflow as tf

    note = ""
    for resolver in (None, "builtin"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs = {"model_content": flatbuffer, "num_threads": 1}
            if resolver:
                kwargs["experimental_op_resolver_type"] = (
                    tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                )
            interpreter = tf.lite.Interpreter(**kwargs)
        (detail,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(detail["index"], batch_shape, strict=True)
        try:
            interpreter.allocate_tensors()
            return interpreter, note
        except RuntimeError:
            note = "built-in kernels (XNNPACK refused the sparse int8 tensors)"
    raise RuntimeError("TFLite cannot allocate this model")


def tflite_call(flatbuffer: bytes, x: np.ndarray) -> tuple:
    interpreter, note = tflite_interpreter(flatbuffer, x.shape)
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]

    def call() -> np.ndarray:
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target)

    return call, note


def build_rows(net: str, tmp: str, x_cal: np.ndarray) -> list:
    """``(label, kind, path, runnable)`` of every format of `net`.

    `runnable` is a Keras model (kind ``keras``) or TFLite bytes (``tflite``).
    """
    svd = keras.models.load_model(SVD_MODELS[net], compile=False)
    dense = keras.models.load_model(DENSE_MODELS[net], compile=False)
    stripped = ksvd.strip_sparsevd(svd)
    compact = ksvd.compact_model(svd)
    rows = []

    def keras_file(label: str, model: keras.Model, stem: str) -> None:
        path = os.path.join(tmp, f"{net}-{stem}.keras")
        files.save_model(model, path)
        rows.append(
            (label, "keras", path, keras.models.load_model(path, compile=False))
        )

    keras_file("Keras dense float32", dense, "dense")
    keras_file("Keras stripped float32", stripped, "stripped")
    keras_file("Keras compact float32", compact, "compact")
    for mode in ("int8", "int4"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # layers Keras does not quantize
            quantized = ksvd.quantize_model(svd, mode)
        keras_file(f"Keras {mode} (stripped)", quantized, mode)

    def tflite_file(
        label: str, model: keras.Model, stem: str, **options: object
    ) -> None:
        path = os.path.join(tmp, f"{net}-{stem}.tflite")
        ksvd.export_tflite(model, path, **options)
        with open(path, "rb") as f:
            rows.append((label, "tflite", path, f.read()))

    int8 = {"quantize": "int8", "representative_data": x_cal}
    tflite_file("LiteRT dense float32", dense, "dense")
    tflite_file("LiteRT stripped float32", stripped, "stripped")
    tflite_file(
        "LiteRT stripped float32, sparse", stripped, "stripped-sparse", sparsity=True
    )
    tflite_file("LiteRT stripped int8", stripped, "stripped-int8", **int8)
    tflite_file(
        "LiteRT stripped int8, sparse",
        stripped,
        "stripped-int8-sparse",
        sparsity=True,
        **int8,
    )
    tflite_file("LiteRT compact float32", compact, "compact")
    tflite_file("LiteRT compact int8", compact, "compact-int8", **int8)
    tflite_file(
        "LiteRT compact int8, sparse",
        compact,
        "compact-int8-sparse",
        sparsity=True,
        **int8,
    )

    def sparse_file(label: str, path: str, **options: object) -> None:
        ksvd.save_sparse(svd, path, **options)
        rows.append((label, "keras", path, ksvd.load_sparse(path)))

    sparse_file("sparse v1 .npz float32", os.path.join(tmp, f"{net}-v1.npz"))
    for bits in V2_BITS:
        other = None if bits >= 16 else min(bits, 8)
        quantizers = ("linear",) if bits >= 16 else ("linear", "kmeans")
        for quantizer in quantizers:
            suffix = "" if bits >= 16 else f", {quantizer}"
            sparse_file(
                f"sparse v2 .ksvd {bits} bits{suffix}",
                os.path.join(tmp, f"{net}-v2-{bits}-{quantizer}.ksvd"),
                bits=bits,
                other_bits=other,
                quantizer=quantizer,
            )
    smallest = f"results/{net}-smallest.ksvd"
    if os.path.exists(smallest):
        rows.append(
            (
                "smallest .ksvd (benchmarks.smallest)",
                "keras",
                smallest,
                ksvd.load_sparse(smallest),
            )
        )
    return rows


def measure(net: str, settings: dict, splits: tuple) -> list:
    (x_train, _), (x_test, y_test) = splits
    x_cal = x_train[:200]
    with tempfile.TemporaryDirectory() as tmp:
        rows = build_rows(net, tmp, x_cal)
        results = []
        fns: dict = {1: {}, 100: {}}
        for label, kind, path, runnable in rows:
            row = {
                "format": label,
                "runtime": kind,
                "bytes": os.path.getsize(path),
                "file": os.path.basename(path),
            }
            row["ratio_to_dense_float32"] = DENSE_BYTES[net] / row["bytes"]
            if kind == "keras":
                row["test_error_percent"] = error_percent(
                    keras_predict(runnable), x_test, y_test
                )
                fn = inference_function(runnable)
                for batch in fns:
                    x = x_test[:batch]
                    fns[batch][label] = lambda f=fn, x=x: np.asarray(f(x))
            else:
                row["test_error_percent"] = tflite_error(runnable, x_test, y_test)
                for batch in fns:
                    call, note = tflite_call(runnable, x_test[:batch])
                    fns[batch][label] = call
                    if note:
                        row["tflite_kernels"] = note
            results.append(row)
        for batch, batch_fns in fns.items():
            for fn in batch_fns.values():
                fn()  # trace / warm up
            calls = {
                name: common.calls_per_round(fn, settings["round_seconds"])
                for name, fn in batch_fns.items()
            }
            samples = common.interleaved(batch_fns, calls, settings["rounds"])
            for row in results:
                row[f"ms_batch{batch}"] = 1000 * common.median(samples[row["format"]])
        for row in results:
            print(
                f"{net:8s} {row['format']:38s} {row['bytes']:>10,} B "
                f"{row['ratio_to_dense_float32']:8.1f}x "
                f"{row['test_error_percent']:5.2f}% "
                f"{row['ms_batch1']:7.3f} ms {row['ms_batch100']:8.3f} ms",
                flush=True,
            )
    return results


def tflite_error(flatbuffer: bytes, x: np.ndarray, y: np.ndarray) -> float:
    wrong = 0
    call = None
    for start in range(0, len(x), 1000):
        chunk = x[start : start + 1000]
        if call is None or len(chunk) != 1000:
            interpreter, _ = tflite_interpreter(flatbuffer, chunk.shape)
            source = interpreter.get_input_details()[0]["index"]
            target = interpreter.get_output_details()[0]["index"]
            call = interpreter
        interpreter.set_tensor(source, chunk)
        interpreter.invoke()
        logits = interpreter.get_tensor(target)
        wrong += int(np.sum(np.argmax(logits, -1) != y[start : start + 1000]))
    return 100.0 * wrong / len(x)


def markdown(report: dict) -> str:
    lines = []
    for net, rows in report["nets"].items():
        lines += [
            f"### {NAMES[net]} (dense float32 parameters: {DENSE_BYTES[net]:,} B)",
            "",
            "| format | bytes | x smaller than dense float32 | test error % | "
            "ms, batch 1 | ms, batch 100 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            note = f" ({r['tflite_kernels']})" if r.get("tflite_kernels") else ""
            lines.append(
                f"| {r['format']}{note} | {r['bytes']:,} | "
                f"{r['ratio_to_dense_float32']:.1f} | {r['test_error_percent']:.2f} | "
                f"{r['ms_batch1']:.3f} | {r['ms_batch100']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    """Error against bytes (log x), one panel per net, every format labelled.

    The error axis stops at 2.5x the net's lowest error; a format above it
    is drawn on the top edge, its error in its label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(report["nets"])
    fig, axes = plt.subplots(1, len(nets), figsize=(8 * len(nets), 6.5), squeeze=False)
    styles = {
        "Keras": ("o", "tab:blue"),
        "LiteRT": ("s", "tab:orange"),
        "sparse v1": ("^", "tab:green"),
        "sparse v2": ("D", "tab:red"),
        "smallest": ("*", "black"),
    }
    for ax, net in zip(axes[0], nets):
        rows = report["nets"][net]
        low = min(r["test_error_percent"] for r in rows)
        top = 2.5 * low
        seen = set()
        for r in rows:
            key = next(k for k in styles if r["format"].startswith(k))
            marker, color = styles[key]
            error = r["test_error_percent"]
            shown = min(error, top)
            ax.scatter(
                r["bytes"],
                shown,
                marker="^" if error > top else marker,
                color=color,
                s=160 if key == "smallest" else 28,
                zorder=3,
                label=None if key in seen else key,
            )
            seen.add(key)
            short = (
                r["format"]
                .replace("sparse v2 .ksvd ", "v2 ")
                .replace(" (benchmarks.smallest)", "")
                .replace(" (stripped)", "")
                .replace("LiteRT ", "LiteRT ")
            )
            if error > top:
                short += f" ({error:.2f}%)"
            ax.annotate(
                short,
                (r["bytes"], shown),
                fontsize=6.5,
                rotation=50,
                xytext=(2, 3),
                textcoords="offset points",
            )
        ax.axvline(DENSE_BYTES[net], color="gray", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_ylim(low * 0.85, top * 1.25)
        ax.set_xlabel("bytes of the file (log scale); dotted: dense float32 parameters")
        ax.set_ylabel("MNIST test error % (after loading the file)")
        ax.set_title(NAMES[net])
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    plt.close(fig)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", default="lenet5,lenet300")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--round-seconds", type=float, default=None)
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument(
        "--plot-only",
        action="store_true",
        help="redraw formats.png and formats.md from formats.json, measure nothing",
    )
    args = parser.parse_args(argv)
    if args.plot_only:
        with open(os.path.join(args.out_dir, "formats.json"), encoding="utf-8") as f:
            report = json.load(f)
        files.write_text(os.path.join(args.out_dir, "formats.md"), markdown(report))
        plot(report, os.path.join(args.out_dir, "formats.png"))
        return 0
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = sorted(set(nets) - set(DENSE_BYTES))
    if unknown:
        parser.error(f"unknown nets {unknown}; choose from {sorted(DENSE_BYTES)}")
    settings = dict(QUICK if args.quick else DEFAULTS)
    if args.rounds is not None:
        settings["rounds"] = max(1, args.rounds)
    if args.round_seconds is not None:
        settings["round_seconds"] = args.round_seconds
    _set_one_thread()
    splits = data.load("mnist")
    report = {
        "command": "python -m benchmarks.formats "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "settings": settings,
        "svd_models": {n: SVD_MODELS[n] for n in nets},
        "dense_models": {n: DENSE_MODELS[n] for n in nets},
        "environment": common.environment(),
        "nets": {},
    }
    for net in nets:
        report["nets"][net] = measure(net, settings, splits)
    os.makedirs(args.out_dir, exist_ok=True)
    common.write_json(os.path.join(args.out_dir, "formats.json"), report)
    files.write_text(os.path.join(args.out_dir, "formats.md"), markdown(report))
    plot(report, os.path.join(args.out_dir, "formats.png"))
    print(f"wrote {args.out_dir}/formats.json, formats.md, formats.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
