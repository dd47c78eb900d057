"""Where a Sparse VD training step's extra time goes, by removing parts of it.

`benchmarks.train_speed` gives the ratio of a Sparse VD step to a plain
step. This script splits the difference, on whatever backend is running
(``KERAS_BACKEND``), with Keras' default compilation. Beside the plain and
the Sparse VD twins of `benchmarks.train_speed` it times three Sparse VD
variants that skip part of the work (so they train wrongly; they exist only
to be timed):

- ``no noise``: the layers' standard normal draws replaced by zeros, so the
  generator and its transform cost nothing (the ``sqrt(var) * eps`` product
  stays);
- ``no per-weight terms``: `training_terms` replaced by the least a layer
  with a posterior must do: mean kernel ``theta``, variance kernel
  ``exp(log_sigma2)``, KL 0, so that log alpha, the mask, the KL and their
  gradients are gone but both variables still get gradients and optimizer
  updates;
- ``neither``: both.

One more variant trains exactly like ``svd``: ``autodiff terms`` computes the
per-weight terms with the plain expressions (`keras_sparsevd.kl.kl_divergence`
on the clipped log alpha) and lets automatic differentiation find their
gradient, as the layers did before `training_terms`; against ``svd`` it
measures what the fused, hand-differentiated version saves.

What ``neither`` still costs over the plain step is the method's floor here:
the second (variance) product, forward and backward, the noise's
``mean + sqrt(var) * eps`` and the optimizer state and update of the
``log_sigma2`` variables, as many as the weights. All variants run
interleaved in one process; ratios are medians of per-round ratios to the
plain step.

Usage:

    KERAS_BACKEND=jax python -m research.step_breakdown [--models lenet300,lenet5]
        [--batch-size 100] [--rounds 7] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import keras
from keras import ops

import keras_sparsevd.layers.base as layer_base
from benchmarks import common
from benchmarks import train_speed as ts
from keras_sparsevd.kl import kl_divergence

VARIANTS = (
    "plain",
    "svd",
    "autodiff terms",
    "no noise",
    "no per-weight terms",
    "neither",
)


def _zeros(shape: tuple, seed: Any) -> Any:
    return ops.zeros(shape, "float32")


def _least_terms(theta: Any, log_sigma2: Any, threshold: float, clip: bool) -> tuple:
    return theta, ops.exp(log_sigma2), ops.sum(log_sigma2) * 0.0


def _autodiff_terms(theta: Any, log_sigma2: Any, threshold: float, clip: bool) -> tuple:
    log_alpha = layer_base._clipped_log_alpha(theta, log_sigma2)
    keep = ops.cast(ops.less(log_alpha, threshold), "float32")
    mean = theta * keep if clip else theta
    variance = ops.exp(log_alpha) * ops.square(theta)
    return mean, variance, ops.sum(kl_divergence(log_alpha))


@contextlib.contextmanager
def _variant(name: str) -> Iterator[None]:
    """Patches the layers for `name` while its model is built and traced."""
    noise, terms = layer_base.standard_normal, layer_base.training_terms
    if name in ("no noise", "neither"):
        layer_base.standard_normal = _zeros
    if name in ("no per-weight terms", "neither"):
        layer_base.training_terms = _least_terms
    if name == "autodiff terms":
        layer_base.training_terms = _autodiff_terms
    try:
        yield
    finally:
        layer_base.standard_normal, layer_base.training_terms = noise, terms


def breakdown(name: str, batch_size: int, rounds: int, round_seconds: float) -> dict:
    """Median step time of every variant of one model, and each one's ratio.

    Args:
        name: a model of `benchmarks.train_speed.MODELS`.
        batch_size: examples per step.
        rounds: interleaved rounds.
        round_seconds: about how long each variant runs per round.
    """
    keras.utils.set_random_seed(0)
    x, y = ts.model_batch(name, batch_size)
    steps = {}
    for variant in VARIANTS:
        with _variant(variant):
            model = ts.compiled(name, variant != "plain", "auto")
            # Traced here, inside the patch: later calls keep what they traced.
            model.train_on_batch(x, y)
            model.train_on_batch(x, y)
        steps[variant] = lambda model=model: model.train_on_batch(x, y)
    calls = {k: common.calls_per_round(fn, round_seconds) for k, fn in steps.items()}
    samples = common.interleaved(steps, calls, rounds)
    return {
        "model": name,
        "batch_size": batch_size,
        "ms_per_step": {k: 1e3 * common.median(v) for k, v in samples.items()},
        "ratio_to_plain": {
            k: common.paired_ratio(v, samples["plain"]) for k, v in samples.items()
        },
    }


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m research.step_breakdown",
        description="Sparse VD step time with parts removed, against plain.",
    )
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--batch-size", type=int, default=ts.BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--round-seconds", type=float, default=0.3)
    parser.add_argument("--json", default=None, help="write the report here")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(ts.MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {ts.MODELS}")
    started = time.perf_counter()
    results = [
        breakdown(m, args.batch_size, args.rounds, args.round_seconds) for m in models
    ]
    rows = [
        (r["model"], v, f"{r['ms_per_step'][v]:.2f}", f"{r['ratio_to_plain'][v]:.2f}x")
        for r in results
        for v in VARIANTS
    ]
    print(common.format_table(("model", "variant", "ms/step", "vs plain"), rows))
    print(
        f"\n{keras.backend.backend()}, Keras' default compilation, batch "
        f"{args.batch_size}, {args.rounds} interleaved rounds."
    )
    report = {
        "benchmark": "step_breakdown",
        "settings": vars(args),
        "environment": common.environment(),
        "elapsed_s": time.perf_counter() - started,
        "results": results,
    }
    common.save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
