"""Training speed of Sparse VD models against the same models from plain layers.

For each of the paper's models (`examples.models`: LeNet-300-100,
LeNet-5-Caffe, VGG-like with k=0.25 on 32x32x3 inputs) and the LSTM on MNIST
rows (`examples.lstm_mnist`: LSTM(128) on 28 steps of 28 pixels, then
Dense(10); `LSTMSVD` and `DenseSVD` against `LSTM` and `Dense`) two twins are built:
one from Sparse VD layers (``sparse=True``) and one from the plain Keras layers
(``sparse=False``). The plain VGG-like twin has its Dropout layers removed, so
both twins have exactly the same layers apart from the Sparse VD ones (the
dense baseline of `examples.models` trains with binary dropout).

The real architectures (`REAL_MODELS`) are built as a user builds them: the
plain Keras model, and its Sparse VD twin made by
``keras_sparsevd.sparsify(plain, verbose=False)`` from an identical plain
model (same seed, same weights):

- ``mobilenetv2``: ``keras.applications.MobileNetV2`` (alpha 1.0, random
  weights, 64x64x3, 10 classes), batch 32;
- ``resnet``: ``keras.applications.ResNet50`` (random weights, 64x64x3, 10
  classes), batch 32;
- ``transformer``: the MNIST-rows Transformer of `examples.transformer`,
  batches of 100 and 1,000;
- ``hub``: a KerasHub ``BertTextClassifier`` with a 2-layer BERT backbone of
  BERT-Tiny's sizes (vocabulary 30,522, width 128, 2 heads) and random
  weights, on random token ids of length 128, batch 32.

``--batch-sizes`` replaces every model's own batch sizes (`MODEL_BATCH_SIZES`).
The load average (``os.getloadavg``) is recorded when each backend's table
starts and ends and with each row: the ratios mean something only when the
machine was quiet (a 1-minute load well below the core count) all along; the
same measure taken while another job shared the cores read 3.0-3.8x where a
quiet machine reads about 2x.

Each twin is compiled with Adam and sparse categorical cross-entropy (no
metrics) the way each backend compiles: Keras' default (``jit_compile="auto"``:
a ``tf.function`` without XLA on a TensorFlow CPU, XLA on JAX, eager on
PyTorch) and, on TensorFlow, also with XLA (``jit_compile=True``). Each is
trained with ``model.train_on_batch`` on one fixed random batch of each
batch size (100, the paper's, and 1,000). The Sparse VD twins get
``set_kl_weight(model, 1 / 60000)`` (the KL term is on, as after the warm-up
of the paper's schedule). After a warm-up (tracing and compilation), the
variants of a model and batch size run interleaved, in
alternating order, for a number of rounds; the figures are medians over the
rounds, and the ratio is the median of the per-round ratios of SVD step time
to plain step time. A backend is fixed for the life of a process, so each
backend runs in a process of its own (`KERAS_BACKEND`), one after the other.

Usage:

    python -m benchmarks.train_speed [--quick] [--json OUT.json]
        [--backends tensorflow,jax,torch] [--batch-sizes 100,1000]
        [--models lenet300,lenet5,vgglike,lstm,mobilenetv2,resnet,transformer,hub]
        [--rounds N] [--round-seconds S]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import keras
import numpy as np

import keras_sparsevd as ksvd
from benchmarks import common
from benchmarks import noise as noise_lib
from examples import lstm_mnist
from examples import models as zoo
from examples import transformer as transformer_lib
from examples.train import compilation as compilation_name

PAPER_MODELS = ("lenet300", "lenet5", "vgglike", "lstm")
# Real networks: a plain Keras model and its twin made with `ksvd.sparsify`.
REAL_MODELS = ("mobilenetv2", "resnet", "transformer", "hub")
MODELS = PAPER_MODELS + REAL_MODELS
BATCH_SIZE = 100
NUM_CLASSES = 10
# rw / N with the KL warm-up finished (rw = 1) and N = 60,000 MNIST examples.
KL_WEIGHT = 1.0 / 60000
VGG_K = 0.25
INPUT_SHAPES = {
    "lenet300": (28, 28, 1),
    "lenet5": (28, 28, 1),
    "vgglike": (32, 32, 3),
    "lstm": (28, 28),
    "mobilenetv2": (64, 64, 3),
    "resnet": (64, 64, 3),
    "transformer": (28, 28),
    # Token ids: the sequence length.
    "hub": (128,),
}
# BERT-Tiny's sizes (google/bert_uncased_L-2_H-128_A-2), random weights.
HUB_CONFIG = {
    "vocabulary_size": 30522,
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 128,
    "intermediate_dim": 512,
    "max_sequence_length": 128,
}
BACKENDS = ("tensorflow", "jax", "torch")
BATCH_SIZES = (100, 1000)
# A batch of 1,000 64x64 images or 128-token sequences is not how these
# networks train; 32 is (and Keras' own default batch size).
MODEL_BATCH_SIZES = {
    "mobilenetv2": (32,),
    "resnet": (32,),
    "hub": (32,),
}
QUIET_NOTE = (
    "Figures count only when taken on a quiet machine: the 1-minute load "
    "average at start and end well below the core count. Under another job's "
    "load the ratio reads 3.0-3.8x where a quiet machine reads about 2x."
)
# Per backend: (label, jit_compile) of the compilations to time. "default" is
# what `model.compile` does when the user says nothing.
COMPILATIONS = {
    "tensorflow": (("default", "auto"), ("xla", True)),
    "jax": (("default", "auto"),),
    "torch": (("default", "auto"), ("compile", True)),
}
# Timed only when named in --compilations: torch.compile recompiles Keras'
# layer calls until dynamo's cache limit and made the Sparse VD step slower
# than eager (BENCHMARKS.md), and its first call takes minutes.
ON_REQUEST = ("compile",)

DEFAULTS = {"rounds": 7, "round_seconds": 0.25, "warmup_steps": 2}
QUICK = {"rounds": 3, "round_seconds": 0.1, "warmup_steps": 1}
QUICK_MODELS = ("lenet300",)
DEFAULT_MODELS = ("lenet300", "lenet5")


def build_plain_real(name: str, seed: int = 0) -> keras.Model:
    """The plain Keras model of one of `REAL_MODELS`, with random weights.

    Args:
        name: ``"mobilenetv2"``, ``"resnet"``, ``"transformer"`` or ``"hub"``.
        seed: seeds the weights: the same seed gives the same weights.

    Returns:
        An uncompiled, built Keras model with 10 classes (logits).
    """
    keras.utils.set_random_seed(seed)
    shape = INPUT_SHAPES[name]
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(
            input_shape=shape,
            alpha=1.0,
            weights=None,
            classes=NUM_CLASSES,
            classifier_activation=None,
        )
    if name == "resnet":
        return keras.applications.ResNet50(
            input_shape=shape,
            weights=None,
            classes=NUM_CLASSES,
            classifier_activation=None,
        )
    if name == "transformer":
        return transformer_lib.transformer(tokens=shape[0], features=shape[1])
    if name == "hub":
        import keras_hub

        backbone = keras_hub.models.BertBackbone(**HUB_CONFIG)
        return keras_hub.models.BertTextClassifier(
            backbone=backbone,
            num_classes=NUM_CLASSES,
            preprocessor=None,
            activation=None,
        )
    raise ValueError(f"Unknown real model {name!r}; choose from {REAL_MODELS}.")


def build_model(
    name: str, sparse: bool, log_sigma2_initializer: Any = None
) -> keras.Model:
    """The Sparse VD (`sparse=True`) or plain twin of one of `MODELS`.

    The twins of `REAL_MODELS` start from the same plain model (same seed):
    the Sparse VD one is ``ksvd.sparsify`` of it, as a user makes it.

    Args:
        name: ``"lenet300"``, ``"lenet5"``, ``"vgglike"`` (k=0.25, 32x32x3),
            ``"lstm"`` (LSTM(128) on MNIST rows) or one of `REAL_MODELS`.
        sparse: build from Sparse VD layers, else from plain Keras layers.
        log_sigma2_initializer: for `REAL_MODELS` only, passed to
            ``ksvd.sparsify`` (None: its default, constant -10); a very
            negative constant makes the twins predict the same.

    Returns:
        An uncompiled, built Keras model with 10 classes.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose from {MODELS}.")
    if name in REAL_MODELS:
        plain = build_plain_real(name)
        if not sparse:
            return plain
        return ksvd.sparsify(
            plain, log_sigma2_initializer=log_sigma2_initializer, verbose=False
        )
    if name == "lstm":
        return lstm_mnist.build_model("svd" if sparse else "dense", seed=0)
    if name == "vgglike":
        model = zoo.vgglike(sparse=sparse, k=VGG_K, input_shape=INPUT_SHAPES[name])
        if not sparse:
            # Same layers as the Sparse VD twin: the baseline's binary dropout
            # would add random draws of its own to the plain step.
            kept = [
                layer
                for layer in model.layers
                if not isinstance(layer, keras.layers.Dropout)
            ]
            model = keras.Sequential(
                [keras.Input(INPUT_SHAPES[name])] + kept, name="plain_vgglike"
            )
        return model
    return zoo.BUILDERS[name](sparse=sparse)


