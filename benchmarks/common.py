"""What the benchmarks share: interleaved timing, the machine, tables, JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_sparsevd import files


def cpu_model() -> str:
    """The CPU's model name as `lscpu` shows it, or the platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """The machine and the library versions, for the JSON reports."""
    info: dict = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    elif keras.backend.backend() == "jax":
        import jax

        info["jax"] = jax.__version__
        # A GPU figure must say it was one: jax falls back to the CPU silently.
        info["devices"] = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    elif keras.backend.backend() == "torch":
        import torch

        info["torch"] = torch.__version__
        info["gpus"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    try:
        # Other processes compete for the CPU: record how busy it was.
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def seconds_per_call(fn: Callable[[], Any], calls: int) -> float:
    """Wall seconds per call of `fn`, over `calls` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def calls_per_round(fn: Callable[[], Any], target_seconds: float) -> int:
    """How many calls of `fn` (already warm) take about `target_seconds`."""
    # The fastest of three single calls: a call slowed down by a burst of
    # load would make the rounds too short to average anything.
    single = min(seconds_per_call(fn, 1) for _ in range(3))
    return max(1, int(round(target_seconds / max(single, 1e-7))))


def interleaved(
    fns: dict[str, Callable[[], Any]],
    calls: dict[str, int],
    rounds: int,
) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round.

    Within a round every function runs its `calls`, one after another; the
    order is reversed every other round so that no function always runs
    right after the same neighbour. Load that comes and goes therefore hits
    all functions alike, and per-round ratios cancel most of it.

    Args:
        fns: name -> function of no arguments that blocks until its result
            is ready.
        calls: name -> calls per round (see `calls_per_round`).
        rounds: number of rounds.

    Returns:
        name -> list of `rounds` samples of seconds per call.
    """
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            samples[name].append(seconds_per_call(fns[name], calls[name]))
    return samples


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]``."""
    return median([a / b for a, b in zip(numerator, denominator)])


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; the first column left-aligned, the others right."""
    text = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(header))]

    def line(row: list) -> str:
        cells = [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join([row[0].ljust(widths[0])] + cells)

    out = [line(text[0]), "-" * len(line(text[0]))]
    return "\n".join(out + [line(row) for row in text[1:]])


def write_json(path: str | os.PathLike, report: dict) -> None:
    """Writes `report` as indented JSON, creating the folder if needed."""
    # Atomic: a benchmark killed while writing keeps the previous results.
    files.write_text(path, json.dumps(report, indent=2) + "\n")


def save_report(path: str | os.PathLike | None, report: dict) -> None:
    """Writes `report` to `path` (``--json``) and says so; nothing if None."""
    if path:
        write_json(path, report)
        print(f"wrote {path}")


def settings_and_models(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    defaults: dict,
    quick: dict,
    models: tuple,
    quick_models: tuple,
) -> tuple[dict, tuple]:
    """The run settings and models chosen by ``--quick``, ``--models``,
    ``--rounds`` and ``--round-seconds``; an unknown model is a usage error."""
    settings = dict(quick if args.quick else defaults)
    chosen = quick_models if args.quick else models
    if args.models:
        chosen = tuple(m.strip() for m in args.models.split(",") if m.strip())
        unknown = sorted(set(chosen) - set(models))
        if unknown:
            parser.error(f"unknown models {unknown}; choose from {models}")
    if args.rounds is not None:
        settings["rounds"] = max(1, args.rounds)
    if args.round_seconds is not None:
        settings["round_seconds"] = args.round_seconds
    return settings, chosen
