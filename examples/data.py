"""Datasets for the examples: shipped MNIST files, a local folder, or tfds.

Every loader returns ``(x_train, y_train), (x_test, y_test)`` with images as
float32 in [0, 1] (pixels / 255) in their natural shape, (N, 28, 28, 1) for
MNIST and (N, 32, 32, 3) for CIFAR, and labels as int32.

Where the data comes from (the first rule that applies wins):

1. ``data_dir`` (``--data-dir`` on the command line), else the environment
   variable ``KERAS_SPARSEVD_DATA_DIR`` if set and non-empty. Its value is
   either the keyword ``tfds``, which loads with ``tensorflow_datasets``
   (which downloads on first use), or a local folder; a folder is read
   offline. (A folder literally named ``tfds`` is reached as ``./tfds``.)
2. Neither given: MNIST comes from the four official files shipped in
   ``examples/mnist/`` (offline; their SHA-256 is checked, see
   ``examples/mnist/README.md``); CIFAR-10 and CIFAR-100 come from
   ``tensorflow_datasets``.

Local folder layouts:

* MNIST: the official IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``).
* CIFAR-10: the python-pickle release, ``data_batch_1`` .. ``data_batch_5``
  and ``test_batch``, in the folder or in its ``cifar-10-batches-py/``. The
  pickles are read without running code: only arrays, lists, bytes and
  numbers are admitted, so a crafted file is refused.
* CIFAR-100: ``train`` and ``test`` (with ``fine_labels``), in the folder or
  in its ``cifar-100-python/``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "KERAS_SPARSEVD_DATA_DIR"
# The `data_dir` (or $KERAS_SPARSEVD_DATA_DIR) value that selects tensorflow_datasets.
TFDS = "tfds"
DATASETS = ("mnist", "cifar10", "cifar100")
NUM_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}

MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


# The official MNIST files shipped with the examples, and the SHA-256 of each
# shipped (gzipped) file; examples/mnist/README.md lists the same values.
SHIPPED_MNIST_DIR = Path(__file__).resolve().parent / "mnist"
SHIPPED_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "db8f937d487057fb14a9f0fbe97f0bc8d311ab41b750d41e1ff37c43b9e55e19"
    ),
    "train-labels-idx1-ubyte.gz": (
        "51fc562b6747b666fbf6e84ce29d43c3cb5f9c388c664d43b33f02095313405a"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "cfeddb84311ecf044fc6a5b0f6ee8a24d265d4e83e388400186eb114082f4209"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "e41c74e484045d39b462a7790a4af51301bd9b0b24f0154798d713ec68c45920"
    ),
}


class DataError(ValueError):
    """A local data folder is missing, incomplete or malformed."""


Split = tuple[np.ndarray, np.ndarray]


def load(name: str, data_dir: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """Loads a dataset by name ("mnist", "cifar10", "cifar100").

    Args:
        name: the dataset.
        data_dir: a local folder with the files, or ``"tfds"`` for
            ``tensorflow_datasets`` (see the module docstring). Defaults to
            ``$KERAS_SPARSEVD_DATA_DIR``; if neither is set, MNIST is read
            from the files shipped in ``examples/mnist/`` and CIFAR comes
            from ``tensorflow_datasets``.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``.
    """
    if name not in DATASETS:
        raise ValueError(f"`dataset` must be one of {DATASETS}, got {name!r}.")
    splits = _load(name, data_dir)
    for (x, _), split in zip(splits, ("training", "test")):
        if len(x) == 0:
            raise DataError(
                f"The {name} {split} set from {str(data_dir or 'the default')!r} "
                "holds no examples: check the data folder's files."
            )
    return splits


def _load(name: str, data_dir: str | os.PathLike | None) -> tuple[Split, Split]:
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        if name == "mnist":
            return load_shipped_mnist()
        return _load_tfds(name)
    if isinstance(data_dir, str) and data_dir.strip().lower() == TFDS:
        return _load_tfds(name)
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"Data folder {str(folder)!r} (from `--data-dir` or ${DATA_DIR_ENV}) "
            f"does not exist or is not a folder. For {name} it should hold "
            f"{_expected(name)}; or use {TFDS!r} for tensorflow_datasets."
        )
    if name == "mnist":
        if folder.resolve() == SHIPPED_MNIST_DIR:
            return load_shipped_mnist()
        return load_mnist_idx(folder)
    return load_cifar_pickle(folder, name)


def load_shipped_mnist() -> tuple[Split, Split]:
    """Reads the MNIST files shipped in ``examples/mnist/``, checking SHA-256."""
    for filename, expected in SHIPPED_MNIST_SHA256.items():
        path = SHIPPED_MNIST_DIR / filename
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise DataError(
                f"Shipped MNIST file {str(path)!r} cannot be read ({e}). Restore "
                "examples/mnist/ from the repository, or give another source "
                f"with `--data-dir` or ${DATA_DIR_ENV}."
            ) from None
        if digest != expected:
            raise DataError(
                f"Shipped MNIST file {str(path)!r} has SHA-256 {digest}, expected "
                f"{expected} (see examples/mnist/README.md): the file is damaged "
                "or replaced (a Git LFS pointer?). Restore it from the "
                f"repository, or give another source with `--data-dir` or "
                f"${DATA_DIR_ENV}."
            )
    return load_mnist_idx(SHIPPED_MNIST_DIR)


def _expected(name: str) -> str:
    if name == "mnist":
        return ", ".join(f"{f}[.gz]" for f in MNIST_FILES.values())
    if name == "cifar10":
        return "data_batch_1..data_batch_5 and test_batch (cifar-10-batches-py)"
    return "train and test (cifar-100-python)"


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read IDX file {str(path)!r}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(
            f"{str(path)!r} is not an unsigned-byte IDX file (bad magic number)."
        )
    ndim = raw[3]
    if ndim != expected_ndim:
        raise DataError(
            f"{str(path)!r} has {ndim} dimensions, expected {expected_ndim}."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{str(path)!r} is truncated (incomplete header).")
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(
            f"{str(path)!r} holds {len(raw) - header} bytes of data, expected "
            f"{size} for shape {shape}."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"MNIST file {name}[.gz] not found in {str(folder)!r}. The folder must "
        f"hold the four official IDX files: {_expected('mnist')}."
    )


def load_mnist_idx(folder: str | os.PathLike) -> tuple[Split, Split]:
    """Reads the four official MNIST IDX files (gzipped or not) from `folder`."""
    folder = Path(folder)
    arrays = {}
    for key, filename in MNIST_FILES.items():
        arrays[key] = _read_idx(_find(folder, filename), 3 if key[0] == "x" else 1)
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DataError(
                f"MNIST {split} images and labels in {str(folder)!r} differ in "
                f"count: {len(arrays[f'x_{split}'])} vs {len(arrays[f'y_{split}'])}."
            )

    def images(a: np.ndarray) -> np.ndarray:
        return (a.astype("float32") / 255.0)[..., None]

    return (
        (images(arrays["x_train"]), arrays["y_train"].astype("int32")),
        (images(arrays["x_test"]), arrays["y_test"].astype("int32")),
    )


# What a CIFAR batch pickle may name: the pieces a NumPy array is rebuilt
# from. Dicts, lists, bytes, strings and numbers need no name at all.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches without running code from the file.

    A pickle can name any importable callable and call it; this one admits
    only what rebuilds NumPy arrays, so a crafted file in a data folder is
    refused instead of executed.
    """

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in _CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused {module}.{name}: a CIFAR batch holds only arrays, lists, "
            "bytes and numbers"
        )


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure is bad data
        raise DataError(f"Cannot read CIFAR pickle {str(path)!r}: {e}") from None
    if not isinstance(batch, dict):
        raise DataError(
            f"{str(path)!r} holds a {type(batch).__name__}, not a CIFAR batch (dict)."
        )
    return batch


