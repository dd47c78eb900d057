"""`EmbeddingSVD`: a Sparse VD embedding table."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_sparsevd.layers.base import SparseVDLayer
from keras_sparsevd.layers.weight_terms import training_terms
from keras_sparsevd.registry import counterpart_of


@counterpart_of(keras.layers.Embedding)
class EmbeddingSVD(SparseVDLayer, keras.layers.Embedding):
    """`keras.layers.Embedding` with Sparse Variational Dropout on the table.

    A lookup is a product with a one-hot vector, so local
    reparameterisation gives ``theta[ids] + sqrt(sigma^2[ids]) * eps`` with
    fresh ``eps`` per looked-up vector in training, and ``(theta *
    mask)[ids]`` at evaluation. Every table entry has its own dropout rate;
    a row whose entries are all pruned maps its token to zeros.

    Args:
        input_dim: size of the vocabulary (largest index + 1).
        output_dim: dimension of the embedding vectors.
        embeddings_initializer: initializer of the table (theta).
        threshold: log-alpha pruning threshold (3.0 in the paper).
        log_sigma2_initializer: initializer of ``log_sigma2`` (constant -10).
        train_clip: zero pruned weights in the training mean as well.
        seed: optional integer seed for the noise.
        **kwargs: the other arguments of `keras.layers.Embedding`
            (``embeddings_regularizer``, ``embeddings_constraint``,
            ``mask_zero``, ``name``, ``dtype``).

    Input shape:
        integer tensor ``(batch_size, ...)``.

    Output shape:
        ``(batch_size, ..., output_dim)``.

    Example:

    >>> import keras_sparsevd as ksvd
    >>> layer = ksvd.EmbeddingSVD(1000, 64)
    >>> layer.compute_output_shape((None, 20))
    (None, 20, 64)
    """

    svd_kernels = ("embeddings",)
    # Token ids are not units a group variable could scale.
    group_kernel_axis = None

    def __init__(self, *args: Any, weights: Any = None, **kwargs: Any) -> None:
        if weights is not None:
            raise ValueError(
                "`weights` is not supported by EmbeddingSVD: build the layer and "
                "assign `layer.embeddings`, or convert a trained "
                "`keras.layers.Embedding` with `keras_sparsevd.sparsify`."
            )
        super().__init__(*args, **kwargs)

    def _prepare_inputs(self, inputs: Any) -> Any:
        if keras.backend.standardize_dtype(inputs.dtype) not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")
        return inputs

    def _variance_inputs(self, inputs: Any) -> Any:
        # One-hot inputs: x * x is x.
        return inputs

    def _apply_kernel(self, inputs: Any, kernel: Any) -> Any:
        return ops.take(kernel, inputs, axis=0)


@counterpart_of(keras.layers.ReversibleEmbedding)
class ReversibleEmbeddingSVD(EmbeddingSVD, keras.layers.ReversibleEmbedding):
    """`keras.layers.ReversibleEmbedding` with Sparse Variational Dropout.

    The embedding of language models whose output projection reuses the
    table (``tie_weights=True``, as GPT-2 and Gemma do) or has its own
    (``reverse_embeddings``). Forward (``reverse=False``) it is
    `EmbeddingSVD`; reverse, ``logits = x @ table^T`` with local
    reparameterisation in training and the masked table at evaluation, so a
    pruned entry is gone from both directions. The KL of every table is added
    by the forward call only (a language model calls the layer forward once
    per step, then in reverse): calling it only in reverse trains without
    the KL.

    Args:
        input_dim: size of the vocabulary.
        output_dim: dimension of the embedding vectors.
        tie_weights: whether the reverse projection uses the table itself.
        **kwargs: the other arguments of `keras.layers.ReversibleEmbedding`
            and of `EmbeddingSVD` (``threshold``, ``log_sigma2_initializer``,
            ``train_clip``, ``seed``).

    Example:

    >>> import keras_sparsevd as ksvd
    >>> layer = ksvd.ReversibleEmbeddingSVD(100, 8)
    >>> layer.compute_output_shape((None, 5), reverse=False)
    (None, 5, 8)
    """

    @property
    def svd_kernels(self) -> tuple:
        if self.tie_weights:
            return ("embeddings",)
        return ("embeddings", "reverse_embeddings")

    def call(self, inputs: Any, reverse: bool = False, training: Any = None) -> Any:
        if not reverse:
            return super().call(inputs, training=training)
        name = "embeddings" if self.tie_weights else "reverse_embeddings"
        theta = ops.cast(self.theta(name), "float32")
        log_sigma2 = ops.cast(self.log_sigma2_of(name), "float32")
        if training:
            mean_kernel, variance_kernel, _ = training_terms(
                theta, log_sigma2, self.threshold, self.train_clip
            )
            kernel = (mean_kernel, variance_kernel)
        else:
            kernel = theta * self.mask_of(name)
        if self.reverse_dtype is not None:
            inputs = ops.cast(inputs, self.reverse_dtype)
        else:
            inputs = ops.cast(inputs, self.compute_dtype)

        def apply(x: Any, k: Any) -> Any:
            k = ops.cast(k, x.dtype)
            return ops.matmul(x, ops.transpose(k) if self.tie_weights else k)

        logits = self._linear(
            inputs,
            apply,
            kernel,
            bool(training),
            variance_inputs=ops.square(ops.cast(inputs, "float32")),
        )
        if self.logit_soft_cap is not None:
            cap = self.logit_soft_cap
            logits = ops.multiply(ops.tanh(ops.divide(logits, cap)), cap)
        return logits
