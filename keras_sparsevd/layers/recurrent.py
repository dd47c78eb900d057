"""Sparse VD recurrent layers: `LSTMSVD`, `GRUSVD`, `SimpleRNNSVD` and their cells.

Sparse VD of recurrent networks after Lobacheva, Chirkova and Vetrov (2017,
arXiv:1708.00077) and their code (tipt0p/SparseBayesianRNN,
``Code/layers_lstm.py``). Local reparameterisation does not carry across time
steps, because the recurrent kernel is applied to its own outputs: instead
the weight noise is sampled once per call of the layer (a mini-batch in
training), kernel-shaped and shared by every example and every step, and
each step is a plain recurrent step with the sampled kernels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_sparsevd import _keras_compat as _compat
from keras_sparsevd.kl import kl_divergence
from keras_sparsevd.layers.base import (
    _GROUP_LOG_SIGMA2_INIT,
    _GROUP_MU_INIT,
    SVD_ARGS,
    SparseVDComposite,
    SparseVDLayer,
    _clipped_log_alpha,
    adopt,
    check_seed,
    release,
    standard_normal,
)
from keras_sparsevd.registry import counterpart_of

# Under the square root of the sampled weights' variance, so that its
# gradient stays finite at theta = 0; a standard deviation of 1e-8 is far
# below any weight's.
_WEIGHT_VARIANCE_EPSILON = 1e-16
# The three kinds of group variables of a structured cell.
_GROUP_KINDS = ("input", "hidden", "gate")


@dataclasses.dataclass
class SequenceTerms:
    """What every step of one sequence (one call of the layer) uses.

    Attributes:
        kernel: input kernel ``(input_dim, gates * units)``, compute dtype:
            sampled in training, masked (group means folded in) otherwise.
        recurrent_kernel: recurrent kernel ``(units, gates * units)``, alike.
        bias: the bias in compute dtype, or None.
        input_scale: sampled input group variables ``(batch, input_dim)``,
            or None (no groups, or evaluation: folded into the kernels).
        hidden_scale: sampled hidden-unit group variables ``(batch, units)``.
        gate_scale: sampled gate group variables ``(batch, gates * units)``.
        kl: the cell's KL term (weights and groups), float32 scalar.
    """

    kernel: Any
    recurrent_kernel: Any
    bias: Any
    input_scale: Any = None
    hidden_scale: Any = None
    gate_scale: Any = None
    kl: Any = 0.0

    @property
    def fusable(self) -> bool:
        """Whether every step is a plain step with these kernels and bias.

        Then Keras' fused (cuDNN) loop can run the whole sequence.
        """
        return (
            self.input_scale is None
            and self.hidden_scale is None
            and self.gate_scale is None
        )


class RecurrentCellSVD(SparseVDLayer):
    """What the Sparse VD recurrent cells share; not a layer on its own.

    A subclass is also its Keras cell (``LSTMCellSVD(RecurrentCellSVD,
    keras.layers.LSTMCell)``): Keras' ``build`` creates ``kernel``,
    ``recurrent_kernel`` and ``bias``, and `SparseVDLayer` adds
    ``log_sigma2`` beside ``kernel`` and ``recurrent_log_sigma2`` beside
    ``recurrent_kernel``. The subclass writes one step (`_step`) with the
    kernels it is given.

    What is sampled when (training):

    - weights: ``W = theta + sigma * eps`` with ``eps ~ N(0, 1)`` of the
      kernel's shape, drawn once per call of the RNN layer (a mini-batch),
      shared by all examples and all time steps, for both kernels;
      ``sigma^2 = alpha * theta^2`` from the clipped log alpha, as for the
      other layers;
    - groups (``group_sparsity=True``): ``z ~ N(mu, sigma_z^2)`` of shape
      ``(batch, n)``, drawn once per sequence and shared by its steps.

    At evaluation everything is deterministic: ``theta * mask`` with the
    group means and masks folded into the kernels, so a plain Keras cell
    with those kernels computes the same.
    """

    svd_kernels = ("kernel", "recurrent_kernel")
    #: Gate blocks in the kernels' last axis (4 LSTM, 3 GRU, 1 SimpleRNN).
    gates: int = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._drop_stale_seed_generators()
        self._sequence_terms: SequenceTerms | None = None

    @property
    def recurrent_log_sigma2(self) -> Any:
        """The ``log_sigma2`` variable of ``recurrent_kernel``."""
        return self.log_sigma2_of("recurrent_kernel")

    def _drop_stale_seed_generators(self) -> None:
        # Keras' cell made a seed generator before SparseVDLayer replaced it
        # with one of the given seed; the first would be saved as a second
        # state variable that the plain cell does not have.
        generators = getattr(self, "_seed_generators", None)
        if generators is not None and len(generators) > 1:
            generators[:] = [g for g in generators if g is self.seed_generator]

    # ------------------------------------------------------------------
    # Group variables: inputs (the base class's), hidden units and gates.
    def _build_groups(self, units: int) -> None:
        super()._build_groups(units)
        for kind, size in (
            ("hidden", self.units),
            ("gate", self.gates * self.units),
        ):
            mu = self.add_weight(
                name=f"{kind}_group_mu",
                shape=(size,),
                initializer=keras.initializers.Constant(_GROUP_MU_INIT),
            )
            log_sigma2 = self.add_weight(
                name=f"{kind}_group_log_sigma2",
                shape=(size,),
                initializer=keras.initializers.Constant(_GROUP_LOG_SIGMA2_INIT),
            )
            setattr(self, f"{kind}_group_mu", mu)
            setattr(self, f"{kind}_group_log_sigma2", log_sigma2)

    # ------------------------------------------------------------------
    # In-place conversion (see `keras_sparsevd.layers.base.adopt`).
    def _adopt_plain(self, svd_args: dict) -> None:
        super()._adopt_plain(svd_args)
        self._drop_stale_seed_generators()
        self._sequence_terms = None

    def _release_to_plain(self) -> None:
        seed = self.seed
        groups = []
        if self.group_sparsity:
            groups = [
                getattr(self, f"{kind}_group_{name}")
                for kind in ("hidden", "gate")
                for name in ("mu", "log_sigma2")
            ]
        super()._release_to_plain()
        for variable in groups:
            _compat.untrack(self, variable)
        for kind in ("hidden", "gate"):
            for name in ("mu", "log_sigma2"):
                _compat.drop_attribute(self, f"{kind}_group_{name}")
        _compat.drop_attribute(self, "_sequence_terms")
        # The Keras cell's own seed and generator (its dropout masks).
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def inference_kernel(self, kernel_name: str | None = None) -> np.ndarray:
        name = self._kernel_name(kernel_name)
        value = ops.convert_to_numpy(self.inference_kernels()[name])
        return np.asarray(value, dtype="float32")

    def _group_variables(self, kind: str) -> tuple:
        if kind == "input":
            return self.group_mu, self.group_log_sigma2
        return getattr(self, f"{kind}_group_mu"), getattr(
            self, f"{kind}_group_log_sigma2"
        )

    def group_log_alpha_of(self, kind: str) -> Any:
        """Clipped log alpha of the ``"input"``, ``"hidden"`` or ``"gate"`` groups."""
        return _clipped_log_alpha(*self._group_variables(kind))

    def group_mask_of(self, kind: str) -> Any:
        """1.0 for each kept group of that kind, float32."""
        return self._mask(self.group_log_alpha_of(kind))

    def group_scale_of(self, kind: str) -> Any:
        """``mu * mask`` of that kind: what evaluation scales by, float32."""
        mu = ops.cast(self._group_variables(kind)[0], "float32")
        return mu * self.group_mask_of(kind)

    @property
    def hidden_units_mask(self) -> Any:
        """1.0 for each hidden unit the recurrence still reads, else 0.0.

        A unit goes when its group is pruned (``group_sparsity``) or its row
        of the recurrent kernel is all pruned; whether the next layer still
        reads it is that layer's business.
        """
        rows = ops.max(self.mask_of("recurrent_kernel"), axis=1)
        if self.group_sparsity:
            rows = rows * self.group_mask_of("hidden")
        return rows

    @property
    def gates_mask(self) -> Any:
        """1.0 for each gate pre-activation (column) that has a kept weight.

        Shaped ``(gates * units,)``; with ``group_sparsity`` its gate group
        must be kept as well.
        """
        columns = ops.maximum(
            ops.max(self.mask_of("kernel"), axis=0),
            ops.max(self.mask_of("recurrent_kernel"), axis=0),
        )
        if self.group_sparsity:
            columns = columns * self.group_mask_of("gate")
        return columns

    def inference_kernels(self) -> dict:
        """``{"kernel": ..., "recurrent_kernel": ...}`` for a plain Keras cell.

        The masked kernels with the group means and masks folded in (input
        groups scale the kernel's rows, hidden groups the recurrent kernel's
        rows, gate groups both kernels' columns), float32: a plain cell with
        these kernels and the same bias computes what this cell computes at
        evaluation. Pruned weights are exactly +0.0.
        """
        with _compat.autocast_scope_off():
            kernels, _ = self._kernels_and_kl(False)
            kernels = self._fold_groups(kernels)
        return {
            name: ops.where(ops.not_equal(value, 0.0), value, 0.0)
            for name, value in kernels.items()
        }

    def _fold_groups(self, kernels: dict) -> dict:
        if not self.group_sparsity:
            return kernels
        gate = self.group_scale_of("gate")[None, :]
        return {
            "kernel": kernels["kernel"] * self.group_scale_of("input")[:, None] * gate,
            "recurrent_kernel": kernels["recurrent_kernel"]
            * self.group_scale_of("hidden")[:, None]
            * gate,
        }

    # ------------------------------------------------------------------
    # One sequence.
    def sequence_terms(self, step_inputs: Any, training: bool) -> SequenceTerms:
        """Samples (training) or masks (evaluation) what a sequence's steps use.

        Args:
            step_inputs: the inputs of one step, ``(batch, input_dim)``: the
                group variables are drawn per example.
            training: whether this is the training pass.

        Returns:
            A `SequenceTerms`, with the cell's KL (weights and groups, not
            yet scaled by the KL weight).
        """
        self._check_kl_weight_set(training)
        # Read the float32 variables as they are, whatever the autocast
        # scope of the RNN layer that calls this.
        with _compat.autocast_scope_off():
            return self._sequence_terms_float32(step_inputs, bool(training))

    def _sequence_terms_float32(
        self, step_inputs: Any, training: bool
    ) -> SequenceTerms:
        kernels, kl = self._kernels_and_kl(training)
        seed = self.seed_generator
        if training:
            kernels = {
                name: mean
                + ops.sqrt(variance + _WEIGHT_VARIANCE_EPSILON)
                * standard_normal(tuple(mean.shape), seed)
                for name, (mean, variance) in kernels.items()
            }
        scales = {}
        if self.group_sparsity:
            batch = ops.shape(step_inputs)[0]
            for kind in _GROUP_KINDS:
                log_alpha = self.group_log_alpha_of(kind)
                kl = kl + self.group_kl_scale * ops.sum(kl_divergence(log_alpha))
                if training:
                    scales[kind] = ops.cast(
                        self._sample_groups(kind, log_alpha, batch),
                        self.compute_dtype,
                    )
            if not training:
                kernels = self._fold_groups(kernels)
        bias = getattr(self, "bias", None)
        return SequenceTerms(
            kernel=ops.cast(kernels["kernel"], self.compute_dtype),
            recurrent_kernel=ops.cast(kernels["recurrent_kernel"], self.compute_dtype),
            bias=None if bias is None else ops.cast(bias, self.compute_dtype),
            input_scale=scales.get("input"),
            hidden_scale=scales.get("hidden"),
            gate_scale=scales.get("gate"),
            kl=kl,
        )

    def _sample_groups(self, kind: str, log_alpha: Any, batch: Any) -> Any:
        """``z ~ N(mu, sigma^2)`` per example and group, float32."""
        mu = ops.cast(self._group_variables(kind)[0], "float32")
        mean = mu * self._mask(log_alpha) if self.train_clip else mu
        # sigma from the clipped log alpha, as for the weights.
        sigma = ops.abs(mu) * ops.exp(0.5 * log_alpha)
        size = mu.shape[0]
        noise = standard_normal((batch, size), self.seed_generator)
        return mean[None, :] + sigma[None, :] * noise

    def begin_sequence(self, step_inputs: Any, training: bool) -> SequenceTerms:
        """Draws the sequence's terms, adds the KL loss; `end_sequence` clears.

        The RNN layers call it once per call, before the loop over time;
        a bare cell inside `keras.layers.RNN` gets it from Keras' own
        per-sequence hook (`get_dropout_mask`).
        """
        terms = self.sequence_terms(step_inputs, training)
        kl_weight = ops.maximum(ops.cast(self.kl_weight, "float32"), 0.0)
        self.add_loss(kl_weight * terms.kl)
        self._sequence_terms = terms
        return terms

    def end_sequence(self) -> None:
        """Forgets the current sequence's terms."""
        self._sequence_terms = None

    def get_dropout_mask(self, step_input: Any) -> Any:
        # `keras.layers.RNN.call` asks for the dropout mask once per sequence,
        # before its loop ("so that the inner loop is stateless", which JAX
        # needs): the moment to draw this sequence's weights for a bare cell.
        if self._sequence_terms is None:
            training = _compat.current_call_training()
            self.begin_sequence(step_input, bool(training))
        return _compat.rnn_dropout_mask(self, step_input)

    def reset_dropout_mask(self) -> None:
        super().reset_dropout_mask()
        self.end_sequence()

    # ------------------------------------------------------------------
    # One step.
    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple:
        terms = self._sequence_terms
        if terms is None:
            # Called on its own, not by an RNN layer: one draw per call, and
            # no KL term (an RNN layer adds it once per sequence).
            with _compat.autocast_scope_off():
                terms = self._sequence_terms_float32(inputs, bool(training))
        return self._step(ops.cast(inputs, self.compute_dtype), states, terms, training)

    def _step(self, inputs: Any, states: Any, terms: SequenceTerms, training: bool):
        raise NotImplementedError

    def _dropout_masks(self, inputs: Any, h_tm1: Any, training: bool) -> tuple:
        """Keras' cached dropout masks of inputs and state, or None each."""
        dp = rec = None
        if training and 0.0 < self.dropout < 1.0:
            dp = _compat.rnn_dropout_mask(self, inputs)
        if training and 0.0 < self.recurrent_dropout < 1.0:
            rec = self.get_recurrent_dropout_mask(h_tm1)
        return dp, rec

    @staticmethod
    def _project(x: Any, kernel: Any, masks: Any, scale: Any) -> Any:
        """``x @ kernel`` with dropout masks, columns times the gate groups.

        `masks` is None, one mask, or one mask per gate block (Keras'
        ``implementation=1``).
        """
        if masks is None:
            out = ops.matmul(x, kernel)
        elif isinstance(masks, (list, tuple)):
            blocks = ops.split(kernel, len(masks), axis=-1)
            out = ops.concatenate(
                [ops.matmul(x * m, k) for m, k in zip(masks, blocks)], axis=-1
            )
        else:
            out = ops.matmul(x * masks, kernel)
        return out if scale is None else out * scale

    @staticmethod
    def _scaled(x: Any, scale: Any) -> Any:
        return x if scale is None else x * scale


