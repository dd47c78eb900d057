"""Character-level language model on the Python standard library's own sources.

The corpus ships with every Python: the top-level ``*.py`` files of the
standard library directory (``sysconfig.get_paths()["stdlib"]``), sorted by
name, ``_sysconfigdata*`` left out (it is written per machine). The split is
by file: of the sorted list, file ``i`` goes to validation when
``i % 10 == 8``, to test when ``i % 10 == 9``, to training otherwise. Each
part is the concatenation of its files (in order), cut to its first
``--train-chars`` / ``--eval-chars`` characters; the files and the Python
version are written into the result. Characters are the printable ASCII
ones plus newline and tab; anything else is one "unknown" symbol.

The model reads one-hot characters (a frozen identity `Embedding`), then
``LSTM(units, return_sequences=True)`` and ``Dense(vocabulary)``: dense, or
Sparse VD (`LSTMSVD`, `DenseSVD`). Sequences of ``--seq-len`` characters,
each starting from a zero state; the loss is the mean cross-entropy over
every position, so bits per character = loss / ln 2. Writes
``<out>/char-lm-<mode>-seed<k>.json`` (bits per character on validation and
test, per-matrix compression for Sparse VD) and the model as ``.keras``
without optimizer state (a dense one can start a Sparse VD run:
``--init-from``).

Example::

    python -m examples.char_lm --mode dense --epochs 10 --out results
"""

from __future__ import annotations

import argparse
import math
import os
import string
import sys
import sysconfig

import keras
import numpy as np

import keras_sparsevd as ksvd
from examples import recurrent_training as training
from keras_sparsevd import files
from keras_sparsevd.export.cloning import uncompiled

# Index 0 is the unknown symbol.
ALPHABET = "\n\t" + "".join(c for c in string.printable if c.isprintable())
VOCABULARY = len(ALPHABET) + 1


def corpus_files(stdlib: str | None = None) -> dict:
    """``{"train": [...], "valid": [...], "test": [...]}``: file paths, sorted."""
    stdlib = stdlib or sysconfig.get_paths()["stdlib"]
    names = sorted(
        name
        for name in os.listdir(stdlib)
        if name.endswith(".py") and not name.startswith("_sysconfigdata")
    )
    split: dict = {"train": [], "valid": [], "test": []}
    for i, name in enumerate(names):
        part = "valid" if i % 10 == 8 else "test" if i % 10 == 9 else "train"
        split[part].append(os.path.join(stdlib, name))
    return split


def encode(text: str) -> np.ndarray:
    """Character ids: 1 + position in `ALPHABET`, 0 for anything else."""
    table = np.zeros(128, "int32")
    for i, char in enumerate(ALPHABET):
        table[ord(char)] = i + 1
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    ascii_ = codes < 128
    return np.where(ascii_, table[np.minimum(codes, 127)], 0).astype("int32")


def load_part(paths: list, limit: int) -> tuple:
    """The first `limit` characters of the files, encoded, and the files read."""
    texts = []
    total = 0
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            texts.append(handle.read())
        total += len(texts[-1])
        if total >= limit:
            break
    used = [os.path.basename(p) for p in paths[: len(texts)]]
    return encode("".join(texts)[:limit]), used


def sequences(ids: np.ndarray, length: int) -> tuple:
    """Inputs and next-character targets, non-overlapping windows."""
    count = (len(ids) - 1) // length
    x = ids[: count * length].reshape(count, length)
    y = ids[1 : count * length + 1].reshape(count, length)
    return x, y


def build_model(
    mode: str, units: int, seed: int, log_sigma2_init: float = -10.0
) -> keras.Model:
    """One-hot characters, LSTM(units) over the sequence, Dense(vocabulary)."""
    one_hot = keras.layers.Embedding(
        VOCABULARY,
        VOCABULARY,
        embeddings_initializer="identity",
        trainable=False,
        name="one_hot",
    )
    if mode == "dense":
        lstm = keras.layers.LSTM(units, return_sequences=True, seed=seed, name="lstm")
        head = keras.layers.Dense(VOCABULARY, name="logits")
    else:
        log_sigma2 = keras.initializers.Constant(log_sigma2_init)
        lstm = ksvd.LSTMSVD(
            units,
            return_sequences=True,
            seed=seed,
            log_sigma2_initializer=log_sigma2,
            name="lstm",
        )
        head = ksvd.DenseSVD(
            VOCABULARY,
            kernel_initializer="glorot_uniform",
            log_sigma2_initializer=log_sigma2,
            seed=seed + 1,
            name="logits",
        )
    return keras.Sequential(
        [keras.Input((None,), dtype="int32"), one_hot, lstm, head],
        name=f"char_lm_{mode}",
    )


