"""Model-level helpers: finding a model's Sparse VD layers, their KL weight."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from keras_sparsevd import _keras_compat as compat
from keras_sparsevd.convert import tree
from keras_sparsevd.layers.base import SparseVDLayer


def svd_layers(model: keras.layers.Layer) -> list:
    """All Sparse VD layers of a model, nested models and layers included.

    Args:
        model: a Keras model or layer. Layers inside other layers (the
            projections of `MultiHeadAttentionSVD`) are found too.

    Returns:
        The `SparseVDLayer` instances, in order, each once.

    Raises:
        TypeError: if `model` is not a Keras layer or model.
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"`model` must be a Keras model or layer, got {type(model).__name__} "
            f"{model!r}: pass the model itself (e.g. the one `keras.Sequential` "
            "or `keras.models.load_model` returned)."
        )
    if isinstance(model, SparseVDLayer):
        return [model]
    found = []
    seen = set()
    for layer in _walk(model):
        if isinstance(layer, SparseVDLayer) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def layer_widths(model: keras.layers.Layer) -> dict:
    """``{layer name: units or filters}`` of every layer that has either.

    Args:
        model: a Keras model; nested models are searched.

    Returns:
        The widths by layer name: `compact_model` keeps the names, so the
        widths of a model and of its compacted copy can be compared.
    """
    widths = {}
    for node in tree.walk(model):
        layer = node.layer
        width = getattr(layer, "units", None) or getattr(layer, "filters", None)
        if isinstance(width, int):
            widths[layer.name] = width
    return widths


def _walk(layer: keras.layers.Layer):
    # Depth first in the order the layers were added (Keras'
    # `_flatten_layers` reverses siblings).
    for child in compat.sublayers(layer):
        yield child
        yield from _walk(child)


def report_name(layer: SparseVDLayer) -> str:
    """The layer's name in reports: ``"mha/query"`` for a projection."""
    return getattr(layer, "_report_name", None) or layer.name


def no_svd_layer_error(model: keras.layers.Layer, what: str) -> ValueError:
    """The ValueError for a model without Sparse VD layers."""
    return ValueError(
        f"`model` ({getattr(model, 'name', model)!r}) contains no Sparse VD "
        f"layer: {what}. Build it with the `...SVD` layers, or convert a "
        "trained model with `keras_sparsevd.sparsify(model)`."
    )


class NonFiniteWeightsError(ValueError, RuntimeError):
    """A Sparse VD layer holds NaN or infinite weights (`check_finite`).

    A `ValueError` for the functions that refuse such a model
    (`sparsity_report`, `strip_sparsevd`) and a `RuntimeError`, as Keras'
    ``TerminateOnNaN(raise_error=True)`` raises, for `SparsityLogger`, which
    stops training with it: ``except ValueError`` and ``except RuntimeError``
    both catch it.
    """


def check_finite(model: keras.layers.Layer, action: str) -> None:
    """Raises if a Sparse VD layer of `model` holds NaN or infinite weights.

    Looks at every kernel (theta), its ``log_sigma2`` and the bias of every
    built Sparse VD layer, one NumPy pass per variable; unbuilt layers have
    no weights and are skipped. A non-finite theta or ``log_sigma2`` makes
    ``log_alpha`` NaN and every mask 0, so a diverged model (one NaN pixel in
    the training data is enough) would otherwise read as 100% sparse.

    Args:
        model: a Keras model or layer.
        action: what the caller was about to do, for the message ("report
            sparsity", "strip", ...).

    Raises:
        NonFiniteWeightsError: naming the first such layer (``report_name``)
            and weight, and what to do about it.
    """
    for layer in svd_layers(model):
        if not layer.built:
            continue
        for variable, what in _checked_variables(layer):
            values = keras.ops.convert_to_numpy(variable)
            if not np.issubdtype(values.dtype, np.floating):
                values = values.astype("float32")  # bfloat16 and the like
            finite = np.isfinite(values)
            if finite.all():
                continue
            bad = int(values.size - np.count_nonzero(finite))
            raise NonFiniteWeightsError(
                f"Cannot {action}: Sparse VD layer {report_name(layer)!r} "
                f"({type(layer).__name__}) has non-finite values in its {what} "
                f"({bad} of {values.size} are NaN or inf), so its sparsity and "
                "weights mean nothing. A diverged training run leaves this: "
                "check the training data for NaN/inf (`np.isfinite(x).all()`, "
                "inputs and targets), lower the learning rate, and restart from "
                "a checkpoint saved before the divergence (or from scratch)."
            )


