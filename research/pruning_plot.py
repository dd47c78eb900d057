"""Test error against compression: Sparse VD's threshold sweeps, magnitude pruning.

    python -m research.pruning_plot results/lenet*-mnist-svd-seed*.json \\
        results/lenet*-mnist-magnitude-*.json --out benchmarks/results/pruning.png

Reads JSON reports of two kinds, told apart by their keys:

* Sparse VD runs of ``examples.train`` (``"variant": "svd"``): their
  ``threshold_sweep`` (test error and compression of the trained model at
  log alpha thresholds 0 to 5) is drawn as a line per report (per seed);
  the report's own threshold (3, the paper's) is circled.
* Magnitude pruning runs of ``research.magnitude_pruning``
  (``"method": "magnitude_pruning"``): one black marker each, squares for a
  uniform sparsity, stars for Sparse VD's per-layer sparsity, diamonds for
  whole units pruned to a structured Sparse VD run's architecture.

One panel per net, compression on a log axis. Also prints a markdown table of
every report (``--table`` writes it to a file too). Runs under the main
environment (matplotlib); it needs neither TensorFlow nor tfmot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from examples.results_table import schedule_note

NAMES = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5-Caffe"}
NET_ORDER = ("lenet300", "lenet5")
# Marker and size of a magnitude pruning report, by its mode.
MAGNITUDE_MARKERS = {"uniform": ("s", 7), "per_layer": ("*", 13), "units": ("D", 8)}


def read_reports(paths: list) -> tuple[list[dict], list[dict]]:
    """Sparse VD reports with a threshold sweep, and magnitude pruning reports.

    Other JSON files (dense baselines, benchmarks) are skipped.

    Args:
        paths: JSON report files.

    Returns:
        ``(svd_reports, magnitude_reports)``, each report with its ``path``.
    """
    svd, magnitude = [], []
    for path in paths:
        report = json.loads(Path(path).read_text())
        if not isinstance(report, dict):
            continue
        report = {**report, "path": str(path)}
        if report.get("method") == "magnitude_pruning":
            magnitude.append(report)
        elif report.get("variant") == "svd" and report.get("threshold_sweep"):
            svd.append(report)
    return svd, magnitude


def svd_label(report: dict) -> str:
    """Legend text of a Sparse VD sweep: seed, and what sets it apart."""
    options = report.get("options") or {}
    extra = []
    if options.get("structured"):
        extra.append("structured")
    if options.get("init_from"):
        extra.append("from dense")
    # Without the net, which schedule was the paper's is unknown.
    note = (
        schedule_note({"variant": "svd", **report})
        if report.get("model") is not None
        else None
    )
    if note:
        extra.append(note)
    extra.append(f"{report.get('epochs', '?')} ep")
    return f"Sparse VD seed {report.get('seed', '?')} ({', '.join(extra)})"


def svd_labels(reports: list[dict]) -> list[str]:
    """Legend texts of several sweeps, each different from the others.

    Two runs of one recipe and seed (a rerun) get their report's file name.
    """
    labels = [svd_label(r) for r in reports]
    return [
        f"{label} {Path(r['path']).stem}" if labels.count(label) > 1 else label
        for label, r in zip(labels, reports)
    ]


def magnitude_label(report: dict) -> str:
    """Legend text of a magnitude pruning mode."""
    if report.get("mode") == "per_layer":
        return "magnitude, Sparse VD's per-layer sparsity"
    if report.get("mode") == "units":
        return "magnitude, whole units, structured Sparse VD's architecture"
    return "magnitude, uniform sparsity"


def short_run(report: dict) -> str:
    """The text " (N train)" for a run on part of the training set (smoke)."""
    n = report.get("train_examples")
    return f" ({n:,} train)" if n is not None and n < 60000 else ""


def setting(report: dict) -> str:
    """A magnitude run's target in words: the uniform level or its source."""
    if report.get("mode") == "per_layer":
        source = report.get("per_layer_from") or "Sparse VD"
        return f"per layer from {Path(source).name}{short_run(report)}"
    if report.get("mode") == "units":
        units = "-".join(str(u) for u in report.get("units_kept") or [])
        source = Path(report.get("units_from") or "Sparse VD").name
        return f"units {units} from {source}{short_run(report)}"
    targets = list((report.get("target_sparsity_percent") or {}).values())
    text = f"uniform {targets[0]:g}%" if targets else "uniform"
    return text + short_run(report)


