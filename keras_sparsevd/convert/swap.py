"""One layer converted in place, from its Keras class to Sparse VD and back."""

from __future__ import annotations

import keras

from keras_sparsevd import _keras_compat as compat
from keras_sparsevd import registry
from keras_sparsevd.layers.base import SVD_ARGS, adopt, release


def svd_args_for(layer: keras.layers.Layer, sparse_class: type, svd_args: dict) -> dict:
    """The Sparse VD arguments `sparse_class` takes for `layer`.

    Group variables only where the class supports them and the layer is not a
    grouped convolution; composite layers (attention) take only their keys.
    """
    keys = getattr(sparse_class, "svd_config_keys", SVD_ARGS)
    if (
        getattr(sparse_class, "group_kernel_axis", None) is None
        or getattr(layer, "groups", 1) != 1
    ):
        keys = tuple(key for key in keys if key != "group_sparsity")
    return {key: value for key, value in svd_args.items() if key in keys}


def to_sparse(layer: keras.layers.Layer, svd_args: dict) -> None:
    """Makes `layer`, of a registered Keras class, its Sparse VD counterpart.

    Raises:
        ValueError: if its class is not registered, or it is quantized.
    """
    pair = registry.pair_for_plain(layer)
    if pair is None:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has no registered "
            "Sparse VD counterpart."
        )
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"Layer {layer.name!r} is quantized ({layer.quantization_mode}): "
            "convert the float model, then quantize the stripped result."
        )
    compat.merge_lora(layer)
    adopt(layer, pair.sparse, svd_args_for(layer, pair.sparse, svd_args))


def to_plain(layer: keras.layers.Layer) -> None:
    """Makes the Sparse VD `layer` its Keras counterpart, holding the
    inference kernels (``theta * mask``).

    Raises:
        ValueError: if its exact class is not registered (a user's subclass of
            `DenseSVD`, whose `call` may compute something else).
    """
    pair = registry.pair_for_sparse(layer)
    if pair is None:
        raise unregistered_sparse_error(layer)
    release(layer, pair.plain)


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
        "Declare its counterpart with `@keras_sparsevd.counterpart_of(PlainClass)` "
        "or `keras_sparsevd.register_layer_pair(PlainClass, "
        f"{type(layer).__name__})`."
    )