_CELL_DOC = """

    What is sampled when: in training, the weight noise of ``kernel`` and
    ``recurrent_kernel`` once per call of the RNN layer (one kernel-shaped
    draw per mini-batch, shared by all examples and time steps: ``W = theta
    + sigma * eps``), then every step is a plain {name} step with the sampled
    kernels. With ``group_sparsity=True`` the group variables are drawn once
    per sequence, shape ``(batch, n)``, shared by its steps: ``z_x`` on the
    input features (``x_t * z_x``), ``z_h`` on the hidden units where the
    recurrent kernel reads them (``h_(t-1) * z_h``) and ``z_g`` on the
    gates' pre-activations without bias (``(x_t W) * z_g``,
    ``(h_(t-1) U) * z_g``); each ``N(mu, sigma^2)`` with mu 1 and log sigma
    -3 at the start (the authors' values), the log-uniform prior and the
    same KL approximation as the weights. Evaluation is deterministic:
    ``theta * mask`` with ``mu * mask`` of the groups folded into the
    kernels' rows and columns, exactly a Keras {name} with those kernels.
    The KL term (both kernels and the groups) is added once per call of the
    RNN layer. Called on its own (not inside an RNN layer) the cell draws
    once per call and adds no KL term.
"""


@counterpart_of(keras.layers.LSTMCell)
class LSTMCellSVD(RecurrentCellSVD, keras.layers.LSTMCell):
    """`keras.layers.LSTMCell` with Sparse Variational Dropout on both kernels.

    Same arguments and weights as the Keras cell, plus ``log_sigma2`` (of
    ``kernel``) and ``recurrent_log_sigma2`` (of ``recurrent_kernel``).

    Args:
        units: dimensionality of the output (and of each of the 4 gates).
        threshold: log-alpha pruning threshold (3.0 in the papers).
        log_sigma2_initializer: initializer of both ``log_sigma2``; constant
            -10 by default.
        train_clip: zero pruned weights (and groups) in the training mean.
        seed: optional integer seed of the weight noise and of dropout.
        group_sparsity: also learn group variables on the input features,
            the hidden units and the gates' pre-activations.
        **kwargs: the other arguments of `keras.layers.LSTMCell`.

    Call arguments, shapes: as `keras.layers.LSTMCell`: inputs
    ``(batch, features)``, states ``[h, c]`` each ``(batch, units)``.

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> layer = keras.layers.RNN(ksvd.LSTMCellSVD(8))
    >>> tuple(layer(keras.ops.ones((2, 5, 3))).shape)
    (2, 8)
    """

    __doc__ += _CELL_DOC.format(name="LSTM")
    gates = 4

    def _step(self, inputs: Any, states: Any, terms: SequenceTerms, training: bool):
        h_tm1, c_tm1 = states[0], states[1]
        dp, rec = self._dropout_masks(inputs, h_tm1, training)
        x = self._scaled(inputs, terms.input_scale)
        h = self._scaled(h_tm1, terms.hidden_scale)
        z = self._project(x, terms.kernel, dp, terms.gate_scale)
        z = z + self._project(h, terms.recurrent_kernel, rec, terms.gate_scale)
        if terms.bias is not None:
            z = z + terms.bias
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        c = f * c_tm1 + i * self.activation(z_c)
        o = self.recurrent_activation(z_o)
        h = o * self.activation(c)
        return h, [h, c]


