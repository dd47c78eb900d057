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

Version 2 (``save_sparse(..., bits=k)``, customarily ``.ksvd``) is not a zip
but one entropy-coded byte string starting with ``b"KSVD"``: k-bit values,
indices coded by kept rows and columns or relative positions, a minimal
architecture; see `keras_sparsevd.export.kbit`. `load_sparse` tells the
versions apart by their first bytes and reads both.
"""

from __future__ import annotations

import json
import lzma
import os
import struct
import zipfile
import zlib
from typing import Any

import keras
import numpy as np

from keras_sparsevd import _keras_compat as compat
from keras_sparsevd import files
from keras_sparsevd.export import kbit
from keras_sparsevd.export.strip import compact_model, strip_sparsevd
from keras_sparsevd.model_helpers import svd_layers

FORMAT_NAME = "keras_sparsevd.sparse"
FORMAT_VERSION = 1
_VALUES_DTYPES = ("float32", "float16")
# The loaded weights may take at most this many times the file's bytes.
MAX_EXPANSION = 4096.0
# A zero byte in "delta8" advances by this much without placing a value.
_DELTA_MAX = 255


def save_sparse(
    model: keras.Model,
    filepath: str | os.PathLike,
    values_dtype: str = "float32",
    *,
    bits: int | str | dict | None = None,
    other_bits: int | None = None,
    quantizer: str | None = None,
    compact: bool | None = None,
) -> None:
    """Saves `model` in the sparse format (see the module docstring).

    A model holding Sparse VD layers is first stripped with
    `strip_sparsevd`, so the file always describes a plain Keras model.

    Without `bits` the file is version 1 (a ``.npz`` archive, float32 or
    float16 values). With `bits` it is version 2
    (`keras_sparsevd.export.kbit`): kernels' kept values as k-bit codes
    (weight sharing or uniform), their positions coded by kept rows and
    columns or relative indices, a minimal architecture, all entropy-coded
    in one byte string; by default the model is also compacted first
    (`compact_model`), so only the biases of kept units are stored. Pruned
    weights stay exactly zero at any bit width. Both versions load with
    `load_sparse`.

    Args:
        model: a built Sequential or functional Keras model, plain or Sparse
            VD.
        filepath: where to write. Version 1: ``.npz`` is the customary suffix
            (NumPy appends it if missing, so pass it to know the final name).
            Version 2 writes `filepath` as given (``.ksvd`` is customary).
        values_dtype: version 1 only: ``"float32"`` (exact) or ``"float16"``
            (half the bytes per kept value; predictions then differ by
            float16 rounding). Applies to every floating-point array stored.
        bits: bits per kept kernel value, which selects version 2: an
            integer 1-8 (codes), 16 (float16) or 32 (float32, exact); a dict
            ``{layer name: bits}`` (``"*"`` for the rest, else 32); or
            ``"posterior"``, the bits `keras_sparsevd.posterior_bits` picks
            from the posterior variance of each layer (needs the Sparse VD
            model).
        other_bits: version 2: bits of every other floating array (biases,
            normalisation statistics, long number lists in layer configs
            such as a mean image): 1-8, 16, or None (float32, exact).
        quantizer: version 2, for 1-8 bits: ``"linear"`` (the default:
            uniform steps between the minimum and maximum) or ``"kmeans"``
            (a codebook of ``2**bits`` shared values, Deep Compression's
            weight sharing). k-means is more exact at equal bits, but its
            codes are used about equally often, so the entropy coder cannot
            shrink them, and it stores its codebook: on the LeNets uniform
            codes gave the smaller file at equal error
            (``python -m benchmarks.formats``).
        compact: remove dead units and filters first (`compact_model`).
            Default: True for version 2 where the model is a chain of layers
            (else not compacted), False for version 1.

    Raises:
        ValueError: if an argument is invalid (the message names it), or the
            model cannot be stripped (or compacted, with ``compact=True``).

    Example:

    >>> save_sparse(svd_model, "lenet5.npz")  # doctest: +SKIP
    >>> save_sparse(svd_model, "lenet5.ksvd", bits=4, other_bits=8)  # doctest: +SKIP
    >>> plain = load_sparse("lenet5.ksvd")  # doctest: +SKIP
    """
    if values_dtype not in _VALUES_DTYPES:
        raise ValueError(
            f"`values_dtype` must be one of {_VALUES_DTYPES}, got {values_dtype!r}."
        )
    if compact is not None and not isinstance(compact, bool):
        raise TypeError(f"`compact` must be a bool or None, got {compact!r}.")
    if bits is not None:
        if values_dtype != "float32":
            raise ValueError(
                "`values_dtype` is for version-1 files; with `bits` (version 2) "
                "pass bits=16 for float16 values."
            )
        quantizer = "linear" if quantizer is None else quantizer
        _save_v2(model, filepath, bits, other_bits, quantizer, compact)
        return
    for label, value in (("other_bits", other_bits),):
        if value is not None:
            raise ValueError(f"`{label}` needs `bits` (a version-2 file).")
    if quantizer is not None:
        raise ValueError("`quantizer` needs `bits` (a version-2 file).")
    if svd_layers(model):
        model = strip_sparsevd(model, compact=bool(compact))
    elif compact:
        model = compact_model(model)
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
    filepath = os.fspath(filepath)
    if not filepath.endswith(".npz"):
        filepath += ".npz"  # as `np.savez_compressed` names it
    files.write_with(
        filepath, lambda f: np.savez_compressed(f, header=header_bytes, **arrays)
    )


def load_sparse(
    filepath: str | os.PathLike,
    custom_objects: dict | None = None,
    max_expansion: float = MAX_EXPANSION,
) -> keras.Model:
    """Loads a model written by `save_sparse` (either version) as a plain Keras model.

    Every file is checked before anything is allocated from it: each member's
    declared shape against the bytes the archive holds, the weights' shapes
    against the architecture (built without allocating its variables), and
    the weights' total bytes against `max_expansion` times the file's size.
    So a damaged or crafted file costs memory in proportion to its own size,
    and is answered with a `ValueError`.

    Args:
        filepath: the ``.npz`` file.
        custom_objects: custom layer classes or functions the architecture
            needs, as for `keras.models.model_from_json`.
        max_expansion: the loaded weights may take at most this many times
            the file's bytes (at least 16 MiB). The default, 4096, is far
            above what pruning gives (a model 99.9% sparse is about 1000x
            smaller in this format); raise it for a file you trust.

    Returns:
        A built, uncompiled Keras model with the saved weights.

    Raises:
        ValueError: if the file is not in this format, is of a newer
            version, is damaged, or does not match its own architecture.
    """
    name = repr(os.fspath(filepath))
    if not (isinstance(max_expansion, (int, float)) and max_expansion > 0):
        raise ValueError(
            f"`max_expansion` must be a positive number, got {max_expansion!r}."
        )
    try:
        file_bytes = os.path.getsize(filepath)
        with open(filepath, "rb") as f:
            magic = f.read(len(kbit.MAGIC))
        if magic == kbit.MAGIC:
            budget = max(_MIN_BUDGET, float(max_expansion) * file_bytes)
            return _load_v2(filepath, file_bytes, int(budget), custom_objects, name)
        with zipfile.ZipFile(filepath) as archive:
            members = _members(archive, file_bytes, name)
            header = _read_header(archive, members, name)
            budget = max(_MIN_BUDGET, float(max_expansion) * file_bytes)
            entries = _check_entries(header["weights"], members, budget, name)
            model = _build_checked(header["model"], entries, custom_objects, name)
            weights = [
                decode_array(entry, _Members(archive, members, name), f"w{i}")
                for i, entry in enumerate(entries)
            ]
    except ValueError:
        raise
    except (
        OSError,
        EOFError,
        RecursionError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        lzma.LZMAError,
        struct.error,
    ) as error:
        raise ValueError(
            f"Cannot read {name} as a sparse model file: "
            f"{type(error).__name__}: {error}"
        ) from error
    try:
        model.set_weights(weights)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name}: its weights do not fit its model ({error})."
        ) from error
    return model


# Files smaller than 4 KiB may still hold weights of this many bytes.
_MIN_BUDGET = 16 * 2**20
# The most deflate can compress: 1032 to 1 (plus a little for headers).
_DEFLATE_RATIO = 1032
_NPY_HEADER_MAX = 10_000
_ENCODINGS = ("dense", "delta8", "bitmask")


def _members(archive: zipfile.ZipFile, file_bytes: int, name: str) -> dict:
    """``{member name without .npy: ZipInfo}``, each checked against the file."""
    members = {}
    compressed = 0
    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise ValueError(f"{name}: member {info.filename!r} is encrypted.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(
                f"{name}: member {info.filename!r} uses an unknown compression."
            )
        if not info.filename.endswith(".npy"):
            raise ValueError(f"{name}: member {info.filename!r} is not an array.")
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO
        if info.file_size > ratio * info.compress_size + 1024:
            raise ValueError(
                f"{name}: member {info.filename!r} claims {info.file_size} bytes, "
                f"more than its {info.compress_size} compressed bytes can hold."
            )
        compressed += info.compress_size
        members[info.filename[: -len(".npy")]] = info
    if compressed > file_bytes:
        raise ValueError(
            f"{name}: its members claim {compressed} bytes, more than the file's "
            f"{file_bytes}: the file is truncated or damaged."
        )
    return members


class _Members:
    """Reads the checked ``.npy`` members of an archive, by key."""

    def __init__(self, archive: zipfile.ZipFile, members: dict, name: str) -> None:
        self.archive, self.members, self.name = archive, members, name

    def __contains__(self, key: str) -> bool:
        return key in self.members

    def __getitem__(self, key: str) -> np.ndarray:
        return _read_member(self.archive, self.members, key, self.name)


def _read_member(
    archive: zipfile.ZipFile, members: dict, key: str, name: str
) -> np.ndarray:
    """One ``.npy`` member, its declared shape checked against its bytes first."""
    if key not in members:
        raise ValueError(f"{name}: member {key!r} is missing.")
    info = members[key]
    with archive.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                read = np.lib.format.read_array_header_1_0
            elif version == (2, 0):
                read = np.lib.format.read_array_header_2_0
            else:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read(f, max_header_size=_NPY_HEADER_MAX)
        except (ValueError, SyntaxError, TypeError) as error:
            raise ValueError(
                f"{name}: member {key!r} has a bad header ({error})."
            ) from None
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise ValueError(f"{name}: member {key!r} is not a plain numeric array.")
        count = 1
        for dim in shape:
            count *= int(dim)
        nbytes = count * dtype.itemsize
        if nbytes != info.file_size - f.tell():
            raise ValueError(
                f"{name}: member {key!r} declares {nbytes} bytes of data but holds "
                f"{info.file_size - f.tell()}."
            )
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise ValueError(f"{name}: member {key!r} is truncated.")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def _read_header(archive: zipfile.ZipFile, members: dict, name: str) -> dict:
    if "header" not in members:
        raise ValueError(
            f"{name} is an .npz file but not a {FORMAT_NAME} file (it has no "
            "'header' member)."
        )
    raw = _read_member(archive, members, "header", name)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{name}: its header is not a byte string.")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{name}: its header is not JSON ({error}).") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{name} is not a {FORMAT_NAME} file (format {found!r}).")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{name}: bad format version {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{name} is version {version} of the sparse format; this "
            f"keras_sparsevd reads up to version {FORMAT_VERSION}. Upgrade "
            "keras_sparsevd."
        )
    if not isinstance(header.get("model"), dict):
        raise ValueError(f"{name}: its header holds no model config.")
    if not isinstance(header.get("weights"), list):
        raise ValueError(f"{name}: its header holds no list of weights.")
    return header


def _check_entries(entries: list, members: dict, budget: float, name: str) -> list:
    """The header's weight entries, checked; their dense bytes within `budget`."""
    checked = []
    total = 0
    for i, entry in enumerate(entries):
        where = f"{name}: weight {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not described by an object.")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
            for d in shape
        ):
            raise ValueError(f"{where}: bad shape {shape!r}.")
        if entry.get("dtype") not in kbit.WEIGHT_DTYPES:
            raise ValueError(f"{where}: bad dtype {entry.get('dtype')!r}.")
        if entry.get("encoding") not in _ENCODINGS:
            raise ValueError(f"{where}: unknown encoding {entry.get('encoding')!r}.")
        size = 1
        for dim in shape:
            size *= dim
        total += size * _itemsize(entry["dtype"])
        if total > budget:
            raise ValueError(
                f"{where}: the weights would take more than {int(budget):,} bytes, "
                "far more than a file of this size can describe: the file is "
                "damaged or crafted (pass a larger `max_expansion` if you trust it)."
            )
        keys = (
            [f"w{i}"]
            if entry["encoding"] == "dense"
            else [f"w{i}.values", f"w{i}.index"]
        )
        for key in keys:
            if key not in members:
                raise ValueError(f"{where}: member {key!r} is missing.")
        checked.append(entry)
    return checked


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def _build_checked(
    config: dict, entries: list, custom_objects: dict | None, name: str
) -> keras.Model:
    """The architecture of `config`, once its weight shapes match `entries`.

    The shapes are read from a copy built in a stateless scope, whose
    variables are never allocated, so a config claiming huge layers costs
    nothing before it is refused.
    """
    text = json.dumps(config)
    expected = [tuple(entry["shape"]) for entry in entries]
    try:
        found = compat.unallocated_weight_shapes(
            lambda: keras.models.model_from_json(text, custom_objects=custom_objects)
        )
    except Exception as error:  # noqa: BLE001 - any failure is a bad config
        raise ValueError(
            f"{name}: its architecture cannot be built "
            f"({type(error).__name__}: {error})."
        ) from error
    if found != expected:
        raise ValueError(
            f"The weights stored in {name} do not match its architecture: "
            f"expected shapes {found}, found {expected}."
        )
    model = keras.models.model_from_json(text, custom_objects=custom_objects)
    if not isinstance(model, keras.Model):
        raise ValueError(f"{name}: its architecture is not a model.")
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
    """Inverse of `encode_array` for one header entry of an open archive.

    Raises:
        ValueError: if the stored members do not describe an array of the
            entry's shape (a damaged file).
    """
    shape = tuple(entry["shape"])
    dtype = np.dtype(entry["dtype"])
    encoding = entry["encoding"]
    size = int(np.prod(shape, dtype=np.int64))
    if encoding == "dense":
        stored = archive[key]
        if stored.size != size:
            raise ValueError(
                f"Corrupt sparse weight {key!r}: {stored.size} values for shape "
                f"{shape}."
            )
        return stored.astype(dtype).reshape(shape)
    values = archive[key + ".values"]
    index = archive[key + ".index"]
    if values.ndim != 1 or index.ndim != 1 or index.dtype != np.uint8:
        raise ValueError(f"Corrupt sparse weight {key!r}: bad member shapes or types.")
    if values.size > size:
        raise ValueError(f"Corrupt sparse weight {key!r}: more values than weights.")
    if encoding == "delta8":
        positions = decode_deltas(index)
    elif encoding == "bitmask":
        if index.size != (size + 7) // 8:
            raise ValueError(f"Corrupt sparse weight {key!r}: bitmask of wrong length.")
        positions = np.flatnonzero(np.unpackbits(index, count=size))
    else:
        raise ValueError(f"Unknown weight encoding {encoding!r} for {key!r}.")
    if positions.size != values.size or (positions.size and positions[-1] >= size):
        raise ValueError(f"Corrupt sparse weight {key!r}: index and values disagree.")
    flat = np.zeros(size, dtype=dtype)
    flat[positions] = values.astype(dtype)
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


