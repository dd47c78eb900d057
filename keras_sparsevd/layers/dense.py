"""`DenseSVD` and `EinsumDenseSVD`: Sparse VD dense projections."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_sparsevd.layers.args import check_group_channels, check_group_data_format
from keras_sparsevd.layers.base import SVD_ARGS, SparseVDLayer
from keras_sparsevd.registry import counterpart_of

# What `DenseSVD` adds to the arguments every Sparse VD layer takes.
_CHANNEL_GROUP_ARGS = ("group_channels", "group_data_format")


@counterpart_of(keras.layers.Dense)
class DenseSVD(SparseVDLayer, keras.layers.Dense):
    """Densely-connected layer with Sparse Variational Dropout.

    The Sparse VD counterpart of `keras.layers.Dense` (same arguments, same
    ``kernel`` and ``bias``) with a per-weight dropout rate ``alpha`` learned
    by variational inference (Molchanov et al., 2017); at evaluation it is
    ``activation(x @ (kernel * kernel_mask) + bias)``, where weights with
    ``log_alpha >= threshold`` are pruned. Its KL term, scaled by the model's
    KL weight, is added with ``add_loss``: train it with
    `keras_sparsevd.KLScheduler` (or `keras_sparsevd.set_kl_weight`).

    Args:
        units: positive integer, dimensionality of the output.
        activation: activation function; None means linear.
        use_bias: whether the layer uses a bias vector.
        kernel_initializer: initializer of ``kernel`` (theta). Defaults to
            N(0, 0.01^2), as in the authors' code.
        bias_initializer: initializer of the bias.
        log_sigma2_initializer: initializer of ``log_sigma2``; constant -10
            by default.
        threshold: log-alpha pruning threshold (3.0 in the paper).
        train_clip: zero pruned weights in the training mean as well.
        seed: optional integer seed for the noise.
        group_sparsity: also learn one multiplicative group variable per
            input unit (structured Sparse VD, see `SparseVDLayer`), so that
            whole input units are pruned.
        group_channels: with ``group_sparsity``, share each group variable
            over the positions of one channel of a flattened feature map:
            the input's last axis (``positions * group_channels`` units, as
            `keras.layers.Flatten` makes them from a conv net's output) gets
            ``group_channels`` groups instead of one per unit, so a pruned
            group removes a whole filter of the convolution before the
            ``Flatten`` (`keras_sparsevd.compact_model` then drops it).
            None (default): one group per input unit.
            `keras_sparsevd.sparsify` sets it with ``channel_groups=True``.
        group_data_format: how the flattened units are ordered, as the
            ``data_format`` of the `Flatten`'s input: ``"channels_last"``
            (default; unit ``i`` is channel ``i % group_channels``) or
            ``"channels_first"`` (channel ``i // positions``).
        **kwargs: the other arguments of `keras.layers.Dense` (regularizers,
            constraints, ``name``, ``dtype``).

    Input shape:
        N-D tensor ``(batch_size, ..., input_dim)``; the last dimension must
        be known (and a multiple of ``group_channels`` if that is set).

    Output shape:
        ``(batch_size, ..., units)``.

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> model = keras.Sequential([keras.Input((784,)),
    ...                           ksvd.DenseSVD(300, activation="relu"),
    ...                           ksvd.DenseSVD(10)])
    >>> model.output_shape
    (None, 10)
    """

    svd_config_keys = SVD_ARGS + _CHANNEL_GROUP_ARGS

    def __init__(
        self,
        units: int,
        kernel_initializer: Any = None,
        group_channels: int | None = None,
        group_data_format: str = "channels_last",
        **kwargs: Any,
    ) -> None:
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(mean=0.0, stddev=0.01)
        # Checked before the base class builds anything, for a clear error.
        _check_channel_groups(
            group_channels, group_data_format, kwargs.get("group_sparsity", False)
        )
        self._channel_group_args = {
            "group_channels": group_channels,
            "group_data_format": group_data_format,
        }
        super().__init__(units, kernel_initializer=kernel_initializer, **kwargs)

    def _init_svd_state(
        self,
        group_channels: int | None = None,
        group_data_format: str = "channels_last",
        **svd_args: Any,
    ) -> None:
        # `__init__` passes the two through an attribute (the base class
        # calls this without them); `adopt` (sparsify, load_model) passes
        # them here.
        given = self.__dict__.pop("_channel_group_args", None)
        if given is not None:
            group_channels = given["group_channels"]
            group_data_format = given["group_data_format"]
        super()._init_svd_state(**svd_args)
        _check_channel_groups(group_channels, group_data_format, self.group_sparsity)
        self.group_channels = check_group_channels(group_channels)
        self.group_data_format = check_group_data_format(group_data_format)

    def _build_groups(self, units: int) -> None:
        channels = self.group_channels
        if channels is None:
            super()._build_groups(units)
            return
        if units % channels:
            raise ValueError(
                f"`group_channels={channels}` of {self.name!r} must divide its "
                f"{units} input units (positions x channels of the flattened "
                "feature map); pass the number of channels of the layer before "
                "`Flatten`."
            )
        super()._build_groups(channels)

    def _groups_to_units(self, values: Any) -> Any:
        channels = self.group_channels
        if channels is None:
            return values
        positions = self.theta().shape[0] // channels
        if self.group_data_format == "channels_first":
            # Units run channel by channel: c * positions + p.
            return ops.repeat(values, positions, axis=-1)
        # Units run position by position: p * channels + c.
        reps = [1] * (len(values.shape) - 1) + [positions]
        return ops.tile(values, reps)

    def svd_config(self) -> dict:
        config = super().svd_config()
        config["group_channels"] = self.group_channels
        config["group_data_format"] = self.group_data_format
        return config

    def build(self, input_shape: tuple) -> None:
        if tuple(input_shape)[-1] is None:
            raise ValueError(
                f"The last dimension of the input of {self.name!r} must be known "
                f"to create its kernel; got input shape {tuple(input_shape)}. "
                "Give `keras.Input` a full feature shape."
            )
        super().build(input_shape)

    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        return ops.matmul(inputs, kernel)


def _check_channel_groups(
    group_channels: Any, group_data_format: Any, group_sparsity: Any
) -> None:
    check_group_channels(group_channels)
    check_group_data_format(group_data_format)
    if group_channels is not None and not group_sparsity:
        raise ValueError(
            f"`group_channels={group_channels}` shares group variables over "
            "positions, but the layer has none: pass `group_sparsity=True` too."
        )


@counterpart_of(keras.layers.EinsumDense)
class EinsumDenseSVD(SparseVDLayer, keras.layers.EinsumDense):
    """`keras.layers.EinsumDense` with Sparse Variational Dropout.

    An einsum is linear in its kernel, so the training pass is the same
    local reparameterisation as `DenseSVD`: the mean is
    ``einsum(equation, x, theta)`` and the variance
    ``einsum(equation, x * x, alpha * theta^2)``. Keras' own `EinsumDense`
    parses the equation and shapes the kernel and bias.

    Args:
        equation: the einsum equation, e.g. ``"ab,bc->ac"``; inputs, kernel,
            output in that order, as for `keras.layers.EinsumDense`.
        output_shape: the output shape without the batch dimension (use None
            for dimensions that come from the input).
        activation: activation function; None means linear.
        bias_axes: letters of the output axes that get a bias; None for none.
        threshold: log-alpha pruning threshold (3.0 in the paper).
        log_sigma2_initializer: initializer of ``log_sigma2`` (constant -10).
        train_clip: zero pruned weights in the training mean as well.
        seed: optional integer seed for the noise.
        **kwargs: the other arguments of `keras.layers.EinsumDense`
            (initializers, regularizers, constraints, ``name``, ``dtype``).

    Input shape:
        as the equation's first operand.

    Output shape:
        as the equation's output, with ``output_shape``.

    Example:

    >>> import keras_sparsevd as ksvd
    >>> layer = ksvd.EinsumDenseSVD("abc,cd->abd", output_shape=(None, 64),
    ...                             bias_axes="d")
    >>> layer.compute_output_shape((None, 28, 32))
    (None, 28, 64)
    """

    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        return ops.einsum(self.equation, inputs, kernel)

    def _group_kernel_axis(self) -> int:
        # Groups scale the input's last axis: the kernel axis it is summed with.
        inputs, rest = self.equation.split(",")
        kernel = rest.split("->")[0].replace("...", "")
        letter = inputs[-1]
        if letter not in kernel:
            raise ValueError(
                f"`group_sparsity` needs the last input axis of {self.name!r} to be "
                f"contracted with the kernel; equation {self.equation!r} does not."
            )
        return kernel.index(letter) - len(kernel)