def compiled(name: str, sparse: bool, jit_compile: bool | str) -> keras.Model:
    """`build_model`, compiled for training as the benchmark trains it."""
    model = build_model(name, sparse)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    if sparse:
        ksvd.set_kl_weight(model, KL_WEIGHT)
    return model


def random_batch(
    input_shape: tuple, batch_size: int = BATCH_SIZE, seed: int = 0
) -> tuple:
    """One batch of random images in [0, 1) and labels, as backend tensors."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size,) + tuple(input_shape), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, size=batch_size).astype("int32")
    return keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)


def model_batch(name: str, batch_size: int = BATCH_SIZE, seed: int = 0) -> tuple:
    """One batch of inputs of the right kind for `name`, and labels.

    Images (or MNIST rows) in [0, 1) for every model but ``"hub"``, which
    gets token ids of `HUB_CONFIG`'s vocabulary, no padding, one segment.

    Args:
        name: one of `MODELS`.
        batch_size: examples in the batch.
        seed: seeds the draw.

    Returns:
        ``(x, y)`` as backend tensors; ``x`` a dict for ``"hub"``.
    """
    if name != "hub":
        return random_batch(INPUT_SHAPES[name], batch_size, seed)
    rng = np.random.default_rng(seed)
    shape = (batch_size,) + INPUT_SHAPES[name]
    ids = rng.integers(0, HUB_CONFIG["vocabulary_size"], size=shape)
    x = {
        "token_ids": ids.astype("int32"),
        "segment_ids": np.zeros(shape, "int32"),
        "padding_mask": np.ones(shape, "int32"),
    }
    y = rng.integers(0, NUM_CLASSES, size=batch_size).astype("int32")
    x = {k: keras.ops.convert_to_tensor(v) for k, v in x.items()}
    return x, keras.ops.convert_to_tensor(y)


def load_average() -> list | None:
    """The 1, 5 and 15-minute load averages, or None where unknown."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def batch_sizes_for(
    models: tuple, batch_sizes: Any = None, quick: bool = False
) -> dict:
    """Model -> the batch sizes to time it at.

    Args:
        models: names from `MODELS`.
        batch_sizes: a tuple for every model (``--batch-sizes``), a dict
            model -> tuple, or None for each model's own
            (`MODEL_BATCH_SIZES`, else `BATCH_SIZES`).
        quick: with None, only each model's smallest batch size.

    Returns:
        A dict with a tuple of batch sizes for each of `models`.
    """
    if isinstance(batch_sizes, dict):
        return {m: tuple(batch_sizes[m]) for m in models}
    if batch_sizes is not None:
        return {m: tuple(batch_sizes) for m in models}
    sizes = {m: MODEL_BATCH_SIZES.get(m, BATCH_SIZES) for m in models}
    if quick:
        sizes = {m: (min(s),) for m, s in sizes.items()}
    return sizes


