"""Every use of Keras internals, in one place.

Keras has no public API for a layer's sublayers, its own variables, adding
state to a built layer or loading a ``.keras`` file's state into a model
built elsewhere. Keras uses these internals itself for ``Dense.quantize`` and
``enable_lora`` (unlock the tracker, add variables, lock it). Everything the
package needs of them passes through this module, so that a change in Keras
is fixed here; ``tests/test_keras_compat.py`` checks each against the
installed Keras.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras


def sublayers(layer: keras.layers.Layer) -> list:
    """The layers `layer` tracks directly, in the order they were added."""
    return list(getattr(layer, "_layers", ()))


def own_variables(layer: keras.layers.Layer) -> list:
    """The layer's own variables, in saving order (not its sublayers')."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def own_trainable_variables(layer: keras.layers.Layer) -> list:
    """The variables the layer declared trainable (whatever `layer.trainable`)."""
    return list(layer._trainable_variables)


def own_non_trainable_variables(layer: keras.layers.Layer) -> list:
    """The variables the layer declared non-trainable (its own)."""
    return list(layer._non_trainable_variables)


def causal_padding(layer: keras.layers.Layer) -> list:
    """The padding Keras' causal convolution applies before a valid one."""
    return layer._compute_causal_padding()


def set_own_order(
    layer: keras.layers.Layer, trainable: list, non_trainable: list
) -> None:
    """Reorders the layer's own variables (saving order follows it).

    Args:
        layer: the layer.
        trainable: the same variables as its trainable list, reordered.
        non_trainable: the same for its non-trainable list.
    """
    for attr, order in (
        ("_trainable_variables", trainable),
        ("_non_trainable_variables", non_trainable),
    ):
        current = getattr(layer, attr)
        if {id(v) for v in current} != {id(v) for v in order}:
            raise ValueError("set_own_order must keep the same variables.")
        # In place: the layer's tracker holds these very lists.
        current[:] = order


@contextlib.contextmanager
def unlocked(layer: keras.layers.Layer) -> Iterator[None]:
    """Lets a built layer take new variables, as `Dense.quantize` does."""
    tracker = getattr(layer, "_tracker", None)
    was_locked = bool(tracker is not None and tracker.locked)
    if was_locked:
        tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def untrack(layer: keras.layers.Layer, value: Any) -> None:
    """Removes a variable or seed generator from the layer's state."""
    if isinstance(value, keras.random.SeedGenerator):
        generators = layer._seed_generators
        for index, generator in enumerate(generators):
            if generator is value:
                del generators[index]
                break
        return
    layer._untrack_variable(value)


def drop_attribute(layer: keras.layers.Layer, name: str) -> None:
    """Deletes an attribute without Keras' tracking getting in the way."""
    layer.__dict__.pop(name, None)


def is_functional(model: Any) -> bool:
    """Whether `model` is a Sequential or functional model."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def in_symbolic_scope() -> bool:
    """Whether Keras is tracing layers symbolically (building a model)."""
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope as inside

    return inside()


def nodes_by_depth(model: keras.Model) -> dict:
    """A functional model's nodes, by depth (Keras' own bookkeeping)."""
    return model._nodes_by_depth


def input_sources(layer: keras.layers.Layer) -> list:
    """``(producing layer, input shape)`` of each call of `layer` in a graph.

    One entry per call (inbound node) that takes a single tensor: the layer
    whose output it is (None for a model input) and that tensor's shape.
    Keras keeps these only privately (``_inbound_nodes``, ``_keras_history``).
    """
    sources = []
    for node in getattr(layer, "_inbound_nodes", []):
        tensors = list(node.input_tensors)
        if len(tensors) != 1:
            continue
        history = getattr(tensors[0], "_keras_history", None)
        producer = getattr(history, "operation", None)
        if isinstance(producer, keras.layers.InputLayer):
            producer = None
        sources.append((producer, tuple(tensors[0].shape)))
    return sources


def load_state(model: keras.Model, weights_path: str, assets_dir: str | None) -> None:
    """Loads a saved model's layer weights and assets into `model`.

    What `keras.models.load_model` does after building the model, without
    the optimizer (a compiled model's optimizer is loaded by
    `load_optimizer_state`).
    """
    _load_saved_state(model, weights_path, assets_dir, inner_path="")


def load_optimizer_state(model: keras.Model, weights_path: str) -> None:
    """Loads the saved optimizer variables into `model`'s built optimizer."""
    _load_saved_state(model.optimizer, weights_path, None, inner_path="optimizer")


