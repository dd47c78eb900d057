"""`DenseSVD`: the Sparse VD counterpart of `keras.layers.Dense`."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_sparsevd.layers.base import SparseVDLayer, check_positive_int


@keras.saving.register_keras_serializable(package="keras_sparsevd")
class DenseSVD(SparseVDLayer):
    """Densely-connected layer with Sparse Variational Dropout.

    Trains like `keras.layers.Dense` with a per-weight dropout rate
    ``alpha`` learned by variational inference (Molchanov et al., 2017); at
    evaluation it is ``activation(x @ (kernel * kernel_mask) + bias)``, where
    weights with ``log_alpha >= threshold`` are pruned. Its KL term, scaled by
    the model's KL weight, is added with ``add_loss``: train it with
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
        **kwargs: the other arguments of `SparseVDLayer` (regularizers,
            constraints) and of `keras.layers.Layer` (``name``, ``dtype``).

    Input shape:
        N-D tensor ``(batch_size, ..., input_dim)``; the last dimension must
        be known.

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

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = None,
        bias_initializer: Any = "zeros",
        log_sigma2_initializer: Any = None,
        threshold: float = 3.0,
        train_clip: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(mean=0.0, stddev=0.01)
        super().__init__(
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            log_sigma2_initializer=log_sigma2_initializer,
            threshold=threshold,
            train_clip=train_clip,
            seed=seed,
            **kwargs,
        )
        self.units = check_positive_int("units", units)

    def build(self, input_shape: tuple) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"The last dimension of the input of {self.name!r} must be known "
                f"to create its kernel; got input shape {tuple(input_shape)}. "
                "Give `keras.Input` a full feature shape."
            )
        self._build_weights((input_dim, self.units), (self.units,))
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        return ops.matmul(inputs, kernel)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)[:-1] + (self.units,)

    def get_config(self) -> dict:
        config = super().get_config()
        config["units"] = self.units
        return config
