"""The base class that every Sparse VD layer shares."""

from __future__ import annotations

import json
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_sparsevd import _keras_compat as _compat
from keras_sparsevd.kl import LOG_ALPHA_MAX, LOG_ALPHA_MIN, kl_divergence
from keras_sparsevd.layers import replica_noise
from keras_sparsevd.layers.args import (  # noqa: F401 - importable from here too
    check_bool,
    check_seed,
    check_threshold,
    get_log_sigma2_initializer,
)
from keras_sparsevd.layers.weight_terms import THETA_EPSILON, training_terms

# Added under the square root so that its gradient stays finite where the
# variance is 0 (all-zero inputs, e.g. after a ReLU).
_VARIANCE_EPSILON = 1e-8
# Value of the stored KL weight before anybody has set it.
_UNSET = -1.0
# Constructor arguments that a Sparse VD layer adds to its Keras layer's.
SVD_ARGS = (
    "threshold",
    "log_sigma2_initializer",
    "train_clip",
    "seed",
    "group_sparsity",
)
# Group variables start at mu = 1, log sigma = -3 (Lobacheva et al.'s code).
_GROUP_MU_INIT = 1.0
_GROUP_LOG_SIGMA2_INIT = -6.0


class KLWeightNotSetError(RuntimeError):
    """Raised when a Sparse VD layer is trained before its KL weight is set."""


