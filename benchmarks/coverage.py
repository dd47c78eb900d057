"""Which Keras 3 models `sparsify` takes, end to end: the coverage table.

    python -m benchmarks.coverage --out results/coverage.json --table docs/coverage.md

For one model of every `keras.applications` family (random weights, 75x75
RGB inputs, 10 classes) and the KerasHub backbones and task models that
build offline at a tiny config, it runs the whole route a user would and
times it:

1. `sparsify` with ``log_sigma2_initializer=-30`` (seconds);
2. the same predictions as the dense model (largest absolute difference);
3. two training steps with the KL (`KLScheduler`), finite loss;
4. ``model.save`` then `keras_sparsevd.load_model`, the same predictions;
   and whether `keras.models.load_model` loads it unaided;
5. `strip_sparsevd` gives back exactly the original classes everywhere in
   the layer tree and the same predictions.

Each row passes or says which step failed and why. Writes a JSON file and a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

APPLICATIONS = (
    "ConvNeXtTiny",
    "DenseNet121",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "InceptionResNetV2",
    "InceptionV3",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "NASNetMobile",
    "ResNet50",
    "ResNet50V2",
    "VGG16",
    "Xception",
)
TINY = {
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "intermediate_dim": 32,
}


def application(name: str) -> Callable:
    def build() -> tuple:
        model = getattr(keras.applications, name)(
            weights=None, input_shape=(75, 75, 3), classes=10
        )
        x = np.random.default_rng(0).random((4, 75, 75, 3)).astype("float32")
        return model, x, np.arange(4) % 10

    return build


def _tokens(length: int = 12, vocabulary: int = 50, segments: bool = False) -> dict:
    ids = np.random.default_rng(0).integers(1, vocabulary, (4, length))
    x = {"token_ids": ids.astype("int32"), "padding_mask": np.ones_like(ids)}
    if segments:
        x["segment_ids"] = np.zeros_like(ids)
    return x


def hub_models() -> dict:
    import keras_hub as hub

    m = hub.models

    def backbone(cls: type, **extra) -> Callable:
        def build() -> tuple:
            model = cls(vocabulary_size=50, **TINY, **extra)
            return model, _tokens(segments="BertBackbone" in cls.__name__), None

        return build

    def causal_lm(task: type, backbone_cls: type, **extra) -> Callable:
        def build() -> tuple:
            model = task(
                backbone=backbone_cls(vocabulary_size=50, **TINY, **extra),
                preprocessor=None,
            )
            x = _tokens()
            return model, x, x["token_ids"]

        return build

    def bert_classifier() -> tuple:
        model = m.BertTextClassifier(
            backbone=m.BertBackbone(vocabulary_size=50, max_sequence_length=12, **TINY),
            num_classes=3,
            preprocessor=None,
        )
        return model, _tokens(segments=True), np.arange(4) % 3

    def vit() -> tuple:
        model = m.ViTBackbone(
            image_shape=(32, 32, 3),
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
        )
        x = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
        return model, x, None

    gemma = {"head_dim": 8, "num_query_heads": 2, "num_key_value_heads": 1}
    llama = {"num_query_heads": 2, "num_key_value_heads": 1}
    tiny = {k: v for k, v in TINY.items() if k != "num_heads"}
    return {
        "keras_hub BertBackbone": backbone(m.BertBackbone, max_sequence_length=12),
        "keras_hub BertTextClassifier": bert_classifier,
        "keras_hub GPT2Backbone": backbone(m.GPT2Backbone, max_sequence_length=12),
        "keras_hub GPT2CausalLM": causal_lm(
            m.GPT2CausalLM, m.GPT2Backbone, max_sequence_length=12
        ),
        "keras_hub GemmaBackbone": lambda: (
            m.GemmaBackbone(vocabulary_size=50, **tiny, **gemma),
            _tokens(),
            None,
        ),
        "keras_hub GemmaCausalLM": lambda: (
            m.GemmaCausalLM(
                backbone=m.GemmaBackbone(vocabulary_size=50, **tiny, **gemma),
                preprocessor=None,
            ),
            _tokens(),
            _tokens()["token_ids"],
        ),
        "keras_hub LlamaBackbone": lambda: (
            m.LlamaBackbone(vocabulary_size=50, **tiny, **llama),
            _tokens(),
            None,
        ),
        "keras_hub ViTBackbone": vit,
    }


def outputs(model: keras.Model, x) -> np.ndarray:
    """Every output of the model, flattened into one float vector."""
    out = model.predict(x, batch_size=4, verbose=0)
    leaves = keras.tree.flatten(out)
    return np.concatenate([np.asarray(v, "float32").ravel() for v in leaves])


def classes(model: keras.Model) -> list:
    from keras_sparsevd.convert import tree

    return [type(model).__name__] + [type(n.layer).__name__ for n in tree.walk(model)]


def route(build: Callable, row: dict) -> None:
    """The whole route on one model, filling its row of the table."""
    import keras_sparsevd as ksvd

    row["step"] = "build"
    keras.utils.set_random_seed(0)
    dense, x, y = build()
    expected = outputs(dense, x)
    row["weights"] = int(sum(np.prod(v.shape) for v in dense.weights))

    row["step"] = "sparsify"
    start = time.perf_counter()
    sparse = ksvd.sparsify(dense, log_sigma2_initializer=-30.0, verbose=False)
    row["sparsify_s"] = round(time.perf_counter() - start, 2)
    row["layers_converted"] = len(ksvd.svd_layers(sparse))
    report = ksvd.sparsity_report(sparse)
    row["weights_in_svd_layers_pct"] = round(
        100 * report.sparse_weights / report.total_weights, 1
    )
    assert type(sparse) is type(dense), "the model changed class"

    row["step"] = "predict"
    row["max_abs_diff"] = float(np.max(np.abs(outputs(sparse, x) - expected)))
    assert row["max_abs_diff"] < 1e-4, "predictions differ"

    row["step"] = "fit"
    if y is None:  # a backbone: regress its outputs
        out = sparse.predict(x, batch_size=4, verbose=0)
        y = keras.tree.map_structure(lambda v: np.asarray(v) + 1.0, out)
        loss = keras.tree.map_structure(lambda _: "mse", out)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    sparse.compile(optimizer="adam", loss=loss)
    history = sparse.fit(
        x,
        y,
        batch_size=2,
        epochs=1,
        verbose=0,
        callbacks=[ksvd.KLScheduler(len(keras.tree.flatten(x)[0]), 0, 1)],
    )
    assert np.isfinite(history.history["loss"]).all(), "loss not finite"
    trained = outputs(sparse, x)

    row["step"] = "save/load"
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        sparse.save(path)
        loaded = ksvd.load_model(path, compile=False)
        try:
            keras.models.load_model(path, compile=False)
            row["keras_load_model"] = True
        except Exception:
            row["keras_load_model"] = False
    assert classes(loaded) == classes(sparse), "loaded classes differ"
    row["load_diff"] = float(np.max(np.abs(outputs(loaded, x) - trained)))
    assert row["load_diff"] < 1e-4, "loaded predictions differ"

    row["step"] = "strip"
    stripped = ksvd.strip_sparsevd(sparse)
    assert classes(stripped) == classes(dense), "stripped classes differ"
    row["strip_diff"] = float(np.max(np.abs(outputs(stripped, x) - trained)))
    assert row["strip_diff"] < 1e-4, "stripped predictions differ"
    row["step"] = "done"
    row["ok"] = True


def table(rows: dict) -> str:
    lines = [
        "| model | weights | layers converted | weights in Sparse VD layers | "
        "sparsify | max diff at -30 | `keras.models.load_model` | result |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, row in rows.items():
        result = (
            "pass"
            if row.get("ok")
            else f"FAIL at {row.get('step')}: {row.get('error')}"
        )
        diff = row.get("max_abs_diff")
        keras_load = {True: "yes", False: "no"}.get(row.get("keras_load_model"), "-")
        converted = row.get("layers_converted", "-")
        lines.append(
            f"| {name} | {row.get('weights', 0):,} | {converted} "
            f"| {row.get('weights_in_svd_layers_pct', '-')}% "
            f"| {row.get('sparsify_s', '-')} s "
            f"| {'-' if diff is None else f'{diff:.1e}'} | {keras_load} | {result} |"
        )
    return "\n".join(lines)


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_page(result: dict, json_path: str, page_path: str) -> None:
    """Writes the Markdown page of a run's result (`--table`)."""
    rows = result["rows"]
    passed = sum(1 for row in rows.values() if row.get("ok"))
    text = (
        "# Which Keras 3 models `sparsify` takes\n\n"
        f"Made by `{result['command']}` (backend {result['backend']}, Keras "
        f"{result['keras']}; JSON in `{json_path}`). Each row runs the whole "
        "route on a model built from its config with random weights: "
        "`sparsify` with `log_sigma2_initializer=-30` (its time, on a 2-core "
        "CPU shared with other jobs), the largest difference from the dense "
        "model's predictions, two training steps with the KL, `model.save` "
        "and `keras_sparsevd.load_model` with the same predictions, and "
        "`strip_sparsevd` back to exactly the original classes with the same "
        "predictions. The column `keras.models.load_model` says whether Keras "
        f"loads the file unaided (see the README). {passed} of {len(rows)} "
        "rows pass.\n\n" + table(rows) + "\n"
    )
    Path(page_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(page_path).with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, page_path)
    print(text)