def matrix_figures(model: keras.Model) -> dict:
    """Kept weights and compression of each Sparse VD matrix, and in all."""
    rows = {}
    total = kept = 0
    for layer_name, layer in (
        ("lstm", model.get_layer("lstm").cell),
        ("logits", model.get_layer("logits")),
    ):
        for name in layer.svd_kernels:
            mask = keras.ops.convert_to_numpy(layer.mask_of(name))
            rows[f"{layer_name}/{name}"] = {
                "weights": int(mask.size),
                "kept": int(mask.sum()),
                "compression": float(mask.size / max(1, mask.sum())),
            }
            total += int(mask.size)
            kept += int(mask.sum())
    return {
        "matrices": rows,
        "weights": total,
        "kept": kept,
        "compression": total / max(1, kept),
    }


def bits_per_char(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    total = 0.0
    for start in range(0, len(x), 256):
        logits = model(x[start : start + 256], training=False)
        total += float(loss(y[start : start + 256], logits)) * len(
            x[start : start + 256]
        )
    return total / len(x) / math.log(2.0)


def main(argv: list | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("dense", "svd"), default="dense")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=100)
    training.add_learning_rate_arguments(parser, default=2e-3)
    parser.add_argument("--kl-start", type=int, default=0)
    parser.add_argument("--kl-end", type=int, default=3)
    parser.add_argument("--train-chars", type=int, default=1_000_000)
    parser.add_argument("--eval-chars", type=int, default=200_000)
    parser.add_argument(
        "--init-from",
        default=None,
        help="a .keras model of this script (dense for a dense start) whose "
        "weights start this run; Sparse VD variables it lacks keep their init",
    )
    parser.add_argument(
        "--log-sigma2-init",
        type=float,
        default=-10.0,
        help="initial log sigma^2 of the Sparse VD weights (about -8 from a "
        "trained dense model, SPARSEVD.md)",
    )
    parser.add_argument("--out", default="results")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    split = corpus_files()
    train, train_files = load_part(split["train"], args.train_chars)
    valid, valid_files = load_part(split["valid"], args.eval_chars)
    test, test_files = load_part(split["test"], args.eval_chars)
    x_train, y_train = sequences(train, args.seq_len)
    x_valid, y_valid = sequences(valid, args.seq_len)
    x_test, y_test = sequences(test, args.seq_len)

    model = build_model(args.mode, args.units, args.seed, args.log_sigma2_init)
    if args.init_from:
        training.init_from(model, args.init_from)
    lr = training.learning_rate(
        args.lr, args.lr_decay_from, args.epochs, len(x_train), args.batch_size
    )
    model.compile(
        keras.optimizers.Adam(lr, clipnorm=1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    log = training.EpochLog(
        lambda model: {"valid_bpc": bits_per_char(model, x_valid, y_valid)},
        _compression if args.mode != "dense" else None,
    )
    callbacks: list = [log]
    if args.mode != "dense":
        # N counts characters: the loss is a mean over every position.
        callbacks.insert(0, ksvd.KLScheduler(x_train.size, args.kl_start, args.kl_end))
    wall, cpu = training.fit_timed(
        model, x_train, y_train, args.batch_size, args.epochs, callbacks
    )
    name = args.name or f"char-lm-{args.mode}-seed{args.seed}"
    result = {
        "task": "character LM on the standard library's top-level .py files",
        "python": sys.version.split()[0],
        "files": {
            part: [os.path.basename(p) for p in paths] for part, paths in split.items()
        },
        "files_read": {
            "train": train_files,
            "valid": valid_files,
            "test": test_files,
        },
        "characters": {
            "train": int(train.size),
            "valid": int(valid.size),
            "test": int(test.size),
        },
        "vocabulary": VOCABULARY,
        "mode": args.mode,
        "units": args.units,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "lr": args.lr,
        "lr_decay_from": args.lr_decay_from,
        "init_from": args.init_from,
        "log_sigma2_init": args.log_sigma2_init,
        "valid_bpc": bits_per_char(model, x_valid, y_valid),
        "test_bpc": bits_per_char(model, x_test, y_test),
        **training.run_record("examples.char_lm", argv, wall, cpu, log.rows),
    }
    os.makedirs(args.out, exist_ok=True)
    if args.mode != "dense":
        result["kl"] = {
            "start_epoch": args.kl_start,
            "end_epoch": args.kl_end,
            "n": int(x_train.size),
        }
        result.update(matrix_figures(model))
    files.save_model(uncompiled(model), os.path.join(args.out, name + ".keras"))
    training.write_result(os.path.join(args.out, name + ".json"), result)
    training.print_summary(result, left_out=("history", "files"))
    return result


def _compression(model: keras.Model) -> dict:
    """The Sparse VD figure logged after every epoch: compression in all."""
    return {"compression": matrix_figures(model)["compression"]}


if __name__ == "__main__":
    main()
