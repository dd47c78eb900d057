"""Version 2 of the sparse format: k-bit values, coded indices, one entropy-coded blob.

Version 1 (a ``.npz`` zip) spends about 100 bytes per zip member and stores
the architecture as Keras' full JSON, which for a 99.6% sparse LeNet-5 is
most of the file. Version 2 is one byte string:

- ``b"KSVD"``, the format version (one byte, 2), the codec (one byte: 0
  none, 1 zlib, 2 bz2, 3 and up raw LZMA2, see `compress`), the payload's
  length before compression (LEB128 varint), then the compressed payload.
  The writer tries every codec and keeps the smallest.
- The payload: a varint, the length of a UTF-8 JSON header, the header, then
  the streams it describes, grouped by kind (all index streams, then all
  codebooks, then all codes) so that like bytes sit together for the codec.
- The header: ``{"model": <config>, "weights": [entry, ...], "constants":
  [entry, ...]}``. The config is the model's Keras config with every key that
  Keras would fill in with the same value removed (checked by rebuilding the
  model) and without initializers (the stored weights replace what they
  would draw; a loaded layer reports Keras' default initializer), and every
  long list of numbers (a ``Normalization`` mean image)
  replaced by ``{"__ksvd_constant__": i}``, the i-th of ``constants``.
- Each entry: ``shape``, ``dtype``, ``n`` (non-zero values stored),
  ``index`` (how their positions are coded), ``q`` (how their values are
  coded), ``bits`` and ``len`` (the byte length of its index, codebook and
  codes streams).

Index codings (positions of the non-zeros in the C-order flattened array):

- ``"dense"``: every position (nothing stored; zeros are coded as values).
- ``"bitmask"``: `numpy.packbits` of the non-zero mask.
- ``"delta"``: gaps between consecutive positions (from -1) as LEB128
  varints: Deep Compression's relative indices, one byte per gap below 128.
- ``"axes"``: for each axis, the packed mask of the indices that hold a
  non-zero (the kept units, filters, input features), then the packed mask
  of the sub-array they span. A pruned layer keeps few rows and columns, so
  this costs a few bits per kept row and column plus a small dense mask.

Each array gets the index coding whose stream the codec shrinks most.

Value codings:

- ``"f32"``, ``"f16"``: the values themselves (exact, or float16).
- ``"kmeans"``: weight sharing as in Deep Compression: a codebook of at
  most ``2**bits`` float16 centroids (1-D k-means with linear
  initialisation over the values' range, which Han et al. found best) and
  one code byte per value, which the codec entropy-codes.
- ``"linear"``: uniform quantisation, ``lo + code * step`` (two float32),
  one code byte per value.

Zeros are never quantised: they are the positions the index leaves out, so
a pruned weight stays exactly 0 at any bit width.
"""

from __future__ import annotations

import bz2
import itertools
import json
import lzma
import zlib
from typing import Any

import keras
import numpy as np

MAGIC = b"KSVD"
VERSION = 2
QUANTIZERS = ("kmeans", "linear")
INDEX_CODINGS = ("dense", "bitmask", "delta", "axes")
VALUE_CODINGS = ("f32", "f16", "kmeans", "linear")
MIN_BITS, MAX_BITS = 1, 8
CONSTANT_KEY = "__ksvd_constant__"
# Lists of at least this many numbers in a layer config are stored as arrays.
_MIN_CONSTANT = 64
_KMEANS_STEPS = 40


# ----------------------------------------------------------------------
# Varints and index coding.
def encode_varints(numbers: np.ndarray) -> bytes:
    """Non-negative integers as LEB128 varints (7 bits a byte, low first)."""
    numbers = np.asarray(numbers, dtype=np.uint64).reshape(-1)
    if numbers.size == 0:
        return b""
    out = []
    rest = numbers.copy()
    # Bytes of each number, lowest first; column j is the j-th byte.
    while True:
        low = (rest & np.uint64(0x7F)).astype(np.uint8)
        rest = rest >> np.uint64(7)
        more = rest > 0
        out.append(np.where(more, low | 0x80, low).astype(np.uint8))
        if not more.any():
            break
    columns = np.stack(out, axis=1)
    lengths = np.ones(numbers.size, dtype=np.int64)
    for j in range(1, len(out)):
        lengths += (columns[:, j - 1] & 0x80) != 0
    keep = np.arange(len(out))[None, :] < lengths[:, None]
    return columns[keep].tobytes()


