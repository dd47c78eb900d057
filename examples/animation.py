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

What is recorded and how it is kept is in `examples.weight_frames`, how it
is drawn in `examples.weight_gif`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import keras

from examples.weight_frames import (
    META_FILE,
    Frames,
    Panel,
    default_panels,
    find_layer,
    record_frame,
)
from examples.weight_gif import Renderer, write_gif
from keras_sparsevd import files


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
            find_layer(self.model, self.panels[0].layer).threshold,
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
        with files.atomic_path(path) as tmp:
            renderer.image(frames.epochs.index(args.frame)).save(tmp)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return path


if __name__ == "__main__":
    main()
