"""The pairs of plain Keras and Sparse VD layers, and how a layer crosses.

One entry per layer type: `sparsify`, `strip_sparsevd` (hence
`compact_model` and `save_sparse`) and the export CLI all look layers up
here, by exact class, so that a user's subclass of `Dense` (or of
`DenseSVD`), whose `call` may do anything, is never taken for its base.
`register_layer_pair` adds a pair of the user's own.

How a layer crosses, in both directions:

- config: the Sparse VD layer's config is its Keras layer's config plus the
  keys in ``sparse.svd_config_keys`` (``threshold``, ...);
- weights: matched by variable name. Each kernel named in
  ``sparse.svd_kernels`` is theta; going back it is ``theta * mask``.
  Composite layers (`MultiHeadAttentionSVD`) name the attributes that hold
  their inner pairs in ``svd_sublayers``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_sparsevd import layers as svd
from keras_sparsevd.layers.attention import MultiHeadAttentionSVD
from keras_sparsevd.layers.base import SVD_ARGS, SparseVDLayer

L = keras.layers
# Keras layer options that a Sparse VD layer cannot honour.
_PLAIN_ONLY_KEYS = ("lora_rank", "lora_alpha", "quantization_config")


@dataclasses.dataclass(frozen=True)
class LayerPair:
    """A Keras layer class and its Sparse VD counterpart."""

    plain: type
    sparse: type


_BY_PLAIN: dict = {}
_BY_SPARSE: dict = {}


def register_layer_pair(plain: type, sparse: type) -> None:
    """Registers a plain Keras layer class and its Sparse VD counterpart.

    Afterwards `sparsify` converts layers of exactly class `plain` to
    `sparse`, and `strip_sparsevd` converts layers of exactly class `sparse`
    back. Use it for your own layers (or subclasses of Keras' or of this
    package's layers) whose weights carry across by name.

    Args:
        plain: a `keras.layers.Layer` subclass.
        sparse: its Sparse VD counterpart: a `SparseVDLayer` subclass whose
            config is `plain`'s plus ``svd_config_keys`` and whose weights
            are `plain`'s (same names) plus one ``log_sigma2`` per kernel
            named in ``svd_kernels``; or a layer whose ``svd_sublayers``
            names attributes holding such pairs.

    Raises:
        ValueError: if either is not a layer class, or `sparse` is neither
            kind, or one of them is already registered with another class.

    Example:

    >>> register_layer_pair(MyDense, MyDenseSVD)  # doctest: +SKIP
    """
    for name, cls in (("plain", plain), ("sparse", sparse)):
        if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
            raise ValueError(f"`{name}` must be a Keras layer class, got {cls!r}.")
    if not (issubclass(sparse, SparseVDLayer) or getattr(sparse, "svd_sublayers", ())):
        raise ValueError(
            f"`sparse` ({sparse.__name__}) must subclass "
            "keras_sparsevd.SparseVDLayer, or name its Sparse VD sublayers in "
            "`svd_sublayers`."
        )
    for table, cls, other in ((_BY_PLAIN, plain, sparse), (_BY_SPARSE, sparse, plain)):
        known = table.get(cls)
        if known is not None and other not in (known.plain, known.sparse):
            raise ValueError(
                f"{cls.__name__} is already registered with "
                f"{(known.sparse if table is _BY_PLAIN else known.plain).__name__}."
            )
    pair = LayerPair(plain, sparse)
    _BY_PLAIN[plain] = pair
    _BY_SPARSE[sparse] = pair


def pair_for_plain(layer: keras.layers.Layer) -> LayerPair | None:
    """The pair whose plain class is exactly the layer's class, or None."""
    return _BY_PLAIN.get(type(layer))


def pair_for_sparse(layer: keras.layers.Layer) -> LayerPair | None:
    """The pair whose Sparse VD class is exactly the layer's class, or None."""
    return _BY_SPARSE.get(type(layer))


def is_sparse(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a Sparse VD layer of any kind (registered or not)."""
    return isinstance(layer, SparseVDLayer) or isinstance(layer, tuple(_BY_SPARSE))


def registered_plain_classes() -> list:
    """The names of the Keras layer classes `sparsify` converts."""
    return sorted(cls.__name__ for cls in _BY_PLAIN)


def unregistered_base(layer: keras.layers.Layer, table: str) -> type | None:
    """The registered class `layer` subclasses without being it, if any."""
    classes = _BY_PLAIN if table == "plain" else _BY_SPARSE
    if type(layer) in classes:
        return None
    for cls in type(layer).__mro__[1:]:
        if cls in classes:
            return cls
    return None


# ----------------------------------------------------------------------
# Crossing over.
def sparse_config(layer: keras.layers.Layer, pair: LayerPair, **svd_args: Any) -> dict:
    """The config of `pair.sparse` for the plain `layer`, with `svd_args`."""
    config = layer.get_config()
    for key in _PLAIN_ONLY_KEYS:
        config.pop(key, None)
    keys = getattr(pair.sparse, "svd_config_keys", SVD_ARGS)
    if (
        getattr(pair.sparse, "group_kernel_axis", None) is None
        or getattr(layer, "groups", 1) != 1
    ):
        keys = tuple(key for key in keys if key != "group_sparsity")
    config.update({key: value for key, value in svd_args.items() if key in keys})
    return config


def plain_config(layer: keras.layers.Layer) -> dict:
    """The config of the plain counterpart of the Sparse VD `layer`."""
    config = layer.get_config()
    for key in getattr(type(layer), "svd_config_keys", SVD_ARGS):
        config.pop(key, None)
    return config


def _own_variables(layer: keras.layers.Layer) -> list:
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def _by_name(layer: keras.layers.Layer) -> dict:
    return {variable.name: variable for variable in _own_variables(layer)}


def masked_kernel(layer: SparseVDLayer, kernel_name: str | None = None) -> np.ndarray:
    """``theta * mask`` of one kernel as float32 numpy, pruned weights +0.0.

    ``np.where`` rather than a product: a negative theta times a 0 mask is
    -0.0, whose bit pattern compresses worse and is not "exactly 0" in bytes.
    """
    theta = keras.ops.convert_to_numpy(
        keras.ops.cast(layer.theta(kernel_name), "float32")
    )
    mask = keras.ops.convert_to_numpy(layer.mask_of(kernel_name))
    return np.where(mask > 0, theta, np.float32(0.0)).astype("float32")


def grouped_kernel(layer: SparseVDLayer) -> np.ndarray:
    """The first kernel, masked, with the group means and masks folded in.

    ``x_i * mu_i * mask_i`` applied to a linear map is the map with row i of
    its kernel scaled by ``mu_i * mask_i``.
    """
    kernel = masked_kernel(layer)
    scale = keras.ops.convert_to_numpy(layer.group_scale()).astype("float32")
    axis = layer._group_kernel_axis() % kernel.ndim
    shape = [1] * kernel.ndim
    shape[axis] = -1
    folded = kernel * scale.reshape(shape)
    return np.where(folded != 0, folded, np.float32(0.0)).astype("float32")


def _sublayers(plain: Any, sparse: Any) -> list:
    pairs = []
    for attr in getattr(type(sparse), "svd_sublayers", ()):
        inner_plain = getattr(plain, attr, None)
        inner_sparse = getattr(sparse, attr, None)
        if (inner_plain is None) != (inner_sparse is None):
            raise ValueError(
                f"{type(plain).__name__} {plain.name!r} and "
                f"{type(sparse).__name__} {sparse.name!r} differ in `{attr}`."
            )
        if inner_plain is not None:
            pairs.append((inner_plain, inner_sparse))
    return pairs


def copy_to_sparse(plain: keras.layers.Layer, sparse: keras.layers.Layer) -> None:
    """Copies the trained weights of `plain` into its built counterpart.

    Kernels become theta (LoRA deltas merged in); ``log_sigma2`` keeps its
    initial value.
    """
    if getattr(plain, "quantization_mode", None):
        raise ValueError(
            f"Layer {plain.name!r} is quantized ({plain.quantization_mode}): "
            "convert the float model, then quantize the stripped result."
        )
    if isinstance(sparse, SparseVDLayer):
        targets = _by_name(sparse)
        for variable in _own_variables(plain):
            name = variable.name
            if name.startswith("lora_"):
                continue
            if name not in targets:
                raise ValueError(
                    f"Cannot carry weight {name!r} of {plain.name!r} "
                    f"({type(plain).__name__}) over: {type(sparse).__name__} "
                    "has no weight of that name."
                )
            value = getattr(plain, name) if name in sparse.svd_kernels else variable
            targets[name].assign(keras.ops.convert_to_numpy(value))
    for inner_plain, inner_sparse in _sublayers(plain, sparse):
        copy_to_sparse(inner_plain, inner_sparse)


def copy_to_plain(sparse: keras.layers.Layer, plain: keras.layers.Layer) -> None:
    """Copies the inference weights of `sparse` into its built plain twin.

    Kernels become ``theta * mask`` (pruned weights exactly 0); the other
    weights (bias) are copied; ``log_sigma2`` and the KL weight are dropped.
    """
    if isinstance(sparse, SparseVDLayer):
        sources = _by_name(sparse)
        for variable in _own_variables(plain):
            name = variable.name
            if name == sparse.svd_kernels[0] and sparse.group_sparsity:
                variable.assign(grouped_kernel(sparse))
            elif name in sparse.svd_kernels:
                variable.assign(masked_kernel(sparse, name))
            elif name in sources:
                variable.assign(keras.ops.convert_to_numpy(sources[name]))
            else:
                raise ValueError(
                    f"Cannot fill weight {name!r} of the plain "
                    f"{type(plain).__name__} {plain.name!r}: "
                    f"{type(sparse).__name__} has no weight of that name."
                )
    for inner_plain, inner_sparse in _sublayers(plain, sparse):
        copy_to_plain(inner_sparse, inner_plain)


for _plain, _sparse in (
    (L.Dense, svd.DenseSVD),
    (L.EinsumDense, svd.EinsumDenseSVD),
    (L.Embedding, svd.EmbeddingSVD),
    (L.Conv1D, svd.Conv1DSVD),
    (L.Conv2D, svd.Conv2DSVD),
    (L.Conv3D, svd.Conv3DSVD),
    (L.Conv1DTranspose, svd.Conv1DTransposeSVD),
    (L.Conv2DTranspose, svd.Conv2DTransposeSVD),
    (L.Conv3DTranspose, svd.Conv3DTransposeSVD),
    (L.DepthwiseConv1D, svd.DepthwiseConv1DSVD),
    (L.DepthwiseConv2D, svd.DepthwiseConv2DSVD),
    (L.SeparableConv1D, svd.SeparableConv1DSVD),
    (L.SeparableConv2D, svd.SeparableConv2DSVD),
    (L.MultiHeadAttention, MultiHeadAttentionSVD),
    (L.LSTM, svd.LSTMSVD),
    (L.GRU, svd.GRUSVD),
    (L.SimpleRNN, svd.SimpleRNNSVD),
    (L.LSTMCell, svd.LSTMCellSVD),
    (L.GRUCell, svd.GRUCellSVD),
    (L.SimpleRNNCell, svd.SimpleRNNCellSVD),
):
    register_layer_pair(_plain, _sparse)