def decode_varints(data: bytes, count: int | None = None) -> np.ndarray:
    """Inverse of `encode_varints`; `count` numbers expected if given.

    Raises:
        ValueError: on a truncated or overlong varint, or a count mismatch.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size and raw[-1] & 0x80:
        raise ValueError("truncated varint")
    ends = np.flatnonzero((raw & 0x80) == 0)
    starts = np.concatenate([[0], ends[:-1] + 1]) if ends.size else ends
    if ends.size and int((ends - starts).max()) >= 9:
        raise ValueError("varint longer than 63 bits")
    if count is not None and ends.size != count:
        raise ValueError(f"{ends.size} varints where {count} were expected")
    values = np.zeros(ends.size, dtype=np.uint64)
    payload = (raw & 0x7F).astype(np.uint64)
    group = (
        np.cumsum(np.concatenate([[0], (raw[:-1] & 0x80) == 0])) if raw.size else raw
    )
    shift = np.arange(raw.size) - (starts[group] if raw.size else 0)
    np.add.at(values, group, payload << (np.uint64(7) * shift.astype(np.uint64)))
    return values.astype(np.int64)


def encode_index(mask: np.ndarray, coding: str) -> bytes:
    """The positions of the True entries of `mask` in one index coding."""
    flat = mask.reshape(-1)
    if coding == "dense":
        return b""
    if coding == "bitmask":
        return np.packbits(flat).tobytes()
    if coding == "delta":
        positions = np.flatnonzero(flat)
        return encode_varints(np.diff(positions, prepend=-1) - 1)
    if coding == "axes":
        parts = []
        kept = []
        for axis in range(mask.ndim):
            others = tuple(a for a in range(mask.ndim) if a != axis)
            used = mask.any(axis=others) if others else mask
            kept.append(np.flatnonzero(used))
            parts.append(np.packbits(used).tobytes())
        sub = mask[np.ix_(*kept)] if mask.ndim else mask
        parts.append(np.packbits(sub.reshape(-1)).tobytes())
        return b"".join(parts)
    raise ValueError(f"Unknown index coding {coding!r}.")


def decode_index(data: bytes, coding: str, shape: tuple, count: int) -> np.ndarray:
    """Flat positions (sorted) of the `count` stored values.

    Raises:
        ValueError: if `data` does not describe exactly `count` positions of
            an array of `shape`.
    """
    size = int(np.prod(shape, dtype=np.int64))
    if coding == "dense":
        if data or count != size:
            raise ValueError("a dense array stores every value and no index")
        return np.arange(size)
    if coding == "bitmask":
        if len(data) != (size + 7) // 8:
            raise ValueError("bitmask of the wrong length")
        positions = np.flatnonzero(
            np.unpackbits(np.frombuffer(data, np.uint8), count=size)
        )
    elif coding == "delta":
        gaps = decode_varints(data, count)
        if gaps.size and (gaps.max() > size or gaps.sum() + gaps.size > size):
            raise ValueError("positions beyond the array")
        positions = np.cumsum(gaps + 1) - 1
    elif coding == "axes":
        raw = np.frombuffer(data, np.uint8)
        offset = 0
        kept = []
        for dim in shape:
            nbytes = (dim + 7) // 8
            if offset + nbytes > raw.size:
                raise ValueError("axis masks truncated")
            kept.append(
                np.flatnonzero(np.unpackbits(raw[offset : offset + nbytes], count=dim))
            )
            offset += nbytes
        sub_shape = tuple(k.size for k in kept)
        sub_size = int(np.prod(sub_shape, dtype=np.int64))
        if raw.size - offset != (sub_size + 7) // 8:
            raise ValueError("sub-array mask of the wrong length")
        sub = np.unpackbits(raw[offset:], count=sub_size).reshape(sub_shape)
        local = np.nonzero(sub)
        positions = np.sort(
            np.ravel_multi_index(
                tuple(k[i] for k, i in zip(kept, local)), shape
            ).astype(np.int64)
        )
    else:
        raise ValueError(f"unknown index coding {coding!r}")
    if positions.size != count:
        raise ValueError(f"the index holds {positions.size} positions, not {count}")
    return positions


# ----------------------------------------------------------------------
# Quantisation.
def kmeans_1d(values: np.ndarray, bits: int) -> tuple:
    """Weight sharing: ``(codebook, codes)`` with ``codebook[codes] ~ values``.

    1-D k-means (Lloyd) with linear initialisation over ``[min, max]``;
    empty clusters are dropped, so the codebook may be shorter than
    ``2**bits``. The centroids are rounded to float16, as stored.
    """
    values = np.asarray(values, np.float64)
    k = min(2**bits, np.unique(values).size)
    if k <= 1:
        centroids = np.unique(values)[:1] if values.size else np.zeros(0)
    else:
        centroids = np.linspace(values.min(), values.max(), k)
        for _ in range(_KMEANS_STEPS):
            codes = _nearest(values, centroids)
            sums = np.bincount(codes, weights=values, minlength=k)
            counts = np.bincount(codes, minlength=k)
            new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
            if np.allclose(new, centroids, rtol=0, atol=1e-12):
                break
            centroids = new
        counts = np.bincount(_nearest(values, centroids), minlength=k)
        centroids = centroids[counts > 0]
    centroids = np.unique(centroids.astype(np.float16))
    return centroids, _nearest(values, centroids.astype(np.float64)).astype(np.uint8)


def _nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted `centroids` for each value."""
    if centroids.size == 1:
        return np.zeros(values.size, np.int64)
    edges = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(edges, values)


