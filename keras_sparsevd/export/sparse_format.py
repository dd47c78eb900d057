"""A compact on-disk format for pruned models: only the kept weights.

A Sparse VD model keeps a few percent of its weights, but a ``.keras`` file
(or a SavedModel) stores every kernel densely, zeros included. This format
stores the architecture plus, for each mostly-zero weight array, only its
non-zero values and their positions.

The file is a NumPy ``.npz`` archive written with `numpy.savez_compressed`
(a zip of ``.npy`` members, deflate-compressed) and read with
``allow_pickle=False``. Its members:

- ``header``: uint8, the UTF-8 bytes of a JSON object
  ``{"format": "keras_sparsevd.sparse", "version": 1, "model": <the plain
  model's config, as from model.to_json()>, "weights": [<one entry per
  array of model.get_weights(), in that order>]}``. Each entry is
  ``{"shape": [...], "dtype": "float32", "encoding": E}``.
- For ``E == "dense"``: ``w<i>``, the array itself (floating arrays in the
  chosen values dtype).
- For the sparse encodings: ``w<i>.values``, the non-zero values in C
  order, and ``w<i>.index``, their positions in the flattened array:

  - ``"delta8"``: uint8 gaps between consecutive positions, starting from
    position -1. A byte ``b`` in 1..255 advances by ``b`` and places the next
    value there; a byte 0 advances by 255 and places nothing (so a gap ``g``
    costs ``(g - 1) // 255`` zero bytes plus one byte). This is Deep
    Compression's relative index coding; at 98% sparsity a position costs
    about one byte.
  - ``"bitmask"``: `numpy.packbits` of the flattened non-zero mask (one bit
    per weight), which is smaller once more than about 1 in 8 weights is
    kept.

Each array gets the smallest of the three encodings, counted in bytes before
compression, so biases and BatchNorm parameters stay dense. Zeros are not
stored, so a -0.0 comes back as +0.0.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import keras
import numpy as np

from keras_sparsevd.export.strip import strip_sparsevd
from keras_sparsevd.model_helpers import svd_layers

FORMAT_NAME = "keras_sparsevd.sparse"
FORMAT_VERSION = 1
_VALUES_DTYPES = ("float32", "float16")
# A zero byte in "delta8" advances by this much without placing a value.
_DELTA_MAX = 255


def save_sparse(
    model: keras.Model,
    filepath: str | os.PathLike,
    values_dtype: str = "float32",
) -> None:
    """Saves `model` in the sparse format (see the module docstring).

    A model holding Sparse VD layers is first stripped with
    `strip_sparsevd`, so the file always describes a plain Keras model.

    Args:
        model: a built Sequential or functional Keras model, plain or Sparse
            VD.
        filepath: where to write; ``.npz`` is the customary suffix (NumPy
            appends it if missing, so pass it to know the final name).
        values_dtype: ``"float32"`` (exact) or ``"float16"`` (half the bytes
            per kept value; predictions then differ by float16 rounding).
            Applies to every floating-point array stored.

    Raises:
        ValueError: if `values_dtype` is not float32/float16, or the model
            cannot be stripped.
    """
    if values_dtype not in _VALUES_DTYPES:
        raise ValueError(
            f"`values_dtype` must be one of {_VALUES_DTYPES}, got {values_dtype!r}."
        )
    if svd_layers(model):
        model = strip_sparsevd(model)
    arrays: dict = {}
    entries = []
    for i, weight in enumerate(model.get_weights()):
        weight = np.asarray(weight)
        encoding, members = encode_array(weight, values_dtype)
        entries.append(
            {
                "shape": list(weight.shape),
                "dtype": str(weight.dtype),
                "encoding": encoding,
            }
        )
        arrays.update({f"w{i}{suffix}": value for suffix, value in members.items()})
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model": json.loads(model.to_json()),
        "weights": entries,
    }
    header_bytes = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez_compressed(filepath, header=header_bytes, **arrays)


def load_sparse(
    filepath: str | os.PathLike, custom_objects: dict | None = None
) -> keras.Model:
    """Loads a model written by `save_sparse` as a plain Keras model.

    Args:
        filepath: the ``.npz`` file.
        custom_objects: custom layer classes or functions the architecture
            needs, as for `keras.models.model_from_json`.

    Returns:
        A built, uncompiled Keras model with the saved weights.

    Raises:
        ValueError: if the file is not in this format, is of a newer
            version, or does not match its own architecture.
    """
    try:
        archive = np.load(filepath, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"Cannot read {os.fspath(filepath)!r} as a sparse model file: {error}"
        ) from error
    with archive:
        if "header" not in archive.files:
            raise ValueError(
                f"{os.fspath(filepath)!r} is an .npz file but not a "
                f"{FORMAT_NAME} file (it has no 'header' member)."
            )
        header = json.loads(archive["header"].tobytes().decode("utf-8"))
        if header.get("format") != FORMAT_NAME:
            raise ValueError(
                f"{os.fspath(filepath)!r} is not a {FORMAT_NAME} file "
                f"(format {header.get('format')!r})."
            )
        if header.get("version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{os.fspath(filepath)!r} is version {header['version']} of the "
                f"sparse format; this keras_sparsevd reads up to version "
                f"{FORMAT_VERSION}. Upgrade keras_sparsevd."
            )
        weights = [
            decode_array(entry, archive, f"w{i}")
            for i, entry in enumerate(header["weights"])
        ]
    model = keras.models.model_from_json(
        json.dumps(header["model"]), custom_objects=custom_objects
    )
    expected = [tuple(w.shape) for w in model.weights]
    found = [tuple(w.shape) for w in weights]
    if expected != found:
        raise ValueError(
            f"The weights stored in {os.fspath(filepath)!r} do not match its "
            f"architecture: expected shapes {expected}, found {found}."
        )
    model.set_weights(weights)
    return model


def encode_array(array: np.ndarray, values_dtype: str = "float32") -> tuple:
    """The smallest encoding of `array` and the members that store it.

    Returns:
        ``(encoding, members)``: the encoding name and a dict from member
        suffix (``""``, ``".values"``, ``".index"``) to numpy array.
    """
    floating = np.issubdtype(array.dtype, np.floating)
    store_dtype = np.dtype(values_dtype) if floating else array.dtype
    flat = array.reshape(-1)
    positions = np.flatnonzero(flat)
    dense_bytes = flat.size * store_dtype.itemsize
    values_bytes = positions.size * store_dtype.itemsize
    candidates = {"dense": dense_bytes}
    if floating and flat.size:
        deltas = encode_deltas(positions)
        candidates["delta8"] = values_bytes + deltas.size
        candidates["bitmask"] = values_bytes + (flat.size + 7) // 8
    encoding = min(candidates, key=candidates.get)
    if encoding == "dense":
        return encoding, {"": array.astype(store_dtype)}
    values = flat[positions].astype(store_dtype)
    if encoding == "delta8":
        index = deltas
    else:
        index = np.packbits(flat != 0)
    return encoding, {".values": values, ".index": index}


def decode_array(entry: dict, archive: Any, key: str) -> np.ndarray:
    """Inverse of `encode_array` for one header entry of an open archive."""
    shape = tuple(entry["shape"])
    dtype = np.dtype(entry["dtype"])
    encoding = entry["encoding"]
    if encoding == "dense":
        return archive[key].astype(dtype).reshape(shape)
    size = int(np.prod(shape, dtype=np.int64))
    values = archive[key + ".values"].astype(dtype)
    index = archive[key + ".index"]
    if encoding == "delta8":
        positions = decode_deltas(index)
    elif encoding == "bitmask":
        positions = np.flatnonzero(np.unpackbits(index, count=size))
    else:
        raise ValueError(f"Unknown weight encoding {encoding!r} for {key!r}.")
    if positions.size != values.size or (positions.size and positions[-1] >= size):
        raise ValueError(f"Corrupt sparse weight {key!r}: index and values disagree.")
    flat = np.zeros(size, dtype=dtype)
    flat[positions] = values
    return flat.reshape(shape)


def encode_deltas(positions: np.ndarray) -> np.ndarray:
    """Sorted flat positions as "delta8" bytes (see the module docstring)."""
    gaps = np.diff(positions.astype(np.int64), prepend=-1)
    skips = (gaps - 1) // _DELTA_MAX
    out = np.zeros(int(skips.sum()) + gaps.size, dtype=np.uint8)
    # Each gap is written as `skips` zero bytes followed by the remainder.
    ends = np.cumsum(skips + 1) - 1
    out[ends] = gaps - _DELTA_MAX * skips
    return out


def decode_deltas(deltas: np.ndarray) -> np.ndarray:
    """Flat positions from "delta8" bytes."""
    deltas = np.asarray(deltas, dtype=np.int64)
    steps = np.where(deltas == 0, _DELTA_MAX, deltas)
    return (np.cumsum(steps) - 1)[deltas != 0]
