"""A small Transformer on MNIST rows, trained dense, sparsified, fine-tuned.

    python -m examples.transformer

Each image is a sequence of 28 tokens (its rows, 28 pixels each). The model:
a row projection with a learned position bias (`EinsumDense`), one
`MultiHeadAttention` block and a feed-forward block, each with a residual
connection and `LayerNormalization`, average pooling over the rows and a
`Dense` classifier. It is trained dense, converted with one call to
`keras_sparsevd.sparsify`, fine-tuned with the KL warm-up, stripped back to
plain Keras layers and exported as a TF SavedModel, which is then served in
a process where keras_sparsevd cannot be imported. The run folder
(``--out``) receives ``report.json`` (errors before and after, per-layer
sparsity, the commands), both models and the SavedModel.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

import keras_sparsevd as ksvd
from examples import data as data_lib
from keras_sparsevd import files


def transformer(
    width: int = 64,
    heads: int = 4,
    ffn: int = 128,
    tokens: int = 28,
    features: int = 28,
) -> keras.Model:
    """The dense model: rows -> projection -> attention -> feed-forward -> classes."""
    inputs = keras.Input((tokens, features), name="rows")
    # One kernel for all rows, one bias per (row, feature): the projection and
    # a learned position embedding in one layer.
    h = keras.layers.EinsumDense(
        "btf,fd->btd",
        output_shape=(tokens, width),
        bias_axes="td",
        name="row_projection",
    )(inputs)
    attended = keras.layers.MultiHeadAttention(heads, width // heads, name="attention")(
        h, h
    )
    h = keras.layers.LayerNormalization(name="norm1")(
        keras.layers.Add(name="residual1")([h, attended])
    )
    f = keras.layers.Dense(ffn, activation="relu", name="ffn1")(h)
    f = keras.layers.Dense(width, name="ffn2")(f)
    h = keras.layers.LayerNormalization(name="norm2")(
        keras.layers.Add(name="residual2")([h, f])
    )
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    outputs = keras.layers.Dense(10, name="classifier")(h)
    return keras.Model(inputs, outputs, name="mnist_rows_transformer")


def error_percent(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.predict(x, batch_size=1000, verbose=0)
    return 100.0 * float(np.mean(np.argmax(logits, -1) != y))


def compile_model(model: keras.Model, lr: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def linear_decay(lr: float, epochs: int):
    return keras.callbacks.LearningRateScheduler(
        lambda epoch: lr * (epochs - epoch) / epochs
    )


def serve_without_package(saved_model: Path, x: np.ndarray, expected: np.ndarray):
    """Runs examples/serve_check.py in an isolated process; its output line."""
    folder = saved_model.parent
    files.write_with(folder / "serve_x.npy", lambda f: np.save(f, x))
    files.write_with(folder / "serve_expected.npy", lambda f: np.save(f, expected))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            str(Path(__file__).with_name("serve_check.py")),
            str(saved_model),
            str(folder / "serve_x.npy"),
            str(folder / "serve_expected.npy"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"serving check failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.transformer")
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"local MNIST folder, or {data_lib.TFDS!r} for tensorflow_datasets "
        f"(default: ${data_lib.DATA_DIR_ENV} if set, else the files shipped in "
        "examples/mnist/)",
    )
    p.add_argument("--dense-epochs", type=int, default=10)
    p.add_argument("--sparse-epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--log-sigma2-init", type=float, default=-8.0)
    p.add_argument("--kl-warmup", type=int, nargs=2, default=(2, 10))
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/transformer-mnist")
    p.add_argument("--verbose", type=int, default=2)
    return p


def main(argv: list | None = None) -> dict:
    args = build_parser().parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (x, y), (x_test, y_test) = data_lib.load("mnist", args.data_dir)
    x, x_test = x[..., 0], x_test[..., 0]
    if args.train_limit:
        x, y = x[: args.train_limit], y[: args.train_limit]
    print(f"backend: {keras.backend.backend()}")

    dense = transformer()
    compile_model(dense, args.lr)
    started = time.perf_counter()
    dense.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.dense_epochs,
        validation_data=(x_test, y_test),
        callbacks=[linear_decay(args.lr, args.dense_epochs)],
        verbose=args.verbose,
    )
    dense_seconds = time.perf_counter() - started
    dense_error = error_percent(dense, x_test, y_test)
    files.save_model(dense, out / "dense.keras", include_optimizer=False)

    sparse = ksvd.sparsify(dense, log_sigma2_initializer=args.log_sigma2_init)
    converted_error = error_percent(sparse, x_test, y_test)
    compile_model(sparse, args.lr)
    started = time.perf_counter()
    sparse.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.sparse_epochs,
        validation_data=(x_test, y_test),
        callbacks=[
            linear_decay(args.lr, args.sparse_epochs),
            ksvd.KLScheduler(
                num_train_examples=len(x),
                start_epoch=args.kl_warmup[0],
                end_epoch=args.kl_warmup[1],
            ),
            ksvd.SparsityLogger(),
        ],
        verbose=args.verbose,
    )
    sparse_seconds = time.perf_counter() - started
    sparse_error = error_percent(sparse, x_test, y_test)
    files.save_model(sparse, out / "sparse.keras", include_optimizer=False)
    report = ksvd.sparsity_report(sparse)
    print(report)

    plain = ksvd.strip_sparsevd(sparse)
    sample = x_test[:256]
    expected = sparse.predict(sample, verbose=0)
    strip_diff = float(np.max(np.abs(plain.predict(sample, verbose=0) - expected)))
    classes = sorted({type(layer).__name__ for layer in plain.layers})
    with files.atomic_folder(out / "savedmodel") as tmp:
        plain.export(tmp, verbose=False)
    served = serve_without_package(out / "savedmodel", sample, expected)
    print(served)

    result = {
        "command": "python -m examples.transformer "
        + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "backend": keras.backend.backend(),
        "options": vars(args),
        "dense_test_error_percent": dense_error,
        "sparsified_test_error_percent_before_fine_tuning": converted_error,
        "sparse_test_error_percent": sparse_error,
        "compression": report.compression,
        "sparsity_report": report.to_dict(),
        "stripped_layer_classes": classes,
        "stripped_max_abs_difference": strip_diff,
        "served_without_keras_sparsevd": served,
        "dense_train_seconds": dense_seconds,
        "sparse_train_seconds": sparse_seconds,
    }
    files.write_text(out / "report.json", json.dumps(result, indent=2) + "\n")
    print(
        f"dense {dense_error:.2f}% -> sparsified {converted_error:.2f}% -> "
        f"fine-tuned {sparse_error:.2f}% at {report.compression:.1f}x"
    )
    return result


if __name__ == "__main__":
    main()