def _checked_variables(layer: SparseVDLayer):
    """``(variable, description)`` for each kernel, log_sigma2 and the bias."""
    for name in layer.svd_kernels:
        yield layer.theta(name), f"weight {name!r} (theta)"
        yield (
            layer.log_sigma2_of(name),
            f"weight {layer.log_sigma2_name(name)!r} (log_sigma2 of {name!r})",
        )
    bias = getattr(layer, "bias", None)
    if bias is not None:
        yield bias, "weight 'bias'"
    if layer.group_sparsity:
        yield layer.group_mu, "weight 'group_mu'"
        yield layer.group_log_sigma2, "weight 'group_log_sigma2'"


def set_group_kl_scale(
    model: keras.layers.Layer, scale: float | dict[str, float]
) -> int:
    """Weights the KL of the group variables of `model` by `scale`.

    Structured Sparse VD adds ``KL(q(z) || log-uniform)`` of every group
    variable to the loss, one term per unit or filter: next to the thousands
    of weight terms that a unit gates, and to its effect on the data term,
    it is a weak pull, and units whose weights still carry signal are rarely
    pruned. ``scale > 1`` strengthens the group prior only (a tempered
    prior, no longer the paper's objective): a layer's loss becomes
    ``kl_weight * (KL(weights) + scale * KL(groups))``. The weights' own
    KL and every evaluation are unchanged. A dict gives each layer its own
    factor, e.g. in proportion to the multiply-adds one of its groups gates
    (a group of LeNet-5's conv2 gates a whole conv1 filter, one of fc2 a
    single fc1 unit).

    A training setting, like the learning rate: it is not saved with the
    model. Set it before the model's train function is first traced
    (before `fit`), and again after loading a model to train further.

    Args:
        model: a Keras model or layer containing Sparse VD layers.
        scale: the factor, a finite number >= 0 (1.0: the paper's prior),
            for every layer with group variables; or ``{layer name: factor}``
            for some of them, the others keeping theirs.

    Returns:
        The number of layers it was set on.

    Raises:
        ValueError: if a factor is negative or not finite, `model` has no
            Sparse VD layer with group variables, or a name in `scale` is
            none of them.
    """
    layers = [layer for layer in svd_layers(model) if layer.group_sparsity]
    if not layers:
        raise ValueError(
            f"{getattr(model, 'name', model)!r} has no Sparse VD layer with group "
            "variables (`group_sparsity=True`, or `sparsify(..., structured=True)`)."
        )
    if isinstance(scale, dict):
        by_name = {layer.name: layer for layer in layers}
        unknown = sorted(set(scale) - set(by_name))
        if unknown:
            raise ValueError(
                f"`scale` names {unknown}, which are not Sparse VD layers with "
                f"group variables of the model; those are {sorted(by_name)}."
            )
        chosen = {by_name[name]: _group_kl_factor(v) for name, v in scale.items()}
    else:
        factor = _group_kl_factor(scale)
        chosen = {layer: factor for layer in layers}
    for layer, factor in chosen.items():
        layer.group_kl_scale = factor
    return len(chosen)


def _group_kl_factor(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`scale` must be a number, got {value!r}.") from None
    if not value >= 0.0 or not math.isfinite(value):
        raise ValueError(f"`scale` must be a finite number >= 0, got {value}.")
    return value


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
        TypeError: if `model` is not a Keras model or layer.
        ValueError: if `value` is negative or not finite, or `model` holds no
            Sparse VD layer.
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`value` must be a number (rw / num_train_examples), got {value!r}."
        ) from None
    if not value >= 0.0 or not math.isfinite(value):
        raise ValueError(
            f"`value` must be a finite number >= 0 (rw / num_train_examples), "
            f"got {value}."
        )
    layers = svd_layers(model)
    if not layers:
        raise no_svd_layer_error(model, "there is no KL weight to set")
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
