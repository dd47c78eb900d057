"""Pictures of a run: curves per epoch and the learned masks."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np

from keras_sparsevd import files
from keras_sparsevd.model_helpers import svd_layers


def read_history(path: Path) -> dict:
    """The columns of a CSVLogger file as lists of floats."""
    columns: dict = {}
    if not Path(path).exists():
        return columns
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    pass
    return columns


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no pictures (pip install '.[examples]').")
        return None
    return plt


def save_all(out: Path, model: keras.Model, history: dict) -> list:
    """Writes curves.png and, for Sparse VD models, masks.png into `out`."""
    plt = _pyplot()
    if plt is None:
        return []
    written = [save_curves(plt, out / "curves.png", history)]
    if svd_layers(model):
        written.append(save_masks(plt, out / "masks.png", model))
    return written


def save_curves(plt, path: Path, history: dict) -> Path:
    epochs = np.arange(1, len(history.get("epoch", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if "test_error" in history:
        axes[0].plot(epochs, history["test_error"], label="test error")
    if "accuracy" in history:
        axes[0].plot(
            epochs,
            100 * (1 - np.asarray(history["accuracy"])),
            label="train error (with noise)",
        )
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("error, %")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    layer_keys = [k for k in history if k.startswith("sparsity/")]
    for key in layer_keys:
        axes[1].plot(epochs, 100 * np.asarray(history[key]), label=key[9:])
    if "sparsity" in history:
        axes[1].plot(
            epochs, 100 * np.asarray(history["sparsity"]), "k--", label="all weights"
        )
        ax2 = axes[1].twinx()
        ax2.plot(epochs, history["compression"], color="tab:gray", alpha=0.6)
        ax2.set_ylabel("compression (x, grey)")
        ax2.set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("pruned weights, %")
    if layer_keys:
        axes[1].legend(loc="lower right", fontsize=8)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def save_masks(plt, path: Path, model: keras.Model) -> Path:
    """The first conv layer's filters and the first dense layer's mask."""
    layers = svd_layers(model)
    conv = next((lay for lay in layers if len(lay.kernel.shape) == 4), None)
    dense = next((lay for lay in layers if len(lay.kernel.shape) == 2), None)
    panels = int(conv is not None) + int(dense is not None) * 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 5.4), squeeze=False)
    axes = list(axes[0])
    if conv is not None:
        w = keras.ops.convert_to_numpy(conv.kernel) * keras.ops.convert_to_numpy(
            conv.kernel_mask
        )
        kh, kw, cin, cout = w.shape
        w = w[:, :, 0, :]  # first input channel
        cols = int(np.ceil(np.sqrt(cout)))
        rows = int(np.ceil(cout / cols))
        grid = np.full((rows * (kh + 1), cols * (kw + 1)), np.nan)
        for i in range(cout):
            r, c = divmod(i, cols)
            grid[r * (kh + 1) : r * (kh + 1) + kh, c * (kw + 1) : c * (kw + 1) + kw] = (
                w[..., i]
            )
        ax = axes.pop(0)
        lim = np.nanmax(np.abs(grid)) or 1.0
        ax.imshow(grid, cmap="bwr", vmin=-lim, vmax=lim)
        ax.set_title(f"{conv.name}: kept weights of its {cout} filters", fontsize=10)
        ax.axis("off")
    if dense is not None:
        mask = keras.ops.convert_to_numpy(dense.kernel_mask)
        # The 100 consecutive inputs with the most kept weights: the first
        # rows of an image layer are its empty border, all pruned.
        rows = min(100, mask.shape[0])
        kept_rows = np.concatenate([[0], np.cumsum(mask[:, :100].sum(axis=1))])
        start = int(np.argmax(kept_rows[rows:] - kept_rows[:-rows]))
        block = mask[start : start + rows, :100]
        ax = axes.pop(0)
        ax.imshow(
            block,
            cmap="gray_r",
            interpolation="nearest",
            extent=(0, block.shape[1], start + rows, start),
        )
        ax.set_title(f"{dense.name}: mask (black = kept)", fontsize=10)
        ax.set_xlabel("output unit")
        ax.set_ylabel("input")
        ax = axes.pop(0)
        per_input = mask.sum(axis=1)
        side = int(np.sqrt(per_input.size))
        if side * side == per_input.size:
            ax.imshow(per_input.reshape(side, side), cmap="viridis")
            ax.set_title(f"{dense.name}: kept weights per input pixel", fontsize=10)
            ax.axis("off")
        else:
            ax.bar(np.arange(per_input.size), per_input, width=1.0)
            ax.set_title(f"{dense.name}: kept weights per input")
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def kept_architecture(model: keras.Model) -> list[tuple[str, int, int]]:
    """``(name, before, kept)``: the inputs read, then each layer's units or filters.

    The first row is the inputs the first Sparse VD layer reads (pixels, or
    channels of a convolution); then, for every Sparse VD layer, its units
    (filters) in `model` and in ``compact_model(model)``, which removes
    every unit and filter that nothing downstream reads.
    """
    import keras_sparsevd as ksvd
    from keras_sparsevd.model_helpers import layer_widths

    report = [r for r in ksvd.sparsity_report(model).layers if r.inputs is not None]
    rows = []
    if report:
        rows.append(("inputs", report[0].inputs, report[0].inputs_kept))
    before = layer_widths(model)
    after = layer_widths(ksvd.compact_model(model))  # compaction keeps the names
    for layer in ksvd.svd_layers(model):
        if layer.name in before and layer.name in after:
            rows.append((layer.name, before[layer.name], after[layer.name]))
    return rows


def save_architecture(path: Path, model: keras.Model, title: str = "") -> Path | None:
    """Bars of the units and filters of each layer, before and after pruning.

    The rows of `kept_architecture`: the inputs read, then each Sparse VD
    layer's units or filters, as in the dense net and after compaction. For
    LeNet-5-Caffe: the input channel, conv1's and conv2's filters, fc1's
    units and the 10 classes.
    """
    plt = _pyplot()
    if plt is None:
        return None
    rows = kept_architecture(model)
    names = [name for name, _, _ in rows]
    before = [b for _, b, _ in rows]
    after = [a for _, _, a in rows]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
    positions = np.arange(len(names))
    ax.bar(positions, before, color="0.85", label="before")
    ax.bar(positions, after, color="C0", label="kept")
    for x, (b, a) in enumerate(zip(before, after)):
        ax.text(x, a, f"{a}/{b}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(positions, names)
    ax.set_yscale("log")
    ax.set_ylabel("inputs, units or filters")
    kept = "-".join(str(a) for a in after)
    ax.set_title(title or f"kept architecture {kept}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)
