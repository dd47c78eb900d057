"""Sparse VD convolutions of every rank: one implementation, thin subclasses."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_sparsevd.layers.base import SparseVDLayer, check_positive_int


def _int_tuple(name: str, value: Any, rank: int) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * rank
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(
            f"`{name}` must be an integer or a tuple of {rank} integers, got {value!r}."
        ) from None
    if len(value) != rank or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise ValueError(
            f"`{name}` must be an integer or a tuple of {rank} positive "
            f"integers, got {value!r}."
        )
    return value


class BaseConvSVD(SparseVDLayer):
    """N-D convolution with Sparse Variational Dropout.

    The training pass convolves the input with theta for the mean and the
    squared input with ``alpha * theta^2`` for the variance; evaluation
    convolves with ``kernel * kernel_mask``. Not for direct use: see
    `Conv1DSVD`, `Conv2DSVD` and `Conv3DSVD`.

    Subclasses set the class attribute ``rank`` (1, 2 or 3).

    Args:
        filters: positive integer, number of output channels.
        kernel_size: integer or tuple of ``rank`` integers.
        strides: integer or tuple of ``rank`` integers.
        padding: ``"valid"`` or ``"same"``.
        data_format: ``"channels_last"``, ``"channels_first"`` or None (the
            Keras default).
        dilation_rate: integer or tuple of ``rank`` integers.
        **kwargs: the arguments of `SparseVDLayer`.
    """

    rank: int = 0

    def __init__(
        self,
        filters: int,
        kernel_size: Any,
        strides: Any = 1,
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: Any = 1,
        **kwargs: Any,
    ) -> None:
        if self.rank not in (1, 2, 3):
            raise TypeError(
                "BaseConvSVD is abstract: use Conv1DSVD, Conv2DSVD or Conv3DSVD."
            )
        super().__init__(**kwargs)
        rank = self.rank
        self.filters = check_positive_int("filters", filters)
        self.kernel_size = _int_tuple("kernel_size", kernel_size, rank)
        self.strides = _int_tuple("strides", strides, rank)
        self.dilation_rate = _int_tuple("dilation_rate", dilation_rate, rank)
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(f'`padding` must be "valid" or "same", got {padding!r}.')
        self.padding = padding.lower()
        if data_format is None:
            data_format = keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                '`data_format` must be "channels_last", "channels_first" or None, '
                f"got {data_format!r}."
            )
        self.data_format = data_format
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides` > 1 is not compatible with `dilation_rate` > 1; got "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}."
            )

    @property
    def _channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"{self.__class__.__name__} {self.name!r} expects inputs of rank "
                f"{self.rank + 2} (batch, {self.rank} spatial dims, channels), got "
                f"input shape {input_shape}."
            )
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"The channel dimension of the input of {self.name!r} must be "
                f"known to create its kernel; got input shape {input_shape} with "
                f"data_format={self.data_format!r}."
            )
        self._build_weights(
            self.kernel_size + (channels, self.filters), (self.filters,)
        )
        self.input_spec = keras.layers.InputSpec(
            ndim=self.rank + 2, axes={self._channel_axis: channels}
        )

    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        return ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )

    def _add_bias(self, outputs: Any, bias: Any) -> Any:
        if self.data_format == "channels_last":
            return outputs + bias
        return outputs + ops.reshape(bias, (1, self.filters) + (1,) * self.rank)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        input_shape = tuple(input_shape)
        if self.data_format == "channels_last":
            spatial = input_shape[1:-1]
        else:
            spatial = input_shape[2:]
        out = []
        for size, k, s, d in zip(
            spatial, self.kernel_size, self.strides, self.dilation_rate
        ):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append((size + s - 1) // s)
            else:
                out.append((size - d * (k - 1) - 1) // s + 1)
        if self.data_format == "channels_last":
            return (input_shape[0], *out, self.filters)
        return (input_shape[0], self.filters, *out)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sparsevd")
class Conv1DSVD(BaseConvSVD):
    """1D convolution with Sparse Variational Dropout.

    The Sparse VD counterpart of `keras.layers.Conv1D` (temporal
    convolution): the same arguments plus ``threshold``, ``train_clip``,
    ``seed`` and ``log_sigma2_initializer``. theta is Glorot-uniform
    initialised and ``log_sigma2`` is -10 by default.

    Args:
        filters: positive integer, number of output channels.
        kernel_size: integer or tuple of 1 integer.
        strides: integer or tuple of 1 integer.
        padding: ``"valid"`` or ``"same"``.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        dilation_rate: integer or tuple of 1 integer.
        **kwargs: ``activation``, ``use_bias``, initializers, regularizers,
            constraints, ``threshold``, ``train_clip``, ``seed``, ``name``.

    Input shape:
        ``(batch_size, steps, channels)`` (channels_last) or
        ``(batch_size, channels, steps)`` (channels_first).

    Output shape:
        ``(batch_size, new_steps, filters)`` (channels_last) or
        ``(batch_size, filters, new_steps)`` (channels_first).

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> layer = ksvd.Conv1DSVD(8, 3, padding="same")
    >>> layer.compute_output_shape((None, 100, 4))
    (None, 100, 8)
    """

    rank = 1


@keras.saving.register_keras_serializable(package="keras_sparsevd")
class Conv2DSVD(BaseConvSVD):
    """2D convolution with Sparse Variational Dropout.

    The Sparse VD counterpart of `keras.layers.Conv2D`: the same arguments
    plus ``threshold``, ``train_clip``, ``seed`` and
    ``log_sigma2_initializer``. theta is Glorot-uniform initialised and
    ``log_sigma2`` is -10 by default.

    Args:
        filters: positive integer, number of output channels.
        kernel_size: integer or tuple of 2 integers.
        strides: integer or tuple of 2 integers.
        padding: ``"valid"`` or ``"same"``.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        dilation_rate: integer or tuple of 2 integers.
        **kwargs: ``activation``, ``use_bias``, initializers, regularizers,
            constraints, ``threshold``, ``train_clip``, ``seed``, ``name``.

    Input shape:
        ``(batch_size, rows, cols, channels)`` (channels_last) or
        ``(batch_size, channels, rows, cols)`` (channels_first).

    Output shape:
        ``(batch_size, new_rows, new_cols, filters)`` (channels_last) or
        ``(batch_size, filters, new_rows, new_cols)`` (channels_first).

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> layer = ksvd.Conv2DSVD(20, 5, activation="relu")
    >>> layer.compute_output_shape((None, 28, 28, 1))
    (None, 24, 24, 20)
    """

    rank = 2


@keras.saving.register_keras_serializable(package="keras_sparsevd")
class Conv3DSVD(BaseConvSVD):
    """3D convolution with Sparse Variational Dropout.

    The Sparse VD counterpart of `keras.layers.Conv3D`: the same arguments
    plus ``threshold``, ``train_clip``, ``seed`` and
    ``log_sigma2_initializer``. theta is Glorot-uniform initialised and
    ``log_sigma2`` is -10 by default.

    Args:
        filters: positive integer, number of output channels.
        kernel_size: integer or tuple of 3 integers.
        strides: integer or tuple of 3 integers.
        padding: ``"valid"`` or ``"same"``.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        dilation_rate: integer or tuple of 3 integers.
        **kwargs: ``activation``, ``use_bias``, initializers, regularizers,
            constraints, ``threshold``, ``train_clip``, ``seed``, ``name``.

    Input shape:
        ``(batch_size, d1, d2, d3, channels)`` (channels_last) or
        ``(batch_size, channels, d1, d2, d3)`` (channels_first).

    Output shape:
        the same layout with ``filters`` channels and the convolved sizes.

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> layer = ksvd.Conv3DSVD(4, 3)
    >>> layer.compute_output_shape((None, 8, 8, 8, 2))
    (None, 6, 6, 6, 4)
    """

    rank = 3