class SparseVDLayer(keras.layers.Layer):
    """Base class of the Sparse Variational Dropout layers.

    A Sparse VD layer is its Keras layer (``DenseSVD`` subclasses
    `keras.layers.Dense`, ``Conv2DSVD`` subclasses `keras.layers.Conv2D`, ...)
    with a factorised Gaussian posterior on each of its kernels: the Keras
    layer's own ``build`` creates the kernels (theta) and the bias with its
    own shape logic, and this class adds a ``log_sigma2`` of the same shape
    beside each kernel. It holds everything the layers share: the clipped
    ``log_alpha``, the evaluation masks, the training pass, the KL term added
    with ``add_loss``, the KL weight and the config. A subclass says only
    which kernels it has (``svd_kernels``) and how it applies one
    (``_apply_kernel``), or, with several kernels, how they chain
    (``_forward``).

    Training pass (``training=True``): local reparameterisation,
    ``mu = op(x, theta) + b``, ``var = op(x * x, alpha * theta^2)``,
    ``out = mu + sqrt(var + 1e-8) * eps`` with fresh ``eps ~ N(0, 1)`` per
    example, output unit and step. Evaluation pass: deterministic,
    ``out = op(x, theta * kernel_mask) + b``.

    Args:
        *args: the Keras layer's positional arguments (``units``,
            ``filters``, ``kernel_size``, ...).
        threshold: weights with ``log_alpha >= threshold`` are pruned. The
            paper uses 3.0.
        log_sigma2_initializer: initializer of every ``log_sigma2``, or a
            number for a constant; defaults to the constant -10 of the paper.
        train_clip: if True, pruned weights are also zeroed in the mean of
            the training pass, as in the authors' LeNet runs.
        seed: optional integer seed of the layer's noise.
        group_sparsity: if True, the layer also gets one multiplicative group
            variable per input unit (input channel of a convolution), with
            the same log-uniform prior and KL as the weights (structured
            Sparse VD, Lobacheva et al. 2017): ``x_i * z_i`` with
            ``z_i ~ N(mu_i, sigma_i^2)`` drawn per example in training and
            ``x_i * mu_i * [log_alpha_z < threshold]`` at evaluation. A
            pruned group removes a whole input unit, hence the unit or
            filter of the layer before. Weight-level Sparse VD stays on.
        **kwargs: the Keras layer's keyword arguments (``activation``,
            ``use_bias``, initializers, regularizers, constraints, ``name``,
            ``dtype``, ``trainable``).
    """

    #: Names of the Keras layer's kernel weights that get a posterior.
    svd_kernels: tuple = ("kernel",)
    #: Config keys the Keras layer does not have.
    svd_config_keys: tuple = SVD_ARGS
    #: Axis of the first kernel that runs over the layer's input units, for
    #: ``group_sparsity``; None where the layer cannot have groups.
    group_kernel_axis: int | None = -2

    def __init__(
        self,
        *args: Any,
        threshold: float = 3.0,
        log_sigma2_initializer: Any = None,
        train_clip: bool = False,
        seed: int | None = None,
        group_sparsity: bool = False,
        **kwargs: Any,
    ) -> None:
        train_clip = check_bool("train_clip", train_clip)
        group_sparsity = check_bool("group_sparsity", group_sparsity)
        if group_sparsity and self.group_kernel_axis is None:
            raise ValueError(
                f"`group_sparsity` is not supported by {type(self).__name__}: its "
                "inputs are not units that a group variable can scale."
            )
        for name in ("lora_rank", "quantization_config"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"`{name}` is not supported by {type(self).__name__}: a Sparse "
                    "VD layer trains every weight of its kernel with its own "
                    f"dropout rate. Leave `{name}` unset."
                )
            kwargs.pop(name, None)
        kwargs.pop("lora_alpha", None)
        # The layer casts by hand: log_alpha and the KL must see the float32
        # variables even under a mixed-precision policy.
        kwargs.pop("autocast", None)
        super().__init__(*args, autocast=False, **kwargs)
        self._init_svd_state(
            threshold=threshold,
            log_sigma2_initializer=log_sigma2_initializer,
            train_clip=train_clip,
            seed=seed,
            group_sparsity=group_sparsity,
        )

    def _init_svd_state(
        self,
        threshold: float = 3.0,
        log_sigma2_initializer: Any = None,
        train_clip: bool = False,
        seed: int | None = None,
        group_sparsity: bool = False,
    ) -> None:
        """What a Sparse VD layer holds beyond its Keras layer, variables aside.

        Shared by ``__init__`` and by `adopt`, which turns a built Keras layer
        into its Sparse VD counterpart in place.
        """
        self.threshold = threshold  # checked by its setter
        self.train_clip = check_bool("train_clip", train_clip)
        self.log_sigma2_initializer = get_log_sigma2_initializer(log_sigma2_initializer)
        self.seed = check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.group_sparsity = group_sparsity
        # See `keras_sparsevd.set_group_kl_scale`: a training setting.
        self.group_kl_scale = 1.0
        self._kl_weight_set = False
        self._pending_kl_weight: float | None = None

    # ------------------------------------------------------------------
    # The threshold.
    @property
    def threshold(self) -> float:
        """Weights with ``log_alpha >= threshold`` are pruned; in [-8, 8].

        A new value takes effect everywhere, in `predict`, `evaluate` and
        training functions traced before it too.
        """
        return self._threshold

    @threshold.setter
    def threshold(self, value: Any) -> None:
        value = check_threshold(value)
        self._threshold = value
        variable = getattr(self, "_threshold_variable", None)
        if variable is None:
            # A variable, so that traced functions read the current value.
            # Set past Keras' attribute tracking: it is no weight, so saved
            # files keep the variables of earlier versions (the threshold is
            # in the config); `variables` below still hands it to backends
            # that pass state explicitly (JAX).
            variable = keras.Variable(
                value, dtype="float32", trainable=False, name="threshold"
            )
            object.__setattr__(self, "_threshold_variable", variable)
        else:
            variable.assign(value)

    @property
    def variables(self) -> list:
        return super().variables + [self._threshold_variable]

    # ------------------------------------------------------------------
    # What subclasses provide.
    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        """The layer's linear map of `inputs` with `kernel` (no bias)."""
        raise NotImplementedError

    def _forward(self, inputs: Any, kernels: dict, training: bool) -> Any:
        """The kernels applied to `inputs`; chains them for several kernels.

        `kernels` maps each kernel's name to what `_linear` takes: the
        masked kernel in evaluation, ``(mean kernel, variance kernel)`` in
        training, computed once per call.
        """
        return self._linear(
            inputs, self._apply_kernel, kernels[self.svd_kernels[0]], training
        )

    def _variance_inputs(self, inputs: Any) -> Any:
        """What the variance kernel is applied to: ``x * x`` in float32."""
        # The variance stays in float32: x * x overflows float16 and
        # alpha * theta^2 underflows it.
        return ops.square(ops.cast(inputs, "float32"))

    def _prepare_inputs(self, inputs: Any) -> Any:
        return ops.cast(inputs, self.compute_dtype)

    def _add_bias(self, outputs: Any, bias: Any) -> Any:
        if getattr(self, "data_format", None) == "channels_first":
            rank = len(outputs.shape) - 2
            bias = ops.reshape(bias, (1, -1) + (1,) * rank)
        return outputs + bias

    # ------------------------------------------------------------------
    # Variables.
    @staticmethod
    def log_sigma2_name(kernel_name: str) -> str:
        """Name of the ``log_sigma2`` variable that goes with a kernel."""
        if kernel_name in ("kernel", "embeddings"):
            return "log_sigma2"
        if "kernel" in kernel_name:
            return kernel_name.replace("kernel", "log_sigma2")
        return f"{kernel_name}_log_sigma2"

    def add_weight(self, *args: Any, **kwargs: Any) -> Any:
        variable = super().add_weight(*args, **kwargs)
        if kwargs.get("name") in self.svd_kernels:
            # Created right after its kernel, so that the saved order is
            # kernel, log_sigma2, bias, as in files of earlier versions.
            self._add_posterior(variable)
        return variable

    def _add_posterior(self, kernel: Any) -> None:
        """Adds the ``log_sigma2`` of `kernel` (theta) and the KL weight."""
        log_sigma2 = super().add_weight(
            name=self.log_sigma2_name(kernel.name),
            shape=tuple(kernel.shape),
            initializer=self.log_sigma2_initializer,
        )
        setattr(self, "_svd_" + self.log_sigma2_name(kernel.name), log_sigma2)
        setattr(self, "_svd_theta_" + kernel.name, kernel)
        if getattr(self, "kl_weight", None) is None:
            self._add_kl_weight()

    def _add_kl_weight(self) -> None:
        # A variable, not a Python float, so that a new value reaches train
        # functions that were compiled before it was set.
        self.kl_weight = super().add_weight(
            name="kl_weight",
            shape=(),
            initializer=keras.initializers.Constant(_UNSET),
            trainable=False,
            dtype="float32",
        )
        if self._pending_kl_weight is not None:
            self.kl_weight.assign(self._pending_kl_weight)
            self._pending_kl_weight = None

    def build(self, input_shape: Any = None) -> None:
        super().build(input_shape)
        if self.group_sparsity:
            units = tuple(input_shape)[self._group_input_axis()]
            if units is None:
                raise ValueError(
                    f"`group_sparsity` needs the input units of {self.name!r} to "
                    f"be known; got input shape {tuple(input_shape)}."
                )
            self._build_groups(units)

    # ------------------------------------------------------------------
    # In-place conversion from and to the Keras layer (see `adopt`).
    def _adopt_plain(self, svd_args: dict) -> None:
        """Makes this built Keras layer, whose class was just swapped, Sparse VD.

        Its variables stay as they are (each kernel becomes theta); a
        ``log_sigma2`` is added beside each kernel, then the KL weight and,
        with ``group_sparsity``, the group variables, in the order a freshly
        built layer has them, so that saved files are alike.
        """
        self._plain_autocast = self.autocast
        self.autocast = False
        self._init_svd_state(**svd_args)
        by_name = {v.name: v for v in _compat.own_variables(self)}
        posteriors = {}
        for name in self.svd_kernels:
            kernel = by_name.get(name)
            if kernel is None:
                raise ValueError(
                    f"{type(self).__name__} {self.name!r} has no weight {name!r} "
                    "to give a posterior."
                )
            # Keras names it under the path where the layer was created
            # (`_parent_path`), beside its kernel.
            self._add_posterior(kernel)
            posteriors[id(kernel)] = self.log_sigma2_of(name)
        added = {id(v) for v in posteriors.values()}
        order = []
        for variable in _compat.own_trainable_variables(self):
            if id(variable) in added:
                continue
            order.append(variable)
            if id(variable) in posteriors:
                order.append(posteriors[id(variable)])
        _compat.set_own_order(self, order, _compat.own_non_trainable_variables(self))
        if self.group_sparsity:
            kernel = self.theta()
            self._build_groups(kernel.shape[self._group_kernel_axis()])

    def _release_to_plain(self) -> None:
        """Undoes `_adopt_plain`: each kernel becomes its inference value.

        Theta is overwritten with ``theta * mask`` (group scales folded in);
        every variable and attribute the Keras layer does not have is dropped.
        """
        values = {name: self.inference_kernel(name) for name in self.svd_kernels}
        for name, value in values.items():
            self.theta(name).assign(value)
        dropped = [self.log_sigma2_of(name) for name in self.svd_kernels]
        dropped.append(self.kl_weight)
        if self.group_sparsity:
            dropped += [self.group_mu, self.group_log_sigma2]
        for variable in dropped:
            _compat.untrack(self, variable)
        _compat.untrack(self, self.seed_generator)
        for name in self.svd_kernels:
            _compat.drop_attribute(self, "_svd_" + self.log_sigma2_name(name))
            _compat.drop_attribute(self, "_svd_theta_" + name)
        for name in _SVD_STATE:
            _compat.drop_attribute(self, name)
        self.autocast = self.__dict__.pop("_plain_autocast", True)

    def inference_kernel(self, kernel_name: str | None = None) -> np.ndarray:
        """The kernel a plain Keras layer needs to compute this layer's evaluation.

        ``theta * mask`` as float32 numpy, pruned weights +0.0 (``np.where``
        rather than a product: a negative theta times a 0 mask is -0.0, whose
        bit pattern compresses worse); for the first kernel of a layer with
        ``group_sparsity``, each input unit's row also scaled by ``mu * mask``
        (``x_i * mu_i * mask_i`` through a linear map is the map with row i
        scaled).
        """
        name = self._kernel_name(kernel_name)
        theta = ops.convert_to_numpy(ops.cast(self.theta(name), "float32"))
        mask = ops.convert_to_numpy(self.mask_of(name))
        kernel = np.where(mask > 0, theta, np.float32(0.0)).astype("float32")
        if self.group_sparsity and name == self.svd_kernels[0]:
            scale = ops.convert_to_numpy(self.group_scale()).astype("float32")
            shape = [1] * kernel.ndim
            shape[self._group_kernel_axis() % kernel.ndim] = -1
            folded = kernel * scale.reshape(shape)
            kernel = np.where(folded != 0, folded, np.float32(0.0)).astype("float32")
        return kernel

    # ------------------------------------------------------------------
    # Group variables (structured Sparse VD).
    def _group_input_axis(self) -> int:
        return 1 if getattr(self, "data_format", None) == "channels_first" else -1

    def _group_kernel_axis(self) -> int:
        return self.group_kernel_axis

    def _build_groups(self, units: int) -> None:
        if getattr(self, "groups", 1) != 1:
            raise ValueError(
                f"`group_sparsity` with `groups={self.groups}` is not supported "
                f"({self.name!r}): use groups=1."
            )
        self._group_kernel_axis()  # raises where the layer cannot have groups
        self.group_mu = super().add_weight(
            name="group_mu",
            shape=(units,),
            initializer=keras.initializers.Constant(_GROUP_MU_INIT),
        )
        self.group_log_sigma2 = super().add_weight(
            name="group_log_sigma2",
            shape=(units,),
            initializer=keras.initializers.Constant(_GROUP_LOG_SIGMA2_INIT),
        )

    @property
    def group_log_alpha(self) -> Any:
        """Clipped ``log_sigma2_z - log(mu^2 + 1e-8)`` per input unit, float32."""
        return _clipped_log_alpha(self.group_mu, self.group_log_sigma2)

    @property
    def group_mask(self) -> Any:
        """1.0 for each kept input unit (``group_log_alpha < threshold``)."""
        return self._mask(self.group_log_alpha)

    @property
    def input_units_mask(self) -> Any:
        """1.0 for each input unit the layer still reads, else 0.0.

        A unit is dropped when its group is pruned or when every weight it
        feeds (its row of the first kernel) is: either way nothing of it
        reaches the output.
        """
        mask = self.mask_of(self.svd_kernels[0])
        axis = self._group_kernel_axis() % len(mask.shape)
        others = tuple(i for i in range(len(mask.shape)) if i != axis)
        rows = ops.max(mask, axis=others)
        if not self.group_sparsity:
            return rows
        return rows * self._groups_to_units(self.group_mask)

    def group_scale(self) -> Any:
        """``mu * group_mask`` per input unit: what evaluation multiplies it by.

        Shaped like the input units (a group shared by several units, see
        `DenseSVD`'s ``group_channels``, gives each of them its value).
        """
        return self._groups_to_units(
            ops.cast(self.group_mu, "float32") * self.group_mask
        )

    def _groups_to_units(self, values: Any) -> Any:
        """`values` per group (last axis) as values per input unit.

        One group per input unit here; `DenseSVD` with ``group_channels``
        shares a group over the positions of a channel.
        """
        return values

    def _apply_groups(self, inputs: Any, log_alpha: Any, training: bool) -> Any:
        """``inputs * z``, z per input unit: sampled in training, else mu * mask."""
        axis = self._group_input_axis()
        broadcast = [1] * len(inputs.shape)
        broadcast[axis] = -1
        mu = ops.cast(self.group_mu, "float32")
        mask = self._mask(log_alpha)
        if not training:
            scale = ops.reshape(mu * mask, broadcast)
        else:
            mean = mu * mask if self.train_clip else mu
            # sigma from the clipped log alpha, as for the weights.
            sigma = ops.abs(mu) * ops.exp(0.5 * log_alpha)
            # One draw per example and unit, shared over positions.
            shape = [1] * len(inputs.shape)
            shape[0] = ops.shape(inputs)[0]
            shape[axis] = self.group_mu.shape[0]
            noise = standard_normal(tuple(shape), self.seed_generator)
            scale = ops.reshape(mean, broadcast) + ops.reshape(sigma, broadcast) * noise
        # Groups shared by several units: one draw per example and group.
        scale = self._groups_to_units(scale)
        return inputs * ops.cast(scale, self.compute_dtype)

    def theta(self, kernel_name: str | None = None) -> Any:
        """The kernel variable (theta) called `kernel_name` (default: the first)."""
        return getattr(self, "_svd_theta_" + self._kernel_name(kernel_name))

    def log_sigma2_of(self, kernel_name: str | None = None) -> Any:
        """The ``log_sigma2`` variable that goes with kernel `kernel_name`."""
        name = self.log_sigma2_name(self._kernel_name(kernel_name))
        return getattr(self, "_svd_" + name)

    def _kernel_name(self, kernel_name: str | None) -> str:
        if kernel_name is None:
            return self.svd_kernels[0]
        if kernel_name not in self.svd_kernels:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} has no Sparse VD kernel "
                f"{kernel_name!r}; its kernels are {list(self.svd_kernels)}."
            )
        return kernel_name

    @property
    def log_sigma2(self) -> Any:
        """``log_sigma2`` of the first kernel (the only one for most layers)."""
        return self.log_sigma2_of()

    def log_alpha_of(self, kernel_name: str | None = None) -> Any:
        """Clipped ``log_sigma2 - log(theta^2 + 1e-8)`` of a kernel, float32."""
        return _clipped_log_alpha(
            self.theta(kernel_name), self.log_sigma2_of(kernel_name)
        )

    def mask_of(self, kernel_name: str | None = None) -> Any:
        """1.0 where the kernel's ``log_alpha < threshold`` (kept), else 0.0."""
        return self._mask(self.log_alpha_of(kernel_name))

    @property
    def log_alpha(self) -> Any:
        """Clipped ``log_sigma2 - log(theta^2 + 1e-8)``, float32, kernel-shaped.

        Of the first kernel; `log_alpha_of` names one of several.
        """
        return self.log_alpha_of()

    @property
    def kernel_mask(self) -> Any:
        """1.0 where ``log_alpha < threshold`` (kept), else 0.0; float32."""
        return self.mask_of()

    @property
    def kernel_masks(self) -> dict:
        """``{kernel name: mask}`` for every Sparse VD kernel of the layer."""
        return {name: self.mask_of(name) for name in self.svd_kernels}

    def _mask(self, log_alpha: Any) -> Any:
        return ops.cast(ops.less(log_alpha, self._threshold_variable), "float32")

    # ------------------------------------------------------------------
    # The KL weight.
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

    # ------------------------------------------------------------------
    # Saving: every variable in creation order, whatever the Keras layer's
    # own (quantisation-aware) saving does.
    def save_own_variables(self, store: Any) -> None:
        keras.layers.Layer.save_own_variables(self, store)
        write_record(store, self)

    def load_own_variables(self, store: Any) -> None:
        keras.layers.Layer.load_own_variables(self, WithoutRecord(store))
        # A model saved after training keeps its KL weight, so fitting it
        # again continues with the same scale.
        self._kl_weight_set = self._get_kl_weight() is not None

    def quantize(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} cannot be quantized: strip it first with "
            "`keras_sparsevd.strip_sparsevd(model)` and quantize the plain model."
        )

    def enable_lora(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} does not support LoRA: its kernel is trained "
            "whole, with a dropout rate per weight."
        )

    # ------------------------------------------------------------------
    # The forward pass.
    def _linear(
        self,
        inputs: Any,
        apply: Any,
        kernel: Any,
        training: bool,
        variance_inputs: Any = None,
    ) -> Any:
        """One Sparse VD linear map: noisy in training, masked in evaluation.

        Args:
            inputs: the map's input, already prepared.
            apply: ``apply(x, kernel)``, the layer's op for that kernel.
            kernel: in evaluation the masked kernel; in training the pair
                ``(mean kernel, variance kernel)`` of `training_terms`.
            training: whether this is the training pass.
            variance_inputs: what the variance kernel is applied to, if not
                ``self._variance_inputs(inputs)``.
        """
        compute_dtype = self.compute_dtype
        if not training:
            return apply(inputs, ops.cast(kernel, compute_dtype))
        mean_kernel, variance_kernel = kernel
        mean = apply(inputs, ops.cast(mean_kernel, compute_dtype))
        if variance_inputs is None:
            variance_inputs = self._variance_inputs(inputs)
        variance = apply(variance_inputs, variance_kernel)
        noise = standard_normal(ops.shape(variance), self.seed_generator)
        return mean + ops.cast(
            ops.sqrt(variance + _VARIANCE_EPSILON) * noise, compute_dtype
        )

    def _check_kl_weight_set(self, training: Any) -> None:
        """Refuses a training pass whose KL term would have the wrong scale."""
        if training and not self._kl_weight_set and not _symbolic():
            raise KLWeightNotSetError(
                f"Layer {self.name!r} is being trained but its KL weight was "
                "never set, so the KL term would have the wrong scale. Pass "
                "`keras_sparsevd.KLScheduler(num_train_examples=N)` in "
                "`model.fit(..., callbacks=[...])`, or call "
                "`keras_sparsevd.set_kl_weight(model, rw / N)` before a "
                "custom training loop (N = number of training examples)."
            )

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        self._check_kl_weight_set(training)
        kernels, kl = self._kernels_and_kl(bool(training))
        inputs = self._prepare_inputs(inputs)
        if self.group_sparsity:
            group_log_alpha = self.group_log_alpha
            kl = kl + self.group_kl_scale * ops.sum(kl_divergence(group_log_alpha))
            inputs = self._apply_groups(inputs, group_log_alpha, bool(training))
        outputs = self._forward(inputs, kernels, bool(training))
        bias = getattr(self, "bias", None)
        if bias is not None:
            outputs = self._add_bias(outputs, ops.cast(bias, self.compute_dtype))
        activation = getattr(self, "activation", None)
        if activation is not None:
            outputs = activation(outputs)
        kl_weight = ops.maximum(ops.cast(self.kl_weight, "float32"), 0.0)
        self.add_loss(kl_weight * kl)
        return outputs

    def _kernels_and_kl(self, training: bool) -> tuple:
        """What `_forward` takes for each kernel, and the layer's weight KL."""
        kernels, kl = {}, 0.0
        for name in self.svd_kernels:
            theta = ops.cast(self.theta(name), "float32")
            log_sigma2 = ops.cast(self.log_sigma2_of(name), "float32")
            if training:
                mean_kernel, variance_kernel, kernel_kl = training_terms(
                    theta, log_sigma2, self._threshold_variable, self.train_clip
                )
                kernels[name] = (mean_kernel, variance_kernel)
            else:
                log_alpha = _clipped_log_alpha(theta, log_sigma2)
                kernels[name] = theta * self._mask(log_alpha)
                kernel_kl = ops.sum(kl_divergence(log_alpha))
            kl = kl + kernel_kl
        return kernels, kl

    def get_config(self) -> dict:
        config = super().get_config()
        for name in ("lora_rank", "lora_alpha", "quantization_config"):
            config.pop(name, None)
        config.update(self.svd_config())
        return config

    def svd_config(self) -> dict:
        """The constructor arguments this layer adds to its Keras layer's."""
        return {
            "threshold": self.threshold,
            "log_sigma2_initializer": keras.initializers.serialize(
                self.log_sigma2_initializer
            ),
            "train_clip": self.train_clip,
            "seed": self.seed,
            "group_sparsity": self.group_sparsity,
        }