def load_cifar_pickle(folder: str | os.PathLike, name: str) -> tuple[Split, Split]:
    """Reads CIFAR-10 or CIFAR-100 in the python-pickle layout from `folder`."""
    folder = Path(folder)
    sub = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    if (folder / sub).is_dir():
        folder = folder / sub
    if name == "cifar10":
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files = ["test_batch"]
        label_key = b"labels"
    else:
        train_files, test_files, label_key = ["train"], ["test"], b"fine_labels"

    def read(files: list) -> Split:
        xs, ys = [], []
        for filename in files:
            path = folder / filename
            if not path.is_file():
                raise DataError(
                    f"CIFAR file {filename!r} not found in {str(folder)!r}. "
                    f"Expected {_expected(name)}."
                )
            batch = _unpickle(path)
            if b"data" not in batch or label_key not in batch:
                raise DataError(
                    f"{str(path)!r} lacks the keys b'data' and {label_key!r}."
                )
            data = np.asarray(batch[b"data"], np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(
                    f"{str(path)!r}: b'data' has shape {data.shape}, "
                    "expected (N, 3072)."
                )
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch[label_key], np.int32))
        x = np.concatenate(xs).astype("float32") / 255.0
        return x, np.concatenate(ys)

    return read(train_files), read(test_files)


def _shipped_hint(name: str) -> str:
    if name != "mnist":
        return ""
    return (
        f"; or, for MNIST, give neither (nor {TFDS!r}) to read the files shipped "
        "in examples/mnist/"
    )


def _load_tfds(name: str) -> tuple[Split, Split]:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            "tensorflow_datasets is not installed: install it, or give a local "
            f"folder with `--data-dir` or ${DATA_DIR_ENV}{_shipped_hint(name)}."
        ) from None
    try:
        splits = tfds.load(
            name, split=["train", "test"], batch_size=-1, as_supervised=True
        )
    except Exception as e:  # noqa: BLE001 - offline machines fail in many ways
        raise DataError(
            f"tensorflow_datasets could not load {name!r} ({type(e).__name__}: "
            f"{e}). Without network access give a local folder with `--data-dir` "
            f"or ${DATA_DIR_ENV}, holding {_expected(name)}{_shipped_hint(name)}."
        ) from None
    out = []
    for images, labels in tfds.as_numpy(splits):
        out.append((images.astype("float32") / 255.0, labels.astype("int32")))
    return out[0], out[1]
