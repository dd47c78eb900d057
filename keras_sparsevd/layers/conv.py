"""Sparse VD convolutions: plain, transposed, depthwise and separable.

Each family is one small class that says how its kernel is applied; each
rank is that class combined with Keras' own layer of the rank, which
supplies the arguments, the kernel shape, the output shape and the config.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_sparsevd import _keras_compat as _compat
from keras_sparsevd.layers.base import SparseVDLayer
from keras_sparsevd.registry import counterpart_of

_SHAPES = {
    1: ("``(batch_size, steps, channels)``", "``(batch_size, new_steps, {out})``"),
    2: (
        "``(batch_size, rows, cols, channels)``",
        "``(batch_size, new_rows, new_cols, {out})``",
    ),
    3: (
        "``(batch_size, d1, d2, d3, channels)``",
        "``(batch_size, new_d1, new_d2, new_d3, {out})``",
    ),
}


def _doc(what: str, keras_name: str, rank: int, out: str, example: str) -> str:
    inputs, outputs = _SHAPES[rank]
    return f"""{what} with Sparse Variational Dropout.

    The Sparse VD counterpart of `keras.layers.{keras_name}`: the same
    arguments, kernels and output shapes, plus ``threshold``,
    ``log_sigma2_initializer``, ``train_clip`` and ``seed``. Every kernel
    weight gets its own dropout rate; the training pass applies the layer's
    op to ``x`` with theta and to ``x * x`` with ``alpha * theta^2``.

    Args:
        *args: the positional arguments of `keras.layers.{keras_name}`.
        threshold: log-alpha pruning threshold (3.0 in the paper).
        log_sigma2_initializer: initializer of ``log_sigma2`` (constant -10).
        train_clip: zero pruned weights in the training mean as well.
        seed: optional integer seed for the noise.
        **kwargs: the keyword arguments of `keras.layers.{keras_name}`.

    Input shape:
        {inputs} for ``data_format="channels_last"``; channels second for
        ``"channels_first"``.

    Output shape:
        {outputs.format(out=out)}, channels second for ``"channels_first"``.

    Example:

    >>> import keras_sparsevd as ksvd
    {example}
    """


class _ConvSVD(SparseVDLayer):
    """What every Sparse VD convolution shares: a known channel count."""

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        channel_axis = -1 if self.data_format == "channels_last" else 1
        if len(input_shape) == self.rank + 2 and input_shape[channel_axis] is None:
            raise ValueError(
                f"The channel dimension of the input of {self.name!r} must be "
                f"known to create its kernel; got input shape {input_shape} with "
                f"data_format={self.data_format!r}."
            )
        super().build(input_shape)


class BaseConvSVD(_ConvSVD):
    """Convolutions (with ``groups``) with Sparse Variational Dropout.

    Not for direct use: see `Conv1DSVD`, `Conv2DSVD` and `Conv3DSVD`, which
    combine it with `keras.layers.Conv1D` / `Conv2D` / `Conv3D`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not isinstance(self, keras.layers.Layer) or not hasattr(
            self, "convolution_op"
        ):
            raise TypeError(
                "BaseConvSVD is abstract: use Conv1DSVD, Conv2DSVD or Conv3DSVD."
            )
        super().__init__(*args, **kwargs)

    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        if self.padding == "causal":
            inputs = ops.pad(inputs, _compat.causal_padding(self))
            return ops.conv(
                inputs,
                kernel,
                strides=list(self.strides),
                padding="valid",
                dilation_rate=self.dilation_rate,
                data_format=self.data_format,
            )
        return self.convolution_op(inputs, kernel)


class BaseConvTransposeSVD(_ConvSVD):
    """Transposed convolutions with Sparse Variational Dropout.

    Not for direct use: see `Conv1DTransposeSVD`, `Conv2DTransposeSVD` and
    `Conv3DTransposeSVD`.
    """

    # The kernel is (spatial..., filters, input channels).
    group_kernel_axis = -1

    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        return ops.conv_transpose(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=self.padding,
            output_padding=self.output_padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )


def _depthwise(layer: keras.layers.Layer, inputs: Any, kernel: Any) -> Any:
    return ops.depthwise_conv(
        inputs,
        kernel,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


class BaseDepthwiseConvSVD(_ConvSVD):
    """Depthwise convolutions with Sparse Variational Dropout.

    Not for direct use: see `DepthwiseConv1DSVD` and `DepthwiseConv2DSVD`.
    """

    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        return _depthwise(self, inputs, kernel)


class BaseSeparableConvSVD(_ConvSVD):
    """Separable convolutions with Sparse Variational Dropout on both kernels.

    A depthwise then a 1x1 convolution, each with its own posterior: the
    training pass samples the depthwise output by local reparameterisation
    and feeds that sample to the pointwise map, sampled the same way. Not
    for direct use: see `SeparableConv1DSVD` and `SeparableConv2DSVD`.
    """

    svd_kernels = ("depthwise_kernel", "pointwise_kernel")

    def _depthwise(self, inputs: Any, kernel: Any) -> Any:
        return _depthwise(self, inputs, kernel)

    def _pointwise(self, inputs: Any, kernel: Any) -> Any:
        return ops.conv(
            inputs, kernel, strides=1, padding="valid", data_format=self.data_format
        )

    def _forward(self, inputs: Any, kernels: dict, training: bool) -> Any:
        hidden = self._linear(
            inputs, self._depthwise, kernels["depthwise_kernel"], training
        )
        return self._linear(
            hidden, self._pointwise, kernels["pointwise_kernel"], training
        )


@counterpart_of(keras.layers.Conv1D)
class Conv1DSVD(BaseConvSVD, keras.layers.Conv1D):
    __doc__ = _doc(
        "1D convolution",
        "Conv1D",
        1,
        "filters",
        ">>> ksvd.Conv1DSVD(8, 3, padding='same').compute_output_shape("
        "(None, 100, 4))\n    (None, 100, 8)",
    )


@counterpart_of(keras.layers.Conv2D)
class Conv2DSVD(BaseConvSVD, keras.layers.Conv2D):
    __doc__ = _doc(
        "2D convolution",
        "Conv2D",
        2,
        "filters",
        ">>> ksvd.Conv2DSVD(20, 5).compute_output_shape((None, 28, 28, 1))\n"
        "    (None, 24, 24, 20)",
    )


@counterpart_of(keras.layers.Conv3D)
class Conv3DSVD(BaseConvSVD, keras.layers.Conv3D):
    __doc__ = _doc(
        "3D convolution",
        "Conv3D",
        3,
        "filters",
        ">>> ksvd.Conv3DSVD(4, 3).compute_output_shape((None, 8, 8, 8, 2))\n"
        "    (None, 6, 6, 6, 4)",
    )


@counterpart_of(keras.layers.Conv1DTranspose)
class Conv1DTransposeSVD(BaseConvTransposeSVD, keras.layers.Conv1DTranspose):
    __doc__ = _doc(
        "1D transposed convolution",
        "Conv1DTranspose",
        1,
        "filters",
        ">>> ksvd.Conv1DTransposeSVD(8, 3, strides=2).compute_output_shape("
        "(None, 10, 4))\n    (None, 21, 8)",
    )


@counterpart_of(keras.layers.Conv2DTranspose)
class Conv2DTransposeSVD(BaseConvTransposeSVD, keras.layers.Conv2DTranspose):
    __doc__ = _doc(
        "2D transposed convolution",
        "Conv2DTranspose",
        2,
        "filters",
        ">>> ksvd.Conv2DTransposeSVD(8, 3, strides=2, padding='same')"
        ".compute_output_shape((None, 7, 7, 4))\n    (None, 14, 14, 8)",
    )


@counterpart_of(keras.layers.Conv3DTranspose)
class Conv3DTransposeSVD(BaseConvTransposeSVD, keras.layers.Conv3DTranspose):
    __doc__ = _doc(
        "3D transposed convolution",
        "Conv3DTranspose",
        3,
        "filters",
        ">>> ksvd.Conv3DTransposeSVD(2, 2, strides=2).compute_output_shape("
        "(None, 4, 4, 4, 3))\n    (None, 8, 8, 8, 2)",
    )


@counterpart_of(keras.layers.DepthwiseConv1D)
class DepthwiseConv1DSVD(BaseDepthwiseConvSVD, keras.layers.DepthwiseConv1D):
    __doc__ = _doc(
        "1D depthwise convolution",
        "DepthwiseConv1D",
        1,
        "channels * depth_multiplier",
        ">>> ksvd.DepthwiseConv1DSVD(3, depth_multiplier=2).compute_output_shape("
        "(None, 10, 4))\n    (None, 8, 8)",
    )


@counterpart_of(keras.layers.DepthwiseConv2D)
class DepthwiseConv2DSVD(BaseDepthwiseConvSVD, keras.layers.DepthwiseConv2D):
    __doc__ = _doc(
        "2D depthwise convolution",
        "DepthwiseConv2D",
        2,
        "channels * depth_multiplier",
        ">>> ksvd.DepthwiseConv2DSVD(3).compute_output_shape((None, 8, 8, 4))\n"
        "    (None, 6, 6, 4)",
    )


@counterpart_of(keras.layers.SeparableConv1D)
class SeparableConv1DSVD(BaseSeparableConvSVD, keras.layers.SeparableConv1D):
    __doc__ = _doc(
        "1D separable convolution",
        "SeparableConv1D",
        1,
        "filters",
        ">>> ksvd.SeparableConv1DSVD(8, 3).compute_output_shape((None, 10, 4))\n"
        "    (None, 8, 8)",
    )


@counterpart_of(keras.layers.SeparableConv2D)
class SeparableConv2DSVD(BaseSeparableConvSVD, keras.layers.SeparableConv2D):
    __doc__ = _doc(
        "2D separable convolution",
        "SeparableConv2D",
        2,
        "filters",
        ">>> ksvd.SeparableConv2DSVD(8, 3).compute_output_shape((None, 8, 8, 4))\n"
        "    (None, 6, 6, 8)",
    )