def linear_quantize(values: np.ndarray, bits: int) -> tuple:
    """Uniform quantisation: ``(lo, step, codes)``, ``lo + codes*step ~ values``."""
    values = np.asarray(values, np.float64)
    lo = np.float32(values.min()) if values.size else np.float32(0)
    hi = values.max() if values.size else 0.0
    levels = 2**bits - 1
    step = np.float32((hi - float(lo)) / levels) if hi > lo else np.float32(1)
    codes = np.clip(np.rint((values - float(lo)) / float(step)), 0, levels)
    return lo, step, codes.astype(np.uint8)


def quantize(values: np.ndarray, bits: int | None, quantizer: str) -> tuple:
    """``(value coding, codebook bytes, code bytes, decoded values)``.

    `bits` None stores float32, 16 float16, 1-8 `quantizer` codes.
    """
    values = np.asarray(values)
    if bits is None or bits == 32:
        stored = values.astype(np.float32)
        return "f32", b"", stored.tobytes(), stored
    if bits == 16:
        stored = values.astype(np.float16)
        return "f16", b"", stored.tobytes(), stored.astype(np.float32)
    if quantizer == "kmeans":
        codebook, codes = kmeans_1d(values, bits)
        decoded = codebook.astype(np.float32)[codes] if codes.size else codes
        return "kmeans", codebook.tobytes(), codes.tobytes(), decoded
    lo, step, codes = linear_quantize(values, bits)
    decoded = (lo + codes.astype(np.float32) * step).astype(np.float32)
    return (
        "linear",
        np.array([lo, step], np.float32).tobytes(),
        codes.tobytes(),
        decoded,
    )


