"""Training speed of Sparse VD models against the same models from plain layers.

For each of the paper's models (`examples.models`: LeNet-300-100,
LeNet-5-Caffe, VGG-like with k=0.25 on 32x32x3 inputs) two twins are built:
one from Sparse VD layers (``sparse=True``) and one from the plain Keras layers
(``sparse=False``). The plain VGG-like twin has its Dropout layers removed, so
both twins have exactly the same layers apart from the Sparse VD ones (the
dense baseline of `examples.models` trains with binary dropout).

Each twin is compiled with Adam and sparse categorical cross-entropy (no
metrics), once with ``jit_compile=False`` and once with ``jit_compile=True``,
and trained with ``model.train_on_batch`` on one fixed random batch of 100
examples. The Sparse VD twins get ``set_kl_weight(model, 1 / 60000)`` (the KL
term is on, as after the warm-up of the paper's schedule). After a warm-up
(tracing and compilation), the four variants of a model run interleaved, in
alternating order, for a number of rounds; the figures are medians over the
rounds, and the ratio is the median of the per-round ratios of SVD step time
to plain step time.

Usage:

    python -m benchmarks.train_speed [--quick] [--json OUT.json]
        [--models lenet300,lenet5,vgglike] [--rounds N] [--round-seconds S]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import keras
import numpy as np

import keras_sparsevd as ksvd
from benchmarks import common
from benchmarks import noise as noise_lib
from examples import models as zoo

MODELS = ("lenet300", "lenet5", "vgglike")
BATCH_SIZE = 100
NUM_CLASSES = 10
# rw / N with the KL warm-up finished (rw = 1) and N = 60,000 MNIST examples.
KL_WEIGHT = 1.0 / 60000
VGG_K = 0.25
INPUT_SHAPES = {"lenet300": (28, 28, 1), "lenet5": (28, 28, 1), "vgglike": (32, 32, 3)}
VARIANTS = (("svd", False), ("plain", False), ("svd", True), ("plain", True))

DEFAULTS = {"rounds": 7, "round_seconds": 0.25, "warmup_steps": 2}
QUICK = {"rounds": 3, "round_seconds": 0.1, "warmup_steps": 1}
QUICK_MODELS = ("lenet300",)


def build_model(name: str, sparse: bool) -> keras.Model:
    """The Sparse VD (`sparse=True`) or plain twin of one of `MODELS`.

    Args:
        name: ``"lenet300"``, ``"lenet5"`` or ``"vgglike"`` (k=0.25, 32x32x3).
        sparse: build from Sparse VD layers, else from plain Keras layers.

    Returns:
        An uncompiled, built Keras model with 10 classes.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose from {MODELS}.")
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


def compiled(name: str, sparse: bool, jit_compile: bool) -> keras.Model:
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
    """Steps per second of the four variants of one model, interleaved.

    Returns:
        One dict per ``jit_compile`` setting: the SVD and plain figures and
        the median per-round ratio of SVD to plain step time.
    """
    keras.utils.set_random_seed(0)
    x, y = random_batch(INPUT_SHAPES[name], batch_size)
    steps: dict[str, Any] = {}
    first_call: dict[str, float] = {}
    for kind, jit in VARIANTS:
        key = _key(kind, jit)
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
    calls = {
        key: common.calls_per_round(fn, round_seconds) for key, fn in steps.items()
    }
    samples = common.interleaved(steps, calls, rounds)
    results = []
    for jit in (False, True):
        svd = samples[_key("svd", jit)]
        plain = samples[_key("plain", jit)]
        results.append(
            {
                "model": name,
                "jit_compile": jit,
                "svd_steps_per_s": 1.0 / common.median(svd),
                "plain_steps_per_s": 1.0 / common.median(plain),
                "svd_ms_per_step": 1e3 * common.median(svd),
                "plain_ms_per_step": 1e3 * common.median(plain),
                # The headline: how many plain steps one SVD step costs.
                "ratio_svd_over_plain": common.paired_ratio(svd, plain),
                # Fastest round of each: a check on the median under load.
                "ratio_best_rounds": min(svd) / min(plain),
                "steps_per_round": {
                    "svd": calls[_key("svd", jit)],
                    "plain": calls[_key("plain", jit)],
                },
                "first_call_s": {
                    "svd": first_call[_key("svd", jit)],
                    "plain": first_call[_key("plain", jit)],
                },
            }
        )
    return results


