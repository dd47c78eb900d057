"""The base class that every Sparse VD layer shares."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_sparsevd.kl import LOG_ALPHA_MAX, LOG_ALPHA_MIN, kl_divergence

# Added under the square root so that its gradient stays finite where the
# variance is 0 (all-zero inputs, e.g. after a ReLU).
_VARIANCE_EPSILON = 1e-8
# Keeps log(theta^2) finite for weights that are exactly 0.
_THETA_EPSILON = 1e-8
# Value of the stored KL weight before anybody has set it.
_UNSET = -1.0


class KLWeightNotSetError(RuntimeError):
    """Raised when a Sparse VD layer is trained before its KL weight is set."""


class SparseVDLayer(keras.layers.Layer):
    """Base class of the Sparse Variational Dropout layers.

    Holds what every Sparse VD layer shares: the weights ``kernel`` (theta)
    and ``log_sigma2`` of the factorised Gaussian posterior, the optional
    deterministic ``bias``, the clipped ``log_alpha``, the evaluation
    ``kernel_mask``, the KL term added with ``add_loss`` and the config.
    Subclasses say only how the kernel is applied (``_apply_kernel``), the
    kernel shape, and the output shape.

    Training pass (``training=True``): local reparameterisation,
    ``mu = op(x, theta) + b``, ``var = op(x * x, alpha * theta^2)``,
    ``out = mu + sqrt(var + 1e-8) * eps`` with fresh ``eps ~ N(0, 1)`` per
    example, output unit and step. Evaluation pass: deterministic,
    ``out = op(x, theta * kernel_mask) + b``.

    Args:
        activation: activation function, as for Keras' layers.
        use_bias: whether the layer has a (deterministic) bias.
        kernel_initializer: initializer of ``kernel`` (theta).
        bias_initializer: initializer of ``bias``.
        log_sigma2_initializer: initializer of ``log_sigma2``; defaults to
            the constant -10 of the paper.
        kernel_regularizer: optional regularizer of ``kernel``.
        bias_regularizer: optional regularizer of ``bias``.
        activity_regularizer: optional regularizer of the output.
        kernel_constraint: optional constraint of ``kernel``.
        bias_constraint: optional constraint of ``bias``.
        threshold: weights with ``log_alpha >= threshold`` are pruned. The
            paper uses 3.0.
        train_clip: if True, pruned weights are also zeroed in the mean of
            the training pass, as in the authors' LeNet runs.
        seed: optional integer seed of the layer's noise.
        **kwargs: base layer arguments (``name``, ``dtype``, ``trainable``).
    """

    def __init__(
        self,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        log_sigma2_initializer: Any = None,
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        threshold: float = 3.0,
        train_clip: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        # The layer casts by hand: log_alpha and the KL must see the float32
        # variables even under a mixed-precision policy.
        kwargs.pop("autocast", None)
        super().__init__(
            activity_regularizer=activity_regularizer, autocast=False, **kwargs
        )
        self.threshold = _check_threshold(threshold)
        self.train_clip = bool(train_clip)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        if log_sigma2_initializer is None:
            log_sigma2_initializer = keras.initializers.Constant(-10.0)
        self.log_sigma2_initializer = keras.initializers.get(log_sigma2_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._kl_weight_set = False
        self._pending_kl_weight: float | None = None
        self.supports_masking = True

    # ------------------------------------------------------------------
    # What subclasses provide.
    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        raise NotImplementedError

    def _add_bias(self, outputs: Any, bias: Any) -> Any:
        return outputs + bias

    # ------------------------------------------------------------------
    def _build_weights(self, kernel_shape: tuple, bias_shape: tuple) -> None:
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.log_sigma2 = self.add_weight(
            name="log_sigma2",
            shape=kernel_shape,
            initializer=self.log_sigma2_initializer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=bias_shape,
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        # A variable, not a Python float, so that a new value reaches train
        # functions that were compiled before it was set.
        self.kl_weight = self.add_weight(
            name="kl_weight",
            shape=(),
            initializer=keras.initializers.Constant(_UNSET),
            trainable=False,
            dtype="float32",
        )
        if self._pending_kl_weight is not None:
            self.kl_weight.assign(self._pending_kl_weight)
            self._pending_kl_weight = None

    @property
    def log_alpha(self) -> Any:
        """Clipped ``log_sigma2 - log(theta^2 + 1e-8)``, float32, kernel-shaped."""
        theta = ops.cast(self.kernel, "float32")
        log_sigma2 = ops.cast(self.log_sigma2, "float32")
        log_alpha = log_sigma2 - ops.log(ops.square(theta) + _THETA_EPSILON)
        return ops.clip(log_alpha, LOG_ALPHA_MIN, LOG_ALPHA_MAX)

    @property
    def kernel_mask(self) -> Any:
        """1.0 where ``log_alpha < threshold`` (kept), else 0.0; float32."""
        return self._mask(self.log_alpha)

    def _mask(self, log_alpha: Any) -> Any:
        return ops.cast(ops.less(log_alpha, self.threshold), "float32")

    def _set_kl_weight(self, value: float) -> None:
        if self.built:
            self.kl_weight.assign(value)
        else:
            self._pending_kl_weight = value
        self._kl_weight_set = True

    def _get_kl_weight(self) -> float | None:
        if not self.built:
            return self._pending_kl_weight
        value = float(ops.convert_to_numpy(self.kl_weight))
        return None if value < 0 else value

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)
        # A model saved after training keeps its KL weight, so fitting it
        # again continues with the same scale.
        self._kl_weight_set = self._get_kl_weight() is not None

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        compute_dtype = self.compute_dtype
        inputs = ops.cast(inputs, compute_dtype)
        theta = ops.cast(self.kernel, "float32")
        log_alpha = self.log_alpha
        mask = self._mask(log_alpha)
        if training:
            if not self._kl_weight_set:
                raise KLWeightNotSetError(
                    f"Layer {self.name!r} is being trained but its KL weight was "
                    "never set, so the KL term would have the wrong scale. Pass "
                    "`keras_sparsevd.KLScheduler(num_train_examples=N)` in "
                    "`model.fit(..., callbacks=[...])`, or call "
                    "`keras_sparsevd.set_kl_weight(model, rw / N)` before a "
                    "custom training loop (N = number of training examples)."
                )
            mean_kernel = theta * mask if self.train_clip else theta
            mean = self._apply_kernel(inputs, ops.cast(mean_kernel, compute_dtype))
            # The variance stays in float32: x * x overflows float16 and
            # alpha * theta^2 underflows it.
            inputs32 = ops.cast(inputs, "float32")
            variance = self._apply_kernel(
                ops.square(inputs32), ops.exp(log_alpha) * ops.square(theta)
            )
            noise = standard_normal(ops.shape(variance), self.seed_generator)
            outputs = mean + ops.cast(
                ops.sqrt(variance + _VARIANCE_EPSILON) * noise, compute_dtype
            )
        else:
            outputs = self._apply_kernel(inputs, ops.cast(theta * mask, compute_dtype))
        if self.use_bias:
            outputs = self._add_bias(outputs, ops.cast(self.bias, compute_dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        kl_weight = ops.maximum(ops.cast(self.kl_weight, "float32"), 0.0)
        self.add_loss(kl_weight * ops.sum(kl_divergence(log_alpha)))
        return outputs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "log_sigma2_initializer": keras.initializers.serialize(
                    self.log_sigma2_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "threshold": self.threshold,
                "train_clip": self.train_clip,
                "seed": self.seed,
            }
        )
        return config


def half_size_uniforms(shape: tuple, seed: Any) -> tuple:
    """``(size, u1, u2)``: two uniform [0, 1) draws of ``ceil(size / 2)`` values.

    `size` is the number of elements of `shape`, whose dimensions may be
    symbolic. Two draws of one shape, not one of twice the size: see
    `standard_normal`.
    """
    size = 1
    for dim in shape:
        size = size * dim
    half = (size + 1) // 2
    u1 = keras.random.uniform((half,), dtype="float32", seed=seed)
    u2 = keras.random.uniform((half,), dtype="float32", seed=seed)
    return size, u1, u2


def standard_normal(shape: tuple, seed: Any) -> Any:
    """Standard normal float32 noise of `shape`, by the Box-Muller transform.

    Two uniform draws of ceil(size / 2) values; each pair (u1, u2) gives the
    two independent normals ``r * cos(t)`` and ``r * sin(t)`` with
    ``r = sqrt(-2 log(1 - u1))`` and ``t = 2 pi u2``. Each call advances
    `seed` twice, so every traced step gets fresh noise.

    Not `keras.random.normal`: under XLA on CPU a lone stateless draw is
    inlined into its consumer and recomputes a Philox block per element,
    20-35x slower; two draws of one shape share one out-of-line generator
    (see BENCHMARKS.md).

    Args:
        shape: the output shape; dimensions may be symbolic (unknown batch).
        seed: a `keras.random.SeedGenerator`.

    Returns:
        A float32 tensor of `shape`.
    """
    size, u1, u2 = half_size_uniforms(shape, seed)
    # 1 - u1 is in (0, 1]: the log is finite, |z| <= about 5.6.
    radius = ops.sqrt(-2.0 * ops.log1p(-u1))
    angle = (2.0 * math.pi) * u2
    pairs = ops.concatenate([radius * ops.cos(angle), radius * ops.sin(angle)])
    return ops.reshape(pairs[:size], shape)


def _check_threshold(threshold: Any) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(
            f"`threshold` must be a finite number (the paper uses 3.0), got "
            f"{threshold!r}."
        ) from None
    if not math.isfinite(value):
        raise ValueError(
            f"`threshold` must be a finite number (the paper uses 3.0), got {value}."
        )
    return value


def check_positive_int(name: str, value: Any) -> int:
    """`value` as an int, or a ValueError naming the argument `name`."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    value = int(value)
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value}.")
    return value
