"""One trained Sparse VD model measured at several log-alpha thresholds."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras

import keras_sparsevd as ksvd


def sweep(
    model: keras.Model,
    thresholds: Iterable[float],
    measure: Callable[[keras.Model], dict],
) -> list:
    """``measure(model)`` with every Sparse VD layer at each threshold in turn.

    Args:
        model: a model with Sparse VD layers (`keras_sparsevd.svd_layers`).
        thresholds: log-alpha thresholds, each in [-8, 8].
        measure: what to record at a threshold, as a dict.

    Returns:
        One dict per threshold: ``{"threshold": t, **measure(model)}``. The
        layers' thresholds are put back as they were, also after an error.
    """
    layers = ksvd.svd_layers(model)
    original = [layer.threshold for layer in layers]
    rows = []
    try:
        for t in thresholds:
            for layer in layers:
                layer.threshold = float(t)
            rows.append({"threshold": float(t), **measure(model)})
    finally:
        for layer, t in zip(layers, original):
            layer.threshold = t
    return rows