# Attributes `_init_svd_state` and the variables' creation add to a layer.
_SVD_STATE = (
    "_threshold",
    "_threshold_variable",
    "train_clip",
    "log_sigma2_initializer",
    "seed",
    "seed_generator",
    "group_sparsity",
    "group_kl_scale",
    "_kl_weight_set",
    "_pending_kl_weight",
    "kl_weight",
    "group_mu",
    "group_log_sigma2",
    "group_channels",
    "group_data_format",
    "_report_name",
)
# Key of the record a Sparse VD layer saves beside its weights.
RECORD_KEY = "sparsevd"


def write_record(store: Any, layer: keras.layers.Layer) -> None:
    """Saves which Sparse VD class `layer` is, and its options, beside its weights.

    A layer that its parent creates in code (a Dense inside a KerasHub
    `TransformerDecoder`) comes back from the model's config as the Keras
    layer; `keras_sparsevd.load_model` reads this record to convert it again
    before its weights are loaded.
    """
    record = {
        "class": keras.saving.get_registered_name(type(layer)),
        "config": layer.svd_config(),
    }
    store[RECORD_KEY] = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)


def read_record(store: Any) -> dict | None:
    """The record `write_record` left in `store`, or None."""
    if store is None or RECORD_KEY not in store.keys():
        return None
    # A store (h5 dataset) or the raw array.
    raw = np.asarray(store[RECORD_KEY], dtype=np.uint8).tobytes()
    try:
        record = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"Damaged Sparse VD record in a weights file: {error}"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ValueError("Damaged Sparse VD record in a weights file.")
    return record


