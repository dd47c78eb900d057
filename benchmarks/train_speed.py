"""Training speed of Sparse VD models against the same models from plain layers.

For each of the paper's models (`examples.models`: LeNet-300-100,
LeNet-5-Caffe, VGG-like with k=0.25 on 32x32x3 inputs) and the LSTM on MNIST
rows (`examples.lstm_mnist`: LSTM(128) on 28 steps of 28 pixels, then
Dense(10); `LSTMSVD` and `DenseSVD` against `LSTM` and `Dense`) two twins are built:
one from Sparse VD layers (``sparse=True``) and one from the plain Keras layers
(``sparse=False``). The plain VGG-like twin has its Dropout layers removed, so
both twins have exactly the same layers apart from the Sparse VD ones (the
dense baseline of `examples.models` trains with binary dropout).

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
        [--models lenet300,lenet5,vgglike,lstm] [--rounds N] [--round-seconds S]
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
from examples.train import compilation as compilation_name

MODELS = ("lenet300", "lenet5", "vgglike", "lstm")
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
}
BACKENDS = ("tensorflow", "jax", "torch")
BATCH_SIZES = (100, 1000)
# Per backend: (label, jit_compile) of the compilations to time. "default" is
# what `model.compile` does when the user says nothing.
COMPILATIONS = {
    "tensorflow": (("default", "auto"), ("xla", True)),
    "jax": (("default", "auto"),),
    "torch": (("default", "auto"),),
}

DEFAULTS = {"rounds": 7, "round_seconds": 0.25, "warmup_steps": 2}
QUICK = {"rounds": 3, "round_seconds": 0.1, "warmup_steps": 1}
QUICK_MODELS = ("lenet300",)
DEFAULT_MODELS = ("lenet300", "lenet5")


def build_model(name: str, sparse: bool) -> keras.Model:
    """The Sparse VD (`sparse=True`) or plain twin of one of `MODELS`.

    Args:
        name: ``"lenet300"``, ``"lenet5"``, ``"vgglike"`` (k=0.25, 32x32x3)
            or ``"lstm"`` (LSTM(128) on MNIST rows).
        sparse: build from Sparse VD layers, else from plain Keras layers.

    Returns:
        An uncompiled, built Keras model with 10 classes.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose from {MODELS}.")
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


def benchmark_model(
    name: str,
    rounds: int,
    round_seconds: float,
    warmup_steps: int,
    batch_size: int = BATCH_SIZE,
) -> list[dict]:
    """Step times of the Sparse VD and plain twins of one model, interleaved.

    Every compilation of `COMPILATIONS` for the running backend, both twins
    each, run in alternating order round after round.

    Returns:
        One dict per compilation: the SVD and plain figures and the median
        per-round ratio of SVD to plain step time.
    """
    keras.utils.set_random_seed(0)
    x, y = random_batch(INPUT_SHAPES[name], batch_size)
    compilations = COMPILATIONS[keras.backend.backend()]
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
            }
        )
    return results


def run(
    models: tuple = DEFAULT_MODELS,
    rounds: int = DEFAULTS["rounds"],
    round_seconds: float = DEFAULTS["round_seconds"],
    warmup_steps: int = DEFAULTS["warmup_steps"],
    noise: str = "box_muller_normal",
    batch_sizes: tuple = BATCH_SIZES,
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
        batch_sizes: examples per step, each measured separately.

    Returns:
        ``{"benchmark", "settings", "environment", "results"}``; ``results``
        holds one dict per model, batch size and compilation.
    """
    started = time.perf_counter()
    results = []
    with noise_lib.layer_noise(noise):
        for name in models:
            for batch_size in batch_sizes:
                results += benchmark_model(
                    name, rounds, round_seconds, warmup_steps, batch_size
                )
    return {
        "benchmark": "train_speed",
        "settings": {
            "models": list(models),
            "batch_sizes": list(batch_sizes),
            "optimizer": "adam(1e-3)",
            "kl_weight": KL_WEIGHT,
            "vgg_k": VGG_K,
            "vgg_plain_twin": "vgglike(sparse=False) without its Dropout layers",
            "lenet_svd_train_clip": True,
            "svd_noise": noise,
            "step": "model.train_on_batch on one fixed random batch",
            "rounds": rounds,
            "round_seconds": round_seconds,
            "warmup_steps": warmup_steps,
            "ratio": "median over rounds of SVD step time / plain step time, "
            "variants interleaved in alternating order",
        },
        "environment": common.environment(),
        "elapsed_s": time.perf_counter() - started,
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
            merged = dict(report, results=[], environments={})
            merged.pop("environment", None)
        merged["results"] += report["results"]
        merged["environments"][backend] = report["environment"]
        merged["elapsed_s"] = merged.get("elapsed_s", 0.0) + report["elapsed_s"]
    merged["settings"]["backends"] = list(backends)
    return merged


def table(report: dict) -> str:
    """The report as a plain-text table."""
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
    )
    return common.format_table(header, rows)


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
        help="LeNet-300-100 at batch 100 only, 3 short rounds: a smoke test, "
        "not a measurement",
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
        help="comma-separated batch sizes (default: 100,1000)",
    )
    parser.add_argument(
        "--noise",
        default="box_muller_normal",
        choices=sorted(noise_lib.GENERATORS),
        help="noise generator of the SVD layers (default: what they use); "
        "others measure a proposed replacement",
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
    batch_sizes = _batch_sizes(parser, args.batch_sizes, args.quick)
    if backends != (keras.backend.backend(),):
        # Another backend than this process's: one process per backend.
        child = _without(argv, ("--json", "--backends"))
        report = run_backends(backends, child)
    else:
        report = run(models, noise=args.noise, batch_sizes=batch_sizes, **settings)
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


def _batch_sizes(parser: Any, value: str | None, quick: bool) -> tuple:
    if value is None:
        return (BATCH_SIZE,) if quick else BATCH_SIZES
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
