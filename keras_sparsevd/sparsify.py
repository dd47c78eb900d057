"""`sparsify`: a trained Keras model with its layers made Sparse VD."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import keras

from keras_sparsevd import registry
from keras_sparsevd.export.cloning import check_graph_model, is_graph_model, rebuild
from keras_sparsevd.layers.base import check_threshold, get_log_sigma2_initializer


def sparsify(
    model: keras.Model,
    layers: Iterable[str] | Callable[[keras.layers.Layer], bool] | None = None,
    *,
    threshold: float = 3.0,
    log_sigma2_initializer: Any = None,
    train_clip: bool = False,
    structured: bool = False,
) -> keras.Model:
    """A copy of `model` whose convertible layers are Sparse VD layers.

    Each selected layer is replaced by its Sparse VD counterpart (`Dense` ->
    `DenseSVD`, `Conv2D` -> `Conv2DSVD`, `MultiHeadAttention` ->
    `MultiHeadAttentionSVD`, ...: the pairs of `keras_sparsevd.registry`),
    built from the layer's own config, with its trained weights carried
    over: each kernel becomes theta, the bias stays the bias, and
    ``log_sigma2`` starts at `log_sigma2_initializer`. Every other layer
    keeps its class, config, weights and ``trainable`` flag. Nested
    Sequential and functional models are converted too. The input model is
    not modified.

    Layers are matched by exact class: a subclass of `Dense` (whose `call`
    may do anything) is not converted. With ``layers=None`` it is left as
    it is, with a warning; named or picked by a predicate, it is an error.
    `keras_sparsevd.register_layer_pair` adds your own pairs.

    The returned model is not compiled: compile it, then fine-tune with
    `KLScheduler`, as any Sparse VD model. ``log_sigma2`` sets the noise
    the fine-tuning starts with, through ``log_alpha = log_sigma2 -
    log(theta^2)``: start most weights well inside the clip range [-8, 8],
    about ``log_sigma2 = log(median theta^2) - 4`` (-8 to -10 for the
    LeNets). Much lower (-15) puts most log alphas at the clip, where the KL
    has no gradient, and almost nothing is pruned; much higher prunes many
    weights before training starts. RESULTS.md has the measurements.

    Args:
        model: a built Sequential or functional model.
        layers: which layers to convert: None for every convertible one,
            a collection of layer names (nested models' layers included),
            or a callable ``layer -> bool``.
        threshold: pruning threshold on log alpha of the new layers (3.0).
        log_sigma2_initializer: initializer of their ``log_sigma2``, or a
            number for a constant; constant -10 by default. A very negative
            constant (e.g. -30) leaves the predictions exactly unchanged at
            first.
        train_clip: zero pruned weights in the training mean as well.
        structured: also give each converted layer group variables on its
            input units (``group_sparsity=True``), so that whole units and
            filters are pruned; layers that cannot have them (`Embedding`,
            grouped convolutions, the attention projections) get none.

    Returns:
        A new, built, uncompiled model of the same kind, name and inputs.

    Raises:
        ValueError: if `model` is subclassed (use the Sparse VD layers in
            it directly) or not built, a name in `layers` does not exist or
            names a layer that cannot be converted, a nested subclassed
            model holds layers that would be converted, or nothing at all is
            selected.

    Example:

    >>> sparse = sparsify(trained, log_sigma2_initializer=-8.0)  # doctest: +SKIP
    >>> sparse.compile("adam", "sparse_categorical_crossentropy")  # doctest: +SKIP
    >>> sparse.fit(x, y, callbacks=[KLScheduler(len(x))])  # doctest: +SKIP
    """
    check_graph_model(model, "sparsify")
    svd_args = {
        "threshold": check_threshold(threshold),
        "log_sigma2_initializer": keras.initializers.serialize(
            get_log_sigma2_initializer(log_sigma2_initializer)
        ),
        "train_clip": bool(train_clip),
        "group_sparsity": bool(structured),
    }
    candidates = _graph_layers(model)
    selected = _select(candidates, layers)
    if not selected:
        raise ValueError(
            f"Model {model.name!r} has no layer to convert: sparsify converts "
            f"layers of exactly these classes: {registry.registered_plain_classes()}."
        )

    def replacement(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if id(layer) not in selected:
            return None
        pair = registry.pair_for_plain(layer)
        return pair.sparse.from_config(registry.sparse_config(layer, pair, **svd_args))

    return rebuild(model, replacement, registry.copy_to_sparse)


def _graph_layers(model: keras.Model) -> list:
    """The layers `clone_model` re-creates: nested graph models' included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            found.extend(_graph_layers(layer))
        else:
            found.append(layer)
    return found


def _convertible(layer: keras.layers.Layer) -> bool:
    return registry.pair_for_plain(layer) is not None


def _why_not(layer: keras.layers.Layer) -> str:
    """Why `layer` cannot be converted, for error messages."""
    if registry.is_sparse(layer):
        return "it is already a Sparse VD layer"
    if isinstance(layer, keras.Model):
        return (
            "it is a subclassed model; use the Sparse VD layers inside it "
            "directly, or rebuild it as a Sequential or functional model"
        )
    base = registry.unregistered_base(layer, "plain")
    if base is not None:
        return (
            f"it is a subclass of {base.__name__}, and its `call` may compute "
            f"something else than {base.__name__}'s; register a Sparse VD "
            "counterpart with keras_sparsevd.register_layer_pair"
        )
    return (
        f"sparsify converts only {registry.registered_plain_classes()} (or "
        "pairs added with keras_sparsevd.register_layer_pair)"
    )


def _select(candidates: list, layers: Any) -> set:
    """The ids of the layers to convert."""
    if layers is None:
        selected = set()
        for layer in candidates:
            if _convertible(layer):
                selected.add(id(layer))
            elif isinstance(layer, keras.Model) and _holds_convertible(layer):
                raise ValueError(
                    f"Nested model {layer.name!r} is a subclassed model "
                    f"({type(layer).__name__}) holding convertible layers: they "
                    "cannot be swapped one by one, and half a conversion is "
                    "none. Use the Sparse VD layers inside it directly, or "
                    "rebuild it as a Sequential or functional model."
                )
            elif registry.unregistered_base(layer, "plain") is not None:
                warnings.warn(
                    f"sparsify: layer {layer.name!r} ({type(layer).__name__}) is "
                    f"left as it is: {_why_not(layer)}.",
                    stacklevel=3,
                )
        return selected
    if callable(layers):
        picked = [layer for layer in candidates if layers(layer)]
        for layer in picked:
            if not _convertible(layer):
                raise ValueError(
                    f"`layers` picked layer {layer.name!r} "
                    f"({type(layer).__name__}), which cannot be converted: "
                    f"{_why_not(layer)}."
                )
        return {id(layer) for layer in picked}
    if isinstance(layers, str):
        layers = [layers]
    try:
        names = list(layers)
    except TypeError:
        raise ValueError(
            "`layers` must be None, a collection of layer names or a callable "
            f"layer -> bool, got {layers!r}."
        ) from None
    by_name: dict = {}
    for layer in candidates:
        by_name.setdefault(layer.name, layer)
    selected = set()
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"`layers` must hold layer names (strings), got {name!r}.")
        layer = by_name.get(name)
        if layer is None:
            raise ValueError(
                f"`layers` names {name!r}, but the model has no layer of that "
                f"name. Its layers: {sorted(by_name)}."
            )
        if not _convertible(layer):
            raise ValueError(
                f"`layers` names {name!r} ({type(layer).__name__}), which "
                f"cannot be converted: {_why_not(layer)}."
            )
        selected.add(id(layer))
    return selected


def _holds_convertible(model: keras.Model) -> bool:
    return any(
        _convertible(layer)
        for layer in model._flatten_layers(include_self=False, recursive=True)
    )
