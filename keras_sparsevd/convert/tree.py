"""A model's layer tree: every layer, wherever it sits, with its path.

Keras tracks each layer's sublayers whatever holds them: a functional
graph's nodes, a Sequential's list, a custom layer's attributes (KerasHub's
`TransformerDecoder` holding its attention and Dense layers), a wrapper's
``layer`` (`TimeDistributed`, `Bidirectional`) or a subclassed model's
attributes. Walking that tree reaches them all with one mechanism.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable

import keras

from keras_sparsevd import _keras_compat as compat


@dataclasses.dataclass(frozen=True)
class Node:
    """One layer of a model's tree.

    Attributes:
        path: the names from the model down to the layer, joined by ``/``
            (``"transformer_layer_0/self_attention/query"``); a name that
            two siblings share gets ``#k``, k counting from 0 in order.
        layer: the layer.
    """

    path: str
    layer: keras.layers.Layer


def walk(
    root: keras.layers.Layer,
    descend: Callable[[keras.layers.Layer], bool] = lambda layer: True,
) -> list:
    """Every layer under `root` once, depth first, in the order they were added.

    Args:
        root: a model or layer (not itself listed).
        descend: whether to list a layer's own sublayers too.

    Returns:
        A list of `Node`. A layer used twice (a shared layer) is listed once,
        at its first path.
    """
    seen: set = set()
    nodes: list = []

    def visit(layer: keras.layers.Layer, prefix: str) -> None:
        children = compat.sublayers(layer)
        counts = collections.Counter(child.name for child in children)
        index: collections.Counter = collections.Counter()
        for child in children:
            name = child.name
            if counts[name] > 1:
                name = f"{name}#{index[child.name]}"
                index[child.name] += 1
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}/{name}" if prefix else name
            nodes.append(Node(path, child))
            if descend(child):
                visit(child, path)

    visit(root, "")
    return nodes


def kernel_weights(layer: keras.layers.Layer) -> list:
    """The layer's own kernel-like weights: those it declared trainable with
    two or more dimensions (kernels, embedding tables), not biases, norms or
    statistics."""
    return [v for v in compat.own_trainable_variables(layer) if len(v.shape) >= 2]
