"""Prints the markdown results table from run reports (report.json files).

python -m examples.results_table results/*.json
python -m examples.results_table --seeds results/lenet5-mnist-svd-seed*.json

With ``--seeds``: one row per net and recipe, with the mean and range over the
seeds of the error and the compression.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAPER = {
    ("lenet300", "dense"): ("1.64", "-", "1x"),
    ("lenet300", "svd"): ("1.92", "98.9 - 97.2 - 62.0", "68x"),
    ("lenet5", "dense"): ("0.80", "-", "1x"),
    ("lenet5", "svd"): ("0.75", "67 - 98 - 99.8 - 95", "280x"),
}
NAMES = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5-Caffe", "vgglike": "VGG-like"}


def row(report: dict) -> str:
    key = (report["model"], report["variant"])
    sparsity = " - ".join(f"{v:.1f}" for v in report["per_layer_sparsity"].values())
    paper = PAPER.get(key, ("", "", ""))
    seconds = report.get("seconds_per_epoch")
    seconds_text = f"{seconds:.1f}" if seconds else "-"
    return (
        f"| {NAMES.get(report['model'], report['model'])} | "
        f"{'Sparse VD' if report['variant'] == 'svd' else 'dense'} | "
        f"{report.get('seed', '-')} | "
        f"{report['epochs']} | {report['test_error_percent']:.2f} | "
        f"{sparsity or '-'} | {report['compression']:.1f}x | "
        f"{paper[0]} | {paper[1]} | {paper[2]} | {seconds_text} |"
    )


def sweep_table(report: dict) -> str:
    """Error and compression of one trained model at several thresholds."""
    lines = [
        f"{NAMES.get(report['model'], report['model'])}, Sparse VD, "
        f"seed {report.get('seed', '-')}:",
        "",
        "| threshold | error % | compression |",
        "|---|---|---|",
    ]
    for point in report.get("threshold_sweep", []):
        lines.append(
            f"| {point['threshold']:g} | {point['test_error_percent']:.2f} | "
            f"{point['compression']:.1f}x |"
        )
    return "\n".join(lines)


def schedule_note(report: dict) -> str | None:
    """``"<schedule> lr"`` when a run's lr schedule is not the paper's, else None."""
    # Imported here: examples.train loads Keras, which reading reports does not need.
    from examples.train import paper_lr_schedule

    pretrained = bool((report.get("options") or {}).get("init_from"))
    paper = paper_lr_schedule(report["model"], report["variant"], pretrained)
    # Reports written before the schedule was recorded used the paper's.
    schedule = report.get("lr_schedule", paper)
    return None if schedule == paper else f"{schedule} lr"


def recipe(report: dict) -> str:
    """What distinguishes a run's training from the paper's, in words."""
    options = report.get("options", {})
    words = ["Sparse VD" if report["variant"] == "svd" else "dense"]
    if options.get("structured"):
        words.append("structured")
    if options.get("init_from"):
        words.append("dense start")
    if options.get("log_sigma2_init") is not None:
        words.append(f"log sigma2 init {options['log_sigma2_init']:g}")
    note = schedule_note(report)
    if note:
        words.append(note)
    return ", ".join(words)


def seed_summary(reports: list[dict]) -> str:
    """Mean and range over seeds of each (net, recipe, epochs)."""
    groups: dict[tuple, list[dict]] = {}
    for report in reports:
        key = (report["model"], recipe(report), report["epochs"])
        groups.setdefault(key, []).append(report)
    lines = [
        "| Network | Recipe | Epochs | Seeds | Error % mean | Error % range "
        "| Compression mean | Compression range |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (model, name, epochs), runs in sorted(groups.items()):
        runs.sort(key=lambda r: r.get("seed", 0))
        errors = [r["test_error_percent"] for r in runs]
        compressions = [r["compression"] for r in runs]
        lines.append(
            f"| {NAMES.get(model, model)} | {name} | {epochs} | "
            f"{', '.join(str(r.get('seed', '-')) for r in runs)} | "
            f"{sum(errors) / len(errors):.2f} | "
            f"{min(errors):.2f}-{max(errors):.2f} | "
            f"{sum(compressions) / len(compressions):.1f}x | "
            f"{min(compressions):.1f}-{max(compressions):.1f}x |"
        )
    return "\n".join(lines)


def main(paths: list, seeds: bool = False) -> str:
    """The table of `paths`' reports; with `seeds`, their mean and range."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    # Reports of examples.train only (examples.transformer writes others).
    reports = [r for r in reports if "model" in r and "variant" in r]
    if seeds:
        return seed_summary(reports)
    lines = [
        "| Network | Method | Seed | Epochs | Error % | Sparsity per layer % "
        "| Compression | Paper error % | Paper sparsity % | Paper compression "
        "| s / epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reports.sort(key=lambda r: (r["model"], r["variant"] == "svd", r.get("seed", 0)))
    lines += [row(r) for r in reports]
    for report in reports:
        if report.get("threshold_sweep"):
            lines += ["", sweep_table(report)]
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    print(main([a for a in args if a != "--seeds"], seeds="--seeds" in args))
