"""The cost of the training noise, and a cheaper standard normal generator.

The training pass of a Sparse VD layer draws ``eps ~ N(0, 1)`` with the shape
of its output, fresh per element and per step. On TensorFlow this is
``keras.random.normal`` -> ``tf.random.stateless_normal``. Under XLA on CPU
(``jit_compile=True``) that one draw costs tens of times what it costs
without XLA: XLA inlines the Philox generator of a lone stateless draw into
the fusion that consumes it and recomputes the generator's 4-word block for
every output element, in scalar code. The profile of a jit-compiled
LeNet-5 training step shows those fusions (``bitcast_concatenate_fusion``)
above every convolution.

`box_muller_normal` is a backend-agnostic replacement built from two
``keras.random.uniform`` draws of the same shape: XLA gives the two draws one
shared generator computation, which it keeps out of line and vectorises, and
each pair of uniforms gives two independent normals (the Box-Muller
transform, as TensorFlow's own CPU kernel does it), so only half as many
random words are drawn. Two variants on the same two draws are measured as
well: `box_muller_poly` (polynomial cosine and sine, since XLA's CPU trig
functions are scalar library calls) and `inverse_cdf_pair` (``erfinv``,
``"erfinv_pair"``); both are faster under XLA and slower without it.

Usage:

    python -m research.noise [--quick] [--json OUT.json]

times the generators on the noise shapes of LeNet-300-100 and LeNet-5 (the
draw alone, and inside the layer's forward and backward computation), with
and without XLA, interleaved; and checks that the generators of `CHECKED`
are N(0, 1): mean, variance, skewness, excess kurtosis, tail frequencies, the
Kolmogorov-Smirnov statistic against the normal CDF, the correlation of the
two halves of each pair, and freshness from one call to the next.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from benchmarks import common
from benchmarks.noise import GENERATORS

# Noise shapes of the benchmarked models at batch 100: LeNet-5's conv1 and
# conv2 outputs, LeNet-300-100's fc1 output.
SHAPES = {
    "lenet5_conv1": (100, 24, 24, 20),
    "lenet5_conv2": (100, 8, 8, 50),
    "lenet300_fc1": (100, 300),
}
QUICK_SHAPES = ("lenet300_fc1",)
STATS_SAMPLES = 2_000_000
QUICK_STATS_SAMPLES = 200_000


# Generators whose output the statistical check covers.
CHECKED = ("keras.random.normal", "box_muller_normal", "box_muller_poly", "erfinv_pair")


def _compiled(fn: Callable, jit_compile: bool) -> Callable:
    """`fn` traced once, with or without XLA (TensorFlow backend)."""
    import tensorflow as tf

    return tf.function(fn, jit_compile=jit_compile)


def _to_numpy(result: Any) -> Any:
    return (
        [ops.convert_to_numpy(t) for t in result]
        if isinstance(result, (list, tuple))
        else ops.convert_to_numpy(result)
    )


def timing_functions(shape: tuple, jit_compile: bool) -> dict[str, Callable]:
    """Per generator: the draw alone and the layer's use of it, compiled.

    "draw" returns the noise itself. "layer" is what a training step does
    with it: ``relu(mean + sqrt(var + 1e-8) * eps)`` and the gradient of a
    loss with respect to ``mean`` and ``var`` (the backward pass needs the
    noise again, which XLA may recompute).
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    mean = tf.constant(rng.standard_normal(shape, dtype=np.float32))
    var = tf.constant(rng.random(shape, dtype=np.float32))
    fns = {}
    for name, generate in GENERATORS.items():
        seed = keras.random.SeedGenerator(1)

        def draw(generate: Callable = generate, seed: Any = seed) -> Any:
            return generate(shape, seed)

        def layer(m: Any, v: Any, generate: Callable = generate, seed: Any = seed):
            with tf.GradientTape() as tape:
                tape.watch([m, v])
                out = ops.relu(m + ops.sqrt(v + 1e-8) * generate(shape, seed))
                loss = ops.sum(ops.square(out))
            return tape.gradient(loss, [m, v])

        draw_fn = _compiled(draw, jit_compile)
        layer_fn = _compiled(layer, jit_compile)
        fns[f"{name}/draw"] = lambda f=draw_fn: _to_numpy(f())
        fns[f"{name}/layer"] = lambda f=layer_fn: _to_numpy(f(mean, var))
    return fns