@counterpart_of(keras.layers.GRUCell)
class GRUCellSVD(RecurrentCellSVD, keras.layers.GRUCell):
    """`keras.layers.GRUCell` with Sparse Variational Dropout on both kernels.

    Same arguments and weights as the Keras cell (``reset_after`` either
    way), plus ``log_sigma2`` and ``recurrent_log_sigma2``. The hidden
    groups scale the state where the recurrent kernel reads it; the update
    ``z * h_(t-1) + (1 - z) * hh`` mixes the unscaled state, as the plain
    cell with folded kernels does.

    Args:
        units: dimensionality of the output (and of each of the 3 gates).
        threshold: log-alpha pruning threshold (3.0 in the papers).
        log_sigma2_initializer: initializer of both ``log_sigma2`` (-10).
        train_clip: zero pruned weights (and groups) in the training mean.
        seed: optional integer seed of the weight noise and of dropout.
        group_sparsity: also learn group variables on the input features,
            the hidden units and the gates' pre-activations.
        **kwargs: the other arguments of `keras.layers.GRUCell`.

    Call arguments, shapes: as `keras.layers.GRUCell`: inputs
    ``(batch, features)``, state ``(batch, units)``.

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> layer = keras.layers.RNN(ksvd.GRUCellSVD(8))
    >>> tuple(layer(keras.ops.ones((2, 5, 3))).shape)
    (2, 8)
    """

    __doc__ += _CELL_DOC.format(name="GRU")
    gates = 3

    def _step(self, inputs: Any, states: Any, terms: SequenceTerms, training: bool):
        h_tm1 = states[0] if keras.tree.is_nested(states) else states
        dp, rec = self._dropout_masks(inputs, h_tm1, training)
        units = self.units
        input_bias = recurrent_bias = None
        if terms.bias is not None:
            if self.reset_after:
                input_bias, recurrent_bias = terms.bias[0], terms.bias[1]
            else:
                input_bias = terms.bias
        x = self._scaled(inputs, terms.input_scale)
        h = self._scaled(h_tm1, terms.hidden_scale)
        gate_scale = terms.gate_scale
        matrix_x = self._project(x, terms.kernel, dp, gate_scale)
        if input_bias is not None:
            matrix_x = matrix_x + input_bias
        x_z, x_r, x_h = ops.split(matrix_x, 3, axis=-1)
        if self.reset_after:
            inner = self._project(h, terms.recurrent_kernel, rec, gate_scale)
            if recurrent_bias is not None:
                inner = inner + recurrent_bias
            rec_z, rec_r, rec_h = ops.split(inner, 3, axis=-1)
            z = self.recurrent_activation(x_z + rec_z)
            r = self.recurrent_activation(x_r + rec_r)
            hh = self.activation(x_h + r * rec_h)
        else:
            kernel_zr = terms.recurrent_kernel[:, : 2 * units]
            kernel_h = terms.recurrent_kernel[:, 2 * units :]
            split = isinstance(rec, (list, tuple))
            scale_zr = scale_h = None
            if gate_scale is not None:
                scale_zr, scale_h = (
                    gate_scale[:, : 2 * units],
                    gate_scale[:, 2 * units :],
                )
            inner = self._project(h, kernel_zr, rec[:2] if split else rec, scale_zr)
            rec_z, rec_r = ops.split(inner, 2, axis=-1)
            z = self.recurrent_activation(x_z + rec_z)
            r = self.recurrent_activation(x_r + rec_r)
            h_h = h if rec is None else h * (rec[2] if split else rec)
            rec_h = self._scaled(ops.matmul(r * h_h, kernel_h), scale_h)
            hh = self.activation(x_h + rec_h)
        h = z * h_tm1 + (1 - z) * hh
        return h, ([h] if keras.tree.is_nested(states) else h)