class WithoutRecord:
    """A weights store seen without its Sparse VD record (Keras counts keys)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def keys(self) -> list:
        return [key for key in self._store.keys() if key != RECORD_KEY]

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __contains__(self, key: str) -> bool:
        return key != RECORD_KEY and key in self._store.keys()


class SparseVDComposite:
    """Mixin of a Sparse VD layer made of inner Sparse VD layers.

    `MultiHeadAttentionSVD` (its projections) and the recurrent layers (their
    cell) hold no Sparse VD weight of their own; they still save their
    record (`write_record`), so that `keras_sparsevd.load_model` converts
    them again when their parent's code made them.
    """

    def save_own_variables(self, store: Any) -> None:
        super().save_own_variables(store)
        write_record(store, self)

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(WithoutRecord(store))


def adopt(layer: keras.layers.Layer, sparse_class: type, svd_args: dict) -> None:
    """Turns a built Keras layer into its Sparse VD counterpart, in place.

    The object stays the same, so every reference to it (a functional
    graph's nodes, a parent layer's attribute, a wrapper's ``layer``) now
    reaches the Sparse VD layer: this is how `keras_sparsevd.sparsify` reaches
    layers wherever they sit, as Keras' own ``Dense.quantize`` changes a
    layer in place. The weights are kept (each kernel becomes theta).

    Args:
        layer: a built layer whose class `sparse_class` directly extends.
        sparse_class: its Sparse VD counterpart (`DenseSVD`, ...).
        svd_args: the Sparse VD constructor arguments (``threshold``, ...).
    """
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} is not built: call the model on data (or "
            "build it with an input shape) before converting it."
        )
    plain_class = type(layer)
    with _compat.unlocked(layer):
        layer.__class__ = sparse_class
        try:
            layer._adopt_plain(dict(svd_args))
        except Exception:
            layer.__class__ = plain_class
            raise
        _compat.refresh_call_signature(layer)


def release(layer: keras.layers.Layer, plain_class: type) -> None:
    """Turns a Sparse VD layer back into its Keras layer, in place (`adopt`'s
    inverse): each kernel holds its inference value ``theta * mask``."""
    with _compat.unlocked(layer):
        layer._release_to_plain()
        layer.__class__ = plain_class
        _compat.refresh_call_signature(layer)


def _clipped_log_alpha(mean: Any, log_sigma2: Any) -> Any:
    """``log_sigma2 - log(mean^2 + 1e-8)`` in float32, clipped like the KL's."""
    mean = ops.cast(mean, "float32")
    log_sigma2 = ops.cast(log_sigma2, "float32")
    log_alpha = log_sigma2 - ops.log(ops.square(mean) + THETA_EPSILON)
    return ops.clip(log_alpha, LOG_ALPHA_MIN, LOG_ALPHA_MAX)


def _symbolic() -> bool:
    """Whether Keras is tracing the layer symbolically (building a model)."""
    return _compat.in_symbolic_scope()


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
    u1 = replica_noise.uniform((half,), seed)
    u2 = replica_noise.uniform((half,), seed)
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
    (see research/README.md).

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