def time_generators(shapes: dict, rounds: int, round_seconds: float) -> list[dict]:
    """Milliseconds per call of every generator, jit and not, interleaved."""
    results = []
    for shape_name, shape in shapes.items():
        fns = {}
        for jit in (False, True):
            for key, fn in timing_functions(shape, jit).items():
                fns[f"{key}/{'jit' if jit else 'nojit'}"] = fn
        for fn in fns.values():
            fn()  # trace and compile
        calls = {
            key: common.calls_per_round(fn, round_seconds) for key, fn in fns.items()
        }
        samples = common.interleaved(fns, calls, rounds)
        for key, times in samples.items():
            name, use, jit = key.rsplit("/", 2)
            reference = samples[f"keras.random.normal/{use}/nojit"]
            results.append(
                {
                    "shape_name": shape_name,
                    "shape": list(shape),
                    "generator": name,
                    "use": use,
                    "jit_compile": jit == "jit",
                    "ms": 1e3 * common.median(times),
                    # Against today's noise without XLA, per round.
                    "ratio_vs_keras_normal_nojit": common.paired_ratio(
                        times, reference
                    ),
                }
            )
    return results


def normal_statistics(samples: np.ndarray) -> dict:
    """Moments, tails and Kolmogorov-Smirnov statistic against N(0, 1)."""
    z = np.asarray(samples, dtype=np.float64).ravel()
    n = z.size
    mean = float(z.mean())
    var = float(z.var())
    centred = z - mean
    skewness = float(np.mean(centred**3) / var**1.5)
    kurtosis = float(np.mean(centred**4) / var**2 - 3.0)
    ordered = np.sort(z)
    # Normal CDF via erf, vectorised through keras.ops (float64 numpy in).
    cdf = 0.5 * (
        1.0 + np.asarray(ops.convert_to_numpy(ops.erf(ordered / math.sqrt(2))))
    )
    upper = np.arange(1, n + 1) / n
    lower = np.arange(0, n) / n
    ks = float(max(np.max(upper - cdf), np.max(cdf - lower)))
    tails = {}
    for k in (1, 2, 3, 4):
        expected = math.erfc(k / math.sqrt(2.0))
        tails[f"P(|z|>{k})"] = {
            "observed": float(np.mean(np.abs(z) > k)),
            "expected": expected,
        }
    return {
        "n": n,
        "mean": mean,
        "variance": var,
        "skewness": skewness,
        "excess_kurtosis": kurtosis,
        "ks_statistic": ks,
        # Kolmogorov's 1% critical value: a true N(0, 1) sample exceeds it
        # once in a hundred tries.
        "ks_critical_1pct": 1.628 / math.sqrt(n),
        "max_abs": float(np.max(np.abs(z))),
        "tails": tails,
    }