@counterpart_of(keras.layers.SimpleRNNCell)
class SimpleRNNCellSVD(RecurrentCellSVD, keras.layers.SimpleRNNCell):
    """`keras.layers.SimpleRNNCell` with Sparse Variational Dropout.

    Same arguments and weights as the Keras cell, plus ``log_sigma2`` and
    ``recurrent_log_sigma2``; the "gate" groups scale the one pre-activation.

    Args:
        units: dimensionality of the output.
        threshold: log-alpha pruning threshold (3.0 in the papers).
        log_sigma2_initializer: initializer of both ``log_sigma2`` (-10).
        train_clip: zero pruned weights (and groups) in the training mean.
        seed: optional integer seed of the weight noise and of dropout.
        group_sparsity: also learn group variables on the input features,
            the hidden units and the pre-activation.
        **kwargs: the other arguments of `keras.layers.SimpleRNNCell`.

    Call arguments, shapes: as `keras.layers.SimpleRNNCell`: inputs
    ``(batch, features)``, state ``(batch, units)``.

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> layer = keras.layers.RNN(ksvd.SimpleRNNCellSVD(8))
    >>> tuple(layer(keras.ops.ones((2, 5, 3))).shape)
    (2, 8)
    """

    __doc__ += _CELL_DOC.format(name="SimpleRNN")
    gates = 1

    def _step(self, inputs: Any, states: Any, terms: SequenceTerms, training: bool):
        h_tm1 = states[0] if isinstance(states, (list, tuple)) else states
        dp, rec = self._dropout_masks(inputs, h_tm1, training)
        x = self._scaled(inputs, terms.input_scale)
        h = self._project(x, terms.kernel, dp, terms.gate_scale)
        if terms.bias is not None:
            h = h + terms.bias
        prev = self._scaled(h_tm1, terms.hidden_scale)
        output = h + self._project(prev, terms.recurrent_kernel, rec, terms.gate_scale)
        if self.activation is not None:
            output = self.activation(output)
        return output, ([output] if isinstance(states, (list, tuple)) else output)


