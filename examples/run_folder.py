"""A training run's folder: its lock, its checkpoints and its history.

`examples.train` keeps everything a run needs to continue in its folder, so
that a process killed at any point loses at most the epoch it was in:

- `RunLock`: ``run.lock`` holds the PID of the process training there, and a
  second process is refused with a message naming it. The lock is an
  ``flock`` on that file, which the system drops when its holder dies, so a
  lock left by a killed run is taken over.
- `RunBackup`: after every epoch, the weights, the optimizer's state and the
  history so far go to a new folder ``backup/epoch-NNNNN``, which appears
  whole (`keras_sparsevd.files.atomic_folder`); the previous one is deleted
  only after it. A restart resumes from the newest complete one. Unlike
  Keras' `BackupAndRestore`, which rewrites one file in place and deletes
  it when training ends, a kill inside the write keeps the last complete
  epoch, and the backup stays until the run's results are written.
- `HistoryWriter`: ``history.csv``, the columns of Keras' `CSVLogger`,
  rewritten whole (atomically) after every epoch, and restored from the
  checkpoint on resume, so its rows always match the weights.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import keras

from keras_sparsevd import files

LOCK_FILE = "run.lock"
BACKUP_DIR = "backup"
_CHECKPOINT_PREFIX = "epoch-"
_WEIGHTS_FILE = "state.weights.h5"
_META_FILE = "meta.json"


class RunFolderError(Exception):
    """A run folder that cannot be used as asked (in use, another run's)."""


def _process_line(pid: int) -> str:
    """``"process 123 (python -m examples.train ...)"``, as far as known."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0"))
        command = command.strip()
    except OSError:
        command = ""
    return f"process {pid}" + (f" ({command})" if command else "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


class RunLock:
    """``run.lock`` in a run folder: one live process trains there at a time.

    Args:
        folder: the run folder (created if needed).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> int | None:
        """Takes the lock.

        Returns:
            The PID of a dead process whose lock was taken over, else None.

        Raises:
            RunFolderError: if a live process holds it, naming that process.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: a PID file and a liveness check
            return self._acquire_by_pid()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                raise RunFolderError(self._in_use(holder)) from None
            # The holder before us may have deleted the file as we opened
            # it: then our lock is on a file nobody else sees. Start over.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_pid(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return previous if previous and previous != os.getpid() else None

    def _acquire_by_pid(self) -> int | None:
        previous = None
        if self.path.exists():
            try:
                previous = int(self.path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                previous = None
            if previous and previous != os.getpid() and _pid_alive(previous):
                raise RunFolderError(self._in_use(previous))
        files.write_text(self.path, f"{os.getpid()}\n")
        self._fd = -1
        return previous

    def _in_use(self, pid: int | None) -> str:
        who = _process_line(pid) if pid else "another process"
        return (
            f"{self.folder} is in use by {who}, which is training there. Wait "
            "for it to finish, stop it, or give this run another --out."
        )

    def release(self) -> None:
        """Drops the lock and deletes ``run.lock``."""
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        return int(os.read(fd, 64).split()[0])
    except (ValueError, IndexError):
        return None


class HistoryWriter(keras.callbacks.Callback):
    """Writes ``history.csv`` after every epoch, whole and atomically.

    The same columns and values as Keras' `CSVLogger`: ``epoch``, then the
    epoch's logs in sorted order, fixed at the first epoch.

    Args:
        path: the CSV file.
        rows: rows of earlier epochs (a resumed run's), as CSV strings, the
            header first; written out at once.
    """

    def __init__(self, path: str | os.PathLike, rows: list | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.rows = list(rows or [])
        if self.rows:
            self._write()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        if not self.rows:
            self.rows.append(["epoch"] + sorted(logs))
        keys = self.rows[0][1:]
        self.rows.append([str(epoch)] + [_csv_value(logs.get(k, "NA")) for k in keys])
        self._write()

    def _write(self) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(self.rows)
        files.write_text(self.path, buffer.getvalue())


def _csv_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(float(value))
    except (TypeError, ValueError):
        return str(value)


class RunBackup(keras.callbacks.Callback):
    """Saves the run's state after every epoch; `restore` resumes from it.

    Args:
        folder: the backup folder (``<run>/backup``).
        signature: what identifies the run (its options); a checkpoint of
            another signature is refused on restore.
        history: the run's `HistoryWriter`, whose rows each checkpoint holds.
    """

    def __init__(
        self, folder: str | os.PathLike, signature: dict, history: HistoryWriter
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.signature = signature
        self.history = history

    def checkpoints(self) -> list:
        """``[(epochs done, folder)]`` of the complete checkpoints, oldest first."""
        found = []
        if not self.folder.is_dir():
            return found
        for path in self.folder.iterdir():
            if not path.name.startswith(_CHECKPOINT_PREFIX):
                continue
            try:
                found.append((int(path.name[len(_CHECKPOINT_PREFIX) :]), path))
            except ValueError:
                continue
        return sorted(found)

    def latest_meta(self) -> dict | None:
        """The newest checkpoint's metadata, or None without one."""
        checkpoints = self.checkpoints()
        if not checkpoints:
            return None
        return json.loads((checkpoints[-1][1] / _META_FILE).read_text())

    def restore(self, model: keras.Model) -> dict | None:
        """Loads the newest checkpoint into `model` (and its optimizer).

        Returns:
            Its metadata (``epoch``: epochs done, ``history``: CSV rows), or
            None when there is no checkpoint.
        """
        files.remove_stale_temporaries(self.folder)
        checkpoints = self.checkpoints()
        if not checkpoints:
            return None
        _, path = checkpoints[-1]
        meta = json.loads((path / _META_FILE).read_text())
        if model.optimizer is not None and not model.optimizer.built:
            # The optimizer's slots must exist to receive their values.
            model.optimizer.build(model.trainable_variables)
        model.load_weights(path / _WEIGHTS_FILE)
        for _, older_path in checkpoints[:-1]:
            shutil.rmtree(older_path, ignore_errors=True)
        return meta

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        target = self.folder / f"{_CHECKPOINT_PREFIX}{done:05d}"
        with files.atomic_folder(target) as tmp:
            self.model.save_weights(os.path.join(tmp, _WEIGHTS_FILE))
            meta = {
                "epoch": done,
                "signature": self.signature,
                "history": self.history.rows,
            }
            with open(os.path.join(tmp, _META_FILE), "w", encoding="utf-8") as f:
                json.dump(meta, f)
        # Only now that the new one is complete.
        for older, path in self.checkpoints():
            if older < done:
                shutil.rmtree(path, ignore_errors=True)

    def remove(self) -> None:
        """Deletes the backup (once the run's results are safely written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def differences(saved: dict, current: dict) -> list:
    """``--option saved -> current`` for each option that differs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            flag = "--" + key.replace("_", "-")
            out.append(f"{flag} {saved.get(key)!r} -> {current.get(key)!r}")
    return out


def warn(message: str) -> None:
    print(message, file=sys.stderr)