def backend_compilations(labels: tuple | None = None) -> tuple:
    """The running backend's `COMPILATIONS`, only those in `labels` if given.

    Args:
        labels: labels such as ``("default",)``, or None for all but those
            `ON_REQUEST`.

    Returns:
        ``(label, jit_compile)`` pairs, in `COMPILATIONS`' order.
    """
    chosen = COMPILATIONS[keras.backend.backend()]
    if labels is None:
        return tuple(c for c in chosen if c[0] not in ON_REQUEST)
    return tuple(c for c in chosen if c[0] in labels)


def benchmark_model(
    name: str,
    rounds: int,
    round_seconds: float,
    warmup_steps: int,
    batch_size: int = BATCH_SIZE,
    compilations: tuple | None = None,
) -> list[dict]:
    """Step times of the Sparse VD and plain twins of one model, interleaved.

    Every compilation of `COMPILATIONS` for the running backend (or those
    of them named in `compilations`), both twins each, run in alternating
    order round after round.

    Args:
        name: one of `MODELS`.
        rounds: interleaved rounds.
        round_seconds: about how long each variant runs in each round.
        warmup_steps: training steps after the first (compiling) call.
        batch_size: examples per step.
        compilations: labels of `COMPILATIONS` to time (None: all of the
            backend's); a label the backend lacks is skipped.

    Returns:
        One dict per compilation: the SVD and plain figures and the median
        per-round ratio of SVD to plain step time.
    """
    load_at_start = load_average()
    keras.utils.set_random_seed(0)
    x, y = model_batch(name, batch_size)
    compilations = backend_compilations(compilations)
    steps: dict[str, Any] = {}
    first_call: dict[str, float] = {}
    resolved: dict[str, str] = {}
    for label, jit in compilations:
        for kind in ("svd", "plain"):
            key = f"{kind}/{label}"
            model = compiled(name, kind == "svd", jit)

            def step(model: keras.Model = model) -> Any:
                # train_on_batch returns Python floats: the step has finished.
                return model.train_on_batch(x, y)

            start = time.perf_counter()
            step()
            first_call[key] = time.perf_counter() - start
            for _ in range(warmup_steps):
                step()
            steps[key] = step
            resolved[label] = compilation_name(model)
    calls = {
        key: common.calls_per_round(fn, round_seconds) for key, fn in steps.items()
    }
    samples = common.interleaved(steps, calls, rounds)
    results = []
    for label, _ in compilations:
        svd = samples[f"svd/{label}"]
        plain = samples[f"plain/{label}"]
        results.append(
            {
                "backend": keras.backend.backend(),
                "model": name,
                "batch_size": batch_size,
                "compilation": label,
                "compiled_as": resolved[label],
                "svd_ms_per_step": 1e3 * common.median(svd),
                "plain_ms_per_step": 1e3 * common.median(plain),
                # The headline: how many plain steps one SVD step costs.
                "ratio_svd_over_plain": common.paired_ratio(svd, plain),
                # Fastest round of each: a check on the median under load.
                "ratio_best_rounds": min(svd) / min(plain),
                "steps_per_round": {
                    "svd": calls[f"svd/{label}"],
                    "plain": calls[f"plain/{label}"],
                },
                "first_call_s": {
                    "svd": first_call[f"svd/{label}"],
                    "plain": first_call[f"plain/{label}"],
                },
                # Before building and after timing this model and batch size.
                "load_average": {"start": load_at_start, "end": load_average()},
            }
        )
    return results