# ----------------------------------------------------------------------
# The RNN layers.
class _RecurrentSVD(SparseVDComposite):
    """The Keras RNN layer with its cell made the Sparse VD cell.

    Holds nothing a Keras `LSTM` / `GRU` / `SimpleRNN` does not: the Sparse
    VD arguments live on the cell and are read from it.
    """

    #: The attribute that holds the inner (plain cell, Sparse VD cell) pair.
    svd_sublayers = ("cell",)
    #: Config keys the Keras layer does not have (LSTM and GRU have ``seed``).
    svd_config_keys = tuple(key for key in SVD_ARGS if key != "seed")
    #: The cell's kernels read input units along axis -2 (group sparsity).
    group_kernel_axis = -2
    _plain_cell: type
    _sparse_cell: type

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
        # Keras' __init__ makes a plain cell and assigns it: `__setattr__`
        # swaps in the Sparse VD cell, made with these arguments.
        object.__setattr__(
            self,
            "_pending_svd_args",
            {
                "threshold": threshold,
                "log_sigma2_initializer": log_sigma2_initializer,
                "train_clip": train_clip,
                "group_sparsity": group_sparsity,
            },
        )
        try:
            super().__init__(*args, seed=check_seed(seed), **kwargs)
        finally:
            object.__delattr__(self, "_pending_svd_args")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "cell" and type(value) is self._plain_cell:
            value = self._sparse_cell_for(value)
        super().__setattr__(name, value)

    def _sparse_cell_for(self, plain: keras.layers.Layer) -> RecurrentCellSVD:
        config = plain.get_config()
        config.update(getattr(self, "_pending_svd_args", {}))
        if hasattr(plain, "implementation"):
            config["implementation"] = plain.implementation
        cell = self._sparse_cell.from_config(config)
        # Reports name it after its RNN layer: every LSTM's cell is "lstm_cell".
        cell._report_name = self.name
        return cell

    def call(
        self,
        sequences: Any,
        initial_state: Any = None,
        mask: Any = None,
        training: bool = False,
    ) -> Any:
        self.cell.begin_sequence(sequences[:, 0, :], bool(training))
        try:
            return super().call(
                sequences, initial_state=initial_state, mask=mask, training=training
            )
        finally:
            self.cell.end_sequence()

    def _fused_loop(self, sequences: Any, initial_state: Any, mask: Any, terms: Any):
        raise NotImplementedError

    def inner_loop(
        self, sequences: Any, initial_state: Any, mask: Any, training: bool = False
    ) -> Any:
        terms = self.cell._sequence_terms
        if keras.tree.is_nested(mask):
            mask = mask[0]
        use_cudnn = getattr(self, "use_cudnn", False)
        if (
            terms is not None
            and terms.fusable
            and use_cudnn in ("auto", True)
            and not self.cell.recurrent_dropout
        ):
            if training and self.cell.dropout:
                dp_mask = _compat.rnn_dropout_mask(self.cell, sequences[:, 0, :])
                sequences = sequences * ops.expand_dims(dp_mask, axis=1)
            try:
                out = self._fused_loop(sequences, initial_state, mask, terms)
            except NotImplementedError:
                pass
            else:
                # cuDNN ops are not XLA ops.
                if keras.backend.backend() == "tensorflow":
                    self.supports_jit = False
                return out
        if use_cudnn is True:
            raise ValueError(
                "use_cudnn=True was specified, but cuDNN is not supported for "
                "this layer configuration with this backend (the training pass "
                "of group_sparsity=True is not a plain step). Pass "
                "use_cudnn='auto'."
            )
        return keras.layers.RNN.inner_loop(
            self, sequences, initial_state, mask=mask, training=training
        )

    # ------------------------------------------------------------------
    # In-place conversion (see `keras_sparsevd.layers.base.adopt`): the
    # cell is converted; the layer holds nothing else of Sparse VD.
    def _adopt_plain(self, svd_args: dict) -> None:
        adopt(self.cell, self._sparse_cell, {**svd_args, "seed": self.cell.seed})
        self.cell._report_name = self.name

    def _release_to_plain(self) -> None:
        release(self.cell, self._plain_cell)

    def svd_config(self) -> dict:
        """The constructor arguments this layer adds to its Keras layer's."""
        return {
            key: value
            for key, value in self.cell.svd_config().items()
            if key in self.svd_config_keys
        }

    @property
    def threshold(self) -> float:
        return self.cell.threshold

    @property
    def log_sigma2_initializer(self) -> Any:
        return self.cell.log_sigma2_initializer

    @property
    def train_clip(self) -> bool:
        return self.cell.train_clip

    @property
    def group_sparsity(self) -> bool:
        return self.cell.group_sparsity

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "threshold": self.threshold,
                "log_sigma2_initializer": keras.initializers.serialize(
                    self.log_sigma2_initializer
                ),
                "train_clip": self.train_clip,
                "seed": self.cell.seed,
                "group_sparsity": self.group_sparsity,
            }
        )
        return config