def dequantize(
    coding: str, bits: int, codebook: bytes, codes: bytes, count: int
) -> np.ndarray:
    """Inverse of `quantize` (float32 values).

    Raises:
        ValueError: if the streams do not hold `count` values of `coding`.
    """
    if coding in ("f32", "f16"):
        dtype = np.float32 if coding == "f32" else np.float16
        if codebook or len(codes) != count * np.dtype(dtype).itemsize:
            raise ValueError(f"{coding} values of the wrong length")
        return np.frombuffer(codes, dtype).astype(np.float32)
    if not (isinstance(bits, int) and MIN_BITS <= bits <= MAX_BITS):
        raise ValueError(f"bad bit width {bits!r}")
    if len(codes) != count:
        raise ValueError("codes of the wrong length")
    index = np.frombuffer(codes, np.uint8)
    if coding == "kmeans":
        if len(codebook) % 2 or len(codebook) // 2 > 2**bits:
            raise ValueError("codebook of the wrong length")
        table = np.frombuffer(codebook, np.float16).astype(np.float32)
    elif coding == "linear":
        if len(codebook) != 8:
            raise ValueError("linear codebook of the wrong length")
        lo, step = np.frombuffer(codebook, np.float32)
        table = (lo + np.arange(2**bits, dtype=np.float32) * step).astype(np.float32)
    else:
        raise ValueError(f"unknown value coding {coding!r}")
    if index.size and int(index.max()) >= table.size:
        raise ValueError("a code beyond the codebook")
    return table[index]


# ----------------------------------------------------------------------
# Bit widths from the posterior.
def posterior_bits(
    model: keras.Model,
    scale: float = 1.0,
    min_bits: int = 2,
    max_bits: int = 8,
) -> dict:
    """Bits per Sparse VD layer, from the posterior variance of its kept weights.

    As Bayesian Compression (Louizos et al. 2017) does: a weight whose
    posterior standard deviation is sigma is known only to about sigma, so a
    quantisation step of ``scale * sigma`` loses nothing the posterior
    trusts. Each layer gets the fewest bits whose uniform grid over its kept
    weights' range has a step of at most ``scale`` times their median
    posterior standard deviation, clipped to ``[min_bits, max_bits]``.

    Args:
        model: a model holding Sparse VD layers (the trained posterior).
        scale: the step, in posterior standard deviations; smaller is
            more bits.
        min_bits: the fewest bits a layer gets (1-8).
        max_bits: the most bits a layer gets (1-8).

    Returns:
        ``{layer name: bits}`` for every Sparse VD layer with kept weights,
        the `bits` argument of `keras_sparsevd.save_sparse`.

    Raises:
        ValueError: if `scale` is not positive, the bit bounds are not
            integers with ``1 <= min_bits <= max_bits <= 8``, or `model`
            holds no Sparse VD layer.

    Example:

    >>> bits = posterior_bits(svd_model)  # doctest: +SKIP
    >>> save_sparse(svd_model, "lenet5.ksvd", bits=bits)  # doctest: +SKIP
    """
    from keras_sparsevd.model_helpers import svd_layers

    if not (
        isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0
    ):
        raise ValueError(f"`scale` must be a positive number, got {scale!r}.")
    for label, value in (("min_bits", min_bits), ("max_bits", max_bits)):
        if not (
            isinstance(value, int)
            and not isinstance(value, bool)
            and MIN_BITS <= value <= MAX_BITS
        ):
            raise ValueError(
                f"`{label}` must be an integer in [{MIN_BITS}, {MAX_BITS}], "
                f"got {value!r}."
            )
    if min_bits > max_bits:
        raise ValueError(
            f"`min_bits` ({min_bits}) must not exceed `max_bits` ({max_bits})."
        )
    layers = svd_layers(model)
    if not layers:
        raise ValueError(
            "`model` holds no Sparse VD layer: `posterior_bits` needs the "
            "posterior (log_sigma2), so pass the model before strip_sparsevd."
        )
    bits = {}
    for layer in layers:
        for theta, log_sigma2, mask in _posterior_pairs(layer):
            kept = mask > 0
            if not kept.any():
                continue
            values = theta[kept]
            sigma = np.exp(0.5 * log_sigma2[kept])
            spread = float(values.max() - values.min())
            step = scale * float(np.median(sigma))
            need = int(np.ceil(np.log2(spread / step + 1))) if spread > 0 else 1
            bits[layer.name] = max(
                bits.get(layer.name, 0), int(np.clip(need, min_bits, max_bits))
            )
    return bits


def _posterior_pairs(layer: keras.layers.Layer) -> list:
    """``(theta, log_sigma2, mask)`` arrays of each kernel of a Sparse VD layer."""
    return [
        tuple(
            keras.ops.convert_to_numpy(v).astype(np.float64)
            for v in (layer.theta(name), layer.log_sigma2_of(name), layer.mask_of(name))
        )
        for name in layer.svd_kernels
    ]