def run(
    models: tuple = DEFAULT_MODELS,
    rounds: int = DEFAULTS["rounds"],
    round_seconds: float = DEFAULTS["round_seconds"],
    warmup_steps: int = DEFAULTS["warmup_steps"],
    noise: str = "box_muller_normal",
    batch_sizes: Any = None,
    compilations: tuple | None = None,
) -> dict:
    """Runs the benchmark on the current backend; returns its JSON report.

    Args:
        models: names from `MODELS`.
        rounds: interleaved rounds per model and batch size.
        round_seconds: about how long each variant runs in each round.
        warmup_steps: training steps after the first (compiling) call and
            before timing.
        noise: a generator of `benchmarks.noise.GENERATORS` for the Sparse
            VD layers' noise; the default is what the layers use. Any other
            value measures a proposed replacement (see
            `benchmarks.noise.layer_noise`).
        batch_sizes: examples per step, each measured separately: a tuple
            for every model, a dict model -> tuple, or None for each model's
            own (see `batch_sizes_for`).
        compilations: labels of `COMPILATIONS` to time, None for all; on a
            GPU Keras' default is XLA on TensorFlow too, so ``("default",)``
            skips timing the same compilation twice.

    Returns:
        ``{"benchmark", "settings", "environment", "load_average",
        "results"}``; ``results`` holds one dict per model, batch size and
        compilation; ``load_average`` the 1, 5 and 15-minute load averages
        at the start and end of the run.
    """
    started = time.perf_counter()
    load_at_start = load_average()
    per_model = batch_sizes_for(tuple(models), batch_sizes)
    results = []
    with noise_lib.layer_noise(noise):
        for name in models:
            for batch_size in per_model[name]:
                results += benchmark_model(
                    name, rounds, round_seconds, warmup_steps, batch_size, compilations
                )
    return {
        "benchmark": "train_speed",
        "settings": {
            "models": list(models),
            "batch_sizes": sorted({b for sizes in per_model.values() for b in sizes}),
            "batch_sizes_per_model": {m: list(b) for m, b in per_model.items()},
            "real_model_twins": "plain Keras model and ksvd.sparsify(copy of it, "
            "verbose=False), same seed and weights",
            "hub_config": dict(HUB_CONFIG, task="BertTextClassifier"),
            "optimizer": "adam(1e-3)",
            "kl_weight": KL_WEIGHT,
            "vgg_k": VGG_K,
            "vgg_plain_twin": "vgglike(sparse=False) without its Dropout layers",
            "lenet_svd_train_clip": True,
            "svd_noise": noise,
            "compilations": [c[0] for c in backend_compilations(compilations)],
            "step": "model.train_on_batch on one fixed random batch",
            "rounds": rounds,
            "round_seconds": round_seconds,
            "warmup_steps": warmup_steps,
            "ratio": "median over rounds of SVD step time / plain step time, "
            "variants interleaved in alternating order",
        },
        "environment": common.environment(),
        "elapsed_s": time.perf_counter() - started,
        "load_average": {"start": load_at_start, "end": load_average()},
        "note": QUIET_NOTE,
        "results": results,
    }


