"""Keras' own quantization (`Model.quantize`) after Sparse VD, zeros kept."""

from __future__ import annotations

import keras
import numpy as np

from keras_sparsevd import _keras_compat as compat
from keras_sparsevd.export.strip import compact_model, strip_sparsevd
from keras_sparsevd.model_helpers import svd_layers

QUANTIZE_MODES = ("int8", "int4")


class PrunedWeightsLostError(ValueError):
    """Raised when quantization turned a pruned (zero) weight into a non-zero."""


def quantize_model(
    model: keras.Model, mode: str = "int8", compact: bool = False
) -> keras.Model:
    """A plain copy of `model` quantized by Keras' ``Model.quantize(mode)``.

    A Sparse VD model is first stripped (`strip_sparsevd`), so the pruned
    weights are exact zeros; Keras' int8 and int4 modes scale each output
    channel by its largest magnitude (abs-max), under which a zero stays
    exactly 0, and this function checks that it did for every layer Keras
    quantized. int4 is asymmetric (a zero point per channel, or per block of
    128 input rows): there a pruned weight must get its zero point's code,
    which it does since 0 is on the grid. Keras 3 quantizes ``Dense``,
    ``EinsumDense`` and ``Embedding`` layers (int8: weights and
    activations, W8A8 dynamic; int4: weights only); convolutions stay
    float32. The quantized
    model saves as ``.keras`` and reloads with `keras.models.load_model`.

    Args:
        model: a built Sparse VD or plain Keras model; it is not modified.
        mode: ``"int8"`` or ``"int4"``.
        compact: remove dead units and filters first (`compact_model`).

    Returns:
        A new, uncompiled, quantized plain Keras model.

    Raises:
        ValueError: if `mode` is not ``"int8"``/``"int4"``, or `model` holds
            no layer Keras can quantize.
        TypeError: if `compact` is not a bool.
        PrunedWeightsLostError: (a ValueError) if a pruned weight came out of
            quantization non-zero.

    Example:

    >>> q = quantize_model(svd_model, "int8")  # doctest: +SKIP
    >>> q.save("lenet300-int8.keras")  # doctest: +SKIP
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"`mode` must be one of {QUANTIZE_MODES}, got {mode!r}.")
    if not isinstance(compact, bool):
        raise TypeError(f"`compact` must be a bool, got {compact!r}.")
    if compact:
        plain = compact_model(model)
    elif svd_layers(model):
        plain = strip_sparsevd(model)
    else:
        # A copy, so that the caller's model stays float.
        plain = keras.models.clone_model(model)
        plain.set_weights(model.get_weights())
    zeros = {
        id(layer): keras.ops.convert_to_numpy(layer.kernel) == 0
        for layer in compat.all_layers(plain)
        if type(layer) in _QUANTIZABLE
    }
    if not zeros:
        raise ValueError(
            f"`model` {model.name!r} has no layer that Keras quantizes "
            "(Dense, EinsumDense, Embedding)."
        )
    plain.quantize(mode)
    for layer in compat.all_layers(plain):
        if id(layer) in zeros and getattr(layer, "quantization_mode", None) == mode:
            codes = keras.ops.convert_to_numpy(layer.kernel).astype(np.int32)
            zero_point = getattr(layer, "kernel_zero", None)
            if zero_point is not None:
                # int4 is asymmetric: a weight is 0 where its code is the zero point.
                zero = keras.ops.convert_to_numpy(zero_point).astype(np.int32)
                groups = getattr(layer, "g_idx", None)
                if zero.shape[0] not in (1, codes.shape[0]) and groups is not None:
                    # Grouped int4: one zero point per block of input rows.
                    rows = keras.ops.convert_to_numpy(groups).astype(np.int64)
                    zero = zero[rows]
                codes = codes - zero
            lost = int(np.count_nonzero(codes[zeros[id(layer)]]))
            if lost:
                raise PrunedWeightsLostError(
                    f"{mode} quantization of layer {layer.name!r} made {lost} "
                    "pruned weights non-zero."
                )
    return plain


_QUANTIZABLE = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)