def _load_saved_state(
    saveable: Any, weights_path: str, assets_dir: str | None, inner_path: str
) -> None:
    from keras.src.saving import saving_lib

    weights = saving_lib.H5IOStore(weights_path, mode="r")
    assets = saving_lib.DiskIOStore(assets_dir, mode="r") if assets_dir else None
    # Failures are collected, then raised, as Keras' own loader does: Keras
    # before 3.13 cannot be given None here.
    failed: set = set()
    errors: dict = {}
    try:
        saving_lib._load_state(
            saveable,
            weights_store=weights,
            assets_store=assets,
            inner_path=inner_path,
            visited_saveables=set(),
            failed_saveables=failed,
            error_msgs=errors,
        )
        if failed:
            saving_lib._raise_loading_failure(errors)
    finally:
        weights.close()
        if assets is not None:
            assets.close()


def merge_lora(layer: keras.layers.Layer) -> None:
    """Folds a LoRA delta into the kernel and drops the LoRA weights.

    What Keras itself does to the saved kernel of a LoRA layer.
    """
    if not getattr(layer, "lora_enabled", False):
        return
    merged = keras.ops.convert_to_numpy(layer.kernel)
    with unlocked(layer):
        for name in ("lora_kernel_a", "lora_kernel_b"):
            untrack(layer, getattr(layer, name))
            drop_attribute(layer, name)
        layer.lora_enabled = False
        layer._kernel.trainable = True
        layer._kernel.assign(merged)


def refresh_call_signature(layer: keras.layers.Layer) -> None:
    """Re-reads the arguments of `layer.call` after its class changed.

    Keras reads them once, in ``Layer.__init__``, to decide whether to pass
    ``training`` and ``mask``: a Conv2D made Conv2DSVD would otherwise never
    be told it is training, and one made Conv2D again would be passed a
    ``training`` it does not take.
    """
    import inspect

    layer._call_signature = inspect.signature(layer.call)
    names = [p.name for p in layer._call_signature.parameters.values()]
    layer.call_signature_parameters = names
    layer._call_has_training_arg = "training" in names
    layer._call_has_mask_arg = "mask" in names
    layer._call_has_context_arg = {
        arg: (arg in names) for arg in layer._call_context_args
    }
    _rewrap_quantize(layer)


def _rewrap_quantize(layer: keras.layers.Layer) -> None:
    """Wraps the `quantize` of the layer's current class as ``Layer.__new__`` does.

    Keras stores a wrapper around the *bound* ``quantize`` of the class a
    layer was created with as an instance attribute. After a class swap a
    stripped ``Dense`` would still call ``DenseSVD.quantize`` (which refuses)
    and a ``DenseSVD`` made from a ``Dense`` would quantize as a ``Dense``.
    """
    import functools

    if "quantize" not in layer.__dict__:
        return
    original = type(layer).quantize.__get__(layer)
    try:
        from keras.src.quantizers.quantization_config import (
            validate_and_resolve_config,
        )
    except ImportError:  # Keras 3.12: `quantize(mode, **kwargs)`, no configs
        validate_and_resolve_config = None

    @functools.wraps(original)
    def quantize_wrapper(mode: Any = None, config: Any = None, **kwargs: Any) -> Any:
        if validate_and_resolve_config is not None:
            config = validate_and_resolve_config(mode, config)
            mode = config.mode
            kwargs["config"] = config
        elif config is not None:
            kwargs["config"] = config
        layer._check_quantize_args(mode, layer.compute_dtype)
        layer._tracker.unlock()
        try:
            original(mode=mode, **kwargs)
        finally:
            layer._tracker.lock()

    object.__setattr__(layer, "quantize", quantize_wrapper)


