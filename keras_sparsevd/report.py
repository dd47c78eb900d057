"""`sparsity_report`: how many weights each layer of a model keeps."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from keras_sparsevd.convert import tree
from keras_sparsevd.layers.base import SparseVDLayer
from keras_sparsevd.model_helpers import (
    check_finite,
    no_svd_layer_error,
    report_name,
    svd_layers,
)


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """Sparsity of one layer's kernels (weights only, bias excluded).

    For a Sparse VD layer, ``kept`` counts the weights its masks keep; for
    any other layer with kernel-like weights, those that are not zero.
    """

    name: str
    class_name: str
    weights: int
    kept: int
    #: Input units (input channels of a convolution) and how many the layer
    #: still reads: a unit goes when its group variable is pruned or all the
    #: weights it feeds are. None where inputs are not units (Embedding).
    inputs: int | None = None
    inputs_kept: int | None = None
    #: Whether the layer is a Sparse VD layer.
    sparse: bool = True

    @property
    def sparsity(self) -> float:
        """Fraction of the layer's weights that are pruned, 0..1."""
        return 1.0 - self.kept / self.weights if self.weights else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-layer and total sparsity of a model's weights.

    Counts weights only, as in the paper: every kernel-like weight of the
    model (each Sparse VD kernel, and every weight of two or more dimensions
    that a layer declares trainable: kernels, embedding tables), Sparse VD or
    not; biases, normalisation parameters and statistics are excluded. So
    ``compression`` is all weights over kept weights of the whole model, and
    a partly converted model is not reported as more compressed than it is.
    ``str(report)`` is a table, ``to_dict()`` is JSON-serialisable.
    """

    layers: tuple

    @property
    def total_weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def total_kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def sparse_weights(self) -> int:
        """How many of the weights are in Sparse VD layers."""
        return sum(layer.weights for layer in self.layers if layer.sparse)

    @property
    def sparsity(self) -> float:
        """Fraction of all the model's weights that are pruned, 0..1."""
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
                    "sparse_vd": layer.sparse,
                }
                for layer in self.layers
            ],
            "total_weights": self.total_weights,
            "total_kept": self.total_kept,
            "sparse_vd_weights": self.sparse_weights,
            "sparsity": self.sparsity,
            # JSON has no infinity; None means every weight was pruned.
            "compression": compression if math.isfinite(compression) else None,
        }

    def __str__(self) -> str:
        rows = [
            (
                layer.name,
                layer.class_name + ("" if layer.sparse else " (dense)"),
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
        dense = self.total_weights - self.sparse_weights
        if dense:
            lines.append(
                f"{dense:,} of the {self.total_weights:,} weights are in layers "
                "that are not Sparse VD (dense)."
            )
        return "\n".join(lines)


def sparsity_report(model: keras.layers.Layer) -> SparsityReport:
    """Per-layer sparsity of every kernel-like weight of `model`.

    Rows follow the model's layer tree (`keras_sparsevd.convert.tree`), named
    by path (``"transformer_layer_0/self_attention/query"``); Sparse VD layers
    and the others (marked "(dense)") alike, so that the totals are the
    whole model's.

    Args:
        model: a built Keras model (or a single Sparse VD layer).

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
    if isinstance(model, SparseVDLayer):
        nodes = [tree.Node(report_name(model), model)]
    else:
        nodes = tree.walk(model)
    rows = []
    for node in nodes:
        layer = node.layer
        if isinstance(layer, SparseVDLayer):
            rows.append(_sparse_row(node.path, layer))
            continue
        kernels = [keras.ops.convert_to_numpy(v) for v in tree.kernel_weights(layer)]
        if kernels:
            rows.append(
                LayerSparsity(
                    name=node.path,
                    class_name=type(layer).__name__,
                    weights=sum(int(k.size) for k in kernels),
                    kept=sum(int(np.count_nonzero(k)) for k in kernels),
                    sparse=False,
                )
            )
    return SparsityReport(layers=tuple(rows))


def _sparse_row(name: str, layer: SparseVDLayer) -> LayerSparsity:
    masks = [keras.ops.convert_to_numpy(m) for m in layer.kernel_masks.values()]
    inputs = _input_units(layer)
    return LayerSparsity(
        name=name,
        class_name=type(layer).__name__,
        weights=sum(int(mask.size) for mask in masks),
        kept=sum(int(np.count_nonzero(mask)) for mask in masks),
        inputs=None if inputs is None else int(inputs.size),
        inputs_kept=None if inputs is None else int(np.count_nonzero(inputs)),
    )


def _input_units(layer) -> np.ndarray | None:
    if layer.group_kernel_axis is None:
        return None
    try:
        return keras.ops.convert_to_numpy(layer.input_units_mask)
    except ValueError:
        # An einsum whose last input axis is not summed with the kernel.
        return None
