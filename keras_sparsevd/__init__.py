"""keras_sparsevd: Sparse Variational Dropout (Molchanov et al., 2017) for Keras 3."""

from keras_sparsevd.callbacks import KLScheduler, SparsityLogger
from keras_sparsevd.export import (
    SizeEntry,
    SizeReport,
    TFLiteNotSupportedError,
    compact_model,
    export_tflite,
    load_sparse,
    save_sparse,
    size_report,
    strip_sparsevd,
)
from keras_sparsevd.kl import get_kl_weight, kl_divergence, set_kl_weight, svd_layers
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
    "SizeEntry",
    "SizeReport",
    "SparseVDLayer",
    "SparsityLogger",
    "SparsityReport",
    "TFLiteNotSupportedError",
    "compact_model",
    "export_tflite",
    "get_kl_weight",
    "kl_divergence",
    "load_sparse",
    "save_sparse",
    "set_kl_weight",
    "size_report",
    "sparsity_report",
    "svd_layers",
    "strip_sparsevd",
]
