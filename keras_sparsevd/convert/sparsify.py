"""`sparsify`: any trained Keras model with its layers made Sparse VD."""

from __future__ import annotations

import collections
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np

from keras_sparsevd import _keras_compat as compat
from keras_sparsevd import registry
from keras_sparsevd.convert import swap, tree
from keras_sparsevd.convert.saving import copy_model
from keras_sparsevd.layers.base import check_threshold, get_log_sigma2_initializer


def sparsify(
    model: keras.Model,
    layers: Iterable[str] | Callable[[keras.layers.Layer], bool] | None = None,
    *,
    threshold: float = 3.0,
    log_sigma2_initializer: Any = None,
    train_clip: bool = False,
    structured: bool = False,
    channel_groups: bool = False,
    inplace: bool = False,
    verbose: bool = True,
) -> keras.Model:
    """A copy of `model` whose convertible layers are Sparse VD layers.

    Every layer of a registered class (`Dense` -> `DenseSVD`, `Conv2D` ->
    `Conv2DSVD`, `MultiHeadAttention` -> `MultiHeadAttentionSVD`, ...: the
    pairs of `keras_sparsevd.registry`) is converted wherever it sits in the
    model's layer tree: in a Sequential or functional graph (with
    `keras.ops` nodes such as ``x + y`` or ``x[:, 0]``), in a nested model,
    inside a custom layer that holds it as an attribute (KerasHub's
    Transformer blocks), inside a wrapper (`TimeDistributed`) or in a
    subclassed model. Each layer is converted in place, on a copy of the
    model, so the model keeps its class (a KerasHub `GPT2CausalLM` stays one
    and still generates) and every other layer keeps its class, weights and
    ``trainable`` flag. Trained weights carry over: each kernel becomes
    theta, the bias stays the bias, and ``log_sigma2`` starts at
    `log_sigma2_initializer`.

    Layers are matched by exact class: a user's subclass of `Dense`, whose
    `call` may do anything, is left as it is (with a warning; named in
    `layers`, it is an error), though registered layers inside it are
    converted. `keras_sparsevd.counterpart_of` declares pairs of your own.
    With ``verbose`` it prints what it converted and what kept dense weights,
    and why.

    The returned model is not compiled: compile it, then fine-tune with
    `KLScheduler`. ``log_sigma2`` sets the starting noise through
    ``log_alpha = log_sigma2 - log(theta^2)``: start most weights well inside
    the clip range [-8, 8], about ``log_sigma2 = log(median theta^2) - 4``
    (-8 to -10 for the LeNets); RESULTS.md has the measurements. Save it
    with ``model.save``; load it with `keras_sparsevd.load_model` (or
    `keras.models.load_model` where every Sparse VD layer sits in a graph).

    Args:
        model: a built Keras model of any kind.
        layers: which layers to convert: None for every convertible one; a
            collection of layer names (a name matches every layer of that
            name) or paths such as ``"transformer_layer_0/self_attention/query"``
            (a layer that holds convertible layers selects them all); or a
            callable ``layer -> bool``.
        threshold: pruning threshold on log alpha of the new layers (3.0).
        log_sigma2_initializer: initializer of their ``log_sigma2``, or a
            number for a constant; constant -10 by default. A very negative
            constant (e.g. -30) leaves the predictions exactly unchanged at
            first.
        train_clip: zero pruned weights in the training mean as well.
        structured: also give each converted layer group variables on its
            input units (``group_sparsity=True``), so that whole units and
            filters are pruned; layers that cannot have them (`Embedding`,
            grouped convolutions, the attention projections) get none.
        channel_groups: with `structured`, a `Dense` layer that reads a
            `Flatten` of a feature map (conv -> [pool] -> Flatten -> Dense,
            dropout or activation layers allowed in between) gets one group
            per channel, shared over the channel's positions
            (``DenseSVD(group_channels=C)``), instead of one per flattened
            unit: a pruned group then removes a whole filter of the
            convolution before, which `keras_sparsevd.compact_model` drops.
            Only in a Sequential or functional graph, where the `Flatten`
            can be found; elsewhere such layers keep one group per unit.
        inplace: convert `model` itself instead of a copy. The copy is made
            by saving and loading the model with Keras; use this for a model
            Keras cannot save and rebuild (a class without `get_config`).
        verbose: print what was converted and what was left.

    Returns:
        The converted model (a new one unless `inplace`), built, uncompiled.

    Raises:
        ValueError: if `model` is not a built Keras model, a name in `layers`
            does not exist or selects nothing convertible, nothing at all is
            selected, an argument is invalid, or the copy cannot be made.

    Example:

    >>> sparse = sparsify(trained, log_sigma2_initializer=-8.0)  # doctest: +SKIP
    >>> sparse.compile("adam", "sparse_categorical_crossentropy")  # doctest: +SKIP
    >>> sparse.fit(x, y, callbacks=[KLScheduler(len(x))])  # doctest: +SKIP
    """
    check_model(model, "sparsify")
    registry.declare_optional_pairs()
    svd_args = {
        "threshold": check_threshold(threshold),
        "log_sigma2_initializer": keras.initializers.serialize(
            get_log_sigma2_initializer(log_sigma2_initializer)
        ),
        "train_clip": _flag(train_clip, "train_clip"),
        "group_sparsity": _flag(structured, "structured"),
    }
    _flag(inplace, "inplace")
    if _flag(channel_groups, "channel_groups") and not svd_args["group_sparsity"]:
        raise ValueError(
            "`channel_groups=True` shares group variables over a channel's "
            "positions, but there are no group variables: pass `structured=True` "
            "as well."
        )
    candidates = _candidates(model)
    selected = _select(candidates, layers)
    if not selected:
        raise ValueError(
            f"Model {model.name!r} has no layer to convert: sparsify converts "
            f"layers of exactly these classes: {registry.registered_plain_classes()}."
        )
    left = _left_dense(candidates, selected, layers is not None)
    target = model if inplace else copy_model(model, "sparsify")
    # The copy has the same tree, but Keras may give its layers other
    # automatic names: layers correspond by place.
    twins = _twins(candidates, _candidates(target))
    converted = collections.Counter()
    chosen = set(selected)
    shared = _flatten_channels(candidates, chosen) if channel_groups else {}
    if channel_groups and not shared:
        warnings.warn(
            "sparsify: `channel_groups=True`, but no selected Dense layer reads a "
            "Flatten of a feature map in the model's graph: every layer keeps one "
            "group per input unit.",
            stacklevel=2,
        )
    for node in candidates:
        if node.path in chosen:
            layer = twins[id(node.layer)]
            converted[type(layer).__name__] += 1
            swap.to_sparse(layer, {**svd_args, **shared.get(id(node.layer), {})})
    if verbose:
        print(_summary(model.name, converted, left))
        for node in candidates:
            if id(node.layer) in shared:
                print(
                    f"  {node.path}: one group per channel of the Flatten before it "
                    f"(group_channels={shared[id(node.layer)]['group_channels']})"
                )
    return target