def curve_style(index: int) -> tuple[str, str]:
    """Colour and line style of the index-th Sparse VD curve of a panel.

    The colour cycle has ten colours; past them the line is dashed, so that
    no two curves of a panel look the same.
    """
    return f"C{index % 10}", ("-", "--", ":", "-.")[(index // 10) % 4]


def tick_label(low: float, high: float) -> Callable[[float, object], str]:
    """Log-axis tick labels as plain numbers (9, not 9 x 10^0).

    Every tick is labelled on an axis inside one decade, which has (almost) no
    major ticks; on a wider one only 1, 2 and 5 times a power of ten, so that
    the labels do not crowd.
    """
    narrow = high / low < 10

    def label(value: float, _position: object) -> str:
        if value <= 0:
            return ""
        lead = value / 10 ** math.floor(math.log10(value) + 1e-9)
        if narrow or any(abs(lead - keep) < 1e-6 for keep in (1, 2, 5)):
            return f"{value:g}"
        return ""

    return label


def table(svd: list[dict], magnitude: list[dict]) -> str:
    """Markdown table: every report's error, compression and layer sparsity.

    Args:
        svd: Sparse VD reports (at their own threshold).
        magnitude: magnitude pruning reports.
    """
    lines = [
        "| Network | Method | Setting | Seed | Epochs | Error % | Compression "
        "| Sparsity per layer % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for report in svd:
        threshold = (report.get("options") or {}).get("threshold", 3.0)
        text = f"log alpha >= {threshold:g}{short_run(report)}"
        rows.append((report, "Sparse VD", text))
    for report in magnitude:
        rows.append((report, "magnitude", setting(report)))
    rows.sort(
        key=lambda r: (
            NET_ORDER.index(r[0]["model"]) if r[0]["model"] in NET_ORDER else 99,
            r[1] != "Sparse VD",
            r[0]["compression"],
            r[0].get("seed", 0),
        )
    )
    for report, method, text in rows:
        layers = " - ".join(
            f"{v:.1f}" for v in (report.get("per_layer_sparsity") or {}).values()
        )
        lines.append(
            f"| {NAMES.get(report['model'], report['model'])} | {method} | {text} | "
            f"{report.get('seed', '-')} | {report.get('epochs', '-')} | "
            f"{report['test_error_percent']:.2f} | {report['compression']:.1f}x | "
            f"{layers or '-'} |"
        )
    return "\n".join(lines)


def plot(svd: list[dict], magnitude: list[dict], out: str | os.PathLike) -> Path:
    """Draws one panel per net and saves the picture.

    Args:
        svd: Sparse VD reports with ``threshold_sweep``.
        magnitude: magnitude pruning reports.
        out: the PNG file to write.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    nets = [m for m in NET_ORDER if any(r["model"] == m for r in svd + magnitude)]
    nets += sorted(
        {r["model"] for r in svd + magnitude} - set(nets)
    )  # any other net, after the LeNets
    if not nets:
        raise ValueError("No Sparse VD sweep and no magnitude pruning report given.")
    fig, axes = plt.subplots(
        1, len(nets), figsize=(6.0 * len(nets), 4.5), squeeze=False
    )
    for ax, net in zip(axes[0], nets):
        runs = sorted((r for r in svd if r["model"] == net), key=lambda r: r["path"])
        for i, (report, label) in enumerate(zip(runs, svd_labels(runs))):
            sweep = sorted(report["threshold_sweep"], key=lambda p: p["compression"])
            color, linestyle = curve_style(i)
            ax.plot(
                [p["compression"] for p in sweep],
                [p["test_error_percent"] for p in sweep],
                linestyle=linestyle,
                marker=".",
                color=color,
                label=label,
            )
            own = (report.get("options") or {}).get("threshold", 3.0)
            at_own = [p for p in sweep if p["threshold"] == own]
            if at_own:
                ax.plot(
                    at_own[0]["compression"],
                    at_own[0]["test_error_percent"],
                    "o",
                    markersize=9,
                    markerfacecolor="none",
                    color=color,
                )
        labelled = set()
        for report in sorted(
            (r for r in magnitude if r["model"] == net), key=lambda r: r["compression"]
        ):
            label = magnitude_label(report)
            marker, size = MAGNITUDE_MARKERS.get(report.get("mode"), ("s", 7))
            ax.plot(
                report["compression"],
                report["test_error_percent"],
                marker,
                markersize=size,
                # Black, so that no Sparse VD curve from the colour cycle matches.
                color="black",
                label=None if label in labelled else label,
            )
            labelled.add(label)
            if report.get("mode") == "uniform":
                ax.annotate(
                    setting(report).replace("uniform ", ""),
                    (report["compression"], report["test_error_percent"]),
                    textcoords="offset points",
                    xytext=(5, 5),
                    fontsize=8,
                )
        ax.set_xscale("log")
        # Log too: magnitude pruning's errors run to tens of percent, which
        # would flatten Sparse VD's curves near 1-2% on a linear axis.
        ax.set_yscale("log")
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            plain = matplotlib.ticker.FuncFormatter(tick_label(*limits))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(plain)
        ax.set_xlabel("compression (total weights / kept weights)")
        ax.set_ylabel("test error % (log scale)")
        ax.set_title(f"{NAMES.get(net, net)}, MNIST")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list | None = None) -> Path:
    p = argparse.ArgumentParser(
        prog="python -m research.pruning_plot",
        description="Test error against compression: Sparse VD and magnitude pruning.",
    )
    p.add_argument("reports", nargs="+", help="JSON reports of both kinds")
    p.add_argument("--out", default="benchmarks/results/pruning.png")
    p.add_argument("--table", default=None, help="also write the table here")
    args = p.parse_args(argv)
    svd, magnitude = read_reports(args.reports)
    text = table(svd, magnitude)
    print(text)
    if args.table:
        Path(args.table).write_text(text + "\n")
    path = plot(svd, magnitude, args.out)
    print(f"picture: {path}")
    return path


if __name__ == "__main__":
    main()
