"""Rendering recorded Sparse VD weights (`examples.weight_frames`) into a GIF.

Rendering is done with numpy and Pillow on a fixed palette, so each pixel of
the GIF has exactly its weight's colour and the file stays small; matplotlib
(the ``examples`` extra) supplies the colour map and the font.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from examples.weight_frames import Frames
from keras_sparsevd import files

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
    with files.atomic_path(path) as tmp:
        images[0].save(
            tmp,
            save_all=True,
            append_images=images[1:],
            duration=durations,
            loop=0,
        )
    return path
