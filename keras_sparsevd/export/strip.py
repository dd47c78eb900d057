"""Plain Keras models from Sparse VD ones: `strip_sparsevd`, `compact_model`."""

from __future__ import annotations

from typing import Any

import keras

from keras_sparsevd import registry
from keras_sparsevd.convert import swap, tree
from keras_sparsevd.convert.saving import copy_model
from keras_sparsevd.convert.sparsify import check_model
from keras_sparsevd.export.cloning import check_graph_model
from keras_sparsevd.export.compact import compact_plain
from keras_sparsevd.model_helpers import (
    check_finite,
    no_svd_layer_error,
    svd_layers,
)


def strip_sparsevd(
    model: keras.Model,
    compact: bool = False,
    drop_unread_inputs: bool = False,
    inplace: bool = False,
) -> keras.Model:
    """A plain Keras model computing the Sparse VD model's inference pass.

    Every Sparse VD layer, wherever it sits in the model's layer tree (a
    graph, a nested model, a custom layer, a wrapper, a subclassed model),
    becomes its Keras counterpart (`DenseSVD` -> `keras.layers.Dense`,
    `Conv2DSVD` -> `keras.layers.Conv2D`, `MultiHeadAttentionSVD` ->
    `keras.layers.MultiHeadAttention`, ...: the pairs of
    `keras_sparsevd.registry`, matched by exact class) with each kernel
    ``theta * mask`` (pruned weights exactly 0) and the same bias;
    ``log_sigma2`` and the KL weight are dropped. Every other layer keeps
    its class and weights, and the model keeps its class. The
    predictions equal the Sparse VD model's ``training=False`` predictions,
    and the result exports with ``model.export(path)`` to a TF SavedModel
    that serves without this package.

    The original model is left untouched (unless `inplace`): the copy is
    made with Keras' saving, as in `sparsify`. The new model is not compiled:
    compile it before fine-tuning, and note that fine-tuning would let the
    pruned weights grow back unless they are masked again.

    Args:
        model: a built Keras model holding Sparse VD layers.
        compact: if True, also remove units and filters that are dead after
            pruning (see `compact_model`); the predictions stay the same.
        drop_unread_inputs: with `compact`, also drop the input features the
            first Dense/Conv layer does not read, through a `SelectFeatures`
            layer in front of it (see `compact_model`).
        inplace: strip `model` itself instead of a copy (its posterior is
            lost).

    Returns:
        A new (unless `inplace`), built, uncompiled Keras model of the same
        class, with the same name and inputs.

    Raises:
        ValueError: if `drop_unread_inputs` is given without `compact`, or
            `model` is not built, holds no Sparse VD layer, holds a Sparse VD
            layer of an unregistered class (a user's subclass of `DenseSVD`),
            or cannot be copied (then pass ``inplace=True``).
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
    stripped = model if inplace else copy_model(model, "strip")
    for node in tree.walk(
        stripped, descend=lambda layer: not registry.is_sparse(layer)
    ):
        if registry.is_sparse(node.layer):
            swap.to_plain(node.layer)
    if compact:
        stripped = compact_plain(stripped, drop_unread_inputs)
    return stripped


def compact_model(model: keras.Model, drop_unread_inputs: bool = False) -> keras.Model:
    """A smaller plain model without the units and filters pruning left dead.

    A model with Sparse VD layers is stripped first (`strip_sparsevd`); then
    each pair of consecutive Dense/Conv/recurrent (LSTM, GRU, SimpleRNN)
    layers loses the units or filters that feed nothing or output a
    constant; a recurrent layer loses the hidden units nothing reads (see
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
    check_model(model, "strip")
    if not svd_layers(model):
        raise no_svd_layer_error(
            model,
            "there is nothing to strip; export it with Keras directly "
            "(model.save / model.export)",
        )
    for node in tree.walk(model, descend=lambda layer: not registry.is_sparse(layer)):
        if (
            registry.is_sparse(node.layer)
            and registry.pair_for_sparse(node.layer) is None
        ):
            raise swap.unregistered_sparse_error(node.layer)
    # NaN theta or log_sigma2 gives all-zero masks: the export would be an
    # all-zero kernel with a NaN bias, not a sparse model.
    check_finite(model, "strip")


def _not_sparse(layer: keras.layers.Layer) -> bool:
    # A Sparse VD layer's insides (attention projections) are its own.
    return not registry.is_sparse(layer)
