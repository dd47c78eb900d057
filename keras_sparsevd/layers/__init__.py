"""Sparse Variational Dropout layers."""

from keras_sparsevd.layers.attention import MultiHeadAttentionSVD
from keras_sparsevd.layers.base import KLWeightNotSetError, SparseVDLayer
from keras_sparsevd.layers.conv import (
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
    DepthwiseConv1DSVD,
    DepthwiseConv2DSVD,
    SeparableConv1DSVD,
    SeparableConv2DSVD,
)
from keras_sparsevd.layers.dense import DenseSVD, EinsumDenseSVD
from keras_sparsevd.layers.embedding import EmbeddingSVD, ReversibleEmbeddingSVD
from keras_sparsevd.layers.recurrent import (
    GRUSVD,
    LSTMSVD,
    GRUCellSVD,
    LSTMCellSVD,
    RecurrentCellSVD,
    SimpleRNNCellSVD,
    SimpleRNNSVD,
)

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
    "KLWeightNotSetError",
    "LSTMCellSVD",
    "LSTMSVD",
    "MultiHeadAttentionSVD",
    "RecurrentCellSVD",
    "ReversibleEmbeddingSVD",
    "SeparableConv1DSVD",
    "SeparableConv2DSVD",
    "SimpleRNNCellSVD",
    "SimpleRNNSVD",
    "SparseVDLayer",
]