# ----------------------------------------------------------------------
# The model config, made small.
def minimal_config(model: keras.Model) -> dict:
    """`model`'s config without the keys Keras would fill in the same way.

    Initializers are dropped too: loaded weights replace what they draw.

    Each layer's config loses every key whose removal leaves the rebuilt
    layer's config unchanged; then the model is rebuilt from the result and
    compared with the original, and the full config is kept if they differ.
    """
    full = json.loads(model.to_json())
    small = json.loads(json.dumps(full))
    for key in ("registered_name", "compile_config", "build_config"):
        small.pop(key, None)
    for layer in small.get("config", {}).get("layers", []):
        if isinstance(layer, dict):
            _shrink_layer(layer)
    reference = _canonical(_without_initializers(full))
    if reference is None or _canonical(small) != reference:
        return full
    return small


def _without_initializers(config: Any) -> Any:
    if isinstance(config, dict):
        return {
            k: _without_initializers(v)
            for k, v in config.items()
            if not k.endswith("_initializer")
        }
    if isinstance(config, list):
        return [_without_initializers(v) for v in config]
    return config


def _shrink_layer(layer: dict) -> None:
    layer.pop("registered_name", None)
    layer.pop("build_config", None)
    config = layer.get("config")
    if not isinstance(config, dict) or layer.get("module") not in (
        "keras.layers",
        "keras",
    ):
        return
    try:
        reference = _layer_config(layer)
    except Exception:  # noqa: BLE001 - leave layers Keras cannot rebuild alone
        return
    for key in list(config):
        if key == "name":
            continue
        if key.endswith("_initializer"):
            # The stored weights replace whatever an initializer would draw.
            config.pop(key)
            reference = _layer_config(layer)
            continue
        trial = dict(layer, config={k: v for k, v in config.items() if k != key})
        try:
            same = _layer_config(trial) == reference
        except Exception:  # noqa: BLE001 - the key is needed
            same = False
        if same:
            config.pop(key)


def _layer_config(layer: dict) -> str:
    built = keras.saving.deserialize_keras_object(json.loads(json.dumps(layer)))
    return json.dumps(
        keras.saving.serialize_keras_object(built)["config"], sort_keys=True
    )


def _canonical(config: dict) -> str | None:
    try:
        model = keras.models.model_from_json(json.dumps(config))
    except Exception:  # noqa: BLE001 - a config Keras cannot rebuild
        return None
    return json.dumps(
        [model.get_config(), [tuple(w.shape) for w in model.weights]], sort_keys=True
    )


def extract_constants(config: Any) -> tuple:
    """`config` with long lists of numbers replaced by references, and the arrays."""
    arrays: list = []

    def walk(node: Any) -> Any:
        if isinstance(node, list) and node and _numeric_size(node) >= _MIN_CONSTANT:
            array = np.asarray(node)
            if array.dtype.kind in "fiu" and array.dtype != object:
                arrays.append(array)
                return {CONSTANT_KEY: len(arrays) - 1}
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(config), arrays


def _numeric_size(node: list) -> int:
    count = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            count += 1
        else:
            return 0
    return count


