"""Checks of the constructor arguments that the Sparse VD layers add.

Each check runs at construction and raises a `TypeError` (wrong kind of
value) or `ValueError` (right kind, wrong value) that names the argument and
says what to pass instead, rather than letting a bad value turn into a
silent wrong model or an error deep inside a backend op.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
import numpy as np

from keras_sparsevd.kl import LOG_ALPHA_MAX, LOG_ALPHA_MIN

#: Largest accepted seed: every backend's seed dtype holds it, and the seeds
#: derived from it (one per attention projection) as well.
MAX_SEED = 2**31 - 1
# Shape the initializer is tried on at construction.
_PROBE_SHAPE = (3, 2)


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type.

    A `TypeError`, and a `ValueError` too, which is what earlier versions
    raised for these arguments: ``except ValueError`` keeps working.
    """


def check_bool(name: str, value: Any) -> bool:
    """`value` as a bool, or an `ArgumentTypeError` naming argument `name`.

    Only True, False and NumPy booleans pass: ``bool("no")`` is True, which
    is never what a caller meant.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ArgumentTypeError(f"`{name}` must be True or False, got {value!r}.")


def _is_real_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_threshold(threshold: Any) -> float:
    """`threshold` as a float in the log-alpha clip range, or an error.

    Raises:
        ArgumentTypeError: if `threshold` is not a real number (True, a
            string).
        ValueError: if it is not finite or lies outside [-8, 8], where every
            weight would be kept or pruned whatever was learnt.
    """
    if not _is_real_number(threshold):
        raise ArgumentTypeError(
            f"`threshold` must be a number (the paper uses 3.0), got {threshold!r}."
        )
    value = float(threshold)
    if not math.isfinite(value):
        raise ValueError(
            f"`threshold` must be a finite number (the paper uses 3.0), got {value}."
        )
    if not LOG_ALPHA_MIN <= value <= LOG_ALPHA_MAX:
        raise ValueError(
            f"`threshold` must lie in [{LOG_ALPHA_MIN:g}, {LOG_ALPHA_MAX:g}], the "
            f"range log alpha is clipped to, got {value}: beyond it every weight "
            "is kept (or pruned) whatever was learnt. The paper uses 3.0."
        )
    return value


def check_seed(seed: Any) -> int | None:
    """`seed` as an int in [0, 2**31 - 1] or None, or an error naming it."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise ArgumentTypeError(f"`seed` must be an integer or None, got {seed!r}.")
    value = int(seed)
    if not 0 <= value <= MAX_SEED:
        raise ValueError(
            f"`seed` must lie in [0, {MAX_SEED}] (2**31 - 1), got {value}: larger "
            "seeds overflow the backends' seed type. Reduce it, e.g. "
            f"`seed % {MAX_SEED + 1}`."
        )
    return value


def get_log_sigma2_initializer(value: Any) -> keras.initializers.Initializer:
    """An initializer from None (constant -10), a number, or a Keras identifier.

    A number may be a NumPy scalar (``np.log(np.median(theta**2)) - 4`` is
    one). A callable that is not one of Keras' own initializers is tried
    once on a small shape, so that one returning the wrong shape is refused
    here rather than inside the first training step.

    Raises:
        ArgumentTypeError: if `value` is none of those.
        ValueError: for a non-finite number, or an initializer that fails or
            returns an array of another shape than it was asked for.
    """
    if value is None:
        value = -10.0
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if _is_real_number(value):
        if not math.isfinite(float(value)):
            raise ValueError(
                f"`log_sigma2_initializer` must be finite, got {value}: -10 is the "
                "paper's value for training from scratch."
            )
        return keras.initializers.Constant(float(value))
    if isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(
            "`log_sigma2_initializer` must be None, a number (a constant) or a "
            f"Keras initializer, got {value!r}."
        )
    try:
        initializer = keras.initializers.get(value)
    except (ValueError, TypeError):
        raise (ValueError if isinstance(value, str) else ArgumentTypeError)(
            "`log_sigma2_initializer` must be None, a number (a constant) or a "
            f"Keras initializer, got {value!r}."
        ) from None
    if not _is_keras_builtin(initializer):
        _check_initializer_shape(initializer)
    return initializer


def _is_keras_builtin(initializer: Any) -> bool:
    return type(initializer).__module__.startswith("keras.")


def _check_initializer_shape(initializer: Any) -> None:
    try:
        probe = initializer(_PROBE_SHAPE, dtype="float32")
        shape = tuple(keras.ops.shape(probe))
    except Exception as error:  # noqa: BLE001 - whatever it raises, name it
        raise ValueError(
            f"`log_sigma2_initializer` {initializer!r} failed when called as "
            f"initializer(shape={_PROBE_SHAPE}, dtype='float32'): "
            f"{type(error).__name__}: {error}. It must take (shape, dtype) and "
            "return an array of that shape."
        ) from error
    if shape != _PROBE_SHAPE:
        raise ValueError(
            f"`log_sigma2_initializer` {initializer!r} returned shape {shape} when "
            f"asked for {_PROBE_SHAPE}: it must return an array of the shape it "
            "is given (for a constant, pass the number itself)."
        )


def check_group_channels(value: Any) -> int | None:
    """`value` if it is None or a positive integer, else a ValueError."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            "`group_channels` must be None or a positive integer (the number of "
            f"channels before `Flatten`), got {value!r}."
        )
    if value < 1:
        raise ValueError(f"`group_channels` must be a positive integer, got {value!r}.")
    return int(value)


_DATA_FORMATS = ("channels_last", "channels_first")


def check_group_data_format(value: Any) -> str:
    """`value` if it is ``"channels_last"`` or ``"channels_first"``."""
    if value not in _DATA_FORMATS:
        raise ValueError(
            f"`group_data_format` must be one of {_DATA_FORMATS}, got {value!r}."
        )
    return value
