"""What rebuilding a graph model layer by layer needs, for compaction.

Compaction changes layers' shapes, so it rebuilds the model's graph;
`strip_sparsevd` and `sparsify` convert layers in place (`keras_sparsevd.convert`).
"""

from __future__ import annotations

from typing import Any

import keras

from keras_sparsevd import _keras_compat as compat


def is_graph_model(model: Any) -> bool:
    """Whether `model` is a Sequential or functional model (not subclassed)."""
    return compat.is_functional(model)


def check_graph_model(model: Any, action: str) -> None:
    """Raises a ValueError unless `model` is a built Sequential/functional model.

    Args:
        model: what the user passed.
        action: what was asked, for the message ("strip", "sparsify", ...).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a Keras model, got {type(model).__name__}: "
            "pass a keras.Sequential or functional keras.Model."
        )
    if not is_graph_model(model):
        raise ValueError(
            f"Model {model.name!r} is a subclassed model "
            f"({type(model).__name__}): its layers cannot be swapped one by one, "
            f"so keras_sparsevd cannot {action} it. Either use the Sparse VD "
            "layers (keras_sparsevd.DenseSVD, Conv2DSVD, ...) in its __init__ "
            "directly, or rebuild it as a keras.Sequential or functional "
            "keras.Model (same layers, then copy the weights with set_weights)."
        )
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: start it with a "
            "`keras.Input(shape)` or call it on a batch of data first."
        )


def clone_from_config(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new, unbuilt layer of the same class and config as `layer`."""
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
