"""MNIST read row by row (28 steps of 28 pixels): LSTM(128) then Dense(10).

Trains the dense model, Sparse VD from scratch (``--mode svd``) or Sparse VD
with group variables on inputs, hidden units and gates (``--mode
structured``), and writes ``<out>/lstm-mnist-rows-<mode>-seed<k>.json``
(test error in %, per-kernel sparsity, the LSTM's compression, neurons and
gates kept, the command, CPU time) and, for the Sparse VD modes, the model
as ``.keras`` (no optimizer state).

A run can start from the weights of an earlier one (``--init-from``, e.g.
to continue it with another learning rate or KL weight ``--max-rw``); the
result then records that file.

Example::

    python -m examples.lstm_mnist --mode svd --epochs 20 --seed 0 --out results
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np

import keras_sparsevd as ksvd
from examples import data
from examples import recurrent_training as training
from examples import thresholds as thresholds_lib

# Also reached as ``lstm_mnist.init_from`` (the tests start models with it).
from examples.recurrent_training import init_from
from keras_sparsevd import files
from keras_sparsevd.export.cloning import uncompiled

UNITS = 128


def build_model(mode: str, seed: int, train_clip: bool = False) -> keras.Model:
    """LSTM(128) on (28, 28) images, then Dense(10) logits."""
    if mode == "dense":
        lstm = keras.layers.LSTM(UNITS, seed=seed, name="lstm")
        head = keras.layers.Dense(10, name="logits")
    else:
        structured = mode == "structured"
        lstm = ksvd.LSTMSVD(
            UNITS,
            seed=seed,
            group_sparsity=structured,
            train_clip=train_clip,
            name="lstm",
        )
        head = ksvd.DenseSVD(
            10,
            kernel_initializer="glorot_uniform",
            seed=seed + 1,
            group_sparsity=structured,
            train_clip=train_clip,
            name="logits",
        )
    return keras.Sequential([keras.Input((28, 28)), lstm, head], name=f"lstm_{mode}")


def lstm_figures(model: keras.Model) -> dict:
    """Sparsity per kernel, the LSTM's compression, neurons and gates kept."""
    cell = model.get_layer("lstm").cell
    kernels = {}
    total = kept = 0
    for name in cell.svd_kernels:
        mask = keras.ops.convert_to_numpy(cell.mask_of(name))
        kernels[name] = {
            "weights": int(mask.size),
            "kept": int(mask.sum()),
            "sparsity": float(1 - mask.mean()),
        }
        total += int(mask.size)
        kept += int(mask.sum())
    hidden = keras.ops.convert_to_numpy(cell.hidden_units_mask)
    # A hidden unit is gone when nothing reads it: neither the recurrence
    # nor the next layer.
    head = model.get_layer("logits")
    read_by_head = keras.ops.convert_to_numpy(head.input_units_mask)
    neurons = np.maximum(hidden, read_by_head)
    gates = keras.ops.convert_to_numpy(cell.gates_mask).reshape(4, UNITS)
    inputs = keras.ops.convert_to_numpy(cell.input_units_mask)
    return {
        "kernels": kernels,
        "lstm_weights": total,
        "lstm_kept": kept,
        "lstm_compression": total / kept if kept else None,
        "hidden_units_kept": int(neurons.sum()),
        "hidden_units_read_by_recurrence": int(hidden.sum()),
        "hidden_units_read_by_head": int(read_by_head.sum()),
        "gate_preactivations_kept": {
            gate: int(row.sum())
            for gate, row in zip(("input", "forget", "cell", "output"), gates)
        },
        "input_features_kept": int(inputs.sum()),
    }


