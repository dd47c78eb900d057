"""TFLite (LiteRT) export through Keras' own `model.export`."""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from keras_sparsevd import files

# Newer Keras calls the format "litert"; a few releases called it "tflite".
_FORMAT_NAMES = ("litert", "tflite")


class TFLiteNotSupportedError(NotImplementedError):
    """Raised when this Keras/TensorFlow cannot export a TFLite file."""


TFLITE_QUANTIZE = (None, "dynamic", "int8")


def export_tflite(
    model: keras.Model,
    filepath: str | os.PathLike,
    *,
    quantize: str | None = None,
    representative_data: Any = None,
    sparsity: bool = False,
    representative_samples: int = 200,
) -> None:
    """Writes `model` as a TFLite (LiteRT) flatbuffer with ``model.export``.

    Export the stripped model (`strip_sparsevd`): the converter knows only
    Keras' own layers. Pruned weights are stored as zeros, so by default the
    file is as big as the dense kernels; `sparsity` makes the converter store
    mostly-zero weights in a sparse format, and `quantize` stores weights as
    int8.

    Args:
        model: a plain Keras model.
        filepath: the ``.tflite`` file to write.
        quantize: None (float32), ``"dynamic"`` (int8 weights, float
            activations: ``tf.lite.Optimize.DEFAULT`` without data) or
            ``"int8"`` (full integer: int8 weights and activations, calibrated
            on `representative_data`; the model's input and output stay
            float32, converted at its edges).
        representative_data: with ``quantize="int8"``: an array of model
            inputs (a few hundred training images) whose activation ranges
            set the int8 scales.
        sparsity: add ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``: weights
            that are mostly zeros are stored (and, for fully connected
            layers, run) in a sparse format. Zeros stay zeros under every
            quantization here (symmetric int8 weights).
        representative_samples: how many of `representative_data`'s rows
            calibrate (one at a time, the converter's way).

    Raises:
        TFLiteNotSupportedError: if ``model.export`` of this Keras version
            knows no TFLite format, or the converter is not installed.
        ValueError: if `filepath` does not end in ``.tflite``, `quantize` is
            unknown, or ``quantize="int8"`` comes without
            `representative_data`.
        TypeError: if `sparsity` is not a bool.

    Example:

    >>> export_tflite(strip_sparsevd(model), "lenet5-int8.tflite",
    ...               quantize="int8", representative_data=x_train[:200],
    ...               sparsity=True)  # doctest: +SKIP
    """
    filepath = os.fspath(filepath)
    if not filepath.endswith(".tflite"):
        raise ValueError(f"`filepath` must end in '.tflite', got {filepath!r}.")
    if quantize not in TFLITE_QUANTIZE:
        raise ValueError(
            f"`quantize` must be one of {TFLITE_QUANTIZE}, got {quantize!r}."
        )
    if not isinstance(sparsity, bool):
        raise TypeError(f"`sparsity` must be a bool, got {sparsity!r}.")
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "`representative_data` is required with quantize='int8': full-integer "
            "quantization calibrates the activations' ranges on it."
        )
    if representative_data is not None and quantize != "int8":
        raise ValueError("`representative_data` applies to quantize='int8' only.")
    if not (isinstance(representative_samples, int) and representative_samples > 0):
        raise ValueError(
            "`representative_samples` must be a positive integer, got "
            f"{representative_samples!r}."
        )
    options = _converter_options(
        quantize, representative_data, sparsity, representative_samples
    )
    for name in _FORMAT_NAMES:
        try:
            with files.atomic_path(filepath) as tmp:
                model.export(tmp, format=name, verbose=False, **options)
            return
        except ValueError as error:
            # Only "Unrecognized format=..." means: try the other name.
            if "unrecognized format" not in str(error).lower():
                raise
        except ImportError as error:
            raise TFLiteNotSupportedError(
                f"TFLite export needs a converter that is not installed ({error})."
            ) from error
    raise TFLiteNotSupportedError(
        f"Keras {keras.__version__} cannot export TFLite: `model.export` knows "
        f"none of the formats {_FORMAT_NAMES}. Upgrade Keras, or convert the "
        "exported SavedModel with tf.lite.TFLiteConverter.from_saved_model."
    )


def _converter_options(
    quantize: str | None, data: Any, sparsity: bool, samples: int
) -> dict:
    """`tf.lite.TFLiteConverter` attributes, which Keras' exporter sets."""
    if quantize is None and not sparsity:
        return {}
    import tensorflow as tf

    optimizations = []
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    options: dict = {"optimizations": optimizations}
    if quantize == "int8":
        rows = np.asarray(data, dtype="float32")[:samples]

        def representative_dataset() -> Any:
            for row in rows:
                yield [row[None]]

        options["representative_dataset"] = representative_dataset
        options["target_spec"] = {
            "supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        }
    return options