def insert_constants(config: Any, arrays: list) -> Any:
    """Inverse of `extract_constants`.

    Raises:
        ValueError: on a reference to a constant that does not exist.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {CONSTANT_KEY}:
                i = node[CONSTANT_KEY]
                if not (
                    isinstance(i, int)
                    and not isinstance(i, bool)
                    and 0 <= i < len(arrays)
                ):
                    raise ValueError(f"reference to a missing constant {i!r}")
                return arrays[i].tolist()
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(config)


# ----------------------------------------------------------------------
# The container.
def compress(payload: bytes) -> bytes:
    """Magic, version, the best codec's id, the length, the compressed payload.

    Codecs 0-2 are none, zlib and bz2. Codec ``3 + i`` is a raw LZMA2
    stream (no container: the xz container alone costs about 60 bytes,
    2% of a 3 KB file) with the i-th literal-context setting of
    `_LZMA_SETTINGS`; its dictionary is the payload's length rounded up to a
    power of two, so the decoder's memory follows the declared length.
    """
    candidates = {0: payload, 1: zlib.compress(payload, 9), 2: bz2.compress(payload, 9)}
    for props in range(len(_LZMA_SETTINGS)):
        candidates[_LZMA_BASE + props] = lzma.compress(
            payload, format=lzma.FORMAT_RAW, filters=_lzma_filters(props, len(payload))
        )
    codec = min(candidates, key=lambda c: len(candidates[c]))
    return (
        MAGIC
        + bytes([VERSION, codec])
        + encode_varints([len(payload)])
        + candidates[codec]
    )


# (lc, lp, pb) tried for the raw LZMA2 codec: literal context bits matter for
# byte streams of codes and masks; position bits rarely help.
_LZMA_SETTINGS = tuple((lc, 0, pb) for lc in range(5) for pb in (0, 1, 2))
_LZMA_BASE = 3


def _lzma_filters(props: int, length: int) -> list:
    lc, lp, pb = _LZMA_SETTINGS[props]
    dict_size = 4096
    while dict_size < min(length, 1 << 26):
        dict_size *= 2
    return [
        {
            "id": lzma.FILTER_LZMA2,
            "preset": 9 | lzma.PRESET_EXTREME,
            "lc": lc,
            "lp": lp,
            "pb": pb,
            "dict_size": dict_size,
        }
    ]


def decompress(data: bytes, budget: int) -> bytes:
    """The payload of a version-2 file, at most `budget` bytes of it.

    Raises:
        ValueError: on a bad magic, version, codec or length, or a payload
            that decompresses to other than its declared length.
    """
    if data[:4] != MAGIC:
        raise ValueError("not a version-2 sparse file (bad magic)")
    if len(data) < 7:
        raise ValueError("truncated")
    version, codec = data[4], data[5]
    if version != VERSION:
        raise ValueError(f"unknown version {version}")
    if codec >= _LZMA_BASE + len(_LZMA_SETTINGS):
        raise ValueError(f"unknown codec {codec}")
    end = 6
    while end < len(data) and data[end] & 0x80 and end < 15:
        end += 1
    length = int(decode_varints(data[6 : end + 1], 1)[0])
    if length > budget:
        raise ValueError(
            f"its payload claims {length:,} bytes, more than the {budget:,} allowed"
        )
    body = data[end + 1 :]
    if codec == 0:
        payload = body
    elif codec == 1:
        payload = zlib.decompressobj().decompress(body, length + 1)
    elif codec == 2:
        payload = bz2.BZ2Decompressor().decompress(body, max_length=length + 1)
    else:
        payload = lzma.LZMADecompressor(
            format=lzma.FORMAT_RAW,
            filters=_lzma_filters(codec - _LZMA_BASE, length),
        ).decompress(body, max_length=length + 1)
    if len(payload) != length:
        raise ValueError(
            f"the payload decompresses to {len(payload)} bytes, not {length}"
        )
    return payload


def encode_array(
    array: np.ndarray, bits: int | None, quantizer: str, index: str | None = None
) -> tuple:
    """``(entry, (index, codebook, codes) streams, decoded array)`` for one array.

    Non-floating arrays are stored exactly (``"f32"`` is not used for
    them: their raw bytes in their own dtype, ``q`` = ``"raw"``).
    """
    array = np.asarray(array)
    if array.dtype.name == "bfloat16":
        # Not a NumPy float type; float32 holds it exactly and loads back into
        # a bfloat16 variable unchanged.
        array = array.astype(np.float32)
    floating = np.issubdtype(array.dtype, np.floating)
    mask = array != 0
    size = array.size
    count = int(mask.sum())
    if not floating:
        entry = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "n": size,
            "index": "dense",
            "q": "raw",
            "bits": None,
        }
        return entry, (b"", b"", np.ascontiguousarray(array).tobytes()), array
    codings = [index] if index else _index_candidates(array, count)
    best = None
    for coding in codings:
        for perm in _permutations(array.ndim) if coding != "dense" else [None]:
            view = array if perm is None else np.transpose(array, perm)
            view_mask = view != 0
            stream = encode_index(view_mask, coding)
            cost = _packed_size(stream)
            if coding == "dense":
                # Zeros are then coded as values: only for arrays mostly non-zero.
                cost -= size - count
            if best is None or cost < best[0]:
                best = (cost, coding, perm, stream)
    _, coding, perm, stream = best
    view = array if perm is None else np.transpose(array, perm)
    flat = view.reshape(-1)
    positions = np.arange(size) if coding == "dense" else np.flatnonzero(flat)
    q, codebook, codes, decoded_values = quantize(flat[positions], bits, quantizer)
    decoded = np.zeros(size, np.float32)
    decoded[positions] = decoded_values
    decoded = decoded.reshape(view.shape)
    if perm is not None:
        decoded = np.transpose(decoded, np.argsort(perm))
    entry = {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "n": int(positions.size),
        "index": coding,
        "q": q,
        "bits": bits if q in ("kmeans", "linear") else None,
    }
    if perm is not None and list(perm) != list(range(array.ndim)):
        entry["perm"] = [int(p) for p in perm]
    return entry, (stream, codebook, codes), decoded.astype(array.dtype)


def _permutations(ndim: int) -> list:
    """Axis orders to try: the order of the flattening changes how runs of kept
    weights line up (a conv kernel's kept weights cluster by filter)."""
    if ndim <= 1:
        return [None]
    if ndim <= 4:
        return list(itertools.permutations(range(ndim)))
    return [tuple(range(ndim)), tuple(reversed(range(ndim)))]


def _packed_size(stream: bytes) -> int:
    if not stream:
        return 0
    return len(
        lzma.compress(
            stream,
            format=lzma.FORMAT_RAW,
            filters=[
                {
                    "id": lzma.FILTER_LZMA2,
                    "preset": 6,
                    "lc": 0,
                    "pb": 0,
                    "dict_size": 1 << 16,
                }
            ],
        )
    )


def _index_candidates(array: np.ndarray, count: int) -> list:
    # An array mostly non-zero (a bias) is cheapest stored whole.
    if count * 4 >= array.size * 3 or array.ndim == 0:
        return ["dense"]
    return ["bitmask", "delta", "axes"]


def write_payload(
    model_config: dict, weight_items: list, constant_items: list
) -> bytes:
    """The payload: header JSON, then streams grouped by kind."""
    entries = []
    groups: list = [[], [], []]
    for entry, streams in weight_items + constant_items:
        entry = dict(entry, len=[len(s) for s in streams])
        entries.append(entry)
        for group, stream in zip(groups, streams):
            group.append(stream)
    header = {
        "model": model_config,
        "weights": entries[: len(weight_items)],
        "constants": entries[len(weight_items) :],
    }
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return encode_varints([len(text)]) + text + b"".join(b"".join(g) for g in groups)


def read_payload(payload: bytes) -> tuple:
    """``(header, blob)`` of a payload.

    Raises:
        ValueError: if the header's length or JSON is bad.
    """
    end = 0
    while end < len(payload) and payload[end] & 0x80 and end < 9:
        end += 1
    length = int(decode_varints(payload[: end + 1], 1)[0])
    start = end + 1
    if start + length > len(payload):
        raise ValueError("header truncated")
    try:
        header = json.loads(payload[start : start + length].decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise ValueError(f"its header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not an object")
    return header, payload[start + length :]


def split_streams(entries: list, blob: bytes) -> list:
    """``(index, codebook, codes)`` bytes of each entry, from the grouped blob.

    Raises:
        ValueError: if the lengths do not add up to the blob.
    """
    lengths = []
    for entry in entries:
        lens = entry.get("len")
        if not (
            isinstance(lens, list)
            and len(lens) == 3
            and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lens
            )
        ):
            raise ValueError(f"bad stream lengths {lens!r}")
        lengths.append(lens)
    if sum(sum(lens) for lens in lengths) != len(blob):
        raise ValueError("the streams' lengths do not add up to the payload")
    offset = 0
    out = [[None, None, None] for _ in entries]
    for kind in range(3):
        for i, lens in enumerate(lengths):
            out[i][kind] = blob[offset : offset + lens[kind]]
            offset += lens[kind]
    return out


def decode_entry(entry: dict, streams: tuple) -> np.ndarray:
    """One array from its checked entry and its three streams.

    Raises:
        ValueError: if the streams do not describe the entry's array.
    """
    shape = tuple(entry["shape"])
    dtype = np.dtype(entry["dtype"]) if entry["dtype"] != "bfloat16" else np.float32
    size = int(np.prod(shape, dtype=np.int64))
    count = entry["n"]
    index, codebook, codes = streams
    if entry["q"] == "raw":
        if entry["index"] != "dense" or index or codebook or count != size:
            raise ValueError("a raw array must be dense")
        if len(codes) != size * dtype.itemsize:
            raise ValueError("raw values of the wrong length")
        return np.frombuffer(codes, dtype).reshape(shape).copy()
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"{entry['q']} values for a {dtype} array")
    perm = entry.get("perm")
    if perm is not None and (
        not isinstance(perm, list)
        or sorted(p for p in perm if isinstance(p, int)) != list(range(len(shape)))
    ):
        raise ValueError(f"bad axis order {perm!r}")
    view_shape = shape if perm is None else tuple(shape[p] for p in perm)
    positions = decode_index(index, entry["index"], view_shape, count)
    values = dequantize(entry["q"], entry.get("bits"), codebook, codes, count)
    flat = np.zeros(size, dtype)
    flat[positions] = values.astype(dtype)
    array = flat.reshape(view_shape)
    if perm is not None:
        array = np.ascontiguousarray(np.transpose(array, np.argsort(perm)))
    return array


