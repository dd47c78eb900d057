"""A tiny KerasHub GPT-2 as a byte-level language model, made Sparse VD.

    python -m examples.gpt_bytes --phase dense  --out runs/gpt-bytes
    python -m examples.gpt_bytes --phase sparse --out runs/gpt-bytes

The corpus ships with every Python: the top-level ``*.py`` files of the
standard library (``sysconfig.get_paths()["stdlib"]``), sorted by name; every
10th file (index 9, 19, ...) is the test split, the rest the training split.
Bytes are tokens (vocabulary 256). The model is a `keras_hub` `GPT2Backbone`
(2 decoder blocks, width 128, 4 heads, feed-forward 512, context 128) under a
`GPT2CausalLM` with no preprocessor, built from its config: nothing is
downloaded.

``--phase dense`` trains it from scratch; ``--phase sparse`` loads the dense
model, converts it with one call to `keras_sparsevd.sparsify` (the attention
projections and feed-forward layers inside KerasHub's `TransformerDecoder`
blocks are reached where they sit), fine-tunes it with the KL warm-up, strips
it back to plain KerasHub layers and reports bits per byte before and after,
sparsity per layer type and the compression, in ``report-<phase>.json``.
Bits per byte are the mean cross-entropy over every predicted byte of
non-overlapping 128-byte windows of the test split, divided by ln 2.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shlex
import sys
import sysconfig
import time
from pathlib import Path

import keras
import numpy as np

CONTEXT = 128


def corpus() -> tuple:
    """``(train bytes, test bytes, file names)`` of the standard library."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))
    train, test = [], []
    for index, path in enumerate(files):
        (test if index % 10 == 9 else train).append(Path(path).read_bytes())
    names = [os.path.basename(path) for path in files]
    as_array = lambda parts: np.frombuffer(b"\n".join(parts), dtype=np.uint8)  # noqa: E731
    return as_array(train), as_array(test), names


def windows(data: np.ndarray, starts: np.ndarray) -> dict:
    """Inputs (token ids, mask) and next-byte targets of windows at `starts`."""
    index = starts[:, None] + np.arange(CONTEXT + 1)[None, :]
    chunk = data[index].astype("int32")
    x = {"token_ids": chunk[:, :-1], "padding_mask": np.ones_like(chunk[:, :-1])}
    return x, chunk[:, 1:]


def test_windows(data: np.ndarray) -> tuple:
    starts = np.arange(0, len(data) - CONTEXT - 1, CONTEXT)
    return windows(data, starts)


def build_model(seed: int) -> keras.Model:
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256,
        num_layers=2,
        num_heads=4,
        hidden_dim=128,
        intermediate_dim=512,
        dropout=0.0,
        max_sequence_length=CONTEXT,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def compile_model(model: keras.Model, lr: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )


def bits_per_byte(model: keras.Model, x: dict, y: np.ndarray) -> float:
    logits = model.predict(x, batch_size=64, verbose=0).astype("float64")
    logits -= logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, y[..., None], axis=-1)
    return float(-picked.mean() / math.log(2.0))


