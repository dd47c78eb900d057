"""The per-weight work of a Sparse VD training step, with its own gradient.

Every training step computes, for every weight of every Sparse VD kernel,
``log_alpha``, the mask, ``alpha * theta^2`` for the variance and the KL
term, and then their gradients. On a small net that per-weight work costs
more than the matrix products, and automatic differentiation of the
straightforward expressions spends most of it on transcendental functions it
recomputes (the softplus' gradient is a second sigmoid, the clip and the log
each add passes). `training_terms` computes the same values with four
transcendental passes forward (two logs, an exp and the KL's sigmoid) and none
backward: the gradient reuses the forward values. On TensorFlow, whose
default graph runs each elementwise op as a pass of its own over the
weights, the whole computation is also compiled with XLA into a few fused
passes (its gradient too), whatever the model's own compilation. On PyTorch,
whose Keras `custom_gradient` takes functions of one output only, the same
forward and backward run as a `torch.autograd.Function` of three outputs,
each compiled by `torch.compile` into one fused loop (eager where compiling
fails, with a warning).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import keras
from keras import ops

from keras_sparsevd.kl import K1, K2, K3, LOG_ALPHA_MAX, LOG_ALPHA_MIN

# Keeps log(theta^2) finite for weights that are exactly 0.
THETA_EPSILON = 1e-8


def training_terms(
    theta: Any, log_sigma2: Any, threshold: Any, train_clip: bool
) -> tuple:
    """Mean kernel, variance kernel and KL sum of one kernel, for training.

    The values are those of the plain expressions, ``log_alpha =
    clip(log_sigma2 - log(theta^2 + 1e-8), -8, 8)``, mean kernel ``theta``
    (times the mask with `train_clip`), variance kernel
    ``exp(log_alpha) * theta^2`` and ``sum(kl_divergence(log_alpha))``, and so
    are the gradients (zero through log alpha where it is clipped, none
    through the mask); only the work to get them is shared.

    Args:
        theta: the kernel, float32.
        log_sigma2: its ``log_sigma2``, float32, same shape.
        threshold: weights with ``log_alpha >= threshold`` are pruned; a
            number or a scalar variable (read when the step runs).
        train_clip: whether the mean kernel has the pruned weights zeroed.

    Returns:
        ``(mean_kernel, variance_kernel, kl)``: two float32 tensors of the
        kernel's shape and a float32 scalar.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        threshold = ops.cast(threshold, "float32")
        return _xla_terms()(theta, log_sigma2, threshold, bool(train_clip))
    if backend == "torch":
        # Keras' torch `custom_gradient` takes functions of one output only;
        # a torch.autograd.Function of its own takes the three, with no copy.
        return _torch_terms()(
            ops.convert_to_tensor(theta),
            ops.convert_to_tensor(log_sigma2),
            ops.cast(threshold, "float32"),
            bool(train_clip),
        )
    return _terms(theta, log_sigma2, threshold, train_clip)


@functools.cache
def _xla_terms() -> Any:
    import tensorflow as tf

    # Without XLA, TensorFlow runs each of these elementwise ops as a pass of
    # its own over every weight; fused, the LeNet-300-100 step was faster
    # (benchmarks.step_breakdown, "svd" against "autodiff terms").
    return tf.function(_terms, jit_compile=True)


def _terms(theta: Any, log_sigma2: Any, threshold: Any, train_clip: bool) -> tuple:
    @ops.custom_gradient
    def terms(theta: Any, log_sigma2: Any) -> tuple:
        outputs, saved = _forward(theta, log_sigma2, threshold, train_clip)

        def grad(*args: Any, upstream: Any = None) -> tuple:
            return _backward(saved, *_upstream(args, upstream))

        return outputs, grad

    return terms(theta, log_sigma2)


# The torch.autograd.Function, made on first use so that the module imports
# without torch. A plain global rather than functools.cache: torch.compile
# (jit_compile=True) traces this call and warns about cache wrappers.
_TORCH_TERMS: Any = None


def _torch_terms() -> Any:
    global _TORCH_TERMS
    if _TORCH_TERMS is None:
        _TORCH_TERMS = _make_torch_terms()
    return _TORCH_TERMS


