"""Plain Keras models from Sparse VD ones: `strip_sparsevd`, `compact_model`."""

from __future__ import annotations

from typing import Any

import keras

from keras_sparsevd import registry
from keras_sparsevd.export.cloning import check_graph_model, is_graph_model, rebuild
from keras_sparsevd.export.compact import compact_plain
from keras_sparsevd.model_helpers import (
    check_finite,
    no_svd_layer_error,
    svd_layers,
)


def plain_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The plain Keras layer that computes what `layer` computes at inference.

    The new layer is not built and has no weights yet.

    Args:
        layer: a Sparse VD layer of a registered class (`DenseSVD`,
            `Conv2DSVD`, `MultiHeadAttentionSVD`, ...).

    Returns:
        Its Keras counterpart (`keras.layers.Dense`, `keras.layers.Conv2D`,
        ...) with the same name and config, less the Sparse VD options.

    Raises:
        ValueError: if `layer`'s exact class is not registered, e.g. a
            user's subclass of `DenseSVD`.
    """
    pair = registry.pair_for_sparse(layer)
    if pair is None:
        raise unregistered_sparse_error(layer)
    return pair.plain.from_config(registry.plain_config(layer))


def unregistered_sparse_error(layer: keras.layers.Layer) -> ValueError:
    base = registry.unregistered_base(layer, "sparse")
    why = (
        f"it subclasses {base.__name__}, but its `call` may compute something "
        f"else, so it is not exported as {base.__name__}'s Keras counterpart"
        if base is not None
        else "no plain Keras counterpart is registered for it"
    )
    return ValueError(
        f"Cannot strip layer {layer.name!r} ({type(layer).__name__}): {why}. "
        "Register its counterpart with "
        "`keras_sparsevd.register_layer_pair(PlainClass, "
        f"{type(layer).__name__})`."
    )


def strip_sparsevd(
    model: keras.Model, compact: bool = False, drop_unread_inputs: bool = False
) -> keras.Model:
    """A plain Keras model computing the Sparse VD model's inference pass.

    Every Sparse VD layer, also inside nested Sequential or functional
    models, becomes its Keras counterpart (`DenseSVD` -> `keras.layers.Dense`,
    `Conv2DSVD` -> `keras.layers.Conv2D`, `MultiHeadAttentionSVD` ->
    `keras.layers.MultiHeadAttention`, ...: the pairs of
    `keras_sparsevd.registry`, matched by exact class) with each kernel
    ``theta * mask`` (pruned weights exactly 0) and the same bias;
    ``log_sigma2`` and the KL weight are dropped. Every other layer
    (BatchNormalization, pooling, Rescaling, Normalization, custom layers)
    is re-created from its config and gets a copy of its weights. The
    predictions equal the Sparse VD model's ``training=False`` predictions,
    and the result exports with ``model.export(path)`` to a TF SavedModel
    that serves without this package.

    The original model is left untouched. The new model is not compiled:
    compile it before fine-tuning, and note that fine-tuning would let the
    pruned weights grow back unless they are masked again.

    Args:
        model: a built Sequential or functional Keras model holding Sparse VD
            layers.
        compact: if True, also remove units and filters that are dead after
            pruning (see `compact_model`); the predictions stay the same.
        drop_unread_inputs: with `compact`, also drop the input features the
            first Dense/Conv layer does not read, through a `SelectFeatures`
            layer in front of it (see `compact_model`).

    Returns:
        A new, built, uncompiled Keras model of the same class (Sequential or
        functional) with the same name and inputs.

    Raises:
        ValueError: if `drop_unread_inputs` is given without `compact`, or
            `model` is a subclassed model (it cannot be cloned
            layer by layer), is not built, holds no Sparse VD layer, holds a
            Sparse VD layer of an unregistered class (a user's subclass of
            `DenseSVD`), or a layer that cannot be re-created from its config.
        NonFiniteWeightsError: (a ValueError) if a Sparse VD weight is NaN or
            infinite (a diverged run): it names the layer.

    Example:

    >>> plain = strip_sparsevd(model)  # doctest: +SKIP
    >>> plain.export("lenet300_savedmodel")  # doctest: +SKIP
    """
    if drop_unread_inputs and not compact:
        raise ValueError(
            "`drop_unread_inputs=True` is part of compaction: pass compact=True "
            "as well."
        )
    check_strippable(model)
    stripped = rebuild(
        model,
        lambda layer: plain_layer(layer) if registry.is_sparse(layer) else None,
        registry.copy_to_plain,
    )
    left = svd_layers(stripped)
    if left:
        raise ValueError(
            f"Layer {left[0].name!r} ({type(left[0]).__name__}) is still a Sparse "
            "VD layer after stripping: it sits inside a custom layer, which is "
            "re-created from its config. Build that layer from plain Keras "
            "layers for export, or register a pair for it with "
            "`keras_sparsevd.register_layer_pair`."
        )
    if compact:
        stripped = compact_plain(stripped, drop_unread_inputs)
    return stripped


def compact_model(model: keras.Model, drop_unread_inputs: bool = False) -> keras.Model:
    """A smaller plain model without the units and filters pruning left dead.

    A model with Sparse VD layers is stripped first (`strip_sparsevd`); then
    each pair of consecutive Dense/Conv layers loses the units or filters
    that feed nothing or output a constant (see
    `keras_sparsevd.export.compact.compact_plain` for the exact rules and
    what is left as it is, with a warning).

    The model's inputs are kept as they are. Pruning (structured pruning
    especially) can leave input features that the first layer does not read
    any more, e.g. pixels at the border of an image: with
    ``drop_unread_inputs=True`` a `keras_sparsevd.export.SelectFeatures`
    layer (a gather) in front of the first Dense or convolution keeps only
    the features it reads, and its kernel loses the other rows or input
    channels. That trades the unread features' multiply-adds for a copy of
    the read ones: on the structured LeNet-300-100 (fc1 reads 320 of 784
    pixels) it paid off in TFLite on CPU, not through TF's own runtime,
    where the gather cost about what it saved. A ``.keras`` file of such a
    model needs keras_sparsevd to load (``import keras_sparsevd`` registers
    the layer); its TF SavedModel (``model.export``) and TFLite exports are
    traced graphs that do not.

    Args:
        model: a built Sequential model, or a functional model whose layers
            form one chain; plain or Sparse VD.
        drop_unread_inputs: also drop the input features that the first
            Dense/Conv layer (of the model and of each nested model) does not
            read. Off by default: the result is then made of Keras layers
            only.

    Returns:
        A new, uncompiled model of the same kind, with the same name,
        inputs, outputs and predictions (up to float32 rounding of the
        folded biases) and fewer units where some were dead.

    Raises:
        ValueError: if `model` is subclassed, not built, or a functional
            model that is not a single chain (several inputs or outputs,
            branches, merges, shared layers). Use ``compact=False`` for those.

    Example:

    >>> small = compact_model(model)  # doctest: +SKIP
    """
    check_graph_model(model, "compact")
    if svd_layers(model):
        return strip_sparsevd(
            model, compact=True, drop_unread_inputs=drop_unread_inputs
        )
    return compact_plain(model, drop_unread_inputs)


def check_strippable(model: Any) -> None:
    """Raises the ValueError `strip_sparsevd` would raise before any work."""
    check_graph_model(model, "strip")
    if not svd_layers(model):
        raise no_svd_layer_error(
            model,
            "there is nothing to strip; export it with Keras directly "
            "(model.save / model.export)",
        )
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if (
            isinstance(layer, keras.Model)
            and not is_graph_model(layer)
            and svd_layers(layer)
        ):
            raise ValueError(
                f"Nested model {layer.name!r} is a subclassed model "
                f"({type(layer).__name__}) holding Sparse VD layers, which "
                "cannot be swapped one by one. Rebuild it as a keras.Sequential "
                "or functional keras.Model."
            )
        if registry.is_sparse(layer) and registry.pair_for_sparse(layer) is None:
            raise unregistered_sparse_error(layer)
    # NaN theta or log_sigma2 gives all-zero masks: the export would be an
    # all-zero kernel with a NaN bias, not a sparse model.
    check_finite(model, "strip")
