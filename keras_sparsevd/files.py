"""Atomic writes: a file or folder is either its old self or complete.

Everything the package and its examples write goes through these helpers: the
content is written under a temporary name in the destination's own folder
(so that the final rename never crosses a file system), flushed to disk, and
renamed over the destination with `os.replace`, which POSIX and Windows both
perform atomically. A process killed at any point leaves the destination as
it was, or complete; at worst a temporary ``.<name>.tmp-*`` beside it, which
`remove_stale_temporaries` clears and nothing reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Infix of every temporary name these helpers create.
TMP_MARK = ".tmp-"


def _commit(source: str, target: str) -> None:
    """Renames `source` over `target`, the one step that makes a write visible.

    Every helper of this module publishes through this function; the kill
    tests wrap it to stop a process right before or after a rename.
    """
    os.replace(source, target)


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_folder(path: str) -> None:
    # A rename is durable once its folder is flushed; not possible on Windows.
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: str) -> None:
    for root, _, names in os.walk(path):
        for name in names:
            _fsync_file(os.path.join(root, name))
        _fsync_folder(root)


def temporary_name(path: str | os.PathLike) -> str:
    """A fresh temporary path beside `path`, ending in the same suffix.

    The suffix is kept because some writers insist on it (``model.save``
    wants ``.keras``, ``np.savez`` appends ``.npz`` to other names).
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    suffix = "".join(Path(name).suffixes[-2:]) if not name.startswith(".") else ""
    return _create(folder, name, suffix, folder_too=False)


def _create(parent: str, name: str, suffix: str, folder_too: bool) -> str:
    # Not `tempfile.mkstemp`: its 0600 mode would stay on the renamed file;
    # these get the mode a plain `open` gives (0666 less the umask).
    while True:
        tmp = os.path.join(parent, f".{name}{TMP_MARK}{secrets.token_hex(4)}{suffix}")
        try:
            if folder_too:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path to write; renames it to `path` on success.

    The temporary file sits in the folder of `path` (created if needed) with
    the same suffix. If the block raises, the temporary file is removed and
    `path` is untouched.

    Args:
        path: the destination file.

    Yields:
        The temporary path, as a string; the block writes the file there.
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        _commit(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_folder(os.path.dirname(path))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Writes `text` to `path` atomically."""
    write_bytes(path, text.encode(encoding))


def write_with(path: str | os.PathLike, write: Callable[[Any], Any]) -> None:
    """Atomically writes `path` with ``write(binary_file)``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def save_model(model: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``model.save(path, **kwargs)``, atomically (a ``.keras`` file)."""
    with atomic_path(path) as tmp:
        model.save(tmp, **kwargs)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copies `source` to `target` atomically."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def temporary_folder(parent: str | os.PathLike, name: str = "export") -> str:
    """A fresh empty folder ``.<name>.tmp-*`` in `parent` (created if needed)."""
    parent = os.path.abspath(os.fspath(parent))
    os.makedirs(parent, exist_ok=True)
    return _create(parent, name, "", folder_too=True)


def publish_folder(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Renames the complete folder `source` to `target`, which must not exist.

    Raises:
        OSError: if `target` exists (and is not an empty folder).
    """
    source, target = os.fspath(source), os.path.abspath(os.fspath(target))
    _fsync_tree(source)
    if os.path.lexists(target) and not (
        os.path.isdir(target) and not os.listdir(target)
    ):
        raise FileExistsError(f"{target} exists")
    _commit(source, target)
    _fsync_folder(os.path.dirname(target))


def _exchange(a: str, b: str) -> bool:
    """Swaps two paths in one atomic step (Linux ``renameat2``).

    Returns:
        Whether the swap happened; False where the system cannot do it.
    """
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(
        at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange
    )
    return result == 0


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary folder to fill; it then replaces the folder `path`.

    An existing `path` is kept until the new folder is complete: on Linux the
    two are swapped in one atomic step; elsewhere the old folder is renamed
    aside first, so a kill between the two renames leaves both complete
    (the old one under a temporary name). The old folder is deleted last.

    Args:
        path: the destination folder (a SavedModel, a checkpoint).

    Yields:
        The temporary folder, as a string.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = _create(parent, name, "", folder_too=True)
    try:
        yield tmp
        _fsync_tree(tmp)
        if not os.path.lexists(path):
            _commit(tmp, path)
        elif _exchange(tmp, path):
            pass  # `tmp` now holds the old folder
        else:
            old = _create(parent, name, "", folder_too=True)
            os.rmdir(old)
            _commit(path, old)
            _commit(tmp, path)
            tmp = old
    except BaseException:
        _remove(tmp)
        raise
    _fsync_folder(parent)
    _remove(tmp)


def remove_stale_temporaries(folder: str | os.PathLike) -> list:
    """Removes what killed writers left in `folder`: ``.<name>.tmp-*`` entries.

    Returns:
        The paths removed.
    """
    removed = []
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        if name.startswith(".") and TMP_MARK in name:
            path = os.path.join(folder, name)
            _remove(path)
            removed.append(path)
    return removed
