"""The pairs of Keras and Sparse VD layer classes: one declaration per pair.

A Sparse VD class declares its Keras counterpart once, with the class
decorator `counterpart_of`::

    @counterpart_of(keras.layers.Dense)
    class DenseSVD(SparseVDLayer, keras.layers.Dense): ...

That registers the class for Keras serialization and enters the pair in this
table, which `sparsify`, `strip_sparsevd` (hence `compact_model` and
`save_sparse`), `keras_sparsevd.load_model` and the report all ask. Layers
are matched by exact class, so that a user's subclass of `Dense` (or of
`DenseSVD`), whose `call` may do anything, is never taken for its base.

What a pair must satisfy: layers are converted in place (their class is
swapped), so the Sparse VD class adds only the Sparse VD state to what the
Keras layer holds (it usually extends the Keras class). Either it is a
`SparseVDLayer` (each kernel named in ``svd_kernels`` gets a
``log_sigma2``), or it names in
``svd_sublayers`` the attributes that hold its inner Sparse VD layers (as
`MultiHeadAttentionSVD` does with its projections) and implements
``_adopt_plain``/``_release_to_plain`` for them.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import keras


@dataclasses.dataclass(frozen=True)
class LayerPair:
    """A Keras layer class and its Sparse VD counterpart."""

    plain: type
    sparse: type


_BY_PLAIN: dict = {}
_BY_SPARSE: dict = {}


def counterpart_of(plain: type, package: str = "keras_sparsevd") -> Callable:
    """Class decorator: declares a Sparse VD layer class and its Keras class.

    Registers the decorated class with Keras' serialization (under
    `package`) and as the counterpart of `plain` (`register_layer_pair`).

    Args:
        plain: the Keras layer class (``keras.layers.Dense``, or a user's own
            layer) that the decorated class converts from and strips back to.
        package: the serialization package name (use your own for your own
            layers).

    Returns:
        The decorator, which returns the class unchanged.

    Example:

    >>> @counterpart_of(MyDense, package="my_project")  # doctest: +SKIP
    ... class MyDenseSVD(keras_sparsevd.SparseVDLayer, MyDense):
    ...     def _apply_kernel(self, inputs, kernel):
    ...         return keras.ops.matmul(inputs, kernel)
    """

    def declare(sparse: type) -> type:
        keras.saving.register_keras_serializable(package=package)(sparse)
        register_layer_pair(plain, sparse)
        return sparse

    return declare


def register_layer_pair(plain: type, sparse: type) -> None:
    """Registers a Keras layer class and its Sparse VD counterpart.

    Afterwards `sparsify` converts layers of exactly class `plain` to
    `sparse`, and `strip_sparsevd` converts layers of exactly class `sparse`
    back. `counterpart_of` does this as a class decorator, and also
    registers `sparse` for serialization.

    Args:
        plain: a `keras.layers.Layer` subclass.
        sparse: its Sparse VD counterpart: a `SparseVDLayer` (usually also
            a subclass of `plain`) or a layer that names its Sparse VD
            sublayers in ``svd_sublayers``. Layers are converted in place
            (their class is swapped), so an instance of `plain` must hold
            everything `sparse` needs beyond the Sparse VD state.

    Raises:
        ValueError: if either is not a layer class, `sparse` is neither kind,
            or one of them is already registered with another class.

    Example:

    >>> register_layer_pair(MyDense, MyDenseSVD)  # doctest: +SKIP
    """
    from keras_sparsevd.layers.base import SparseVDLayer

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


def declare_optional_pairs() -> None:
    """Declares the pairs of optional libraries' layers that are in use.

    KerasHub's pairs (`keras_sparsevd.layers.hub`) once `keras_hub` has been
    imported: a model of KerasHub's, or a file holding one, needs it anyway.
    """
    if "keras_hub" in sys.modules:
        import keras_sparsevd.layers.hub  # noqa: F401


def pair_for_plain(layer: keras.layers.Layer) -> LayerPair | None:
    """The pair whose Keras class is exactly the layer's class, or None."""
    return _BY_PLAIN.get(type(layer))


def pair_for_sparse(layer: keras.layers.Layer) -> LayerPair | None:
    """The pair whose Sparse VD class is exactly the layer's class, or None."""
    return _BY_SPARSE.get(type(layer))


def is_sparse(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a Sparse VD layer of any kind (registered or not)."""
    from keras_sparsevd.layers.base import SparseVDLayer

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
