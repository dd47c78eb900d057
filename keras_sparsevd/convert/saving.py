"""Loading any `.keras` file of a model with Sparse VD layers, and copying one.

Keras rebuilds a model from its config: the layers of a functional graph or
Sequential, and the inner layers of wrappers, are created as saved, so
`keras.models.load_model` brings Sparse VD layers there back unaided. A layer
that its parent creates in code (the Dense and attention layers inside
KerasHub's `TransformerDecoder`, a user's own block) comes back as the Keras
layer its parent makes. Each Sparse VD layer saves a record beside its
weights (`keras_sparsevd.layers.base.write_record`); `load_model` builds the
model from its config, and each Keras layer whose saved weights carry such a
record is converted in place, as `sparsify` did, just before its weights are
loaded.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from typing import Any

import keras

from keras_sparsevd import _keras_compat as compat
from keras_sparsevd import registry
from keras_sparsevd.convert import tree
from keras_sparsevd.layers.base import RECORD_KEY, adopt, read_record, release

_WEIGHTS = "model.weights.h5"


def load_model(
    filepath: str | os.PathLike,
    custom_objects: dict | None = None,
    compile: bool = True,
    safe_mode: bool = True,
) -> keras.Model:
    """Loads a `.keras` file that `model.save` wrote from a Sparse VD model.

    Works for every model `keras_sparsevd.sparsify` returns (KerasHub
    backbones and task models, custom layers holding Dense or attention
    layers, subclassed models), and for every other `.keras` file too.
    Sequential and functional models whose Sparse VD layers all sit in the
    graph load with `keras.models.load_model` as well.

    Args:
        filepath: the `.keras` file.
        custom_objects: as for `keras.models.load_model`.
        compile: compile the model as it was saved, and restore the
            optimizer's state where it matches.
        safe_mode: as for `keras.models.load_model` (no lambda bytecode).

    Returns:
        The model, with the same classes and predictions as the one saved.

    Raises:
        ValueError: if the file is not a `.keras` archive, or a saved record
            does not fit the layer it was saved for.

    Example:

    >>> model = keras_sparsevd.load_model("gpt2_sparse.keras")  # doctest: +SKIP
    """
    filepath = os.fspath(filepath)
    registry.declare_optional_pairs()
    if not zipfile.is_zipfile(filepath):
        raise ValueError(
            f"`filepath` must be a `.keras` file written by `model.save`; "
            f"{filepath!r} is not a zip archive."
        )
    with zipfile.ZipFile(filepath) as archive, tempfile.TemporaryDirectory() as folder:
        names = archive.namelist()
        if "config.json" not in names or _WEIGHTS not in names:
            raise ValueError(
                f"{filepath!r} is not a `.keras` file of a model: it has no "
                f"config.json or {_WEIGHTS}."
            )
        config = json.loads(archive.read("config.json"))
        archive.extract(_WEIGHTS, folder)
        assets = [name for name in names if name.startswith("assets/")]
        archive.extractall(folder, members=assets)
        compile_config = config.pop("compile_config", None)
        with keras.saving.custom_object_scope(custom_objects or {}):
            model = keras.saving.deserialize_keras_object(config, safe_mode=safe_mode)
        weights = os.path.join(folder, _WEIGHTS)
        convert_recorded_layers(model, weights)
        compat.load_state(
            model, weights, os.path.join(folder, "assets") if assets else None
        )
        if compile and compile_config:
            with keras.saving.custom_object_scope(custom_objects or {}):
                model.compile_from_config(compile_config)
            _restore_optimizer(model, weights)
    return model


def convert_recorded_layers(model: keras.Model, weights_path: str) -> None:
    """Converts each Keras layer of `model` that was saved as Sparse VD.

    The weights file holds a record (`write_record`) beside the weights of
    every Sparse VD layer, at the place Keras saved it. A layer's place
    depends on the classes around it (in a list, Keras names it by class),
    so the layers are matched to the records place by place, each
    conversion renaming its neighbours: a record whose place no layer has
    yet is tried on the Keras layers of the same list until one takes it.

    Raises:
        ValueError: if a record fits no layer of the model.
    """
    records = {
        path: _decode(raw)
        for path, raw in compat.saved_entries(weights_path, RECORD_KEY).items()
    }
    if not records:
        return
    candidates = [
        node.layer
        for node in tree.walk(model)
        if registry.pair_for_plain(node.layer) is not None
    ]
    while True:
        places = compat.store_paths(model)
        plain = [layer for layer in candidates if not registry.is_sparse(layer)]
        found = next((layer for layer in plain if places[id(layer)] in records), None)
        if found is not None:
            _convert(found, records[places[id(found)]])
            continue
        taken = set(places.values())
        unplaced = [path for path in records if path not in taken]
        if not unplaced:
            return
        if not _place_by_trial(model, unplaced[0], records, plain, places):
            raise ValueError(
                f"The weights file holds a Sparse VD layer at {unplaced[0]!r} "
                f"({records[unplaced[0]].get('class')}), but no layer of the "
                "rebuilt model goes there: the model's code creates other "
                "layers than the saved model had."
            )


def _place_by_trial(
    model: keras.Model, path: str, records: dict, plain: list, places: dict
) -> bool:
    """Converts the Keras layer of `path`'s list that then lands on `path`."""
    parent = path.rsplit("/", 1)[0]
    saved_class = keras.saving.get_registered_object(records[path].get("class"))
    for layer in plain:
        place = places[id(layer)]
        if (
            place.rsplit("/", 1)[0] != parent
            or registry.pair_for_plain(layer).sparse is not saved_class
        ):
            continue
        _convert(layer, records[path])
        if compat.store_paths(model).get(id(layer)) == path:
            return True
        release(layer, registry.pair_for_sparse(layer).plain)
    return False