def _key(kind: str, jit: bool) -> str:
    return f"{kind}/{'jit' if jit else 'nojit'}"


def run(
    models: tuple = MODELS,
    rounds: int = DEFAULTS["rounds"],
    round_seconds: float = DEFAULTS["round_seconds"],
    warmup_steps: int = DEFAULTS["warmup_steps"],
    noise: str = "box_muller_normal",
    batch_size: int = BATCH_SIZE,
) -> dict:
    """Runs the benchmark and returns its JSON-serialisable report.

    Args:
        models: names from `MODELS`.
        rounds: interleaved rounds per model.
        round_seconds: about how long each variant runs in each round.
        warmup_steps: training steps after the first (compiling) call and
            before timing.
        noise: a generator of `benchmarks.noise.GENERATORS` for the Sparse
            VD layers' noise; the default is what the layers use. Any other
            value measures a proposed replacement (see
            `benchmarks.noise.layer_noise`).
        batch_size: examples per step (the paper's 100 by default).

    Returns:
        ``{"benchmark", "settings", "environment", "results"}``; ``results``
        holds one dict per model and ``jit_compile`` setting.
    """
    started = time.perf_counter()
    results = []
    with noise_lib.layer_noise(noise):
        for name in models:
            results += benchmark_model(
                name, rounds, round_seconds, warmup_steps, batch_size
            )
    return {
        "benchmark": "train_speed",
        "settings": {
            "models": list(models),
            "batch_size": batch_size,
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


def table(report: dict) -> str:
    """The report as a plain-text table."""
    rows = [
        (
            r["model"],
            "yes" if r["jit_compile"] else "no",
            f"{r['svd_steps_per_s']:.1f}",
            f"{r['plain_steps_per_s']:.1f}",
            f"{r['svd_ms_per_step']:.2f}",
            f"{r['plain_ms_per_step']:.2f}",
            f"{r['ratio_svd_over_plain']:.2f}x",
            f"{r['ratio_best_rounds']:.2f}x",
        )
        for r in report["results"]
    ]
    header = (
        "model",
        "jit",
        "SVD steps/s",
        "plain steps/s",
        "SVD ms",
        "plain ms",
        "SVD/plain",
        "(best rounds)",
    )
    return common.format_table(header, rows)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_speed",
        description="Training steps per second, Sparse VD vs plain Keras layers.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="LeNet-300-100 only, 3 short rounds: a smoke test, not a measurement",
    )
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument(
        "--models", default=None, help=f"comma-separated subset of {','.join(MODELS)}"
    )
    parser.add_argument(
        "--noise",
        default="box_muller_normal",
        choices=sorted(noise_lib.GENERATORS),
        help="noise generator of the SVD layers (default: what they use); "
        "others measure a proposed replacement",
    )
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--round-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    settings, models = common.settings_and_models(
        parser, args, DEFAULTS, QUICK, MODELS, QUICK_MODELS
    )
    report = run(models, noise=args.noise, batch_size=args.batch_size, **settings)
    print(table(report))
    env = report["environment"]
    print(
        f"\n{env['cpu']}, {env['cpu_count']} cores, TF {env.get('tensorflow')}, "
        f"Keras {env['keras']}; batch {args.batch_size}, "
        f"{settings['rounds']} interleaved rounds, "
        f"{report['elapsed_s']:.0f} s. SVD/plain: median per-round ratio of "
        f"step times. SVD layers' noise: {args.noise}."
    )
    common.save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
