"""Pairs for KerasHub's own layers, declared when KerasHub is in use.

KerasHub subclasses some Keras layers without changing what they compute
(its `ReversibleEmbedding` is Keras' with nothing added). Layers are matched
by exact class, so each such subclass gets its own declared pair here.
`keras_sparsevd.registry.declare_optional_pairs` imports this module once
`keras_hub` has been imported, so that KerasHub stays an optional
dependency.
"""

from __future__ import annotations

import keras_hub

from keras_sparsevd.layers.embedding import ReversibleEmbeddingSVD
from keras_sparsevd.registry import counterpart_of


@counterpart_of(keras_hub.layers.ReversibleEmbedding)
class HubReversibleEmbeddingSVD(
    ReversibleEmbeddingSVD, keras_hub.layers.ReversibleEmbedding
):
    """`ReversibleEmbeddingSVD` for KerasHub's `ReversibleEmbedding` (GPT-2,
    Gemma, Llama token embeddings): the same layer, declared for its class."""