class _Sink(dict):
    """Takes what an object would save (optimizers save too) and drops it."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path


def _path_recorder() -> Any:
    """A stand-in weights store whose entries are their paths: nothing is
    written (a subclass only to pass Keras' type check)."""
    from keras.src.saving import saving_lib

    class PathRecorder(saving_lib.NpzIOStore):
        def __init__(self) -> None:  # no file
            pass

        def make(self, path: str, metadata: Any = None) -> Any:
            return _Sink(path)

    return PathRecorder()


def store_paths(model: keras.Model) -> dict:
    """``{id(layer): path}``: where `model.save` puts each layer's weights.

    Keras names an object by the attribute that holds it, or, inside a list
    (a functional model's ``layers``), by its class name and a counter, so
    a layer's place in the weights file depends on the classes around it.
    Computed with Keras' own walk over the model, with nothing written.
    """
    from keras.src.saving import saving_lib

    found: dict = {}
    layers = [model] + [node for node in _all_layers(model)]
    for layer in layers:

        def note(store: _Sink, layer: Any = layer) -> None:
            found[id(layer)] = store.path

        layer.__dict__["save_own_variables"] = note
    try:
        saving_lib._save_state(
            model,
            weights_store=_path_recorder(),
            assets_store=None,
            inner_path="",
            visited_saveables=set(),
        )
    finally:
        for layer in layers:
            layer.__dict__.pop("save_own_variables", None)
    return found


def all_layers(layer: keras.layers.Layer) -> list:
    """Every layer under `layer` (depth first, each once), `layer` excluded."""
    return _all_layers(layer)


def _all_layers(layer: keras.layers.Layer) -> list:
    found, seen = [], set()
    stack = list(reversed(sublayers(layer)))
    while stack:
        child = stack.pop()
        if id(child) in seen:
            continue
        seen.add(id(child))
        found.append(child)
        stack.extend(reversed(sublayers(child)))
    return found


def saved_entries(weights_path: str, key: str) -> dict:
    """``{store path: value}`` of every entry called `key` in a weights file.

    The `.weights.h5` layout of Keras 3: one group per object at its store
    path, its entries under ``vars``.
    """
    import h5py

    entries: dict = {}
    with h5py.File(weights_path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and name.endswith(f"/vars/{key}"):
                entries[name[: -len(f"/vars/{key}")]] = obj[()]

        f.visititems(visit)
    return entries


# ----------------------------------------------------------------------
# Recurrent layers: what Keras' own LSTM/GRU use inside.
def autocast_scope_off() -> contextlib.AbstractContextManager:
    """Reads variables in their own dtype, whatever the caller's autocast."""
    from keras.src import backend

    return backend.AutocastScope(None)


def current_call_training() -> Any:
    """The ``training`` flag of the layer call Keras is running, or None."""
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    return getattr(context, "training", None)


def rnn_dropout_mask(cell: keras.layers.Layer, inputs: Any) -> Any:
    """Keras' cached input dropout mask of a recurrent cell."""
    from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

    return DropoutRNNCell.get_dropout_mask(cell, inputs)


def fused_rnn(kind: str) -> Any:
    """The backend's fused (cuDNN) loop, ``"lstm"`` or ``"gru"``."""
    from keras.src import backend

    return getattr(backend, kind)


# ----------------------------------------------------------------------
# Sparse files: an architecture's weight shapes without allocating them.
def unallocated_weight_shapes(build: Any) -> list:
    """The shapes of the weights of ``build()``'s model, never allocated.

    Built in a stateless scope whose variables are not initialized, so a
    config that claims huge layers costs nothing.
    """
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import StatelessScope

    pending = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with StatelessScope(initialize_variables=False):
            return [tuple(w.shape) for w in build().weights]
    finally:
        # The probe's variables must never be initialized by a later scope.
        global_state.set_global_attribute("uninitialized_variables", pending)
