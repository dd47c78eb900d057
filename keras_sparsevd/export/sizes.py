"""Bytes on disk of a Sparse VD model in each export format.

Every ratio is against the dense float32 model of the same architecture
(4 bytes per parameter of the unpruned model): what a user would ship
without Sparse VD. The Sparse VD ``.keras`` file, which also holds
``log_sigma2`` and the optimizer's slots, is never the baseline.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import tempfile

import keras
import numpy as np

from keras_sparsevd import files
from keras_sparsevd.export.sparse_format import save_sparse
from keras_sparsevd.export.strip import strip_sparsevd
from keras_sparsevd.model_helpers import svd_layers

DENSE_LABEL = "dense float32 parameters"
SVD_LABEL = "Sparse VD .keras (for training)"
STRIPPED_LABEL = "stripped .keras"
GZIP_LABEL = "stripped .keras, gzipped"
SPARSE_LABEL = "sparse .npz"


@dataclasses.dataclass(frozen=True)
class SizeEntry:
    """One file (or SavedModel folder) and its size in bytes."""

    label: str
    bytes: int
    path: str | None = None


@dataclasses.dataclass(frozen=True)
class SizeReport:
    """Sizes on disk, each compared with the first entry (the baseline).

    The baseline of the reports this package makes is the dense float32
    model of the same architecture (`DENSE_LABEL`). ``str(report)`` is a
    table, ``to_dict()`` is JSON-serialisable and ``ratio(label)`` is how
    many times smaller than the baseline an entry is.
    """

    entries: tuple

    def size(self, label: str) -> int:
        """Bytes of the entry called `label`."""
        for entry in self.entries:
            if entry.label == label:
                return entry.bytes
        raise KeyError(f"No entry {label!r}; have {[e.label for e in self.entries]}.")

    def ratio(self, label: str) -> float:
        """Baseline bytes over the bytes of entry `label`."""
        size = self.size(label)
        return self.entries[0].bytes / size if size else float("inf")

    def to_dict(self) -> dict:
        return {
            "baseline": self.entries[0].label,
            "entries": [
                {
                    "label": e.label,
                    "bytes": e.bytes,
                    "path": e.path,
                    "times_smaller": self.ratio(e.label),
                }
                for e in self.entries
            ],
        }

    def __str__(self) -> str:
        rows = [
            (e.label, f"{e.bytes:,}", _times(self.ratio(e.label))) for e in self.entries
        ]
        header = ("file", "bytes", f"vs {self.entries[0].label}")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(3)]

        def fmt(row: tuple) -> str:
            return "  ".join(
                [row[0].ljust(widths[0])]
                + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
            )

        return "\n".join([fmt(header), "-" * len(fmt(header))] + [fmt(r) for r in rows])


def _times(ratio: float) -> str:
    if ratio >= 1:
        return f"{ratio:.1f}x smaller"
    return f"{1 / ratio:.1f}x larger" if ratio > 0 else "-"


def dense_float32_bytes(model: keras.Model) -> int:
    """4 bytes per parameter of `model`'s architecture, unpruned.

    The size of the dense float32 model a user would ship without Sparse VD:
    the plain model that `strip_sparsevd` makes (same layers, no
    ``log_sigma2``), every weight counted, zeros too.
    """
    plain = strip_sparsevd(model) if svd_layers(model) else model
    return 4 * sum(int(np.prod(w.shape)) for w in plain.weights)


def path_size(path: str | os.PathLike) -> int:
    """Bytes of a file, or of all files under a folder (a SavedModel)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, names in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in names)
    return total


def gzip_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Writes `source` gzip-compressed (level 9) to `target`, atomically."""
    with files.atomic_path(target) as tmp:
        with open(source, "rb") as src, gzip.open(tmp, "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)


def size_report(
    model: keras.Model,
    directory: str | os.PathLike | None = None,
    compact: bool = False,
    values_dtype: str = "float32",
) -> SizeReport:
    """Saves a Sparse VD model in each format and measures the files.

    The baseline, first entry, is the dense float32 model of the same
    architecture: 4 bytes per parameter (`dense_float32_bytes`). Writes
    ``stripped.keras`` (`strip_sparsevd`; without `compact` it is the dense
    architecture's plain ``.keras`` file, pruned weights stored as zeros),
    ``stripped.keras.gz``, ``sparse.npz`` (`save_sparse`) and, last,
    ``svd.keras``, the Sparse VD model itself (`model.save`, for training:
    it also holds ``log_sigma2``). A ``.keras`` file is an uncompressed zip,
    so gzip shows how much of the stripped file is zeros; the sparse format
    stores only the kept weights. Each file is written atomically.

    Args:
        model: a built Sparse VD model (Sequential or functional).
        directory: where to write the files, created if needed; files of those
            names are replaced. None: a temporary folder, deleted afterwards.
        compact: strip with ``compact=True`` (dead units removed).
        values_dtype: ``"float32"`` or ``"float16"``, for `save_sparse`.

    Returns:
        A `SizeReport` whose baseline is the dense float32 model.

    Raises:
        ValueError: as `strip_sparsevd`.
    """
    stripped = strip_sparsevd(model, compact=compact)
    if directory is None:
        with tempfile.TemporaryDirectory() as tmp:
            report = _write_and_measure(model, stripped, tmp, values_dtype)
        return SizeReport(
            tuple(dataclasses.replace(e, path=None) for e in report.entries)
        )
    os.makedirs(directory, exist_ok=True)
    return _write_and_measure(model, stripped, os.fspath(directory), values_dtype)


def _write_and_measure(
    model: keras.Model, stripped: keras.Model, directory: str, values_dtype: str
) -> SizeReport:
    entries = [SizeEntry(DENSE_LABEL, dense_float32_bytes(model))]
    entries += measure_stripped(stripped, directory, values_dtype)
    svd = os.path.join(directory, "svd.keras")
    files.save_model(model, svd)
    entries.append(SizeEntry(SVD_LABEL, path_size(svd), svd))
    return SizeReport(tuple(entries))


def measure_stripped(
    stripped: keras.Model, directory: str, values_dtype: str = "float32"
) -> list:
    """Writes ``stripped.keras``, its gzip and ``sparse.npz``; their entries."""
    keras_path = os.path.join(directory, "stripped.keras")
    gz_path = keras_path + ".gz"
    sparse_path = os.path.join(directory, "sparse.npz")
    files.save_model(stripped, keras_path)
    gzip_file(keras_path, gz_path)
    save_sparse(stripped, sparse_path, values_dtype=values_dtype)
    return [
        SizeEntry(STRIPPED_LABEL, path_size(keras_path), keras_path),
        SizeEntry(GZIP_LABEL, path_size(gz_path), gz_path),
        SizeEntry(SPARSE_LABEL, path_size(sparse_path), sparse_path),
    ]
