"""Prints the markdown results table from run reports (report.json files).

python -m examples.results_table results/*.json
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


def main(paths: list) -> str:
    lines = [
        "| Network | Method | Seed | Epochs | Error % | Sparsity per layer % "
        "| Compression | Paper error % | Paper sparsity % | Paper compression "
        "| s / epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reports = [json.loads(Path(p).read_text()) for p in paths]
    # Reports of examples.train only (examples.transformer writes others).
    reports = [r for r in reports if "model" in r and "variant" in r]
    reports.sort(key=lambda r: (r["model"], r["variant"] == "svd", r.get("seed", 0)))
    lines += [row(r) for r in reports]
    for report in reports:
        if report.get("threshold_sweep"):
            lines += ["", sweep_table(report)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
