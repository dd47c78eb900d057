"""Training and reporting shared by the recurrent examples.

`examples.lstm_mnist` and `examples.char_lm` run the same way: weights
optionally copied from an earlier run's model, a learning rate that may
decay linearly to 0, `model.fit` timed in wall and CPU seconds, a line of
JSON printed after every epoch, and a result written as JSON (atomically)
that ends with the command, backend, times and history. What each script
measures (test error, bits per character) and the rest of its result stay
in the script; this module carries only the steps they do alike, so that
a change to one of them (say, how files are written) reaches both.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np

from keras_sparsevd import files


def add_learning_rate_arguments(
    parser: argparse.ArgumentParser, default: float
) -> None:
    """Adds ``--lr`` and ``--lr-decay-from`` to `parser`.

    Args:
        parser: the script's parser; the two flags go where this is called,
            so ``--help`` lists them in the script's order.
        default: the default of ``--lr``.
    """
    parser.add_argument("--lr", type=float, default=default)
    parser.add_argument(
        "--lr-decay-from",
        type=int,
        default=None,
        help="epoch from which the learning rate decays linearly to 0",
    )


def learning_rate(
    lr: float,
    decay_from: int | None,
    epochs: int,
    train_examples: int,
    batch_size: int,
) -> Any:
    """The learning rate to give the optimizer.

    Args:
        lr: the initial learning rate.
        decay_from: the epoch from which it decays linearly to 0 by the end
            of training, or None to keep it constant.
        epochs: how many epochs the run trains.
        train_examples: training examples (sequences) per epoch.
        batch_size: examples per step.

    Returns:
        `lr` itself when `decay_from` is None, else a schedule.
    """
    if decay_from is None:
        return lr
    # The last batch of an epoch may be short but is still a step.
    steps = -(-train_examples // batch_size)
    # max(1, ...): decaying from the last epoch on must not divide by zero.
    decay_steps = max(1, (epochs - decay_from) * steps)
    decay = keras.optimizers.schedules.PolynomialDecay(lr, decay_steps, 0.0)
    return Delayed(decay, decay_from * steps, lr)


class Delayed(keras.optimizers.schedules.LearningRateSchedule):
    """`base` from step `start` on (counted from there), `constant` before.

    Args:
        base: the schedule to follow from `start` on; it sees step 0 at
            `start`, so its own decay length is what is left of training.
        start: the first step of `base`.
        constant: the learning rate before `start`.
    """

    def __init__(self, base: Any, start: int, constant: float) -> None:
        self.base, self.start, self.constant = base, start, constant

    def __call__(self, step: Any) -> Any:
        step = keras.ops.cast(step, "float32")
        later = self.base(keras.ops.maximum(step - self.start, 0.0))
        return keras.ops.where(step < self.start, self.constant, later)

    def get_config(self) -> dict:
        return {"start": self.start, "constant": self.constant}


def init_from(model: keras.Model, path: str) -> list:
    """Copies the weights of the ``.keras`` model at `path` into `model`.

    Variables are matched by path below the model (layer names are the
    same in every mode), so a Sparse VD model can start a structured one:
    its kernels, ``log_sigma2`` and biases are copied, the group variables
    keep their initial values. Noise seed states are not copied.

    Args:
        model: the built model to start.
        path: a ``.keras`` file written by the same example script.

    Returns:
        The paths of `model`'s variables left as initialised.
    """
    source = keras.saving.load_model(path, compile=False)

    def key(variable: Any, owner: keras.Model) -> str:
        # A built model's paths start with its name, a loaded one's do not.
        prefix = owner.name + "/"
        path = variable.path
        return path[len(prefix) :] if path.startswith(prefix) else path

    values = {key(v, source): v for v in source.variables}
    missing = []
    for variable in model.variables:
        found = values.get(key(variable, model))
        if found is None or tuple(found.shape) != tuple(variable.shape):
            missing.append(variable.path)
        else:
            variable.assign(keras.ops.convert_to_numpy(found))
    print(f"init from {path}; not found there: {missing}", flush=True)
    return missing


class EpochLog(keras.callbacks.Callback):
    """After every epoch, a row of figures: kept in `rows` and printed.

    A row is ``{"epoch", "loss", <evaluate's keys>, "seconds", <figures'
    keys>}``, in that order. ``seconds`` counts from the callback's
    creation, so it is the run's time so far, not the epoch's.

    Args:
        evaluate: the model's held-out figures, e.g. ``{"test_error": ...}``.
        figures: the Sparse VD figures to add, or None (dense models).
    """

    def __init__(
        self,
        evaluate: Callable[[keras.Model], dict],
        figures: Callable[[keras.Model], dict] | None = None,
    ) -> None:
        super().__init__()
        self.evaluate, self.figures, self.rows = evaluate, figures, []
        self.start = time.time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {
            "epoch": epoch + 1,
            "loss": float((logs or {}).get("loss", float("nan"))),
            **self.evaluate(self.model),
            # Taken after evaluate: the time so far includes the evaluations.
            "seconds": time.time() - self.start,
        }
        if self.figures is not None:
            row.update(self.figures(self.model))
        self.rows.append(row)
        # Flushed: a long run's log shows each epoch as it ends.
        print(json.dumps(row), flush=True)


def fit_timed(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    epochs: int,
    callbacks: list,
) -> tuple[float, float]:
    """Trains `model` with `model.fit` (one line per epoch).

    Args:
        model: the compiled model.
        x: training inputs.
        y: training targets.
        batch_size: examples per step.
        epochs: epochs to train.
        callbacks: the callbacks of the run.

    Returns:
        ``(wall_seconds, cpu_seconds)`` the training took; CPU time is this
        process's, so on a shared machine it tells the run's own cost.
    """
    wall, cpu = time.time(), time.process_time()
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        verbose=2,
        callbacks=callbacks,
    )
    return time.time() - wall, time.process_time() - cpu


def command_line(module: str, argv: list | None) -> str:
    """The command that reruns this run, as written into its result.

    Args:
        module: the script's module, e.g. ``"examples.char_lm"``.
        argv: the arguments `main` was given, or None for ``sys.argv``.

    Returns:
        ``python -m <module> <arguments>``, quoted for a POSIX shell.
    """
    return f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)


def run_record(
    module: str, argv: list | None, wall: float, cpu: float, history: list
) -> dict:
    """How a run was made and what it cost: the last keys of its result.

    Args:
        module: the script's module, e.g. ``"examples.char_lm"``.
        argv: the arguments `main` was given, or None for ``sys.argv``.
        wall: wall-clock seconds of training (`fit_timed`).
        cpu: CPU seconds of training (`fit_timed`).
        history: the rows of the run's `EpochLog`.

    Returns:
        ``{"command", "backend", "wall_seconds", "cpu_seconds", "history"}``,
        in that order: spread last into the result, so both scripts' files
        end the same way.
    """
    return {
        "command": command_line(module, argv),
        "backend": keras.backend.backend(),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "history": history,
    }


def write_result(path: str, result: dict) -> None:
    """Writes `result` as indented JSON to `path`, atomically.

    Args:
        path: the ``.json`` file.
        result: the run's result.
    """
    # Serialised before the file is opened: a value JSON cannot hold fails
    # here and leaves no temporary file behind.
    text = json.dumps(result, indent=2) + "\n"
    files.write_text(path, text)


def print_summary(result: dict, left_out: Iterable[str]) -> None:
    """Prints `result` as one line of JSON, without its long entries.

    Args:
        result: the run's result.
        left_out: keys too long for a line (per-epoch history, file lists,
            reports); they stay in the written file.
    """
    left_out = set(left_out)
    print(json.dumps({k: v for k, v in result.items() if k not in left_out}))