# Layers that change no value's channel or position at inference, so a Dense
# behind them still reads the Flatten's units one to one.
_PASS_THROUGH = (
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
)


# Layers that make feature maps whose last axis (channels_last) is channels.
_CHANNEL_MAKERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
# Layers that keep the channels of the feature map they read.
_PER_CHANNEL = _PASS_THROUGH + (
    keras.layers.BatchNormalization,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
)


def _flatten_channels(candidates: list, chosen: set) -> dict:
    """``{id(Dense layer): channel-group args}`` for each chosen Dense that
    reads a Flatten of a feature map, found through the model's graph."""
    found = {}
    for node in candidates:
        layer = node.layer
        if node.path not in chosen or type(layer) is not keras.layers.Dense:
            continue
        args = _channels_before(layer)
        if args is not None:
            found[id(layer)] = args
    return found


def _channels_before(layer: keras.layers.Layer) -> dict | None:
    """The channels of the Flatten `layer` reads, if it reads one."""
    current = layer
    while True:
        sources = {id(p): (p, shape) for p, shape in compat.input_sources(current)}
        if len(sources) != 1:
            # Called on several tensors, or not in a graph.
            return None
        producer, shape = next(iter(sources.values()))
        if type(producer) in _PASS_THROUGH:
            current = producer
            continue
        if type(producer) is not keras.layers.Flatten:
            return None
        [(_, feature_shape)] = compat.input_sources(producer)[:1] or [(None, ())]
        if len(feature_shape) < 3 or None in feature_shape[1:]:
            return None
        if not _from_convolution(producer):
            # A Flatten of an image (LeNet-300-100's): its last axis is no
            # channel of filters.
            return None
        data_format = producer.data_format
        channels = feature_shape[1 if data_format == "channels_first" else -1]
        return {"group_channels": int(channels), "group_data_format": data_format}


def _from_convolution(flatten: keras.layers.Layer) -> bool:
    """Whether `flatten` reads a convolution's output through per-channel layers."""
    current = flatten
    for _ in range(1000):  # a graph is finite; this bounds a malformed one
        sources = {id(p): p for p, _ in compat.input_sources(current)}
        if len(sources) != 1:
            return False
        [producer] = sources.values()
        if isinstance(producer, _CHANNEL_MAKERS):
            return True
        if not isinstance(producer, _PER_CHANNEL):
            return False
        current = producer
    return False


