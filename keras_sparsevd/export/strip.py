"""`strip_sparsevd`: a Sparse VD model as a plain Keras model."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_sparsevd.kl import svd_layers
from keras_sparsevd.layers.base import SparseVDLayer
from keras_sparsevd.layers.conv import BaseConvSVD
from keras_sparsevd.layers.dense import DenseSVD

# Constructor arguments shared by Sparse VD layers and their Keras
# counterparts. Whitelisted rather than "config minus the Sparse VD keys" so
# that a new Sparse VD option never reaches `keras.layers.Dense` by mistake.
_COMMON_ARGS = (
    "name",
    "trainable",
    "dtype",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
)
_CONV_ARGS = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
)
_PLAIN_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}


def is_graph_model(model: Any) -> bool:
    """Whether `model` is a Sequential or functional model (not subclassed)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def plain_layer(layer: SparseVDLayer) -> keras.layers.Layer:
    """The plain Keras layer that computes what `layer` computes at inference.

    The new layer is not built and has no weights yet.

    Args:
        layer: a `DenseSVD` or `Conv1DSVD` / `Conv2DSVD` / `Conv3DSVD`.

    Returns:
        A `keras.layers.Dense` or `keras.layers.ConvND` with the same name,
        units or filters, kernel size, strides, padding, data format,
        dilation, activation, bias use, dtype policy, initializers,
        regularizers and constraints.

    Raises:
        TypeError: if `layer` is a Sparse VD layer of an unknown kind.
    """
    config = layer.get_config()
    kwargs = {key: config[key] for key in _COMMON_ARGS if key in config}
    if isinstance(layer, DenseSVD):
        return keras.layers.Dense(units=layer.units, **kwargs)
    if isinstance(layer, BaseConvSVD):
        kwargs.update({key: config[key] for key in _CONV_ARGS})
        return _PLAIN_CONV[layer.rank](**kwargs)
    raise TypeError(
        f"Don't know the plain Keras counterpart of {type(layer).__name__} "
        f"{layer.name!r}: only DenseSVD and Conv1D/2D/3DSVD can be stripped."
    )


def masked_kernel(layer: SparseVDLayer) -> np.ndarray:
    """``kernel * kernel_mask`` of `layer` as float32 numpy, pruned weights +0.0.

    ``np.where`` rather than a product: a negative theta times a 0 mask is
    -0.0, whose bit pattern compresses worse and is not "exactly 0" in bytes.
    """
    kernel = keras.ops.convert_to_numpy(keras.ops.cast(layer.kernel, "float32"))
    mask = keras.ops.convert_to_numpy(layer.kernel_mask)
    return np.where(mask > 0, kernel, np.float32(0.0)).astype("float32")


def strip_sparsevd(model: keras.Model, compact: bool = False) -> keras.Model:
    """A plain Keras model computing the Sparse VD model's inference pass.

    Every Sparse VD layer, also inside nested Sequential or functional
    models, becomes its Keras counterpart (`DenseSVD` -> `keras.layers.Dense`,
    `ConvNDSVD` -> `keras.layers.ConvND`, same name and hyperparameters) with
    kernel ``kernel * kernel_mask`` (pruned weights exactly 0) and the same
    bias; ``log_sigma2`` and the KL weight are dropped. Every other layer
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
            pruning, with `keras_sparsevd.export.compact_model`; the
            predictions stay the same.

    Returns:
        A new, built, uncompiled Keras model of the same class (Sequential or
        functional) with the same name and inputs.

    Raises:
        ValueError: if `model` is a subclassed model (it cannot be cloned
            layer by layer), is not built, holds no Sparse VD layer, or holds
            a layer that cannot be re-created from its config.

    Example:

    >>> plain = strip_sparsevd(model)  # doctest: +SKIP
    >>> plain.export("lenet300_savedmodel")  # doctest: +SKIP
    """
    check_strippable(model)
    pairs: list = []

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, SparseVDLayer):
            new = plain_layer(layer)
        else:
            new = _clone_from_config(layer)
        pairs.append((layer, new))
        return new

    stripped = keras.models.clone_model(
        model, clone_function=clone_layer, recursive=True
    )
    stripped = uncompiled(stripped)
    for old, new in pairs:
        if not new.built:
            raise ValueError(
                f"Layer {new.name!r} of the stripped model was not built while "
                "re-creating the model, so its weights cannot be copied. Give "
                "the model a `keras.Input` with a full shape."
            )
        if isinstance(old, SparseVDLayer):
            new.kernel.assign(masked_kernel(old))
            if old.use_bias:
                new.bias.assign(keras.ops.convert_to_numpy(old.bias))
        else:
            new.set_weights(old.get_weights())
    if compact:
        from keras_sparsevd.export.compact import compact_model

        stripped = compact_model(stripped)
    return stripped


def check_strippable(model: Any) -> None:
    """Raises the ValueError `strip_sparsevd` would raise before any work."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a Keras model, got {type(model).__name__}: "
            "pass a keras.Sequential or functional keras.Model."
        )
    if not is_graph_model(model):
        raise ValueError(
            f"Model {model.name!r} is a subclassed model "
            f"({type(model).__name__}): its layers cannot be swapped one by one. "
            "Rebuild it as a keras.Sequential or functional keras.Model (same "
            "layers, then copy the weights with set_weights) and strip that."
        )
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: start it with a "
            "`keras.Input(shape)` or call it on a batch of data first."
        )
    if not svd_layers(model):
        raise ValueError(
            f"Model {model.name!r} contains no Sparse VD layer (DenseSVD, "
            "Conv1DSVD, Conv2DSVD, Conv3DSVD): there is nothing to strip. "
            "Export it with Keras directly (model.save / model.export)."
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


def _clone_from_config(layer: keras.layers.Layer) -> keras.layers.Layer:
    try:
        return layer.__class__.from_config(layer.get_config())
    except Exception as error:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) cannot be re-created "
            f"from its config ({type(error).__name__}: {error}). Give the class "
            "a `get_config()` that returns all its constructor arguments."
        ) from error


def uncompiled(model: keras.Model) -> keras.Model:
    """`model` itself if uncompiled, else an uncompiled model on its layers.

    `keras.models.clone_model` compiles the clone like the original, which
    builds fresh optimizer slots: they would bloat every saved file of a model
    meant for inference.
    """
    if not model.compiled:
        return model
    if isinstance(model, keras.Sequential):
        spec = model.inputs[0]
        return keras.Sequential(
            [keras.Input(batch_shape=spec.shape, dtype=spec.dtype)] + model.layers,
            name=model.name,
            trainable=model.trainable,
        )
    return keras.Model(model.inputs, model.outputs, name=model.name)
