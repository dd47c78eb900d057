"""Runs `examples.train` and kills its own process (SIGKILL) at a chosen point.

    python tests/kill_scenario.py POINT -- TRAIN_ARGS...

POINT is one of
- ``none``: no kill;
- ``before:<name>:<n>`` / ``after:<name>:<n>``: right before (or after) the
  n-th rename that publishes a file or folder whose path contains <name>
  (`keras_sparsevd.files._commit`);
- ``inside:<name>:<n>``: while the n-th such file is written: its temporary
  copy is cut to half its bytes, then the process dies;
- ``time:<seconds>``: that long after training starts.

Used by tests/test_train_kills.py; a kill is a real SIGKILL, so nothing of
Python's (finally blocks, atexit) runs, as when a machine loses power.
"""

import os
import signal
import sys
import threading

import keras

from examples import train
from keras_sparsevd import files


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    point, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    kind, _, rest = point.partition(":")
    if kind in ("before", "after", "inside"):
        name, count = rest.rsplit(":", 1)
        seen = {"n": 0}

        def matches(path: str) -> bool:
            if name not in os.path.basename(path.rstrip(os.sep)):
                return False
            seen["n"] += 1
            return seen["n"] == int(count)

        if kind == "inside":
            fsync_file = files._fsync_file

            def cut_then_die(path: str) -> None:
                if matches(path):
                    size = os.path.getsize(path)
                    with open(path, "r+b") as f:
                        f.truncate(size // 2)
                    print(f"KILLED inside the write of {path}", flush=True)
                    die()
                fsync_file(path)

            files._fsync_file = cut_then_die
        else:
            commit = files._commit

            def commit_and_die(source: str, target: str) -> None:
                hit = matches(target)
                if hit and kind == "before":
                    print(f"KILLED before publishing {target}", flush=True)
                    die()
                commit(source, target)
                if hit:
                    print(f"KILLED after publishing {target}", flush=True)
                    die()

            files._commit = commit_and_die
    elif kind == "time":
        fit = keras.Model.fit

        def fit_then_die(self, *args, **kwargs):
            timer = threading.Timer(float(rest), die)
            timer.daemon = True
            timer.start()
            print(f"KILL in {float(rest):.2f} s", flush=True)
            return fit(self, *args, **kwargs)

        keras.Model.fit = fit_then_die
    elif kind != "none":
        raise SystemExit(f"unknown kill point {point!r}")
    train.main(argv)


if __name__ == "__main__":
    main()
