"""`SelectFeatures`: keeps some entries of one axis, for inputs nobody reads.

Keras 3 has no built-in layer that picks given indices along an axis, and
compaction needs one to drop the input features the first layer no longer
reads (`compact_model(model, drop_unread_inputs=True)`).

A ``.keras`` file holding this layer needs keras_sparsevd to load (``import
keras_sparsevd`` first, which registers the class). A TF SavedModel
(``model.export``) or a TFLite file traces the layer into a plain gather, so
serving those needs no code of this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="keras_sparsevd")
class SelectFeatures(keras.layers.Layer):
    """Keeps the entries `indices` of one axis, in that order: a gather.

    ``SelectFeatures([0, 3], axis=-1)`` maps inputs of shape ``(batch, 5)``
    to ``inputs[:, [0, 3]]``, of shape ``(batch, 2)``. It has no weights.

    Args:
        indices: the positions to keep along `axis`, non-negative, at least
            one. Repeats and any order are allowed.
        axis: the axis to select from; not the batch axis (0).
        **kwargs: the base `keras.layers.Layer` arguments (``name``, ...).

    Raises:
        ValueError: if `indices` is empty, not one-dimensional or not made
            of non-negative integers, or `axis` is 0; when built, if an index
            is out of range for the input.

    Example:

    >>> layer = SelectFeatures([0, 2])  # doctest: +SKIP
    >>> keras.ops.convert_to_numpy(layer(np.array([[1.0, 2.0, 3.0]])))  # doctest: +SKIP
    array([[1., 3.]], dtype=float32)
    """

    def __init__(self, indices: Sequence[int], axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        array = np.asarray(indices)
        if (
            array.ndim != 1
            or array.size == 0
            or not np.issubdtype(array.dtype, np.integer)
            or np.any(array < 0)
        ):
            raise ValueError(
                f"`indices` of SelectFeatures {self.name!r} must be a non-empty "
                f"list of non-negative integers, got {indices!r}."
            )
        if int(axis) == 0:
            raise ValueError(
                f"SelectFeatures {self.name!r} cannot select along the batch "
                "axis (axis=0)."
            )
        # int32: what tf.gather and the TFLite GATHER op take.
        self._indices = array.astype("int32")
        self.axis = int(axis)

    @property
    def indices(self) -> list:
        """The kept positions, as a list of ints."""
        return self._indices.tolist()

    def build(self, input_shape: tuple) -> None:
        size = input_shape[self.axis]
        if size is not None and int(self._indices.max()) >= size:
            raise ValueError(
                f"SelectFeatures {self.name!r} keeps index "
                f"{int(self._indices.max())} of axis {self.axis}, but its input "
                f"has only {size} there (input shape {tuple(input_shape)})."
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        if len(inputs.shape) == 2 and self.axis in (1, -1):
            # TF's and TFLite's CPU gathers copy one element at a time along
            # the last axis but whole rows along the first: picking 320 of a
            # (100, 784) matrix's columns took half the time (TFLite, 1
            # thread) through the transpose. Not done for higher ranks, where
            # moving the axis cost more than it saved at batch 1.
            selected = keras.ops.take(
                keras.ops.transpose(inputs), self._indices, axis=0
            )
            return keras.ops.transpose(selected)
        return keras.ops.take(inputs, self._indices, axis=self.axis)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        shape = list(input_shape)
        shape[self.axis] = int(self._indices.size)
        return tuple(shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "indices": self.indices, "axis": self.axis}