def _convert(layer: keras.layers.Layer, record: dict) -> None:
    pair = registry.pair_for_plain(layer)
    saved_class = keras.saving.get_registered_object(record.get("class"))
    if saved_class is not pair.sparse:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) was saved as "
            f"{record.get('class')!r}, which is not its registered Sparse VD "
            f"counterpart ({pair.sparse.__name__}): import the module that "
            "declares it before loading."
        )
    adopt(layer, pair.sparse, record["config"])


def _decode(raw: Any) -> dict:
    return read_record({RECORD_KEY: raw})


def _restore_optimizer(model: keras.Model, weights: str) -> None:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    try:
        optimizer.build(model.trainable_variables)
        compat.load_optimizer_state(model, weights)
    except Exception as error:  # noqa: BLE001 - a fresh optimizer is still usable
        warnings.warn(
            f"The optimizer's saved state could not be restored ({error}); the "
            "model is compiled with a fresh optimizer.",
            stacklevel=3,
        )


def copy_model(model: keras.Model, action: str) -> keras.Model:
    """An uncompiled copy of `model`, through Keras' own saving.

    Args:
        model: any built model whose classes Keras can serialize.
        action: what the copy is for, for messages ("sparsify", "strip").

    Raises:
        ValueError: if Keras cannot save or rebuild the model, naming the
            way out: make the class serializable, or convert in place.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        try:
            model.save(path)
            with warnings.catch_warnings():
                # The copy is not compiled: the original's optimizer state
                # has no use in it, whatever optimizer the class makes itself.
                warnings.filterwarnings(
                    "ignore", message="Skipping variable loading for optimizer"
                )
                return load_model(path, custom_objects=_classes(model), compile=False)
        except Exception as error:
            raise ValueError(
                f"Cannot {action} a copy of model {model.name!r} "
                f"({type(model).__name__}): the copy is made with `model.save` "
                f"and loading it back, which failed ({type(error).__name__}: "
                f"{error}). Give your classes a `get_config` that returns their "
                "constructor arguments and register them with "
                "`@keras.saving.register_keras_serializable()`, or pass "
                f"`inplace=True` to {action} the model itself."
            ) from error


def _classes(model: keras.Model) -> dict:
    """The model's own layer classes, by the names its config calls them:
    a class the user never registered is still found for the copy."""
    found = {}
    for layer in [model] + [node.layer for node in tree.walk(model)]:
        cls = type(layer)
        # Keras' own classes are found by their module; by bare name, a graph
        # op such as `ops.Add` would shadow the layer `keras.layers.Add`.
        if not cls.__module__.startswith("keras."):
            found[keras.saving.get_registered_name(cls)] = cls
    return found
