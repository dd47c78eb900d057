"""`sparsity_report`: how many weights each Sparse VD layer keeps."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from keras_sparsevd.model_helpers import (
    check_finite,
    no_svd_layer_error,
    report_name,
    svd_layers,
)


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """Sparsity of one Sparse VD layer (weights only, bias excluded)."""

    name: str
    class_name: str
    weights: int
    kept: int
    #: Input units (input channels of a convolution) and how many the layer
    #: still reads: a unit goes when its group variable is pruned or all the
    #: weights it feeds are. None where inputs are not units (Embedding).
    inputs: int | None = None
    inputs_kept: int | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of the layer's weights that are pruned, 0..1."""
        return 1.0 - self.kept / self.weights if self.weights else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-layer and total sparsity of a model's Sparse VD layers.

    Counts weights only (kernels): biases and BatchNorm parameters are
    excluded, as in the paper. ``str(report)`` is a table, ``to_dict()`` is
    JSON-serialisable.
    """

    layers: tuple

    @property
    def total_weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def total_kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def sparsity(self) -> float:
        """Fraction of all Sparse VD weights that are pruned, 0..1."""
        total = self.total_weights
        return 1.0 - self.total_kept / total if total else 0.0

    @property
    def compression(self) -> float:
        """Total weights over kept weights (``inf`` if none is kept)."""
        kept = self.total_kept
        return self.total_weights / kept if kept else math.inf

    def to_dict(self) -> dict:
        compression = self.compression
        return {
            "layers": [
                {
                    "name": layer.name,
                    "class_name": layer.class_name,
                    "weights": layer.weights,
                    "kept": layer.kept,
                    "sparsity": layer.sparsity,
                    "inputs": layer.inputs,
                    "inputs_kept": layer.inputs_kept,
                }
                for layer in self.layers
            ],
            "total_weights": self.total_weights,
            "total_kept": self.total_kept,
            "sparsity": self.sparsity,
            # JSON has no infinity; None means every weight was pruned.
            "compression": compression if math.isfinite(compression) else None,
        }

    def __str__(self) -> str:
        rows = [
            (
                layer.name,
                layer.class_name,
                f"{layer.weights:,}",
                f"{layer.kept:,}",
                f"{100 * layer.sparsity:.2f}%",
                "" if layer.inputs is None else f"{layer.inputs_kept}/{layer.inputs}",
            )
            for layer in self.layers
        ]
        rows.append(
            (
                "total",
                "",
                f"{self.total_weights:,}",
                f"{self.total_kept:,}",
                f"{100 * self.sparsity:.2f}%",
                "",
            )
        )
        header = ("layer", "type", "weights", "kept", "sparsity", "inputs kept")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(6)]

        def fmt(row: tuple) -> str:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
            return "  ".join(cells).rstrip()

        rule = "-" * len(fmt(header))
        lines = [fmt(header), rule] + [fmt(r) for r in rows[:-1]]
        lines += [rule, fmt(rows[-1])]
        lines.append(f"compression: {self.compression:.1f}x (weights only)")
        return "\n".join(lines)


def sparsity_report(model: keras.layers.Layer) -> SparsityReport:
    """Per-layer sparsity of every Sparse VD layer of `model`.

    Args:
        model: a built Keras model (or a single Sparse VD layer); nested
            models are searched.

    Returns:
        A `SparsityReport`: ``str()`` is a readable table, ``.to_dict()`` a
        JSON-serialisable dict, ``.compression`` total weights / kept weights.

    Raises:
        ValueError: if `model` has no Sparse VD layer or one is not built.
        NonFiniteWeightsError: (a ValueError) if a Sparse VD layer holds NaN
            or infinite weights (a diverged run): their masks would all be 0
            and the model would read as 100% sparse.

    Example:

    >>> print(sparsity_report(model))  # doctest: +SKIP
    """
    layers = svd_layers(model)
    if not layers:
        raise no_svd_layer_error(model, "there is no sparsity to report")
    for layer in layers:
        if not layer.built:
            raise ValueError(
                f"Layer {layer.name!r} is not built yet: call the model on data "
                "(or build it with an input shape) before asking for its sparsity."
            )
    check_finite(model, "report sparsity")
    rows = []
    for layer in layers:
        masks = [keras.ops.convert_to_numpy(m) for m in layer.kernel_masks.values()]
        inputs = _input_units(layer)
        rows.append(
            LayerSparsity(
                name=report_name(layer),
                class_name=type(layer).__name__,
                weights=sum(int(mask.size) for mask in masks),
                kept=sum(int(np.count_nonzero(mask)) for mask in masks),
                inputs=None if inputs is None else int(inputs.size),
                inputs_kept=None if inputs is None else int(np.count_nonzero(inputs)),
            )
        )
    return SparsityReport(layers=tuple(rows))


def _input_units(layer) -> np.ndarray | None:
    if layer.group_kernel_axis is None:
        return None
    try:
        return keras.ops.convert_to_numpy(layer.input_units_mask)
    except ValueError:
        # An einsum whose last input axis is not summed with the kernel.
        return None