def check_entry(entry: Any, where: str) -> int:
    """Checks an entry's fields; its bytes once decoded.

    Raises:
        ValueError: naming `where` and the bad field.
    """
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not described by an object.")
    shape = entry.get("shape")
    if (
        not isinstance(shape, list)
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
            for d in shape
        )
        or len(shape) > 32
    ):
        raise ValueError(f"{where}: bad shape {shape!r}.")
    dtype = entry.get("dtype")
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"{where}: bad dtype {dtype!r}.")
    if entry.get("index") not in INDEX_CODINGS:
        raise ValueError(f"{where}: unknown index coding {entry.get('index')!r}.")
    if entry.get("q") not in VALUE_CODINGS + ("raw",):
        raise ValueError(f"{where}: unknown value coding {entry.get('q')!r}.")
    size = 1
    for dim in shape:
        size *= dim
    count = entry.get("n")
    if not (
        isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= size
    ):
        raise ValueError(f"{where}: bad value count {count!r}.")
    return size * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)


# The dtypes a sparse file (either version) may hold; `sparse_format` reads it too.
WEIGHT_DTYPES = (
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)


def bits_for(
    path: str, is_kernel: bool, bits: Any, other_bits: int | None
) -> int | None:
    """The bit width of the weight at `path` (``.../layer/kernel``)."""
    if not is_kernel:
        return other_bits
    if isinstance(bits, dict):
        parts = path.split("/")
        for key in (path, "/".join(parts[-2:]), parts[-2] if len(parts) > 1 else path):
            if key in bits:
                return bits[key]
        return bits.get("*", 32)
    return bits


def check_bits(value: Any, label: str, allow_dict: bool) -> None:
    """Raises a ValueError naming `label` unless `value` is a valid bit width."""

    def valid(v: Any) -> bool:
        return v is None or (
            isinstance(v, int)
            and not isinstance(v, bool)
            and (MIN_BITS <= v <= MAX_BITS or v in (16, 32))
        )

    if allow_dict and isinstance(value, dict):
        for key, v in value.items():
            if not isinstance(key, str) or not valid(v):
                raise ValueError(
                    f"`{label}` maps layer names to bit widths (1-8, 16 or 32); "
                    f"got {key!r}: {v!r}."
                )
        return
    if not valid(value):
        raise ValueError(
            f"`{label}` must be an integer in [{MIN_BITS}, {MAX_BITS}], 16 or 32"
            + (", a dict of them by layer name" if allow_dict else "")
            + f", or None; got {value!r}."
        )