def _save_v2(
    model: keras.Model,
    filepath: str | os.PathLike,
    bits: Any,
    other_bits: int | None,
    quantizer: str,
    compact: bool | None,
) -> None:
    """Writes a version-2 file (see `keras_sparsevd.export.kbit`)."""
    if quantizer not in kbit.QUANTIZERS:
        raise ValueError(
            f"`quantizer` must be one of {kbit.QUANTIZERS}, got {quantizer!r}."
        )
    if isinstance(bits, str):
        if bits != "posterior":
            raise ValueError(
                "`bits` must be an integer, a dict by layer name or "
                f"'posterior', got {bits!r}."
            )
        bits = kbit.posterior_bits(model)
    kbit.check_bits(bits, "bits", allow_dict=True)
    kbit.check_bits(other_bits, "other_bits", allow_dict=False)
    model = _plain_for_v2(model, compact)
    config, constants = kbit.extract_constants(kbit.minimal_config(model))
    weight_items = []
    for weight in model.weights:
        array = np.asarray(keras.ops.convert_to_numpy(weight))
        width = kbit.bits_for(weight.path, array.ndim >= 2, bits, other_bits)
        entry, streams, _ = kbit.encode_array(array, width, quantizer)
        weight_items.append((entry, streams))
    constant_items = []
    for array in constants:
        entry, streams, _ = kbit.encode_array(array, other_bits, quantizer)
        constant_items.append((entry, streams))
    payload = kbit.write_payload(config, weight_items, constant_items)
    files.write_bytes(filepath, kbit.compress(payload))