def check_model(model: Any, action: str) -> None:
    """Raises a ValueError unless `model` is a built Keras model."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a Keras model, got {type(model).__name__}: pass a "
            f"keras.Model to {action}."
        )
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: start it with a "
            "`keras.Input(shape)` or call it on a batch of data first."
        )


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def _candidates(model: keras.Model) -> list:
    """The nodes of the layer tree that `layers` chooses among."""
    return [
        node
        for node in tree.walk(model, descend=_descend)
        if not isinstance(node.layer, keras.layers.InputLayer)
    ]


def _twins(originals: list, copies: list) -> dict:
    """``{id(original layer): its copy}``, place by place."""
    same = len(originals) == len(copies) and all(
        type(a.layer) is type(b.layer) for a, b in zip(originals, copies)
    )
    if not same:
        raise ValueError(
            "The copy of the model made with `model.save` and loading has other "
            "layers than the model: its classes create layers differently when "
            "rebuilt from their config. Pass `inplace=True` to convert the "
            "model itself."
        )
    return {id(a.layer): b.layer for a, b in zip(originals, copies)}


def _descend(layer: keras.layers.Layer) -> bool:
    # A registered layer is converted whole (attention with its projections);
    # a Sparse VD layer's insides are its own.
    return registry.pair_for_plain(layer) is None and not registry.is_sparse(layer)


def _convertible(layer: keras.layers.Layer) -> bool:
    return registry.pair_for_plain(layer) is not None


def _why_not(layer: keras.layers.Layer) -> str:
    """Why `layer` is not converted, for messages."""
    if registry.is_sparse(layer):
        return "it is already a Sparse VD layer"
    base = registry.unregistered_base(layer, "plain")
    if base is not None:
        return (
            f"it is a subclass of {base.__name__}, and its `call` may compute "
            f"something else than {base.__name__}'s; declare a Sparse VD "
            "counterpart with keras_sparsevd.counterpart_of"
        )
    return f"no Sparse VD counterpart is registered for {type(layer).__name__}"


def _select(candidates: list, layers: Any) -> list:
    """The paths of the layers to convert, in tree order."""
    convertible = [node for node in candidates if _convertible(node.layer)]
    if layers is None:
        return [node.path for node in convertible]
    if callable(layers):
        picked = [node for node in candidates if layers(node.layer)]
        for node in picked:
            if not _convertible(node.layer):
                raise ValueError(
                    f"`layers` picked layer {node.layer.name!r} "
                    f"({type(node.layer).__name__}), which cannot be converted: "
                    f"{_why_not(node.layer)}."
                )
        return [node.path for node in picked]
    if isinstance(layers, str):
        layers = [layers]
    try:
        names = list(layers)
    except TypeError:
        raise ValueError(
            "`layers` must be None, a collection of layer names or paths, or a "
            f"callable layer -> bool, got {layers!r}."
        ) from None
    chosen: set = set()
    for name in names:
        if not isinstance(name, str):
            raise ValueError(
                f"`layers` must hold layer names or paths (strings), got {name!r}."
            )
        matches = [n for n in candidates if name in (n.path, n.layer.name)]
        if not matches:
            raise ValueError(
                f"`layers` names {name!r}, but the model has no layer of that "
                f"name or path. Its layers: {sorted({n.path for n in candidates})}."
            )
        for match in matches:
            if _convertible(match.layer):
                chosen.add(match.path)
                continue
            inside = [
                n.path for n in convertible if n.path.startswith(match.path + "/")
            ]
            if not inside:
                raise ValueError(
                    f"`layers` names {name!r} ({type(match.layer).__name__}), which "
                    f"cannot be converted: {_why_not(match.layer)}, and it holds no "
                    "layer that can."
                )
            chosen.update(inside)
    return [node.path for node in convertible if node.path in chosen]


def _left_dense(candidates: list, selected: list, by_choice: bool) -> list:
    """``(path, class name, why)`` of each layer that keeps dense kernels."""
    chosen = set(selected)
    left = []
    for node in candidates:
        layer = node.layer
        if node.path in chosen or registry.is_sparse(layer):
            continue
        if not tree.kernel_weights(layer) and not _convertible(layer):
            continue
        if _convertible(layer) and by_choice:
            why = "not selected by `layers`"
        else:
            why = _why_not(layer)
        if registry.unregistered_base(layer, "plain") is not None:
            warnings.warn(
                f"sparsify: layer {layer.name!r} ({type(layer).__name__}) is left "
                f"as it is: {why}.",
                stacklevel=3,
            )
        left.append((node.path, type(layer).__name__, why))
    return left


def _summary(name: str, converted: collections.Counter, left: list) -> str:
    kinds = ", ".join(f"{count} {cls}" for cls, count in sorted(converted.items()))
    lines = [
        f"sparsify: converted {sum(converted.values())} layers of {name!r} "
        f"to Sparse VD ({kinds})."
    ]
    if left:
        lines.append(f"Left with dense weights ({len(left)}):")
        lines += [f"  {path} ({cls}): {why}" for path, cls, why in left]
    return "\n".join(lines)