class _Fused:
    """`function` compiled by `torch.compile`, or `function` itself.

    Eager PyTorch runs each of the terms' elementwise operations as a pass
    of its own over the weights, and on small nets those passes cost more
    than the matrix products; inductor fuses them into one loop (2.4x faster
    on a 784x300 kernel). Compiling needs a C++ compiler: where it fails, a
    warning says so (once for each of the two passes) and the terms run
    eagerly, with the same values.
    ``KERAS_SPARSEVD_TORCH_COMPILE=0`` keeps them eager from the start.
    """

    def __init__(self, function: Any, compiler: Any = None) -> None:
        self.function = function
        self.compiled: Any = None
        if os.environ.get("KERAS_SPARSEVD_TORCH_COMPILE", "1") != "0":
            if compiler is None:
                import torch

                compiler = functools.partial(torch.compile, dynamic=True)
            self.compiled = compiler(function)

    def __call__(self, *args: Any) -> Any:
        # Keras infers shapes on the "meta" device (no data): nothing to fuse.
        if self.compiled is not None and not _on_meta_device(args):
            try:
                return self.compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure
                import warnings

                warnings.warn(
                    "keras_sparsevd: torch.compile failed on the Sparse VD "
                    f"weight terms ({type(error).__name__}: {error}); they "
                    "run eagerly, with the same values but slower.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.compiled = None
        return self.function(*args)


def _on_meta_device(args: tuple) -> bool:
    first = args[0][0] if isinstance(args[0], tuple) else args[0]
    return getattr(getattr(first, "device", None), "type", None) == "meta"


def _make_torch_terms() -> Any:
    import torch

    forward_pass = _Fused(_forward)
    backward_pass = _Fused(_backward)

    class TrainingTerms(torch.autograd.Function):
        """`_forward` and `_backward` as one torch autograd node."""

        @staticmethod
        def forward(
            ctx: Any, theta: Any, log_sigma2: Any, threshold: Any, train_clip: bool
        ) -> tuple:
            outputs, saved = forward_pass(theta, log_sigma2, threshold, train_clip)
            # Outputs that nothing used reach `backward` as None, as on the
            # other backends, rather than as tensors of zeros.
            ctx.set_materialize_grads(False)
            # save_for_backward, not attributes of ctx: the variance kernel is
            # an output, and holding it on ctx would be a reference cycle.
            ctx.save_for_backward(*saved)
            return outputs

        @staticmethod
        def backward(ctx: Any, d_mean: Any, d_variance: Any, d_kl: Any) -> tuple:
            d_kl = 0.0 if d_kl is None else d_kl
            d_theta, d_log_sigma2 = backward_pass(
                ctx.saved_tensors, d_mean, d_variance, d_kl
            )
            return d_theta, d_log_sigma2, None, None

    return TrainingTerms.apply


def _forward(theta: Any, log_sigma2: Any, threshold: Any, train_clip: bool) -> tuple:
    """The three outputs, and what `_backward` reuses of the forward work.

    Returns:
        ``((mean_kernel, variance_kernel, kl), saved)``, where `saved` is
        ``(theta, shifted, raw, alpha, variance_kernel, sig, keep)`` and
        ``keep`` is None without `train_clip`.
    """
    theta2 = ops.square(theta)
    shifted = theta2 + THETA_EPSILON
    raw = log_sigma2 - ops.log(shifted)
    log_alpha = ops.clip(raw, LOG_ALPHA_MIN, LOG_ALPHA_MAX)
    alpha = ops.exp(log_alpha)
    variance_kernel = alpha * theta2
    sig = ops.sigmoid(K2 + K3 * log_alpha)
    # softplus(-log_alpha) == log(1 + alpha) - log_alpha: no second exp.
    # log, not log1p: alpha >= exp(-8) after the clip, where they agree
    # to float32 rounding, and XLA computes log1p more slowly on CPU.
    kl = ops.sum(K1 - K1 * sig + 0.5 * (ops.log(1.0 + alpha) - log_alpha))
    if train_clip:
        keep = ops.cast(ops.less(log_alpha, threshold), theta.dtype)
        mean_kernel = theta * keep
    else:
        keep = None
        mean_kernel = theta
    saved = (theta, shifted, raw, alpha, variance_kernel, sig, keep)
    return (mean_kernel, variance_kernel, kl), saved


def _backward(saved: tuple, d_mean: Any, d_variance: Any, d_kl: Any) -> tuple:
    """Gradients of theta and log_sigma2 from the forward values in `saved`.

    Args:
        saved: the second result of `_forward`.
        d_mean: gradient of the mean kernel, or None where it was not used.
        d_variance: gradient of the variance kernel, or None.
        d_kl: gradient of the KL sum (0.0 where it was not used).

    Returns:
        ``(d_theta, d_log_sigma2)``.
    """
    theta, shifted, raw, alpha, variance_kernel, sig, keep = saved
    inside = ops.logical_and(
        ops.greater_equal(raw, LOG_ALPHA_MIN),
        ops.less_equal(raw, LOG_ALPHA_MAX),
    )
    # d KL / d log_alpha: the sigmoid's derivative and, for the
    # softplus, sigmoid(-log_alpha) = 1 / (1 + alpha).
    d_kl_d_log_alpha = -K1 * K3 * sig * (1.0 - sig) - 0.5 / (1.0 + alpha)
    d_log_alpha = d_kl * d_kl_d_log_alpha
    if d_variance is not None:
        d_log_alpha = d_log_alpha + d_variance * variance_kernel
    d_log_alpha = ops.where(inside, d_log_alpha, 0.0)
    # log_alpha = log_sigma2 - log(theta^2 + eps) inside the clip.
    d_theta = -2.0 * theta / shifted * d_log_alpha
    if d_variance is not None:
        d_theta = d_theta + d_variance * 2.0 * alpha * theta
    if d_mean is not None:
        d_theta = d_theta + (d_mean if keep is None else d_mean * keep)
    return d_theta, d_log_alpha


def _upstream(args: tuple, upstream: Any) -> tuple:
    """The three output gradients, however the backend passes them.

    TensorFlow passes one positional gradient per output, JAX one tuple;
    an output that nothing used may come as None.
    """
    if upstream is not None:
        grads = upstream
    elif len(args) == 1 and isinstance(args[0], (tuple, list)):
        grads = args[0]
    else:
        grads = args
    d_mean, d_variance, d_kl = grads
    if d_kl is None:
        d_kl = 0.0
    return d_mean, d_variance, d_kl
