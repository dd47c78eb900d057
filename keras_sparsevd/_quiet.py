"""TensorFlow's start-up notices silenced for this package's own programs.

A TensorFlow process prints, before it does anything, a page of start-up
notices that are not addressed to the user of a program: the oneDNN notice,
"Could not find cuda drivers" and an error-level "failed call to cuInit" on a
machine without an NVIDIA GPU, the CPU-instruction notice, absl's "All log
messages before absl::InitializeLog()", and later "Compiled cluster using
XLA!". Since TensorFlow 2.21 (absl logging) ``TF_CPP_MIN_LOG_LEVEL`` alone no
longer hides the first of them.

`quiet_if_program` is called first thing by the packages whose modules are
run with ``python -m``: ``keras_sparsevd`` (``python -m
keras_sparsevd.export``), ``examples``, ``benchmarks`` and ``research``.
Python imports a package before it runs the module asked for, so this runs
before anything imports TensorFlow. It acts only when

- the process was started as ``python -m <one of those packages>.<module>``
  (a plain ``import keras_sparsevd`` in a user's program changes nothing), and
- the user has not set ``TF_CPP_MIN_LOG_LEVEL`` (set it, to ``0`` for
  everything, and nothing here touches the output).

It then sets ``TF_CPP_MIN_LOG_LEVEL=2`` (TensorFlow's C++ info and warning
lines off, errors kept) and has TensorFlow's first import, whoever makes it
and on any backend, run with the standard error stream captured (together
with a first device query, which is when the CUDA platform starts): the
captured lines are then written back, all but the notices in `NOTICES`
(and, only where the machine has no NVIDIA device, the two lines in
`NO_GPU_NOTICES`). Any other line, an error or a Python warning, comes
through unchanged, in order; an exception during the import is raised after
its output is written back. A hard crash inside the import (a segmentation
fault) would lose what it printed: run with ``TF_CPP_MIN_LOG_LEVEL=0`` to see
everything.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator

# The packages whose modules are programs (``python -m PACKAGE.module``).
PROGRAM_PACKAGES = ("keras_sparsevd", "examples", "benchmarks", "research")

# Start-up notices dropped on every machine.
NOTICES = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    re.compile(r"^I\d{4} .*\] oneDNN custom operations are on\."),
    re.compile(r"^I\d{4} .*cpu_feature_guard\.cc"),
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow "),
)
# Dropped only where the machine has no NVIDIA device (on a GPU machine they
# say that something is wrong with its driver).
NO_GPU_NOTICES = (
    re.compile(r"^I\d{4} .*\] Could not find cuda drivers on your machine"),
    re.compile(r"^E\d{4} .*\] failed call to cuInit: "),
)


def program_module(orig_argv: list[str] | None = None) -> str | None:
    """The module this process runs with ``python -m MODULE``, else None.

    Reads the interpreter's own command line (``sys.orig_argv``), skipping
    its options (``-u``, ``-W arg``, ``-X arg``, ``-Im``, ...).
    """
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-", "--") or not arg.startswith("-"):
            return None  # a script, or stdin: no module is run
        if arg.startswith("--"):
            i += 1
            continue
        for j, flag in enumerate(arg[1:], start=1):
            if flag in "cmWX":  # options that take a value
                value = arg[j + 1 :] or (argv[i + 1] if i + 1 < len(argv) else None)
                if flag == "m":
                    return value
                if flag == "c":
                    return None
                i += 1 if arg[j + 1 :] else 2
                break
        else:
            i += 1
    return None


def has_nvidia_device() -> bool:
    """Whether the machine shows an NVIDIA device (``/dev/nvidia0``, ...)."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/proc/driver/nvidia")


def is_notice(line: str, gpu: bool | None = None) -> bool:
    """Whether `line` is a start-up notice that a quiet program leaves out."""
    if any(p.search(line) for p in NOTICES):
        return True
    if gpu is None:
        gpu = has_nvidia_device()
    return not gpu and any(p.search(line) for p in NO_GPU_NOTICES)


@contextlib.contextmanager
def filtered_stderr(drop: Callable[[str], bool]) -> Iterator[None]:
    """Captures file descriptor 2 and writes back the lines `drop` refuses.

    Catches what C++ libraries write as well as ``sys.stderr``. The captured
    lines are written back when the block ends, normally or by an exception.
    """
    with contextlib.suppress(AttributeError, ValueError):
        sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(AttributeError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                capture.seek(0)
                text = capture.read().decode("utf-8", errors="replace")
                kept = [x for x in text.splitlines(keepends=True) if not drop(x)]
                if kept:
                    os.write(2, "".join(kept).encode("utf-8"))
    finally:
        os.close(saved)


class QuietImport(importlib.abc.MetaPathFinder):
    """Wraps the first import of one module in `filtered_stderr`.

    Sits first in ``sys.meta_path`` and finds nothing itself: asked for
    `name`, it steps out, lets the other finders find the module, and has
    the module's loader run it with the standard error stream filtered by
    `drop`; `after(module)`, if given, runs inside the same filter.
    """

    def __init__(
        self,
        name: str,
        drop: Callable[[str], bool],
        after: Callable[[object], None] | None = None,
    ) -> None:
        self.name, self.drop, self.after = name, drop, after

    def find_spec(self, name: str, path: object = None, target: object = None):
        if name != self.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once only
        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module, drop, after = loader.exec_module, self.drop, self.after

        def quiet_exec_module(module: object) -> None:
            del loader.exec_module  # the loader's own method again
            with filtered_stderr(drop):
                exec_module(module)
                if after is not None:
                    after(module)

        loader.exec_module = quiet_exec_module
        return spec


def _list_devices(tf: object) -> None:
    # The CUDA platform starts, and says "cuInit", at the first device query:
    # made here, inside the filter. Were it to fail, the program's own query
    # would fail the same way, unfiltered.
    with contextlib.suppress(Exception):
        tf.config.list_physical_devices()


def quiet_tensorflow(environ: dict | None = None) -> bool:
    """Silences TensorFlow's start-up notices unless the user chose a level.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` and, unless TensorFlow is imported
    already, has its first import (by Keras, on the TensorFlow backend, or
    by the program later, on the others) run through `filtered_stderr`.

    Returns whether it acted: False when ``TF_CPP_MIN_LOG_LEVEL`` was set.
    """
    environ = os.environ if environ is None else environ
    if "TF_CPP_MIN_LOG_LEVEL" in environ:
        return False
    environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if "tensorflow" in sys.modules or any(
        isinstance(f, QuietImport) and f.name == "tensorflow" for f in sys.meta_path
    ):
        return True
    gpu = has_nvidia_device()
    sys.meta_path.insert(
        0, QuietImport("tensorflow", lambda line: is_notice(line, gpu), _list_devices)
    )
    return True


def quiet_if_program(package: str | None = None) -> bool:
    """`quiet_tensorflow` when this process runs ``python -m`` on a program of ours.

    Args:
        package: only when the module run is in this package (by default,
            any of `PROGRAM_PACKAGES`).
    """
    module = program_module()
    if module is None:
        return False
    top = module.split(".")[0]
    if top not in ((package,) if package else PROGRAM_PACKAGES):
        return False
    return quiet_tensorflow()