def check_generator(generate: Callable, n: int, jit_compile: bool) -> dict:
    """Statistics of `generate` as a training step would call it.

    Draws with a traced function (so a seed that failed to advance would
    repeat itself) twice, checks the two draws differ and are uncorrelated,
    and measures the correlation between the two halves of the output
    (for `box_muller_normal`, the cosine and the sine of the same pairs).
    """
    # An odd size (odd x odd) checks the dropped last value of the pairs.
    shape = ((n // 101) | 1, 101)
    seed = keras.random.SeedGenerator(1234)
    draw = _compiled(lambda: generate(shape, seed), jit_compile)
    first = np.asarray(ops.convert_to_numpy(draw())).ravel()
    second = np.asarray(ops.convert_to_numpy(draw())).ravel()
    stats = normal_statistics(first)
    half = first.size // 2
    stats["corr_first_half_vs_second_half"] = float(
        np.corrcoef(first[:half], first[half : 2 * half])[0, 1]
    )
    stats["corr_consecutive_calls"] = float(np.corrcoef(first, second)[0, 1])
    stats["fraction_equal_consecutive_calls"] = float(np.mean(first == second))
    stats["jit_compile"] = jit_compile
    return stats


def run(
    shapes: tuple = tuple(SHAPES),
    rounds: int = 7,
    round_seconds: float = 0.2,
    stats_samples: int = STATS_SAMPLES,
) -> dict:
    """Times the generators and checks the proposed one; a JSON report."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("research.noise times tf.function/XLA: TF backend only.")
    started = time.perf_counter()
    timings = time_generators({s: SHAPES[s] for s in shapes}, rounds, round_seconds)
    stats = {
        name: [
            check_generator(GENERATORS[name], stats_samples, jit)
            for jit in (False, True)
        ]
        for name in CHECKED
    }
    return {
        "benchmark": "noise",
        "settings": {
            "rounds": rounds,
            "round_seconds": round_seconds,
            "uses": {
                "draw": "the noise tensor alone",
                "layer": "relu(mean + sqrt(var + 1e-8) * eps) and its gradient "
                "with respect to mean and var",
            },
        },
        "environment": common.environment(),
        "elapsed_s": time.perf_counter() - started,
        "timings": timings,
        "statistics": stats,
    }


def tables(report: dict) -> str:
    """Timing table and statistics table as text."""
    by_key = {
        (r["shape_name"], r["generator"], r["use"], r["jit_compile"]): r
        for r in report["timings"]
    }
    rows = []
    for shape_name, generator, use, jit_compile in by_key:
        if jit_compile:
            continue
        plain = by_key[(shape_name, generator, use, False)]
        jit = by_key[(shape_name, generator, use, True)]
        rows.append(
            (
                f"{shape_name} {use}",
                generator,
                f"{plain['ms']:.2f}",
                f"{jit['ms']:.2f}",
                f"{plain['ratio_vs_keras_normal_nojit']:.2f}x",
                f"{jit['ratio_vs_keras_normal_nojit']:.2f}x",
            )
        )
    timing = common.format_table(
        ("shape, use", "generator", "ms", "ms (jit)", "vs today", "vs today (jit)"),
        rows,
    )
    stat_rows = []
    for name, entries in report["statistics"].items():
        for s in entries:
            stat_rows.append(
                (
                    f"{name}{' (jit)' if s['jit_compile'] else ''}",
                    f"{s['mean']:+.4f}",
                    f"{s['variance']:.4f}",
                    f"{s['skewness']:+.4f}",
                    f"{s['excess_kurtosis']:+.4f}",
                    f"{s['ks_statistic']:.5f} (<{s['ks_critical_1pct']:.5f})",
                    f"{s['tails']['P(|z|>3)']['observed']:.5f}",
                    f"{s['corr_first_half_vs_second_half']:+.4f}",
                    f"{s['corr_consecutive_calls']:+.4f}",
                )
            )
    stats = common.format_table(
        (
            "generator",
            "mean",
            "var",
            "skew",
            "ex.kurt",
            "KS (1% crit.)",
            "P(|z|>3)",
            "corr halves",
            "corr calls",
        ),
        stat_rows,
    )
    return (
        "'vs today': median per-round ratio to keras.random.normal without XLA\n"
        f"{timing}\n\nN(0, 1) check (P(|z|>3) should be 0.00270):\n{stats}"
    )


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m research.noise",
        description="Cost of the training noise, with and without XLA.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one shape, few samples: a smoke test"
    )
    parser.add_argument("--json", default=None, help="write the report here")
    args = parser.parse_args(argv)
    if args.quick:
        report = run(QUICK_SHAPES, 3, 0.05, QUICK_STATS_SAMPLES)
    else:
        report = run()
    print(tables(report))
    print(f"\n{report['elapsed_s']:.0f} s")
    common.save_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