_LAYER_DOC = """
    Training pass (as Lobacheva et al.'s code): the kernels' weight noise is
    sampled once per call (one draw per mini-batch, kernel-shaped, shared by
    all examples and time steps) and each step is a plain step with the
    sampled kernels; with ``group_sparsity=True`` the group variables on the
    input features, hidden units and gate pre-activations are drawn once per
    sequence, shape ``(batch, n)``, shared by its steps (see the cell). The
    KL term of both kernels (and groups) is added once per call. Evaluation
    is deterministic, with masked kernels.

    Fused (cuDNN) path: a weight sample per batch keeps every step a plain
    step, so when Keras' fused loop applies (TensorFlow on a GPU, cuDNN's
    conditions on activations, ``recurrent_dropout=0``, ``unroll=False``,
    bias used) this layer hands it the sampled kernels, in training without
    groups and at evaluation in every case (groups folded into the kernels).
    The structured training pass is not a plain step and takes Keras'
    generic loop. Checked on CPU only: the fused path raises
    ``NotImplementedError`` there and the generic loop runs.
"""


@counterpart_of(keras.layers.LSTM)
class LSTMSVD(_RecurrentSVD, keras.layers.LSTM):
    """`keras.layers.LSTM` with Sparse Variational Dropout on both kernels.

    Keras' LSTM (all its arguments: ``return_sequences``, ``return_state``,
    ``go_backwards``, ``stateful``, ``unroll``, masking, ``dropout``,
    ``recurrent_dropout``, ``use_cudnn``) with an `LSTMCellSVD` as its cell.
    Its weights are the LSTM's (``lstm_cell/kernel``, ``recurrent_kernel``,
    ``bias``) plus ``log_sigma2`` and ``recurrent_log_sigma2``.

    Args:
        units: dimensionality of the output space.
        threshold: log-alpha pruning threshold (3.0 in the papers).
        log_sigma2_initializer: initializer of both ``log_sigma2`` (-10).
        train_clip: zero pruned weights (and groups) in the training mean.
        seed: optional integer seed of the noise and of dropout.
        group_sparsity: group variables on input features, hidden units and
            the 4 gates' pre-activations (weights + gates + neurons).
        **kwargs: the other arguments of `keras.layers.LSTM`.

    Input shape: ``(batch, timesteps, features)``.

    Output shape: as `keras.layers.LSTM`: ``(batch, units)``, or
    ``(batch, timesteps, units)`` with ``return_sequences``, followed by the
    states ``h`` and ``c`` with ``return_state``.

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> model = keras.Sequential([keras.Input((28, 28)), ksvd.LSTMSVD(16),
    ...                           ksvd.DenseSVD(10)])
    >>> model.output_shape
    (None, 10)
    """

    __doc__ += _LAYER_DOC
    _plain_cell = keras.layers.LSTMCell
    _sparse_cell = LSTMCellSVD

    def _fused_loop(self, sequences: Any, initial_state: Any, mask: Any, terms: Any):
        return _compat.fused_rnn("lstm")(
            sequences,
            initial_state[0],
            initial_state[1],
            mask,
            kernel=terms.kernel,
            recurrent_kernel=terms.recurrent_kernel,
            bias=terms.bias,
            activation=self.cell.activation,
            recurrent_activation=self.cell.recurrent_activation,
            return_sequences=self.return_sequences,
            go_backwards=self.go_backwards,
            unroll=self.unroll,
        )


