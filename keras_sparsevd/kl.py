"""The KL term of Sparse Variational Dropout and the per-model KL weight."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# Molchanov et al. (2017), eq. 14: a fit of -KL(q || log-uniform prior).
K1 = 0.63576
K2 = 1.87320
K3 = 1.48695

# The authors' code clips log alpha to this range; outside it the KL has no
# gradient, which stops log_sigma2 from running off to infinity.
LOG_ALPHA_MIN = -8.0
LOG_ALPHA_MAX = 8.0


def kl_divergence(log_alpha: Any) -> Any:
    """Elementwise approximate KL(q(w) || log-uniform prior).

    Uses the approximation of Molchanov et al. (2017):
    ``KL ~= k1 - k1 * sigmoid(k2 + k3 * log_alpha) + 0.5 * log1p(exp(-log_alpha))``
    with ``k1, k2, k3 = 0.63576, 1.87320, 1.48695``. It is about 0 for large
    ``log_alpha`` (pure-noise weights) and grows as ``log_alpha`` falls.

    Args:
        log_alpha: tensor of log dropout rates, any shape. Computed in
            float32 whatever its dtype, because float16 underflows here.

    Returns:
        A float32 tensor of the same shape.

    Example:

    >>> import numpy as np
    >>> kl = kl_divergence(np.array([-8.0, 0.0, 8.0], "float32"))
    """
    log_alpha = ops.cast(log_alpha, "float32")
    # softplus(-x) == log1p(exp(-x)), without overflow for very negative x.
    return K1 - K1 * ops.sigmoid(K2 + K3 * log_alpha) + 0.5 * ops.softplus(-log_alpha)


def svd_layers(model: keras.layers.Layer) -> list:
    """All Sparse VD layers of a model, nested models included, in order."""
    from keras_sparsevd.layers.base import SparseVDLayer

    if isinstance(model, SparseVDLayer):
        return [model]
    found = []
    seen = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, SparseVDLayer) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def set_kl_weight(model: keras.layers.Layer, value: float) -> None:
    """Sets the KL weight of every Sparse VD layer of `model`.

    The loss each layer adds is ``value * sum(KL)``. With Keras losses being
    means over the batch, the paper's objective needs ``value = rw / N``:
    the warm-up factor ``rw`` (0 to 1) over the training-set size ``N``.
    `KLScheduler` does this for `model.fit`; use this function in custom
    training loops. It takes effect in already-compiled train functions.

    Args:
        model: a Keras model or layer containing Sparse VD layers.
        value: the KL weight, a finite number >= 0.

    Raises:
        ValueError: if `value` is negative or not finite, or `model` holds no
            Sparse VD layer.
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`value` must be a number (rw / num_train_examples), got {value!r}."
        ) from None
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(
            f"`value` must be a finite number >= 0 (rw / num_train_examples), "
            f"got {value}."
        )
    layers = svd_layers(model)
    if not layers:
        raise ValueError(
            f"`model` ({getattr(model, 'name', model)!r}) contains no Sparse VD "
            "layer (DenseSVD, Conv1DSVD, Conv2DSVD, Conv3DSVD): there is no KL "
            "weight to set."
        )
    was_unset = any(not layer._kl_weight_set for layer in layers)
    for layer in layers:
        layer._set_kl_weight(value)
    if was_unset and getattr(model, "train_function", None) is not None:
        # A train function whose first trace stopped at the "KL weight never
        # set" error cannot be traced again (TF refuses to create the
        # optimizer's variables on a second trace): start a fresh one.
        model.make_train_function(force=True)


def get_kl_weight(model: keras.layers.Layer) -> float | None:
    """The KL weight of the first Sparse VD layer of `model`, or None if unset."""
    layers = svd_layers(model)
    if not layers:
        return None
    return layers[0]._get_kl_weight()
