"""Sparse VD weights recorded epoch by epoch: what to record and where it is kept.

A `Panel` names some weights of one Sparse VD layer (a convolution's
filters, a block of a dense kernel, or a dense layer's receptive fields);
`record_frame` reads them from a model as small float16 arrays, NaN where
the weight is pruned; `Frames` holds a run's records in epoch order and
saves them to a folder one file per epoch, so that a resumed run keeps
the frames recorded before. `examples.weight_gif` draws them and
`examples.animation.WeightAnimation` records them during `model.fit`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

import keras_sparsevd as ksvd
from keras_sparsevd import files

KINDS = ("filters", "block", "fields")


@dataclasses.dataclass(frozen=True)
class Panel:
    """One picture of a frame: some weights of one Sparse VD layer.

    Args:
        layer: name of the layer (``"conv1"``, ``"fc1"`` in `examples.models`).
        kind: ``"filters"``: a convolution's filters (their first input
            channel), one tile each; ``"block"``: a ``size`` x ``size`` block
            of a dense kernel, inputs down and output units across;
            ``"fields"``: the receptive fields of ``size`` of a dense layer's
            units, each unit's inputs reshaped to a square image (784
            inputs: 28 x 28).
        size: the block's side (``"block"``, default 40), the number of units
            (``"fields"``, default 16) or the most filters shown
            (``"filters"``, default all).
        pool: ``"block"`` and ``"fields"``: what is recorded, of which the
            ``size`` rows and columns (units) with the most kept weights in
            the last frame are shown: ``pool`` middle inputs (the first
            inputs of an image are its border, pruned at once) x units
            ``0 .. pool - 1`` for a block, units ``0 .. pool - 1`` for
            fields. Default ``4 * size``; ``pool = size`` shows a fixed,
            contiguous block (or units ``0 .. size - 1``). Sparse VD prunes
            99.8% of LeNet-5's fc1, so a fixed 40 x 40 block ends with about
            3 weights; the picked one with about 60.
    """

    layer: str
    kind: str
    size: int = 0
    pool: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Panel kind must be one of {KINDS}, got {self.kind!r}.")
        if self.size < 0 or self.pool < 0:
            raise ValueError(
                f"Panel size and pool must be >= 0, got {self.size}, {self.pool}."
            )


def default_panels(model: keras.Model) -> list[Panel]:
    """The authors' picture for a model of `examples.models`.

    A model with a convolution ``conv1`` (LeNet-5, VGG-like): its filters and
    a 40 x 40 block of ``fc1``. Otherwise (LeNet-300-100): 16 receptive
    fields of ``fc1`` and a 40 x 40 block of it.
    """
    conv1 = find_layer(model, "conv1", required=False)
    if conv1 is not None and len(conv1.kernel.shape) == 4:
        return [Panel("conv1", "filters"), Panel("fc1", "block", 40)]
    return [Panel("fc1", "fields", 16), Panel("fc1", "block", 40)]


def find_layer(
    model: keras.Model, name: str, required: bool = True
) -> ksvd.SparseVDLayer | None:
    """The Sparse VD layer called `name` (nested models searched).

    Raises:
        ValueError: if `required` and there is no such layer, or if the
            layer exists but is not a Sparse VD layer (a dense baseline).
    """
    for layer in ksvd.svd_layers(model):
        if layer.name == name:
            return layer
    other = next((lay for lay in _all_layers(model) if lay.name == name), None)
    if other is not None:
        raise ValueError(
            f"Layer {name!r} of {model.name!r} is a {type(other).__name__}, not a "
            "Sparse VD layer: the weight animation shows what Sparse VD prunes "
            "(train with --variant svd)."
        )
    if not required:
        return None
    names = [layer.name for layer in ksvd.svd_layers(model)]
    raise ValueError(
        f"{model.name!r} has no layer {name!r} to animate; its Sparse VD layers "
        f"are {names}. Pass `panels=[Panel(name, kind, size), ...]`."
    )


def _all_layers(layer: keras.layers.Layer):
    for child in getattr(layer, "layers", []) or []:
        yield child
        yield from _all_layers(child)


def _effective_mask(layer: ksvd.SparseVDLayer) -> np.ndarray:
    """`kernel_mask`, and with group sparsity also the pruned input units.

    A pruned group silences its whole row of the kernel, so those weights are
    drawn as pruned too.
    """
    mask = keras.ops.convert_to_numpy(layer.kernel_mask)
    if getattr(layer, "group_sparsity", False):
        shape = [1] * mask.ndim
        shape[layer.group_kernel_axis] = -1
        groups = layer.group_mask
        if getattr(layer, "group_channels", None):
            # One group per channel of a Flatten: the units it reaches.
            groups = layer.input_units_mask
        mask = mask * keras.ops.convert_to_numpy(groups).reshape(shape)
    return mask


def _panel_values(layer: ksvd.SparseVDLayer, panel: Panel) -> tuple:
    """``(tiles, info, layer sparsity)`` of one panel.

    ``tiles`` is float16 ``(n, h, w)``, NaN where a weight is pruned; `info`
    (JSON-ready) says what they are: ``caption`` (lines), and ``choose``
    with ``axes``: how many the renderer keeps of the recorded pool along
    each of those axes of the tiles (0: tiles, 1: rows, 2: columns); 0 to
    show all.
    """
    theta = keras.ops.convert_to_numpy(layer.theta()).astype("float32")
    mask = _effective_mask(layer)
    values = np.where(mask > 0, theta, np.nan)
    sparsity = 1.0 - float(mask.mean())
    info: dict[str, Any] = {"layer": layer.name, "kind": panel.kind, "choose": 0}
    if panel.kind == "filters":
        if values.ndim != 4:
            raise ValueError(
                f"Panel 'filters' needs a 2D convolution; {layer.name!r} has a "
                f"kernel of shape {values.shape}."
            )
        kh, kw, cin, cout = values.shape
        n = cout if panel.size == 0 else min(panel.size, cout)
        tiles = np.moveaxis(values[:, :, 0, :n], -1, 0)
        caption = f"{layer.name}: {n} filters {kh}x{kw}"
        info["caption"] = [caption + (", input channel 0" if cin > 1 else "")]
        return tiles.astype("float16"), info, sparsity
    if values.ndim != 2:
        raise ValueError(
            f"Panel {panel.kind!r} needs a dense kernel (inputs, units); "
            f"{layer.name!r} has a kernel of shape {values.shape}."
        )
    n_in, n_out = values.shape
    if panel.kind == "block":
        n = panel.size or 40
        pool = max(panel.pool or 4 * n, n)
        rows, cols = min(pool, n_in), min(pool, n_out)
        start = (n_in - rows) // 2
        tiles = values[None, start : start + rows, :cols]
        where = f"inputs {start}-{start + rows - 1} x units 0-{cols - 1}"
        axes = [1, 2]
        chosen = f"the {min(n, rows)} x {min(n, cols)}"
    else:
        side = math.isqrt(n_in)
        if side * side != n_in:
            raise ValueError(
                f"Panel 'fields' reshapes each unit's inputs to a square image; "
                f"{layer.name!r} has {n_in} inputs. Use a 'block'."
            )
        n = panel.size or 16
        cols = min(max(panel.pool or 4 * n, n), n_out)
        tiles = values[:, :cols].T.reshape(cols, side, side)
        where = f"inputs of units 0-{cols - 1}"
        axes = [0]
        chosen = f"the {min(n, cols)}"
    if max(tiles.shape[a] for a in axes) > n:
        info.update(choose=n, axes=axes)
        info["caption"] = [
            f"{layer.name}: {where},",
            f"{chosen} with the most kept at the end",
        ]
    else:
        info["caption"] = [f"{layer.name}: {where}"]
    return tiles.astype("float16"), info, sparsity


def record_frame(model: keras.Model, panels: Sequence[Panel]) -> dict:
    """The panels' weights of `model` now, and its sparsity.

    Returns:
        ``{"tiles": [float16 (n, h, w) per panel], "info": [dict per panel],
        "layer_sparsity": [...], "sparsity": float, "compression": float}``;
        sparsity is the fraction of all Sparse VD weights pruned, as in
        `keras_sparsevd.sparsity_report` (NaN if the weights diverged).
    """
    tiles, infos, layer_sparsity = [], [], []
    for panel in panels:
        t, info, s = _panel_values(find_layer(model, panel.layer), panel)
        tiles.append(t)
        infos.append(info)
        layer_sparsity.append(s)
    try:
        report = ksvd.sparsity_report(model)
        sparsity, compression = report.sparsity, report.compression
    except ksvd.NonFiniteWeightsError:
        # A diverged run still gets its frame; SparsityLogger stops it.
        sparsity = compression = math.nan
    return {
        "tiles": tiles,
        "info": infos,
        "layer_sparsity": layer_sparsity,
        "sparsity": sparsity,
        "compression": compression,
    }


class Frames:
    """The recorded frames of one run, in epoch order.

    Args:
        title: the model's name, shown in each frame's title.
        total_epochs: the run's epochs, shown as "epoch 7/200" (0: unknown).
        threshold: the log alpha threshold, shown in the legend.
    """

    def __init__(
        self, title: str = "", total_epochs: int = 0, threshold: float = 3.0
    ) -> None:
        self.title = title
        self.total_epochs = int(total_epochs)
        self.threshold = float(threshold)
        self.epochs: list[int] = []
        self.records: list[dict] = []

    def __len__(self) -> int:
        return len(self.epochs)

    def add(self, epoch: int, record: dict) -> None:
        """Adds (or replaces) the frame of `epoch`, dropping any after it."""
        self.truncate(epoch - 1)
        self.epochs.append(int(epoch))
        self.records.append(record)

    def truncate(self, last_epoch: int) -> None:
        """Drops the frames after `last_epoch` (those of a lost epoch)."""
        keep = [i for i, e in enumerate(self.epochs) if e <= last_epoch]
        self.epochs = [self.epochs[i] for i in keep]
        self.records = [self.records[i] for i in keep]

    def compatible(self, record: dict) -> bool:
        """Whether `record` shows the same panels as these frames."""
        if not self.records:
            return True
        first = self.records[0]
        return first["info"] == record["info"] and [
            t.shape for t in first["tiles"]
        ] == [t.shape for t in record["tiles"]]

    def save(self, folder: str | os.PathLike, epoch: int | None = None) -> Path:
        """Writes the frames into `folder`: ``meta.json``, one file per frame.

        One small file per frame, so that saving after every epoch costs the
        same at epoch 200 as at epoch 1; each is written beside and renamed,
        so a run killed while saving keeps its earlier frames whole.

        Args:
            folder: the frames' folder (created if needed).
            epoch: write only this epoch's frame (and the meta data).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "title": self.title,
            "total_epochs": self.total_epochs,
            "threshold": self.threshold,
            "info": self.records[0]["info"] if self.records else [],
        }
        _replace(folder / META_FILE, lambda f: f.write(json.dumps(meta).encode()))
        for e, record in zip(self.epochs, self.records):
            if epoch is not None and e != epoch:
                continue
            arrays = {f"panel{p}": t for p, t in enumerate(record["tiles"])}
            arrays["layer_sparsity"] = np.array(record["layer_sparsity"], "float64")
            arrays["sparsity"] = np.array(record["sparsity"], "float64")
            arrays["compression"] = np.array(record["compression"], "float64")
            _replace(
                folder / FRAME_FILE.format(e),
                lambda f, arrays=arrays: np.savez_compressed(f, **arrays),
            )
        return folder

    @staticmethod
    def remove_after(folder: str | os.PathLike, last_epoch: int) -> None:
        """Deletes the frame files of `folder` after epoch `last_epoch`."""
        for path, epoch in _frame_files(Path(folder)):
            if epoch > last_epoch:
                path.unlink()

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Frames:
        """Reads the frames that `save` wrote into `folder`."""
        folder = Path(folder)
        if not (folder / META_FILE).exists():
            raise FileNotFoundError(
                f"{folder} holds no saved animation frames (no {META_FILE})."
            )
        meta = json.loads((folder / META_FILE).read_text())
        frames = cls(meta["title"], meta["total_epochs"], meta["threshold"])
        for path, epoch in _frame_files(folder):
            with np.load(path) as data:
                record = {
                    "tiles": [data[f"panel{p}"] for p in range(len(meta["info"]))],
                    "info": meta["info"],
                    "layer_sparsity": [float(v) for v in data["layer_sparsity"]],
                    "sparsity": float(data["sparsity"]),
                    "compression": float(data["compression"]),
                }
            frames.epochs.append(epoch)
            frames.records.append(record)
        return frames

    def every(self, k: int) -> Frames:
        """Every `k`-th epoch's frame, and the first and the last."""
        if k < 1:
            raise ValueError(f"`every` must be >= 1, got {k}.")
        out = Frames(self.title, self.total_epochs, self.threshold)
        last = len(self.epochs) - 1
        for i, (epoch, record) in enumerate(zip(self.epochs, self.records)):
            if epoch % k == 0 or i in (0, last):
                out.epochs.append(epoch)
                out.records.append(record)
        return out


META_FILE = "meta.json"
FRAME_FILE = "epoch_{:04d}.npz"


def _frame_files(folder: Path) -> list[tuple[Path, int]]:
    """``(path, epoch)`` of the frame files in `folder`, in epoch order."""
    found = []
    for path in folder.glob("epoch_*.npz"):
        try:
            found.append((path, int(path.stem.split("_")[1])))
        except ValueError:
            continue  # not one of ours
    return sorted(found, key=lambda item: item[1])


def _replace(path: Path, write: Any) -> None:
    """Writes `path` through a temporary file, then renames it into place."""
    files.write_with(path, write)
