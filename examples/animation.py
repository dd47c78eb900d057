"""An animated GIF of how Sparse VD's weights evolve during training.

The authors' repository shows LeNet-5's first conv filters and a patch of its
first dense layer frame by frame as training prunes them. `WeightAnimation`
makes that picture with `model.fit`:

    model.fit(..., callbacks=[ksvd.KLScheduler(len(x)),
                              WeightAnimation("run/weights.gif")])

Before training and at the end of every epoch it records the panels' weights
(theta) as small float16 arrays, NaN where the weight is pruned
(``kernel_mask == 0``, i.e. ``log_alpha >= threshold``), and on train end
renders them into a GIF: weights on a blue-white-red scale, pruned weights
grey, the epoch and the model's sparsity in each frame's title. With
``frames_dir`` the frames are also saved after every epoch, so an
interrupted run that resumes (``keras.callbacks.BackupAndRestore``, as in
`examples.train`) keeps its earlier frames, and the GIF can be rendered
again from them:

    python -m examples.animation runs/RUN/animation_frames out.gif --fps 15
    python -m examples.animation runs/RUN/animation_frames f.png --frame 200

Rendering is done with numpy and Pillow on a fixed palette, so each pixel of
the GIF has exactly its weight's colour and the file stays small; matplotlib
(the ``examples`` extra) supplies the colour map and the font.
"""

from __future__ import annotations

import argparse
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

KINDS = ("filters", "block", "fields")

# The fixed palette: colour-map levels for the weights (odd, so that 0 has a
# level of its own), then the special colours, then greys for the text's
# anti-aliasing. One palette for every frame keeps colours exact in the GIF.
# 65 levels look continuous; more make each epoch's small drifts change more
# pixels, and the GIF larger (201 levels: +25%).
N_LEVELS = 65
PRUNED_INDEX = N_LEVELS
BACKGROUND_INDEX = N_LEVELS + 1
GRID_INDEX = N_LEVELS + 2
TEXT_INDEX = N_LEVELS + 3
TEXT_LEVELS = 8
PRUNED_RGB = (128, 128, 128)
BACKGROUND_RGB = (255, 255, 255)
GRID_RGB = (215, 215, 215)
COLORMAP = "RdBu_r"  # blue negative, white 0, red positive; no grey in it

# Layout, in pixels.
MARGIN = 10
PANEL_GAP = 24
PANEL_TARGET = 240  # a panel's weights are scaled up to about this width
TITLE_SIZE = 16
CAPTION_SIZE = 13
SMALL_SIZE = 11


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
    conv1 = _find_layer(model, "conv1", required=False)
    if conv1 is not None and len(conv1.kernel.shape) == 4:
        return [Panel("conv1", "filters"), Panel("fc1", "block", 40)]
    return [Panel("fc1", "fields", 16), Panel("fc1", "block", 40)]


def _find_layer(
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
        groups = keras.ops.convert_to_numpy(layer.group_mask)
        mask = mask * groups.reshape(shape)
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
        t, info, s = _panel_values(_find_layer(model, panel.layer), panel)
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
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


# ----------------------------------------------------------------------
# Rendering.
def _palette() -> list[int]:
    cmap = _matplotlib().colormaps[COLORMAP]
    levels = (cmap(np.linspace(0.0, 1.0, N_LEVELS))[:, :3] * 255).round()
    colours = [tuple(int(c) for c in rgb) for rgb in levels]
    colours += [PRUNED_RGB, BACKGROUND_RGB, GRID_RGB]
    for level in range(1, TEXT_LEVELS + 1):
        grey = 255 - round(255 * level / TEXT_LEVELS)
        colours.append((grey, grey, grey))
    flat = [c for rgb in colours for c in rgb]
    return flat + [0] * (768 - len(flat))


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "The weight animation needs matplotlib (colour map and font): "
            "pip install '.[examples]'."
        ) from None
    return matplotlib


