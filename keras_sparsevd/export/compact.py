"""`compact_plain`: removes the units and filters that pruning left dead.

Unstructured sparsity leaves the dense kernels their full size. But when all
incoming weights of a unit are pruned, the unit outputs a constant, and when
all its outgoing weights are pruned, nobody reads it: either way it can go,
which shrinks both neighbouring kernels for real.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_sparsevd import _keras_compat as compat
from keras_sparsevd.convert import tree
from keras_sparsevd.export.cloning import (
    check_graph_model,
    clone_from_config,
    is_graph_model,
    uncompiled,
)
from keras_sparsevd.export.select import SelectFeatures
from keras_sparsevd.model_helpers import svd_layers

_DENSE = keras.layers.Dense
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
# Exact classes only: a subclass may change what `call` does with the kernel.
_PRUNABLE = (_DENSE,) + _CONVS
# Recurrent layers and their gate blocks in the kernels' last axis.
_RECURRENT = {keras.layers.LSTM: 4, keras.layers.GRU: 3, keras.layers.SimpleRNN: 1}

# Layers that act on each channel independently and are the identity (or
# elementwise) at inference, so a constant channel stays a constant channel.
_ELEMENTWISE_LAYERS = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
_POOLING_LAYERS = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
)
# Activations that map each value on its own (softmax, glu, ... mix channels).
_ELEMENTWISE_ACTIVATIONS = frozenset(
    (
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "swish",
        "mish",
        "sigmoid",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "log_sigmoid",
        "tanh",
        "hard_tanh",
        "softplus",
        "softsign",
        "exponential",
        "squareplus",
        "sparse_plus",
    )
)


def compact_plain(model: keras.Model, drop_unread_inputs: bool = False) -> keras.Model:
    """A smaller plain model without the units and filters pruning left dead.

    Works on pairs of consecutive prunable layers P -> Q (`keras.layers.Dense`
    or `Conv1D`/`Conv2D`/`Conv3D`, channels_last, ``groups=1``) of a chain.
    A unit (or filter) j of P is removed when

    - all its outgoing weights in Q are 0: it feeds nothing; or
    - all its incoming weights in P are 0: it outputs the constant
      ``activation(bias_j)``, whose effect on Q is folded into Q's bias
      (``bias_Q += c_j * W_Q[j, :]``, summed over Q's kernel window or the
      flattened positions). Q gets a bias if it had none. When Q is a
      convolution with ``"same"`` (or ``"causal"``) padding, the zero padding
      makes the effect position-dependent, so such a unit is removed only
      when the constant reaching Q is exactly 0 (e.g. after a ReLU).

    Recurrent layers (`keras.layers.LSTM`, `GRU`, `SimpleRNN`, exact
    classes, neither stateful nor returning their states) take part too, as
    P or Q. As P, a hidden unit is removed only when nothing reads it: its
    row of the recurrent kernel and its inputs to Q are all 0; it goes with
    its columns in every gate block of both kernels, its bias entries and
    its row of the recurrent kernel. A hidden unit without inputs is kept:
    its cell state still changes from step to step, so it is no constant.
    As Q, its input kernel's rows play the part of a Dense kernel's rows
    (a constant folds into the input bias; GRU's ``reset_after`` recurrent
    bias is left alone).

    Rows of Q and entries of per-channel layers between P and Q are removed
    with it. Removing units of Q can leave more units of P feeding nothing,
    so the passes repeat until nothing changes. At least one unit of each
    layer is kept; the last prunable layer (the model's outputs) is never
    changed, nor are the inputs of the first one unless `drop_unread_inputs`.

    With `drop_unread_inputs`, the input features that the first prunable
    layer no longer reads (all-zero kernel rows of a Dense, all-zero input
    channels of a convolution, counted after its dead units are gone) are
    dropped as well: a `SelectFeatures` layer keeping the read ones goes
    right in front of it, and its kernel loses the unread rows or channels.
    This is exact whatever comes before the layer, since a gather in front of
    a matmul or convolution only skips terms that are multiplied by 0 (an
    inf or NaN in an unread feature no longer turns the output NaN, though).
    The model's own inputs stay as they are, and the layers before the gather
    still run on all features. It applies to the first Dense/Conv of the
    model and of each nested model, and only where some feature is unread.

    Layers allowed between P and Q (a recurrent Q must get a sequence,
    ``(batch, steps, features)``): activation layers with an elementwise
    activation (``Activation``, ``ReLU``, ``LeakyReLU``, ``ELU``; not
    softmax), dropout and noise layers (identity at inference),
    ``BatchNormalization`` over the channel axis, channels_last max/average
    pooling and global pooling, and ``Flatten`` before a Dense Q. For example
    Dense -> Dense, Conv2D -> Conv2D, Conv -> MaxPool -> Conv,
    Conv -> BatchNorm -> ReLU -> Conv and Conv -> Flatten -> Dense chains.
    P's own activation must be elementwise as well.

    What it does not compact: a pair with any other layer between (a
    softmax, LayerNormalization, Reshape, a nested model, channels_first
    layouts, grouped or transposed convolutions, spatial sizes unknown
    before Q) is left as it is, with a `UserWarning` naming the layer; the
    rest of the model is still compacted. Nested Sequential or functional
    models are compacted inside, keeping their own inputs and outputs.

    Args:
        model: a built plain Sequential model, or a functional model whose
            layers form one chain (one input, one output, no branches, no
            shared layers). `keras_sparsevd.compact_model` strips a Sparse
            VD model first and then calls this.
        drop_unread_inputs: also drop the input features the first
            prunable layer does not read (see above). The result then holds
            a `SelectFeatures` layer, so its ``.keras`` file needs
            keras_sparsevd to load; SavedModel and TFLite exports do not.

    Returns:
        A new, uncompiled model of the same kind, with the same name,
        inputs, outputs and predictions (up to float32 rounding of the
        folded biases) and fewer units where some were dead.

    Raises:
        ValueError: if `model` is subclassed, not built, or a functional
            model that is not a single chain (several inputs or outputs,
            branches, merges, shared layers), or holds Sparse VD layers.

    Example:

    >>> small = compact_plain(strip_sparsevd(model))  # doctest: +SKIP
    """
    check_graph_model(model, "compact")
    if svd_layers(model):
        raise ValueError(
            f"Model {model.name!r} holds Sparse VD layers: strip them first, or "
            "call keras_sparsevd.compact_model, which does both."
        )
    chain = _chain(model)
    shapes = _output_shapes(chain, tuple(model.inputs[0].shape))
    units = _plan(chain, shapes)
    if drop_unread_inputs and units:
        # After `_plan`: the columns of the first layer's removed units are
        # zero by now, so rows that fed only those count as unread too.
        _select_read_inputs(units[0])
    return _rebuild(model, units, drop_unread_inputs)


@dataclasses.dataclass
class _Link:
    """How the inputs of a prunable layer come from the previous one."""

    source: _Prunable
    between: list
    # "flatten": Q is Dense on flattened channels_last positions of P;
    # "positional": Q applies the same weights at every position.
    mode: str
    # Q's output depends only on constant inputs, padding included.
    valid: bool


@dataclasses.dataclass
class _Prunable:
    """Working copy of a prunable layer's weights while planning."""

    layer: keras.layers.Layer
    output_shape: tuple | None
    kernel: np.ndarray
    bias: np.ndarray
    use_bias: bool
    keep: np.ndarray
    link: _Link | None = None
    # Input features (Dense rows, conv input channels) kept behind a
    # `SelectFeatures`; None: the layer reads its inputs as they come.
    read: np.ndarray | None = None
    # Recurrent layers: the recurrent kernel as (units, gates, units); the
    # input kernel is then held as (inputs, gates, units) and the bias as
    # (..., gates, units), so that the last axis is the hidden unit.
    recurrent_kernel: np.ndarray | None = None


def _chain(model: keras.Model) -> list:
    """The layers of `model` in order, if they form a single chain."""
    if isinstance(model, keras.Sequential):
        return list(model.layers)
    problem = None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        problem = f"it has {len(model.inputs)} inputs and {len(model.outputs)} outputs"
    layers = []
    # Keras has no public graph API; Functional keeps its nodes by depth
    # (0 = outputs), which is what `clone_model` walks as well.
    by_depth = compat.nodes_by_depth(model)
    for depth in sorted(by_depth, reverse=True):
        if problem:
            break
        nodes = by_depth[depth]
        if len(nodes) != 1:
            names = sorted({node.operation.name for node in nodes})
            problem = f"it branches (layers {names} run side by side)"
        elif isinstance(nodes[0].operation, keras.layers.InputLayer):
            continue
        elif len(nodes[0].input_tensors) != 1:
            problem = f"layer {nodes[0].operation.name!r} takes several inputs"
        else:
            layers.append(nodes[0].operation)
    if not problem and len({id(layer) for layer in layers}) != len(layers):
        problem = "it uses a layer more than once"
    if problem:
        raise ValueError(
            f"Cannot compact functional model {model.name!r}: {problem}. "
            "Compaction handles Sequential models and functional models that "
            "are one chain of layers; export this one with compact=False."
        )
    return layers


def _output_shapes(chain: list, input_shape: tuple) -> list:
    shapes = []
    shape: tuple | None = input_shape
    for layer in chain:
        try:
            shape = tuple(layer.compute_output_shape(shape)) if shape else None
        except Exception:
            # Only pairs across this layer need shapes, and they are skipped.
            shape = None
        shapes.append(shape)
    return shapes


def _plan(chain: list, shapes: list) -> list:
    """Decides what to remove; returns the prunable layers' final state."""
    positions = [i for i, layer in enumerate(chain) if _is_prunable(layer)]
    units = {i: _working_copy(chain[i], shapes[i]) for i in positions}
    links = []
    for i, k in zip(positions, positions[1:]):
        link = _make_link(units[i], chain[i + 1 : k], units[k], shapes[i + 1 : k])
        if isinstance(link, str):
            warnings.warn(
                f"Not compacting {chain[i].name!r} -> {chain[k].name!r}: {link}",
                stacklevel=3,
            )
            continue
        units[k].link = link
        links.append((link, units[k]))
    changed = True
    while changed:
        changed = False
        for link, target in links:
            changed |= _prune_pair(link, target)
    return [units[i] for i in positions]


def _is_prunable(layer: keras.layers.Layer) -> bool:
    if type(layer) in _RECURRENT:
        # A stateful layer's states, and the states it returns, are sized by
        # its units; a layer that returns them is not a link of a chain.
        return not (layer.stateful or layer.return_state)
    if type(layer) not in _PRUNABLE:
        return False
    if getattr(layer, "quantization_mode", None) or getattr(
        layer, "lora_enabled", False
    ):
        return False
    if isinstance(layer, _CONVS):
        return layer.data_format == "channels_last" and layer.groups == 1
    return True


def _working_copy(layer: keras.layers.Layer, output_shape: tuple | None) -> _Prunable:
    if type(layer) in _RECURRENT:
        return _recurrent_copy(layer, output_shape)
    kernel = np.array(keras.ops.convert_to_numpy(layer.kernel), dtype="float32")
    channels = kernel.shape[-1]
    if layer.use_bias:
        bias = np.array(keras.ops.convert_to_numpy(layer.bias), dtype="float32")
    else:
        bias = np.zeros(channels, "float32")
    return _Prunable(
        layer=layer,
        output_shape=output_shape,
        kernel=kernel,
        bias=bias,
        use_bias=layer.use_bias,
        keep=np.ones(channels, bool),
    )


def _recurrent_copy(layer: keras.layers.Layer, output_shape: tuple | None) -> _Prunable:
    cell = layer.cell
    gates, units = _RECURRENT[type(layer)], cell.units

    def blocks(value: Any) -> np.ndarray:
        # Keras lays the gates out as consecutive blocks of `units` columns.
        value = np.array(keras.ops.convert_to_numpy(value), dtype="float32")
        return value.reshape(value.shape[:-1] + (gates, units))

    if cell.use_bias:
        bias = blocks(cell.bias)
    else:
        # What Keras would create with use_bias=True: GRU's reset_after has
        # one bias for the input and one for the recurrent kernel.
        rows = (2,) if getattr(cell, "reset_after", False) else ()
        bias = np.zeros(rows + (gates, units), "float32")
    return _Prunable(
        layer=layer,
        output_shape=output_shape,
        kernel=blocks(cell.kernel),
        bias=bias,
        use_bias=cell.use_bias,
        keep=np.ones(units, bool),
        recurrent_kernel=blocks(cell.recurrent_kernel),
    )


def _elementwise_activation(fn: Any) -> bool:
    name = getattr(fn, "__name__", None)
    if name not in _ELEMENTWISE_ACTIVATIONS:
        return False
    try:
        return keras.activations.get(name) is fn
    except ValueError:
        return False


def _make_link(
    source: _Prunable, between: list, target: _Prunable, shapes: list
) -> _Link | str:
    """The link from `source` to `target`, or why there can be none."""
    # A recurrent source loses only units nobody reads (see `_prune_pair`),
    # whatever its activations.
    if source.recurrent_kernel is None and not _elementwise_activation(
        source.layer.activation
    ):
        return (
            f"the activation of {source.layer.name!r} is not elementwise, so its "
            "units depend on each other."
        )
    shape = source.output_shape
    # A recurrent layer's sequences may have any length: only its units count.
    needed = 1 if source.recurrent_kernel is None else len(shape or ()) - 1
    if shape is None or None in shape[max(needed, 1) :]:
        return (
            f"the output shape of {source.layer.name!r} is not fully known "
            f"({shape}); give the model an input with a full shape."
        )
    flattened = len(shape) == 2
    for layer, out_shape in zip(between, shapes):
        rank = len(shape)
        if type(layer) is keras.layers.Activation:
            ok = _elementwise_activation(layer.activation)
        elif type(layer) in _ELEMENTWISE_LAYERS:
            ok = True
        elif type(layer) is keras.layers.BatchNormalization:
            ok = (not flattened or rank == 2) and layer.axis in (-1, rank - 1)
        elif type(layer) in _POOLING_LAYERS:
            ok = not flattened and layer.data_format == "channels_last"
        elif type(layer) is keras.layers.Flatten:
            ok = layer.data_format == "channels_last"
            flattened = True
        else:
            ok = False
        if not ok:
            return (
                f"{type(layer).__name__} {layer.name!r} between them is not a "
                "per-channel, channels_last layer that compaction supports."
            )
        if out_shape is None:
            return f"the output shape of {layer.name!r} is unknown."
        shape = out_shape
    if isinstance(target.layer, _DENSE):
        mode = "flatten" if flattened and len(source.output_shape) > 2 else "positional"
        valid = True
    elif target.recurrent_kernel is not None:
        if len(shape) != 3:
            return f"{target.layer.name!r} does not read a sequence of features."
        # The input kernel applies to every step alike, without padding.
        mode, valid = "positional", True
    else:
        mode = "positional"
        valid = target.layer.padding == "valid"
    return _Link(source=source, between=list(between), mode=mode, valid=valid)


def _target_view(link: _Link, target: _Prunable) -> np.ndarray:
    """The target's kernel as (positions, source channels, target units)."""
    channels = link.source.kernel.shape[-1]
    if target.recurrent_kernel is not None:
        # (inputs, gates, units): every gate's columns read the same input.
        return target.kernel.reshape(1, channels, -1)
    units = target.kernel.shape[-1]
    return target.kernel.reshape(-1, channels, units)


def _constant_at_target(link: _Link) -> np.ndarray:
    """What the target sees when every source unit outputs its constant.

    Shaped (positions, channels): the source's ``activation(bias)`` broadcast
    to its output shape, run through the layers between at inference.
    """
    source = link.source
    constant = keras.ops.convert_to_numpy(
        source.layer.activation(keras.ops.convert_to_tensor(source.bias))
    )
    x = np.broadcast_to(constant, (1,) + tuple(source.output_shape[1:]))
    x = keras.ops.convert_to_tensor(np.ascontiguousarray(x, dtype="float32"))
    for layer in link.between:
        x = layer(x, training=False)
    return keras.ops.convert_to_numpy(x).reshape(-1, source.kernel.shape[-1])


def _prune_pair(link: _Link, target: _Prunable) -> bool:
    """Removes the dead units of `link.source`; True if any was removed."""
    source = link.source
    channels = source.kernel.shape[-1]
    view = _target_view(link, target)
    dead_out = ~np.any(view != 0, axis=(0, 2))
    dead_in = ~np.any(source.kernel.reshape(-1, channels) != 0, axis=0)
    recurrent = source.recurrent_kernel
    if recurrent is not None:
        # A hidden unit is read by the next layer and by the recurrent
        # kernel's row of it. One that nothing reads goes, with its cell
        # state (which only feeds it). One without inputs is not a constant:
        # its state still moves from step to step, so it stays.
        dead_out &= ~np.any(recurrent.reshape(channels, -1) != 0, axis=1)
        dead_in = np.zeros_like(dead_in)
    candidates = source.keep & (dead_out | dead_in)
    if not candidates.any():
        return False
    removable = candidates & dead_out
    constant = None
    if (candidates & ~dead_out).any():
        constant = _constant_at_target(link)
        if link.mode == "flatten":
            foldable = np.ones(channels, bool)
        else:
            first = constant[:1]
            uniform = np.all(
                np.abs(constant - first) <= 1e-6 * np.maximum(1.0, np.abs(first)),
                axis=0,
            )
            foldable = uniform & (link.valid | np.all(constant == 0, axis=0))
        removable |= candidates & dead_in & foldable
    if not removable.any():
        return False
    if not (source.keep & ~removable).any():
        # A layer of 0 units is not a Keras layer: keep one.
        removable[np.flatnonzero(removable)[0]] = False
        if not removable.any():
            return False
    if constant is not None:
        # Units read by nobody add nothing; zeroing them also keeps an inf
        # constant (say exp of a large bias) from turning 0 * inf into NaN.
        constant = np.where(dead_out, np.float32(0.0), constant)
        if link.mode == "flatten":
            shift = np.einsum("pc,pcu->u", constant[:, removable], view[:, removable])
        else:
            shift = constant[0, removable] @ view[:, removable].sum(axis=0)
        if np.any(shift != 0):
            if target.recurrent_kernel is not None:
                # Into the input part of the bias (GRU's first row when
                # reset_after: the second belongs to the recurrent kernel).
                row = target.bias.reshape(-1, shift.size)[0]
                row += shift.astype("float32")
            else:
                target.bias += shift.astype("float32")
            target.use_bias = True
    view[:, removable, :] = 0.0
    target.kernel = view.reshape(target.kernel.shape)
    source.kernel[..., removable] = 0.0
    source.bias[..., removable] = 0.0
    if recurrent is not None:
        # Their gates' columns go, so units read only by them are unread now.
        recurrent[..., removable] = 0.0
        recurrent[removable] = 0.0
    source.keep &= ~removable
    return True


def _select_read_inputs(unit: _Prunable) -> None:
    """Sets ``unit.read`` to the input features its kernel reads, if not all.

    Dense and channels_last convolution kernels alike are shaped
    ``(..., inputs, units)``, and their inputs come along the input's last
    axis, so a feature is read if its slice of axis -2 has a non-zero.
    """
    kernel = unit.kernel[..., unit.keep]
    if unit.recurrent_kernel is not None:
        # (inputs, gates, units): the inputs are the first axis.
        kernel = kernel.reshape(1, kernel.shape[0], -1)
    axes = tuple(i for i in range(kernel.ndim) if i != kernel.ndim - 2)
    read = np.any(kernel != 0, axis=axes)
    if read.all():
        return
    if not read.any():
        # A gather of nothing and a kernel of 0 rows are not Keras layers.
        read[0] = True
    unit.read = read


def _final_weights(unit: _Prunable) -> tuple:
    """The kept part of a layer's kernel and bias, and its new config."""
    if unit.recurrent_kernel is not None:
        return _final_recurrent_weights(unit)
    kernel = unit.kernel
    if unit.read is not None:
        kernel = kernel[..., unit.read, :]
    elif unit.link is not None:
        keep_in = unit.link.source.keep
        units = kernel.shape[-1]
        if isinstance(unit.layer, _DENSE):
            channels = keep_in.size
            kernel = kernel.reshape(-1, channels, units)[:, keep_in, :]
            kernel = kernel.reshape(-1, units)
        else:
            kernel = kernel[..., keep_in, :]
    kernel = kernel[..., unit.keep]
    config = unit.layer.get_config()
    config["units" if isinstance(unit.layer, _DENSE) else "filters"] = int(
        unit.keep.sum()
    )
    config["use_bias"] = unit.use_bias
    weights = [kernel]
    if unit.use_bias:
        weights.append(unit.bias[unit.keep])
    return weights, config


def _final_recurrent_weights(unit: _Prunable) -> tuple:
    keep = unit.keep
    kernel = unit.kernel
    if unit.read is not None:
        kernel = kernel[unit.read]
    elif unit.link is not None:
        kernel = kernel[unit.link.source.keep]

    def flat(value: np.ndarray) -> np.ndarray:
        return value.reshape(value.shape[:-2] + (-1,))

    weights = [flat(kernel[..., keep]), flat(unit.recurrent_kernel[keep][..., keep])]
    if unit.use_bias:
        weights.append(flat(unit.bias[..., keep]))
    config = unit.layer.get_config()
    config["units"] = int(keep.sum())
    config["use_bias"] = unit.use_bias
    return weights, config


def _rebuild(model: keras.Model, units: list, drop_unread_inputs: bool) -> keras.Model:
    weights: dict = {}
    configs: dict = {}
    selects: dict = {}
    for unit in units:
        if unit.read is not None:
            selects[id(unit.layer)] = SelectFeatures(
                np.flatnonzero(unit.read),
                axis=-1,
                name=_free_name(model, f"{unit.layer.name}_read_inputs"),
                # The layer's own policy: inputs are cast where they were
                # before (mixed precision), not to float32 and back.
                dtype=unit.layer.dtype_policy,
            )
        weights[id(unit.layer)], configs[id(unit.layer)] = _final_weights(unit)
        if unit.link is not None:
            keep = unit.link.source.keep
            for layer in unit.link.between:
                if layer.weights:
                    weights[id(layer)] = [w[keep] for w in layer.get_weights()]
    pairs = []

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            return _compact_nested(layer, drop_unread_inputs)
        if id(layer) in configs:
            new = layer.__class__.from_config(configs[id(layer)])
        else:
            new = clone_from_config(layer)
        pairs.append((layer, new))
        return new

    if selects:
        compacted = _clone_with_selects(model, clone_layer, selects)
    else:
        compacted = keras.models.clone_model(model, clone_function=clone_layer)
    compacted = uncompiled(compacted)
    for old, new in pairs:
        new.set_weights(weights.get(id(old), old.get_weights()))
    return compacted


def _clone_with_selects(
    model: keras.Model,
    clone_layer: Callable[[keras.layers.Layer], keras.layers.Layer],
    selects: dict,
) -> keras.Model:
    """`keras.models.clone_model`, with ``selects[id(old)]`` in front of old's clone.

    Args:
        model: the chain being compacted.
        clone_layer: makes the new layer for an old one.
        selects: from ``id(old layer)`` to the `SelectFeatures` that feeds
            its clone.

    Returns:
        The clone, of the same kind as `model`.
    """
    if isinstance(model, keras.Sequential):
        # clone_model takes no call_function for a Sequential model (its
        # layers are only listed): list them here, as clone_model does.
        layers = []
        for layer in model.layers:
            if id(layer) in selects:
                layers.append(selects[id(layer)])
            layers.append(clone_layer(layer))
        # A built Sequential model has an input, whether or not it was
        # given as an InputLayer.
        spec = model.inputs[0]
        first = compat.sublayers(model)[0]
        given = isinstance(first, keras.layers.InputLayer)
        inputs = keras.Input(
            batch_shape=spec.shape,
            dtype=spec.dtype,
            name=first.name if given else None,
            optional=first.optional if given else False,
        )
        return keras.Sequential(
            [inputs] + layers, name=model.name, trainable=model.trainable
        )
    fed = {}

    def clone_and_note(layer: keras.layers.Layer) -> keras.layers.Layer:
        new = clone_layer(layer)
        if id(layer) in selects:
            fed[id(new)] = selects[id(layer)]
        return new

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if id(layer) in fed:
            select = fed[id(layer)]
            if args:
                args = (select(args[0]),) + args[1:]
            else:  # called as layer(inputs=x)
                kwargs["inputs"] = select(kwargs["inputs"])
        return layer(*args, **kwargs)

    return keras.models.clone_model(
        model, clone_function=clone_and_note, call_function=call
    )


def _free_name(model: keras.Model, name: str) -> str:
    """`name`, or `name` with a number appended if a layer of `model` has it."""
    taken = {model.name} | {node.layer.name for node in tree.walk(model)}
    candidate, number = name, 1
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    return candidate


def _compact_nested(model: keras.Model, drop_unread_inputs: bool) -> keras.Model:
    try:
        return compact_plain(model, drop_unread_inputs)
    except ValueError as error:
        warnings.warn(
            f"Not compacting inside nested model {model.name!r}: {error}",
            stacklevel=4,
        )
    clone = uncompiled(keras.models.clone_model(model))
    clone.set_weights(model.get_weights())
    return clone
