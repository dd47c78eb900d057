"""Callbacks: the KL warm-up and the sparsity logger."""

from __future__ import annotations

from typing import Any

import keras

from keras_sparsevd.model_helpers import set_kl_weight
from keras_sparsevd.report import sparsity_report


@keras.saving.register_keras_serializable(package="keras_sparsevd")
class KLScheduler(keras.callbacks.Callback):
    """Sets and ramps the KL weight of a Sparse VD model during `model.fit`.

    The weight is ``rw / num_train_examples``, so that the loss is the
    per-example ``cross-entropy + rw * KL / N`` of the paper. ``rw`` follows
    the paper's warm-up by default: 0 for epochs ``0 .. start_epoch - 1``,
    linear from 0 at ``start_epoch`` to ``max_rw`` at ``end_epoch``, then
    ``max_rw``. It is set at the start of every epoch and written to the
    epoch's logs as ``kl_rw``.

    Args:
        num_train_examples: N, the number of examples in the training set.
        start_epoch: first epoch (0-based) of the ramp; rw is 0 before it.
        end_epoch: epoch at which rw reaches ``max_rw``. Equal to
            ``start_epoch`` for no ramp.
        max_rw: final value of rw (1.0 in the paper).

    Example:

    >>> model.fit(x, y, epochs=200, callbacks=[
    ...     KLScheduler(num_train_examples=len(x))])  # doctest: +SKIP
    """

    def __init__(
        self,
        num_train_examples: int,
        start_epoch: int = 5,
        end_epoch: int = 20,
        max_rw: float = 1.0,
    ) -> None:
        super().__init__()
        if (
            isinstance(num_train_examples, bool)
            or not isinstance(num_train_examples, int)
            or num_train_examples <= 0
        ):
            raise ValueError(
                "`num_train_examples` must be the positive number of training "
                f"examples (N), got {num_train_examples!r}."
            )
        if start_epoch < 0 or end_epoch < start_epoch:
            raise ValueError(
                "`start_epoch` and `end_epoch` must satisfy 0 <= start_epoch <= "
                f"end_epoch, got start_epoch={start_epoch}, end_epoch={end_epoch}."
            )
        if not max_rw >= 0:
            raise ValueError(f"`max_rw` must be >= 0, got {max_rw!r}.")
        self.num_train_examples = num_train_examples
        self.start_epoch = int(start_epoch)
        self.end_epoch = int(end_epoch)
        self.max_rw = float(max_rw)
        self._rw = 0.0

    def rw(self, epoch: int) -> float:
        """The warm-up factor rw at a (0-based) epoch."""
        if epoch < self.start_epoch:
            return 0.0
        if epoch >= self.end_epoch:
            return self.max_rw
        return (
            self.max_rw
            * (epoch - self.start_epoch)
            / (self.end_epoch - self.start_epoch)
        )

    def _apply(self, epoch: int) -> None:
        self._rw = self.rw(epoch)
        set_kl_weight(self.model, self._rw / self.num_train_examples)

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Set before the train function is traced, whatever the first epoch.
        self._apply(0)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._apply(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["kl_rw"] = self._rw

    def get_config(self) -> dict:
        return {
            "num_train_examples": self.num_train_examples,
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "max_rw": self.max_rw,
        }


class SparsityLogger(keras.callbacks.Callback):
    """Puts the sparsity of the Sparse VD layers into each epoch's logs.

    At every epoch end it adds ``sparsity`` (fraction of Sparse VD weights
    pruned, 0..1), ``compression`` (total / kept weights) and
    ``sparsity/<layer name>`` to the logs, so the progress bar, `History`,
    `CSVLogger` and `TensorBoard` placed after it all record them.

    Example:

    >>> model.fit(x, y, callbacks=[KLScheduler(len(x)), SparsityLogger(),
    ...                            keras.callbacks.CSVLogger("log.csv")])
    ... # doctest: +SKIP
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        report = sparsity_report(self.model)
        logs["sparsity"] = report.sparsity
        logs["compression"] = report.compression
        for layer in report.layers:
            logs[f"sparsity/{layer.name}"] = layer.sparsity

    def get_config(self) -> dict[str, Any]:
        return {}
