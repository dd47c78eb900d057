"""Sparse Variational Dropout layers."""

from keras_sparsevd.layers.base import KLWeightNotSetError, SparseVDLayer
from keras_sparsevd.layers.conv import BaseConvSVD, Conv1DSVD, Conv2DSVD, Conv3DSVD
from keras_sparsevd.layers.dense import DenseSVD

__all__ = [
    "BaseConvSVD",
    "Conv1DSVD",
    "Conv2DSVD",
    "Conv3DSVD",
    "DenseSVD",
    "KLWeightNotSetError",
    "SparseVDLayer",
]
