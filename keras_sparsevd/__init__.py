"""keras_sparsevd: Sparse Variational Dropout (Molchanov et al., 2017) for Keras 3."""

from keras_sparsevd.callbacks import KLScheduler, SparsityLogger
from keras_sparsevd.convert.saving import load_model
from keras_sparsevd.convert.sparsify import sparsify
from keras_sparsevd.export import (
    SelectFeatures,
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
from keras_sparsevd.kl import kl_divergence
from keras_sparsevd.layers import (
    BaseConvSVD,
    BaseConvTransposeSVD,
    BaseDepthwiseConvSVD,
    BaseSeparableConvSVD,
    Conv1DSVD,
    Conv1DTransposeSVD,
    Conv2DSVD,
    Conv2DTransposeSVD,
    Conv3DSVD,
    Conv3DTransposeSVD,
    DenseSVD,
    DepthwiseConv1DSVD,
    DepthwiseConv2DSVD,
    EinsumDenseSVD,
    EmbeddingSVD,
    KLWeightNotSetError,
    MultiHeadAttentionSVD,
    ReversibleEmbeddingSVD,
    SeparableConv1DSVD,
    SeparableConv2DSVD,
    SparseVDLayer,
)
from keras_sparsevd.model_helpers import (
    NonFiniteWeightsError,
    get_kl_weight,
    set_kl_weight,
    svd_layers,
)
from keras_sparsevd.registry import counterpart_of, register_layer_pair
from keras_sparsevd.report import LayerSparsity, SparsityReport, sparsity_report

__version__ = "0.2.0"

__all__ = [
    "BaseConvSVD",
    "BaseConvTransposeSVD",
    "BaseDepthwiseConvSVD",
    "BaseSeparableConvSVD",
    "Conv1DSVD",
    "Conv1DTransposeSVD",
    "Conv2DSVD",
    "Conv2DTransposeSVD",
    "Conv3DSVD",
    "Conv3DTransposeSVD",
    "DenseSVD",
    "DepthwiseConv1DSVD",
    "DepthwiseConv2DSVD",
    "EinsumDenseSVD",
    "EmbeddingSVD",
    "KLScheduler",
    "KLWeightNotSetError",
    "LayerSparsity",
    "MultiHeadAttentionSVD",
    "NonFiniteWeightsError",
    "ReversibleEmbeddingSVD",
    "SelectFeatures",
    "SeparableConv1DSVD",
    "SeparableConv2DSVD",
    "SizeEntry",
    "SizeReport",
    "SparseVDLayer",
    "SparsityLogger",
    "SparsityReport",
    "TFLiteNotSupportedError",
    "compact_model",
    "counterpart_of",
    "export_tflite",
    "get_kl_weight",
    "kl_divergence",
    "load_model",
    "load_sparse",
    "register_layer_pair",
    "save_sparse",
    "set_kl_weight",
    "size_report",
    "sparsify",
    "sparsity_report",
    "strip_sparsevd",
    "svd_layers",
]