def error_percent(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Test error of `model` on `x`, `y`, in %."""
    logits = model.predict(x, batch_size=1000, verbose=0)
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) != y))


def main(argv: list | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("dense", "svd", "structured"), default="svd")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    training.add_learning_rate_arguments(parser, default=1e-3)
    parser.add_argument(
        "--train-clip",
        action="store_true",
        help="zero pruned weights in the training mean (the authors' LeNet runs)",
    )
    parser.add_argument(
        "--max-rw",
        type=float,
        default=1.0,
        help="final KL weight rw (1 is the variational objective)",
    )
    parser.add_argument("--kl-start", type=int, default=0)
    parser.add_argument("--kl-end", type=int, default=5)
    parser.add_argument(
        "--init-from",
        default=None,
        help="a .keras model of this script whose weights start this run, "
        "matched by name (continue a run, or start a structured one from a "
        "Sparse VD one); Adam starts afresh",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="file name stem (default lstm-mnist-rows-<mode>-seed<k>)",
    )
    parser.add_argument("--out", default="results")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--train-examples", type=int, default=None, help="first N only (smoke runs)"
    )
    parser.add_argument(
        "--thresholds",
        default=None,
        help="comma-separated log-alpha thresholds: the result also gets the "
        "test error and LSTM compression at each (threshold_sweep); the "
        "saved model keeps 3. With --epochs 0 --init-from M it evaluates M",
    )
    args = parser.parse_args(argv)
    sweep = _thresholds(parser, args.thresholds)
    if sweep and args.mode == "dense":
        parser.error("--thresholds: a dense model has no threshold")

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = data.load("mnist", args.data_dir)
    x_train, x_test = x_train.reshape(-1, 28, 28), x_test.reshape(-1, 28, 28)
    if args.train_examples:
        keep = slice(0, args.train_examples)
        x_train, y_train = x_train[keep], y_train[keep]
    model = build_model(args.mode, args.seed, args.train_clip)
    if args.init_from:
        init_from(model, args.init_from)
    lr = training.learning_rate(
        args.lr, args.lr_decay_from, args.epochs, len(x_train), args.batch_size
    )
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    log = training.EpochLog(
        lambda model: {"test_error": error_percent(model, x_test, y_test)},
        _epoch_figures if args.mode != "dense" else None,
    )
    callbacks: list = [log]
    if args.mode != "dense":
        scheduler = ksvd.KLScheduler(
            len(x_train), args.kl_start, args.kl_end, max_rw=args.max_rw
        )
        callbacks.insert(0, scheduler)
    wall, cpu = training.fit_timed(
        model, x_train, y_train, args.batch_size, args.epochs, callbacks
    )
    error = error_percent(model, x_test, y_test)
    name = args.name or f"lstm-mnist-rows-{args.mode}-seed{args.seed}"
    result = {
        "task": "MNIST rows: 28 steps of 28 pixels, LSTM(128) -> Dense(10)",
        "mode": args.mode,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_decay_from": args.lr_decay_from,
        "init_from": args.init_from,
        "train_clip": args.train_clip,
        "test_error": error,
        **training.run_record("examples.lstm_mnist", argv, wall, cpu, log.rows),
    }
    os.makedirs(args.out, exist_ok=True)
    if args.mode != "dense":
        result["kl"] = {
            "start_epoch": args.kl_start,
            "end_epoch": args.kl_end,
            "max_rw": args.max_rw,
        }
        result.update(lstm_figures(model))
        result["report"] = ksvd.sparsity_report(model).to_dict()
        # Saved first, and uncompiled: stripping clones the model, and a
        # compiled clone would rebuild the optimizer (and its schedule).
        inference = uncompiled(model)
        if args.epochs or not args.init_from:
            # An evaluation (--epochs 0 --init-from M) writes no copy of M.
            files.save_model(inference, os.path.join(args.out, name + ".keras"))
        stripped = ksvd.strip_sparsevd(inference)
        result["stripped_test_error"] = error_percent(stripped, x_test, y_test)
        if sweep:
            result["threshold_sweep"] = threshold_sweep(model, sweep, x_test, y_test)
    training.write_result(os.path.join(args.out, name + ".json"), result)
    training.print_summary(result, left_out=("history", "report"))
    return result


def threshold_sweep(
    model: keras.Model, thresholds: list, x: np.ndarray, y: np.ndarray
) -> list:
    """Test error and LSTM compression of `model` at each log-alpha threshold.

    Args:
        model: a model of `build_model` ("svd" or "structured").
        thresholds: the thresholds, each in [-8, 8].
        x: test images, (N, 28, 28).
        y: their labels.

    Returns:
        One dict per threshold: ``threshold``, ``test_error`` (%),
        ``lstm_kept``, ``lstm_compression``. The model's thresholds are
        put back as they were.
    """

    def measure(model: keras.Model) -> dict:
        figures = lstm_figures(model)
        return {
            "test_error": error_percent(model, x, y),
            "lstm_kept": figures["lstm_kept"],
            "lstm_compression": figures["lstm_compression"],
        }

    return thresholds_lib.sweep(model, thresholds, measure)


def _thresholds(parser: argparse.ArgumentParser, value: str | None) -> list:
    if not value:
        return []
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--thresholds: {value!r} is not a list such as 0,1,2,3")


def _epoch_figures(model: keras.Model) -> dict:
    """The LSTM's compression, weights in use and neurons, after every epoch."""
    figures = lstm_figures(model)
    cell = model.get_layer("lstm").cell
    return {
        "lstm_compression": figures["lstm_compression"],
        # Weights with log alpha < 0: the ones the model really uses
        # (threshold 3 also keeps those still near it).
        "lstm_kept_log_alpha_below_0": sum(
            int(np.sum(keras.ops.convert_to_numpy(cell.log_alpha_of(n)) < 0))
            for n in cell.svd_kernels
        ),
        "hidden_units_kept": figures["hidden_units_kept"],
    }


if __name__ == "__main__":
    main()