@counterpart_of(keras.layers.GRU)
class GRUSVD(_RecurrentSVD, keras.layers.GRU):
    """`keras.layers.GRU` with Sparse Variational Dropout on both kernels.

    Keras' GRU (all its arguments, ``reset_after`` either way) with a
    `GRUCellSVD` as its cell; weights as the GRU's plus ``log_sigma2`` and
    ``recurrent_log_sigma2``.

    Args:
        units: dimensionality of the output space.
        threshold: log-alpha pruning threshold (3.0 in the papers).
        log_sigma2_initializer: initializer of both ``log_sigma2`` (-10).
        train_clip: zero pruned weights (and groups) in the training mean.
        seed: optional integer seed of the noise and of dropout.
        group_sparsity: group variables on input features, hidden units and
            the 3 gates' pre-activations.
        **kwargs: the other arguments of `keras.layers.GRU`.

    Input shape: ``(batch, timesteps, features)``.

    Output shape: as `keras.layers.GRU`.

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> layer = ksvd.GRUSVD(8, return_sequences=True)
    >>> tuple(layer(keras.ops.ones((2, 5, 3))).shape)
    (2, 5, 8)
    """

    __doc__ += _LAYER_DOC
    _plain_cell = keras.layers.GRUCell
    _sparse_cell = GRUCellSVD

    def _fused_loop(self, sequences: Any, initial_state: Any, mask: Any, terms: Any):
        if keras.tree.is_nested(initial_state):
            initial_state = initial_state[0]
        return _compat.fused_rnn("gru")(
            sequences,
            initial_state,
            mask,
            kernel=terms.kernel,
            recurrent_kernel=terms.recurrent_kernel,
            bias=terms.bias,
            activation=self.cell.activation,
            recurrent_activation=self.cell.recurrent_activation,
            return_sequences=self.return_sequences,
            go_backwards=self.go_backwards,
            unroll=self.unroll,
            reset_after=self.cell.reset_after,
        )