def available_backends() -> tuple:
    """The backends of `BACKENDS` whose library is installed."""
    modules = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
    return tuple(
        b for b in BACKENDS if importlib.util.find_spec(modules[b]) is not None
    )


def run_backends(backends: tuple, child_args: list) -> dict:
    """`run` on each backend in a fresh process; the reports merged.

    Each backend's table gets its own load average at start and end, under
    ``load_averages``.

    Args:
        backends: names from `BACKENDS`, each run with ``KERAS_BACKEND`` set.
        child_args: command-line arguments passed on to each process.

    Returns:
        The first backend's report with every backend's ``results``, and
        ``environment`` per backend under ``environments``.
    """
    merged: dict = {}
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "report.json")
            env = dict(os.environ, KERAS_BACKEND=backend)
            command = [sys.executable, "-m", "benchmarks.train_speed"]
            command += child_args + ["--backends", backend, "--json", out]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(
                    f"train_speed on {backend} failed:\n{done.stderr[-3000:]}"
                )
            with open(out, encoding="utf-8") as f:
                report = json.load(f)
        if not merged:
            merged = dict(report, results=[], environments={}, load_averages={})
            merged.pop("environment", None)
            merged.pop("load_average", None)
        merged["results"] += report["results"]
        merged["environments"][backend] = report["environment"]
        merged["load_averages"][backend] = report["load_average"]
        merged["elapsed_s"] = merged.get("elapsed_s", 0.0) + report["elapsed_s"]
    merged["settings"]["backends"] = list(backends)
    return merged


def table(report: dict) -> str:
    """The report as a plain-text table, with the load average of each backend.

    Args:
        report: what `run` or `run_backends` returns.

    Returns:
        The table, then one line per backend with its load average at the
        start and end of its run, then `QUIET_NOTE`.
    """
    rows = [
        (
            r["backend"],
            r["model"],
            r["batch_size"],
            r["compiled_as"],
            f"{r['svd_ms_per_step']:.2f}",
            f"{r['plain_ms_per_step']:.2f}",
            f"{r['ratio_svd_over_plain']:.2f}x",
            f"{r['ratio_best_rounds']:.2f}x",
            _load_1min(r.get("load_average", {}).get("start")),
            _load_1min(r.get("load_average", {}).get("end")),
        )
        for r in report["results"]
    ]
    header = (
        "backend",
        "model",
        "batch",
        "compilation",
        "SVD ms/step",
        "plain ms/step",
        "SVD/plain",
        "(best rounds)",
        "load start",
        "load end",
    )
    loads = report.get("load_averages") or {
        report["environment"]["backend"]: report.get("load_average", {})
    }
    lines = [common.format_table(header, rows), ""]
    for backend, load in loads.items():
        lines.append(
            f"{backend}: load average (1, 5, 15 min) at start {load.get('start')}, "
            f"at end {load.get('end')}; {os.cpu_count()} cores."
        )
    lines.append(QUIET_NOTE)
    return "\n".join(lines)