def _font(size: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


@dataclasses.dataclass(frozen=True)
class _PanelBox:
    x: int  # top-left corner of the tile grid on the frame
    y: int
    cols: int
    tile_h: int
    tile_w: int
    scale: int
    gap: int = 1

    @property
    def width(self) -> int:
        return self.cols * (self.tile_w * self.scale + self.gap) + self.gap

    def height(self, n: int) -> int:
        rows = -(-n // self.cols)
        return rows * (self.tile_h * self.scale + self.gap) + self.gap


class Renderer:
    """Draws the frames of a `Frames` as palette images of one layout.

    Each panel has one colour scale for all frames (the 99.5th percentile of
    its kept weights' magnitudes over the run), so the growth of the weights
    shows, not only their pattern.

    Args:
        frames: the frames to draw; all must have the same panels.
    """

    def __init__(self, frames: Frames) -> None:
        if not len(frames):
            raise ValueError("There are no frames to render.")
        self.frames = frames
        self.palette = _palette()
        self.title_font = _font(TITLE_SIZE)
        self.caption_font = _font(CAPTION_SIZE)
        self.small_font = _font(SMALL_SIZE)
        self.info = frames.records[0]["info"]
        last = frames.records[-1]
        #: Per panel, {axis of its tiles: the indices shown}, from the pool.
        self.selected: list[dict[int, np.ndarray]] = []
        self.limits: list[float] = []
        for p, info in enumerate(self.info):
            # Per axis of the tiles, the pool indices shown (absent: all).
            chosen: dict[int, np.ndarray] = {}
            if info["choose"]:
                kept = np.isfinite(last["tiles"][p].astype("float32"))
                for axis in info["axes"]:
                    counts = kept.sum(axis=tuple(a for a in range(3) if a != axis))
                    # The most kept weights at the end; ties to the lower unit.
                    best = np.argsort(-counts, kind="stable")[: info["choose"]]
                    chosen[axis] = np.sort(best)
                    kept = np.take(kept, chosen[axis], axis=axis)
            self.selected.append(chosen)
            stack = np.stack([self.tiles(i, p) for i in range(len(frames))])
            kept_values = np.abs(stack[np.isfinite(stack)])
            limit = float(np.percentile(kept_values, 99.5)) if kept_values.size else 0
            self.limits.append(limit if limit > 0 else 1.0)
        self._layout()

    def tiles(self, i: int, p: int) -> np.ndarray:
        """float32 ``(n, h, w)``: the weights panel `p` of frame `i` shows."""
        tiles = self.frames.records[i]["tiles"][p].astype("float32")
        for axis, chosen in self.selected[p].items():
            tiles = np.take(tiles, chosen, axis=axis)
        return tiles

    def _caption(self, i: int, p: int) -> list[str]:
        pruned = self.frames.records[i]["layer_sparsity"][p]
        return self.info[p]["caption"] + [f"{100 * pruned:.1f}% of the layer pruned"]

    def _layout(self) -> None:
        lines = max(len(self._caption(0, p)) for p in range(len(self.info)))
        x = MARGIN
        self.caption_y = MARGIN + TITLE_SIZE + 12
        top = self.caption_y + lines * (CAPTION_SIZE + 4) + 4
        self.boxes: list[_PanelBox] = []
        self.columns: list[tuple[int, int]] = []  # x and width of each column
        bottom = top
        for p in range(len(self.info)):
            n, h, w = self.tiles(0, p).shape
            cols = math.ceil(math.sqrt(n)) if n > 1 else 1
            scale = max(1, (PANEL_TARGET - 2 * cols - 2) // (cols * w))
            # Wider gaps between tiles than around a single block: filters
            # of tiny weights must not run into each other.
            box = _PanelBox(x, top, cols, h, w, scale, gap=2 if n > 1 else 1)
            text = max(
                self.caption_font.getlength(line)
                for line in self._caption(0, p) + ["100.0% of the layer pruned"]
            )
            column = max(box.width, int(text) + 2)
            self.boxes.append(box)
            self.columns.append((x, column))
            bottom = max(bottom, top + box.height(n))
            x += column + PANEL_GAP
        self.bars_y = bottom + 8
        self.legend_y = self.bars_y + 10 + SMALL_SIZE + 10
        self.height = self.legend_y + 14 + MARGIN
        title_width = max(
            self.title_font.getlength(self._title(i)) for i in range(len(self.frames))
        )
        self.width = max(x - PANEL_GAP + MARGIN, int(title_width) + 2 * MARGIN)

    def weight_box(self, panel: int, tile: int, row: int, col: int) -> tuple:
        """``(x0, y0, x1, y1)``: the pixels of one weight (x1, y1 excluded).

        `tile`, `row` and `col` index what the panel shows (`tiles`), after
        the choice from the pool.
        """
        box = self.boxes[panel]
        r, c = divmod(tile, box.cols)
        x0 = box.x + box.gap + c * (box.tile_w * box.scale + box.gap)
        y0 = box.y + box.gap + r * (box.tile_h * box.scale + box.gap)
        x0 += col * box.scale
        y0 += row * box.scale
        return x0, y0, x0 + box.scale, y0 + box.scale

    def _title(self, i: int) -> str:
        epoch = self.frames.epochs[i]
        record = self.frames.records[i]
        total = self.frames.total_epochs
        when = "before training" if epoch == 0 else f"epoch {epoch}"
        if epoch and total:
            when += f"/{total}"
        s, c = record["sparsity"], record["compression"]
        if math.isnan(s):
            sparsity = "weights diverged"
        elif math.isinf(c):
            sparsity = "every weight pruned"
        else:
            ratio = f"{c:.0f}x" if c >= 10 else f"{c:.1f}x"
            sparsity = f"{100 * s:.1f}% of weights pruned ({ratio})"
        name = f"{self.frames.title}: " if self.frames.title else ""
        return f"{name}{when}, {sparsity}"

    def image(self, i: int):
        """Frame `i` as a PIL palette ("P") image."""
        from PIL import Image, ImageDraw

        canvas = np.full((self.height, self.width), BACKGROUND_INDEX, np.uint8)
        text = Image.new("L", (self.width, self.height), 0)
        draw = ImageDraw.Draw(text)
        draw.text((MARGIN, MARGIN), self._title(i), fill=255, font=self.title_font)
        for p in range(len(self.info)):
            x, _ = self.columns[p]
            for k, line in enumerate(self._caption(i, p)):
                y = self.caption_y + k * (CAPTION_SIZE + 4)
                draw.text((x, y), line, fill=255, font=self.caption_font)
            self._draw_tiles(canvas, p, self.tiles(i, p))
            self._draw_bar(canvas, draw, p)
        # Legend: the pruned colour.
        y = self.legend_y
        canvas[y : y + 12, MARGIN : MARGIN + 12] = PRUNED_INDEX
        draw.text(
            (MARGIN + 18, y - 1),
            f"pruned weight (log alpha >= {self.frames.threshold:g})",
            fill=255,
            font=self.small_font,
        )
        # Text is drawn anti-aliased on its own layer, then mapped to the
        # palette's few greys, so the palette stays fixed.
        ink = np.asarray(text, np.int32)
        levels = -(-ink * TEXT_LEVELS // 255)
        canvas = np.where(levels > 0, TEXT_INDEX + levels - 1, canvas)
        image = Image.fromarray(canvas.astype(np.uint8), "P")
        image.putpalette(self.palette)
        return image

    def _draw_tiles(self, canvas: np.ndarray, p: int, tiles: np.ndarray) -> None:
        box = self.boxes[p]
        n = len(tiles)
        canvas[box.y : box.y + box.height(n), box.x : box.x + box.width] = GRID_INDEX
        values = tiles / self.limits[p]
        index = np.rint((np.clip(values, -1.0, 1.0) + 1.0) * 0.5 * (N_LEVELS - 1))
        index = np.where(np.isfinite(values), index, PRUNED_INDEX).astype(np.uint8)
        big = index.repeat(box.scale, axis=1).repeat(box.scale, axis=2)
        for t in range(n):
            x0, y0, _, _ = self.weight_box(p, t, 0, 0)
            canvas[y0 : y0 + big.shape[1], x0 : x0 + big.shape[2]] = big[t]

    def _draw_bar(self, canvas: np.ndarray, draw: Any, p: int) -> None:
        """The panel's colour scale, -limit .. +limit, under it."""
        x, width = self.columns[p]
        width = min(width, 200)
        y = self.bars_y
        levels = np.linspace(0, N_LEVELS - 1, width).round().astype(np.uint8)
        canvas[y : y + 8, x : x + width] = levels[None, :]
        limit = self.limits[p]
        label_y = y + 10
        font = self.small_font
        draw.text((x, label_y), f"-{limit:.2g}", fill=255, font=font)
        draw.text((x + width // 2 - 3, label_y), "0", fill=255, font=font)
        right = f"+{limit:.2g}"
        right_x = x + width - font.getlength(right)
        draw.text((right_x, label_y), right, fill=255, font=font)


def write_gif(
    frames: Frames,
    path: str | os.PathLike,
    fps: float = 10.0,
    every: int = 1,
    hold_last_s: float = 2.0,
) -> Path:
    """Renders `frames` into an animated GIF that loops.

    Args:
        frames: the recorded frames.
        path: the GIF to write.
        fps: frames per second (201 frames at 10 fps: 20 s).
        every: keep every `every`-th epoch (and the first and last frames),
            for a shorter and smaller GIF.
        hold_last_s: how long the last frame stays before the loop restarts.

    Returns:
        The path written.
    """
    if fps <= 0:
        raise ValueError(f"`fps` must be > 0, got {fps}.")
    frames = frames.every(every)
    renderer = Renderer(frames)
    images = [renderer.image(i) for i in range(len(frames))]
    frame_ms = max(20, round(1000 / fps))  # browsers slow down below 20 ms
    durations = [frame_ms] * len(images)
    durations[-1] = max(frame_ms, round(1000 * hold_last_s))
    path = Path(path)
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=durations,
        loop=0,
    )
    return path


# ----------------------------------------------------------------------
class WeightAnimation(keras.callbacks.Callback):
    """Records Sparse VD weights each epoch and writes an animated GIF.

    Records a frame before the first epoch and after every `every`-th (and
    the last); at train end writes `gif_path`. Frames are float16 arrays of
    the panels' weights: about 50 KB a frame for LeNet-5 (10 MB for 200
    epochs), 150 KB for LeNet-300-100 (its pools of candidate units).

    With `frames_dir` each frame is also saved when recorded, and the saved
    frames are reloaded when training starts, so a run resumed by
    `keras.callbacks.BackupAndRestore` continues its animation: the frames
    after the epoch training resumes from (recorded before the interruption,
    but their weights were lost with it) are dropped and recorded again. A
    run that starts at epoch 0 deletes the frames saved there before.

    Args:
        gif_path: the GIF written at train end (None: frames only).
        frames_dir: folder the frames are saved to and resumed from; render
            it again with ``python -m examples.animation FRAMES_DIR OUT.gif``.
        panels: what to draw (`Panel`); default `default_panels(model)`:
            conv1's filters and a 40 x 40 block of fc1 for LeNet-5.
        every: record every `every`-th epoch only (and the last).
        fps: frames per second of the GIF.
        title: shown in each frame's title (default: the model's name).

    Raises:
        ValueError: at train begin, if a panel's layer is missing, is not a
            Sparse VD layer, or does not fit the panel's kind.
    """

    def __init__(
        self,
        gif_path: str | os.PathLike | None,
        frames_dir: str | os.PathLike | None = None,
        panels: Sequence[Panel] | None = None,
        every: int = 1,
        fps: float = 10.0,
        title: str | None = None,
    ) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"`every` must be >= 1, got {every}.")
        self.gif_path = None if gif_path is None else Path(gif_path)
        self.frames_dir = None if frames_dir is None else Path(frames_dir)
        self.panels = None if panels is None else list(panels)
        self.every = int(every)
        self.fps = float(fps)
        self.title = title
        self.frames = Frames()
        self._first: dict | None = None

    def _wanted(self, epoch: int) -> bool:
        total = self.params.get("epochs", 0) if self.params else 0
        return epoch == 0 or epoch % self.every == 0 or epoch == total

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.panels is None:
            self.panels = default_panels(self.model)
        # Recorded now so that a missing or wrong layer fails before any
        # epoch; used as the first frame if training starts at epoch 0.
        self._first = record_frame(self.model, self.panels)
        self.frames = Frames(
            self.title if self.title is not None else self.model.name,
            self.params.get("epochs", 0) if self.params else 0,
            _find_layer(self.model, self.panels[0].layer).threshold,
        )
        if self.frames_dir is not None and (self.frames_dir / META_FILE).exists():
            saved = Frames.load(self.frames_dir)
            if saved.compatible(self._first):
                self.frames.epochs, self.frames.records = saved.epochs, saved.records
            else:  # another model's or other panels' frames
                Frames.remove_after(self.frames_dir, -1)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        # The first epoch tells a fresh run (0) from a resumed one. By now
        # BackupAndRestore has restored the weights of the end of `epoch`,
        # whatever the order of the callbacks.
        if self._first is None:
            return
        first, self._first = self._first, None
        last_kept = epoch if epoch else -1
        self.frames.truncate(last_kept)
        if self.frames_dir is not None:
            Frames.remove_after(self.frames_dir, last_kept)
        if epoch == 0:
            self._add(0, first)
        elif self._wanted(epoch) and epoch not in self.frames.epochs:
            self._add(epoch, record_frame(self.model, self.panels))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._wanted(epoch + 1):
            self._add(epoch + 1, record_frame(self.model, self.panels))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.gif_path is not None and len(self.frames):
            write_gif(self.frames, self.gif_path, fps=self.fps)

    def _add(self, epoch: int, record: dict) -> None:
        self.frames.add(epoch, record)
        if self.frames_dir is not None:
            self.frames.save(self.frames_dir, epoch=epoch)


# ----------------------------------------------------------------------
def main(argv: list | None = None) -> Path:
    p = argparse.ArgumentParser(
        prog="python -m examples.animation",
        description="Render the frames saved by WeightAnimation "
        "(`python -m examples.train --animate`) into a GIF, or one frame to PNG.",
    )
    p.add_argument("frames", help="a run's animation_frames folder")
    p.add_argument("out", help="GIF to write (PNG with --frame)")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--every", type=int, default=1, help="keep every N-th epoch")
    p.add_argument(
        "--frame",
        type=int,
        default=None,
        metavar="EPOCH",
        help="write only the frame of this epoch, as an image (PNG)",
    )
    args = p.parse_args(argv)
    frames = Frames.load(args.frames)
    if args.frame is None:
        path = write_gif(frames, args.out, fps=args.fps, every=args.every)
    else:
        if args.frame not in frames.epochs:
            raise SystemExit(f"no frame for epoch {args.frame}; have {frames.epochs}")
        renderer = Renderer(frames)
        path = Path(args.out)
        renderer.image(frames.epochs.index(args.frame)).save(path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return path


if __name__ == "__main__":
    main()
