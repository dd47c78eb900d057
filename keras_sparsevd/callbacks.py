"""Callbacks: the KL warm-up and the sparsity logger."""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
import numpy as np

from keras_sparsevd.model_helpers import (
    NonFiniteWeightsError,
    check_finite,
    set_kl_weight,
)
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
        num_train_examples: N, the number of examples in the training set: a
            positive integer (Python or NumPy, or an integer-valued float such
            as ``1000.0``; stored as an int).
        start_epoch: first epoch (0-based) of the ramp; rw is 0 before it.
            An integer >= 0 (integer-valued floats are accepted).
        end_epoch: epoch at which rw reaches ``max_rw``. Equal to
            ``start_epoch`` for no ramp. An integer >= ``start_epoch``.
        max_rw: final value of rw (1.0 in the paper), a finite number >= 0.

    Raises:
        ValueError: naming the argument, for a bool, string, NaN, non-integral
            or out-of-range value, and for an infinite ``max_rw``.

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
        n = _integer(num_train_examples)
        if n is None or n <= 0:
            raise ValueError(
                "`num_train_examples` must be the positive number of training "
                f"examples (N), an integer, got {num_train_examples!r}."
            )
        start = _integer(start_epoch)
        if start is None or start < 0:
            raise ValueError(
                "`start_epoch` must be an integer >= 0 (the 0-based epoch where "
                f"the KL warm-up starts), got {start_epoch!r}."
            )
        end = _integer(end_epoch)
        if end is None or end < start:
            raise ValueError(
                f"`end_epoch` must be an integer >= start_epoch ({start}), the "
                f"epoch where the warm-up reaches max_rw, got {end_epoch!r}."
            )
        if not _is_real(max_rw) or not math.isfinite(max_rw) or not max_rw >= 0:
            raise ValueError(
                "`max_rw` must be a finite number >= 0 (1.0 in the paper), got "
                f"{max_rw!r}."
            )
        self.num_train_examples = n
        self.start_epoch = start
        self.end_epoch = end
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


def _is_real(value: Any) -> bool:
    """Whether `value` is a real number (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _integer(value: Any) -> int | None:
    """`value` as an int if it is an integer or an integer-valued float."""
    if not _is_real(value):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return int(value) if value.is_integer() else None  # False for NaN, inf


class SparsityLogger(keras.callbacks.Callback):
    """Puts the sparsity of the Sparse VD layers into each epoch's logs.

    At every epoch end it adds ``sparsity`` (fraction of Sparse VD weights
    pruned, 0..1), ``compression`` (total / kept weights) and
    ``sparsity/<layer name>`` and ``inputs_kept/<layer name>`` (input units
    or channels the layer still reads) to the logs, so the progress bar, `History`,
    `CSVLogger` and `TensorBoard` placed after it all record them.

    A diverged run is not reported as sparse: if a Sparse VD layer's
    weights (theta, ``log_sigma2`` or bias) hold NaN or inf at an epoch end,
    training stops there with `NonFiniteWeightsError` (both a `RuntimeError`,
    as ``keras.callbacks.TerminateOnNaN(raise_error=True)`` raises, and a
    `ValueError`) naming the layer and the weight. The epoch's logs are not
    passed on to the callbacks after it, so `History` and `CSVLogger` never
    record the meaningless 100% sparsity. The check runs at epoch ends only,
    as checking every batch would copy all weights off the device each step;
    add ``keras.callbacks.TerminateOnNaN()`` to stop at the first NaN loss.

    Example:

    >>> model.fit(x, y, callbacks=[KLScheduler(len(x)), SparsityLogger(),
    ...                            keras.callbacks.CSVLogger("log.csv")])
    ... # doctest: +SKIP
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        try:
            # Checks the weights are finite first (one pass over them).
            report = sparsity_report(self.model)
        except NonFiniteWeightsError:
            # The same error, saying that training stops here.
            check_finite(
                self.model,
                f"go on training after epoch {epoch + 1} (stopped by SparsityLogger)",
            )
            raise
        if logs is None:
            return
        logs["sparsity"] = report.sparsity
        logs["compression"] = report.compression
        for layer in report.layers:
            if not layer.sparse:
                continue
            logs[f"sparsity/{layer.name}"] = layer.sparsity
            if layer.inputs is not None:
                logs[f"inputs_kept/{layer.name}"] = layer.inputs_kept

    def get_config(self) -> dict[str, Any]:
        return {}
