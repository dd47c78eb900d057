"""keras_sparsevd: Sparse Variational Dropout (Molchanov et al., 2017) for Keras 3."""

from keras_sparsevd.callbacks import KLScheduler, SparsityLogger
from keras_sparsevd.kl import get_kl_weight, kl_divergence, set_kl_weight
from keras_sparsevd.layers import (
    BaseConvSVD,
    Conv1DSVD,
    Conv2DSVD,
    Conv3DSVD,
    DenseSVD,
    KLWeightNotSetError,
    SparseVDLayer,
)
from keras_sparsevd.report import LayerSparsity, SparsityReport, sparsity_report

__version__ = "0.1.0"

__all__ = [
    "BaseConvSVD",
    "Conv1DSVD",
    "Conv2DSVD",
    "Conv3DSVD",
    "DenseSVD",
    "KLScheduler",
    "KLWeightNotSetError",
    "LayerSparsity",
    "SparseVDLayer",
    "SparsityLogger",
    "SparsityReport",
    "get_kl_weight",
    "kl_divergence",
    "set_kl_weight",
    "sparsity_report",
]