def _load_1min(load: list | None) -> str:
    return "?" if not load else f"{load[0]:.2f}"


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_speed",
        description="Training step time, Sparse VD vs plain Keras layers, per "
        "backend, batch size and compilation.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="LeNet-300-100 (or --models) at its smallest batch size only, 3 "
        "short rounds: a smoke test, not a measurement",
    )
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument(
        "--models",
        default=None,
        help=f"comma-separated subset of {','.join(MODELS)} (default: "
        f"{','.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated subset of tensorflow,jax,torch (default: those "
        "installed); each runs in a process of its own",
    )
    parser.add_argument(
        "--batch-sizes",
        default=None,
        help="comma-separated batch sizes for every model (default: each "
        "model's own: 100,1000; 32 for mobilenetv2, resnet and hub)",
    )
    parser.add_argument(
        "--noise",
        default="box_muller_normal",
        choices=sorted(noise_lib.GENERATORS),
        help="noise generator of the SVD layers (default: what they use); "
        "others measure a proposed replacement",
    )
    parser.add_argument(
        "--compilations",
        default=None,
        help="comma-separated subset of default,xla,compile (default: "
        "default and xla on TensorFlow, default elsewhere; compile, "
        "torch.compile, only when named)",
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--round-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    settings, models = common.settings_and_models(
        parser, args, DEFAULTS, QUICK, MODELS, QUICK_MODELS
    )
    if not args.models and not args.quick:
        models = DEFAULT_MODELS
    backends = _names(parser, "--backends", args.backends, BACKENDS)
    if backends is None:
        backends = ("tensorflow",) if args.quick else available_backends()
    labels = {label for table in COMPILATIONS.values() for label, _ in table}
    compilations = _names(
        parser, "--compilations", args.compilations, tuple(sorted(labels))
    )
    batch_sizes = batch_sizes_for(
        models, _batch_sizes(parser, args.batch_sizes), args.quick
    )
    if backends != (keras.backend.backend(),):
        # Another backend than this process's: one process per backend.
        child = _without(argv, ("--json", "--backends"))
        report = run_backends(backends, child)
    else:
        report = run(
            models,
            noise=args.noise,
            batch_sizes=batch_sizes,
            compilations=compilations,
            **settings,
        )
    print(table(report))
    environments = report.get("environments") or {
        report["environment"]["backend"]: report["environment"]
    }
    env = next(iter(environments.values()))
    print(
        f"\n{env['cpu']}, {env['cpu_count']} cores, Keras {env['keras']}; "
        f"{settings['rounds']} interleaved rounds, {report['elapsed_s']:.0f} s. "
        "SVD/plain: median per-round ratio of step times. SVD layers' noise: "
        f"{args.noise}."
    )
    common.save_report(args.json, report)
    return 0


def _names(parser: Any, flag: str, value: str | None, allowed: tuple) -> Any:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = sorted(set(names) - set(allowed))
    if unknown or not names:
        parser.error(f"{flag}: unknown {unknown}; choose from {','.join(allowed)}")
    return names


def _batch_sizes(parser: Any, value: str | None) -> tuple | None:
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        parser.error(f"--batch-sizes: positive integers, e.g. 100,1000; got {value!r}")
    return sizes


def _without(argv: list, flags: tuple) -> list:
    """`argv` without `flags` and their values (``--flag v`` or ``--flag=v``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in flags:
            skip = True
            continue
        if any(arg.startswith(flag + "=") for flag in flags):
            continue
        kept.append(arg)
    return kept


if __name__ == "__main__":
    sys.exit(main())