def main(argv: list | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/coverage.json")
    parser.add_argument("--table", default=None, help="also write a Markdown table")
    parser.add_argument("--only", nargs="*", default=None, help="model names")
    parser.add_argument(
        "--page-only", action="store_true", help="rewrite --table from --out's JSON"
    )
    parser.add_argument(
        "--merge", action="store_true", help="replace only these rows in --out"
    )
    args = parser.parse_args(argv)
    if args.page_only:
        result = json.loads(Path(args.out).read_text())
        write_page(result, args.out, args.table or "docs/coverage.md")
        return result
    builders = {name: application(name) for name in APPLICATIONS}
    try:
        builders.update(hub_models())
    except ImportError as error:
        print(f"keras_hub not installed ({error}): applications only")
    if args.only:
        builders = {k: v for k, v in builders.items() if k in args.only}
    rows: dict = {}
    for name, build in builders.items():
        start = time.perf_counter()
        row: dict = {}
        try:
            route(build, row)
        except Exception as error:  # noqa: BLE001 - every row says why
            row["ok"] = False
            row["error"] = f"{type(error).__name__}: {error}"[:300]
            traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
        keras.backend.clear_session()
    command = "python -m benchmarks.coverage " + " ".join(argv or sys.argv[1:])
    commit = _commit()
    for row in rows.values():
        row["run"] = f"{command} (commit {commit})"
    result = {
        "command": command,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "rows": rows,
    }
    out = Path(args.out)
    if args.merge and out.exists():
        # Rows run again (a fix, a new model) replace theirs; each row says
        # which command and commit made it.
        earlier = json.loads(out.read_text())
        earlier["rows"].update(rows)
        earlier["command"] = f"{earlier['command']}; then {command}"
        result = earlier
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    if args.table:
        write_page(result, args.out, args.table)
    return result


if __name__ == "__main__":
    main()
