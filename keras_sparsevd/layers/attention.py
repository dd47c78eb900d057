"""`MultiHeadAttentionSVD`: attention with Sparse VD projections."""

from __future__ import annotations

from typing import Any

import keras

from keras_sparsevd import _keras_compat as _compat
from keras_sparsevd.layers.base import (
    SparseVDComposite,
    adopt,
    check_bool,
    check_seed,
    check_threshold,
    get_log_sigma2_initializer,
    release,
)
from keras_sparsevd.layers.dense import EinsumDenseSVD
from keras_sparsevd.registry import counterpart_of

# Keras' MultiHeadAttention keeps its projections in these attributes.
PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")
_OPTIONAL_PROJECTIONS = ("_gate_dense",)


@counterpart_of(keras.layers.MultiHeadAttention)
class MultiHeadAttentionSVD(SparseVDComposite, keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` with Sparse VD projections.

    Keras' own layer with its query, key, value and output projections (and
    the gate, where ``use_gate=True``) made `EinsumDenseSVD` layers: each
    projection weight has its own dropout rate and its own KL term, and
    `sparsity_report` lists them as ``<name>/query``, ``<name>/key``, ...
    The attention itself (scores, softmax, dropout) is Keras' unchanged.

    Args:
        num_heads: number of attention heads.
        key_dim: size of each attention head for query and key.
        threshold: log-alpha pruning threshold of the projections (3.0).
        log_sigma2_initializer: initializer of their ``log_sigma2`` (-10).
        train_clip: zero pruned weights in the training mean as well.
        seed: optional integer seed of the attention dropout, as in Keras,
            and of the projections' noise (each projection gets its own seed
            derived from it).
        **kwargs: the other arguments of `keras.layers.MultiHeadAttention`
            (``value_dim``, ``dropout``, ``use_bias``, ``output_shape``,
            ``attention_axes``, initializers, ``name``, ...).

    Call arguments, input and output shapes:
        those of `keras.layers.MultiHeadAttention`: ``query`` of shape
        ``(batch_size, target_len, query_dim)``, ``value`` ``(batch_size,
        source_len, value_dim)``, output ``(batch_size, target_len,
        query_dim)`` unless ``output_shape`` says otherwise.

    Example:

    >>> import keras, keras_sparsevd as ksvd
    >>> x = keras.Input((28, 32))
    >>> y = ksvd.MultiHeadAttentionSVD(num_heads=4, key_dim=8)(x, x)
    >>> tuple(y.shape)
    (None, 28, 32)
    """

    #: Attributes holding the inner (EinsumDense, EinsumDenseSVD) pairs.
    svd_sublayers = PROJECTIONS + _OPTIONAL_PROJECTIONS
    #: Config keys that MultiHeadAttention does not have (``seed`` it has).
    svd_config_keys = ("threshold", "log_sigma2_initializer", "train_clip")

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        threshold: float = 3.0,
        log_sigma2_initializer: Any = None,
        train_clip: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        seed = check_seed(seed)
        super().__init__(num_heads, key_dim, seed=seed, **kwargs)
        self.threshold = threshold
        self.log_sigma2_initializer = get_log_sigma2_initializer(log_sigma2_initializer)
        self.train_clip = check_bool("train_clip", train_clip)
        self.seed = seed
        self._projection_count = 0

    def __setattr__(self, name: str, value: Any) -> None:
        # Keras' `build` creates each projection as an EinsumDense and builds
        # it right away: swap in the Sparse VD layer before that happens.
        if (
            name in PROJECTIONS + _OPTIONAL_PROJECTIONS
            and type(value) is keras.layers.EinsumDense
        ):
            value = self._sparse_projection(value)
        super().__setattr__(name, value)

    def _projection_args(self) -> dict:
        """The Sparse VD arguments of the next projection (its own seed)."""
        seed = None if self.seed is None else self.seed + self._projection_count
        self._projection_count += 1
        return {
            "threshold": self.threshold,
            "log_sigma2_initializer": keras.initializers.serialize(
                self.log_sigma2_initializer
            ),
            "train_clip": self.train_clip,
            "seed": seed,
        }

    def _sparse_projection(self, layer: keras.layers.EinsumDense) -> EinsumDenseSVD:
        config = layer.get_config()
        config.update(self._projection_args())
        sparse = EinsumDenseSVD.from_config(config)
        # The report names it "<attention layer>/query".
        sparse._report_name = f"{self.name}/{layer.name}"
        return sparse

    # ------------------------------------------------------------------
    # In-place conversion (see `keras_sparsevd.layers.base.adopt`).
    def _adopt_plain(self, svd_args: dict) -> None:
        # Not through the `threshold` setter: the projections are not Sparse
        # VD yet; they get it from `_projection_args`.
        self._threshold = check_threshold(svd_args.get("threshold", 3.0))
        self.log_sigma2_initializer = get_log_sigma2_initializer(
            svd_args.get("log_sigma2_initializer")
        )
        self.train_clip = bool(svd_args.get("train_clip", False))
        self._projection_count = 0
        for attr in self.svd_sublayers:
            layer = getattr(self, attr, None)
            if layer is None:
                continue
            if type(layer) is not keras.layers.EinsumDense:
                raise ValueError(
                    f"The {attr} of {self.name!r} is a {type(layer).__name__}, "
                    "not an EinsumDense: cannot make its projections Sparse VD."
                )
            adopt(layer, EinsumDenseSVD, self._projection_args())
            layer._report_name = f"{self.name}/{layer.name}"

    def _release_to_plain(self) -> None:
        for attr in self.svd_sublayers:
            layer = getattr(self, attr, None)
            if isinstance(layer, EinsumDenseSVD):
                release(layer, keras.layers.EinsumDense)
        for name in ("_threshold", "log_sigma2_initializer", "train_clip"):
            _compat.drop_attribute(self, name)
        _compat.drop_attribute(self, "_projection_count")

    def svd_config(self) -> dict:
        """The constructor arguments this layer adds to MultiHeadAttention's."""
        return {
            "threshold": self.threshold,
            "log_sigma2_initializer": keras.initializers.serialize(
                self.log_sigma2_initializer
            ),
            "train_clip": self.train_clip,
        }

    @property
    def threshold(self) -> float:
        """The projections' log-alpha threshold; setting it sets theirs."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: Any) -> None:
        self._threshold = check_threshold(value)
        for layer in self.projections.values():
            layer.threshold = self._threshold

    @property
    def projections(self) -> dict:
        """``{"query": layer, "key": ..., "value": ..., "attention_output": ...}``."""
        found = {}
        for attr in PROJECTIONS + _OPTIONAL_PROJECTIONS:
            layer = getattr(self, attr, None)
            if layer is not None:
                found[layer.name] = layer
        return found

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(self.svd_config())
        return config