def batches(data: np.ndarray, batch: int, seed: int):
    """An endless tf.data stream of batches of windows at random offsets."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def generate():
        while True:
            yield windows(data, rng.integers(0, len(data) - CONTEXT - 1, batch))

    spec = tf.TensorSpec((batch, CONTEXT), tf.int32)
    return tf.data.Dataset.from_generator(
        generate,
        output_signature=({"token_ids": spec, "padding_mask": spec}, spec),
    ).prefetch(2)


def layer_type(path: str) -> str:
    """Which part of GPT-2 a Sparse VD layer belongs to, from its report name."""
    if any(k in path for k in ("query", "key", "value", "attention_output")):
        return "attention projections"
    if "feedforward" in path:
        return "feed-forward"
    if "embedding" in path:
        return "embeddings"
    return "other"


def main(argv: list | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", choices=("dense", "sparse"), required=True)
    parser.add_argument("--out", default="runs/gpt-bytes")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--steps", type=int, default=500, help="steps per epoch")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-sigma2", type=float, default=-8.0)
    parser.add_argument(
        "--lr", type=float, default=None, help="1e-3 dense, 1e-3 fine-tuning"
    )
    args = parser.parse_args(argv)
    import keras_sparsevd as ksvd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, names = corpus()
    x_test, y_test = test_windows(test)
    report: dict = {
        "command": "python -m examples.gpt_bytes " + shlex.join(argv or sys.argv[1:]),
        "corpus": {
            "stdlib": sysconfig.get_paths()["stdlib"],
            "python": sys.version.split()[0],
            "files": len(names),
            "test_files": [n for i, n in enumerate(names) if i % 10 == 9],
            "train_bytes": int(train.size),
            "test_bytes": int(test.size),
        },
        "backend": keras.backend.backend(),
    }
    start = time.process_time()
    wall = time.time()
    if args.phase == "dense":
        epochs = args.epochs or 20
        model = build_model(args.seed)
        lr = args.lr or 1e-3
        compile_model(model, lr)
        schedule = keras.callbacks.LearningRateScheduler(
            lambda epoch, _: lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        )
        history = model.fit(
            batches(train, args.batch, args.seed),
            steps_per_epoch=args.steps,
            epochs=epochs,
            callbacks=[schedule],
            verbose=2,
        )
        report["dense_test_bits_per_byte"] = bits_per_byte(model, x_test, y_test)
        report["train_loss"] = history.history["loss"]
        model.save(out / "dense.keras")
    else:
        import keras_hub  # noqa: F401  (registers the KerasHub classes)

        epochs = args.epochs or 30
        dense = keras.models.load_model(out / "dense.keras", compile=False)
        report["dense_test_bits_per_byte"] = bits_per_byte(dense, x_test, y_test)
        model = ksvd.sparsify(dense, log_sigma2_initializer=args.log_sigma2)
        report["sparsify_seconds"] = time.time() - wall
        report["sparsified_classes"] = {
            "model": type(model).__name__,
            "backbone": type(model.backbone).__name__,
        }
        compile_model(model, args.lr or 1e-3)
        history = model.fit(
            batches(train, args.batch, args.seed),
            steps_per_epoch=args.steps,
            epochs=epochs,
            callbacks=[
                ksvd.KLScheduler(
                    num_train_examples=int(train.size),
                    start_epoch=0,
                    end_epoch=max(1, epochs // 3),
                ),
                ksvd.SparsityLogger(),
            ],
            verbose=2,
        )
        report["train_loss"] = history.history["loss"]
        report["sparse_test_bits_per_byte"] = bits_per_byte(model, x_test, y_test)
        sparsity = ksvd.sparsity_report(model)
        report["sparsity"] = sparsity.to_dict()
        report["compression"] = sparsity.compression
        by_type: dict = {}
        for row in sparsity.layers:
            if not row.sparse:
                continue
            entry = by_type.setdefault(layer_type(row.name), {"weights": 0, "kept": 0})
            entry["weights"] += row.weights
            entry["kept"] += row.kept
        for entry in by_type.values():
            entry["sparsity"] = 1 - entry["kept"] / entry["weights"]
        report["by_layer_type"] = by_type
        stripped = ksvd.strip_sparsevd(model)
        report["stripped_classes"] = {
            "model": type(stripped).__name__,
            "backbone": type(stripped.backbone).__name__,
        }
        report["stripped_test_bits_per_byte"] = bits_per_byte(stripped, x_test, y_test)
        model.save(out / "sparse.keras")
        stripped.save(out / "stripped.keras")
    report["epochs"] = epochs
    report["steps_per_epoch"] = args.steps
    report["batch"] = args.batch
    report["cpu_seconds"] = time.process_time() - start
    report["wall_seconds"] = time.time() - wall
    path = out / f"report-{args.phase}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
    print(json.dumps({k: v for k, v in report.items() if "bits" in k}, indent=2))
    return report


if __name__ == "__main__":
    main()