def _plain_for_v2(model: keras.Model, compact: bool | None) -> keras.Model:
    """The plain model to store: stripped and, where it can be, compacted."""
    if compact is False:
        return strip_sparsevd(model) if svd_layers(model) else model
    try:
        return compact_model(model)
    except ValueError:
        if compact:
            raise
    # compact=None on a model compaction does not handle: stored as it is.
    return strip_sparsevd(model) if svd_layers(model) else model


def _load_v2(
    filepath: str | os.PathLike,
    file_bytes: int,
    budget: int,
    custom_objects: dict | None,
    name: str,
) -> keras.Model:
    """`load_sparse` for a version-2 file; every failure a `ValueError`."""
    with open(filepath, "rb") as f:
        data = f.read(file_bytes + 1)
    try:
        payload = kbit.decompress(data, budget)
        header, blob = kbit.read_payload(payload)
    except ValueError as error:
        raise ValueError(f"{name}: not a readable sparse file ({error}).") from None
    weights_entries = header.get("weights")
    constant_entries = header.get("constants")
    if not isinstance(header.get("model"), dict):
        raise ValueError(f"{name}: its header holds no model config.")
    if not isinstance(weights_entries, list) or not isinstance(constant_entries, list):
        raise ValueError(f"{name}: its header holds no list of weights.")
    entries = weights_entries + constant_entries
    total = 0
    for i, entry in enumerate(entries):
        total += kbit.check_entry(entry, f"{name}: array {i}")
        if total > budget:
            raise ValueError(
                f"{name}: array {i}: the weights would take more than "
                f"{budget:,} bytes, far more than a file of this size can "
                "describe: the file is damaged or crafted (pass a larger "
                "`max_expansion` if you trust it)."
            )
    try:
        streams = kbit.split_streams(entries, blob)
        arrays = [
            kbit.decode_entry(entry, stream) for entry, stream in zip(entries, streams)
        ]
        config = kbit.insert_constants(header["model"], arrays[len(weights_entries) :])
    except (ValueError, TypeError, IndexError) as error:
        raise ValueError(f"{name}: damaged sparse file ({error}).") from None
    model = _build_checked(config, weights_entries, custom_objects, name)
    try:
        model.set_weights(arrays[: len(weights_entries)])
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name}: its weights do not fit its model ({error})."
        ) from error
    return model