@counterpart_of(keras.layers.SimpleRNN)
class SimpleRNNSVD(_RecurrentSVD, keras.layers.SimpleRNN):
    """`keras.layers.SimpleRNN` with Sparse Variational Dropout on both kernels.

    Keras' SimpleRNN (all its arguments) with a `SimpleRNNCellSVD` as its
    cell; weights as the SimpleRNN's plus ``log_sigma2`` and
    ``recurrent_log_sigma2``. Keras has no fused SimpleRNN loop.

    Args:
        units: dimensionality of the output space.
        threshold: log-alpha pruning threshold (3.0 in the papers).
        log_sigma2_initializer: initializer of both ``log_sigma2`` (-10).
        train_clip: zero pruned weights (and groups) in the training mean.
        seed: optional integer seed of the noise and of dropout.
        group_sparsity: group variables on input features, hidden units and
            the pre-activation.
        **kwargs: the other arguments of `keras.layers.SimpleRNN`.

    Input shape: ``(batch, timesteps, features)``.

    Output shape: as `keras.layers.SimpleRNN`.

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> layer = ksvd.SimpleRNNSVD(8)
    >>> tuple(layer(keras.ops.ones((2, 5, 3))).shape)
    (2, 8)
    """

    # Keras' SimpleRNN takes a seed but leaves it out of its config.
    svd_config_keys = SVD_ARGS
    _plain_cell = keras.layers.SimpleRNNCell
    _sparse_cell = SimpleRNNCellSVD
