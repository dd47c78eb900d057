"""TFLite (LiteRT) export through Keras' own `model.export`."""

from __future__ import annotations

import os

import keras

from keras_sparsevd import files

# Newer Keras calls the format "litert"; a few releases called it "tflite".
_FORMAT_NAMES = ("litert", "tflite")


class TFLiteNotSupportedError(NotImplementedError):
    """Raised when this Keras/TensorFlow cannot export a TFLite file."""


def export_tflite(model: keras.Model, filepath: str | os.PathLike) -> None:
    """Writes `model` as a TFLite flatbuffer with ``model.export``.

    Export the stripped model (`strip_sparsevd`): the converter knows only
    Keras' own layers. Pruned weights are stored as zeros, so the file is as
    big as the dense kernels; gzip it, or use `save_sparse`, to ship it small.

    Args:
        model: a plain Keras model.
        filepath: the ``.tflite`` file to write.

    Raises:
        TFLiteNotSupportedError: if ``model.export`` of this Keras version
            knows no TFLite format, or the converter is not installed.
        ValueError: if `filepath` does not end in ``.tflite``.
    """
    filepath = os.fspath(filepath)
    if not filepath.endswith(".tflite"):
        raise ValueError(f"`filepath` must end in '.tflite', got {filepath!r}.")
    for name in _FORMAT_NAMES:
        try:
            with files.atomic_path(filepath) as tmp:
                model.export(tmp, format=name, verbose=False)
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
