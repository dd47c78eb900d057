"""keras_sparsevd: Sparse Variational Dropout (Molchanov et al., 2017) for Keras 3."""

# ruff: noqa: E402
# First, before the imports below load TensorFlow: under ``python -m
# keras_sparsevd.export`` (and ``python -m examples.train``, ...) TensorFlow's
# start-up notices are left out (`keras_sparsevd._quiet`). A plain
# ``import keras_sparsevd`` in a user's program changes nothing.
from keras_sparsevd._quiet import quiet_if_program as _quiet_if_program

_quiet_if_program()

from keras_sparsevd.callbacks import KLScheduler, SparsityLogger
from keras_sparsevd.convert.saving import load_model
from keras_sparsevd.convert.sparsify import sparsify
from keras_sparsevd.export import (
    PrunedWeightsLostError,
    SelectFeatures,
    SizeEntry,
    SizeReport,
    TFLiteNotSupportedError,
    compact_model,
    export_tflite,
    load_sparse,
    posterior_bits,
    quantize_model,
    save_sparse,
    size_report,
    strip_sparsevd,
)
from keras_sparsevd.kl import kl_divergence
from keras_sparsevd.layers import (
    GRUSVD,
    LSTMSVD,
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
    GRUCellSVD,
    KLWeightNotSetError,
    LSTMCellSVD,
    MultiHeadAttentionSVD,
    ReversibleEmbeddingSVD,
    SeparableConv1DSVD,
    SeparableConv2DSVD,
    SimpleRNNCellSVD,
    SimpleRNNSVD,
    SparseVDLayer,
)
from keras_sparsevd.model_helpers import (
    NonFiniteWeightsError,
    get_kl_weight,
    set_group_kl_scale,
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
    "GRUCellSVD",
    "GRUSVD",
    "KLScheduler",
    "KLWeightNotSetError",
    "LSTMCellSVD",
    "LSTMSVD",
    "LayerSparsity",
    "MultiHeadAttentionSVD",
    "NonFiniteWeightsError",
    "ReversibleEmbeddingSVD",
    "SelectFeatures",
    "SeparableConv1DSVD",
    "SeparableConv2DSVD",
    "SimpleRNNCellSVD",
    "SimpleRNNSVD",
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
    "posterior_bits",
    "PrunedWeightsLostError",
    "quantize_model",
    "register_layer_pair",
    "save_sparse",
    "set_group_kl_scale",
    "set_kl_weight",
    "size_report",
    "sparsify",
    "sparsity_report",
    "strip_sparsevd",
    "svd_layers",
]
