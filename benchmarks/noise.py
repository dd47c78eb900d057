"""The standard normal generators that the layers' noise can be drawn with.

`GENERATORS` names the layers' own generator (``box_muller_normal``, two
half-size uniform draws through the Box-Muller transform) and the ones it
was measured against; `layer_noise` makes the Sparse VD layers draw with one
of them for the duration of a block. ``python -m benchmarks.train_speed
--noise NAME`` uses them. The study that chose the layers' generator (the
cost of each with and without XLA, and a statistical check that each is
N(0, 1)) is ``python -m research.noise``; its conclusions are in
``research/README.md``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import keras
from keras import ops

from keras_sparsevd.layers import base as layer_base


def keras_normal(shape: tuple, seed: Any) -> Any:
    """What the layers drew before Box-Muller: ``keras.random.normal``."""
    return keras.random.normal(shape, dtype="float32", seed=seed)


# What the layers draw now (Box-Muller with two half-size uniform draws).
box_muller_normal = layer_base.standard_normal


def box_muller_poly(shape: tuple, seed: Any) -> Any:
    """`box_muller_normal` with polynomial cosine and sine instead of trig ops.

    XLA on CPU computes ``cos``/``sin`` about 7 times slower than TensorFlow's
    own kernels (scalar library calls), while ``log1p``, ``sqrt`` and
    polynomials vectorise. The angle ``2 pi u2`` is split into a quadrant
    (the two top bits of ``u2``) and an offset ``t`` in ``[-pi/4, pi/4)``,
    whose cosine and sine come from Taylor polynomials (error below 4e-7);
    rotating ``(cos t, sin t)`` by the quadrant gives a point uniform on the
    circle. A comparison point: faster under XLA, a little slower without.
    """
    size, u1, u2 = layer_base.half_size_uniforms(shape, seed)
    radius = ops.sqrt(-2.0 * ops.log1p(-u1))
    scaled = 4.0 * u2
    quadrant = ops.floor(scaled)
    t = (scaled - quadrant - 0.5) * (0.5 * math.pi)
    t2 = t * t
    sin_t = t * (1.0 + t2 * (-1.0 / 6 + t2 * (1.0 / 120 + t2 * (-1.0 / 5040))))
    cos_t = 1.0 + t2 * (-0.5 + t2 * (1.0 / 24 + t2 * (-1.0 / 720 + t2 / 40320)))
    # Rotation by quadrant * 90 degrees: (c, s), (-s, c), (-c, -s), (s, -c).
    swap = ops.logical_or(ops.equal(quadrant, 1.0), ops.equal(quadrant, 3.0))
    flip_x = ops.logical_or(ops.equal(quadrant, 1.0), ops.equal(quadrant, 2.0))
    x = ops.where(flip_x, -radius, radius) * ops.where(swap, sin_t, cos_t)
    y = ops.where(quadrant >= 2.0, -radius, radius) * ops.where(swap, cos_t, sin_t)
    return ops.reshape(ops.concatenate([x, y])[:size], shape)


def inverse_cdf_pair(shape: tuple, seed: Any) -> Any:
    """Two half-size uniform draws through the inverse normal CDF.

    ``sqrt(2) * erfinv(2 u - 1)``, with ``u`` moved to the middle of its
    2^-23 grid so that ``erfinv`` never sees -1. Fast under XLA (a vectorised
    polynomial), no faster than today without it. A comparison point.
    """
    size, u1, u2 = layer_base.half_size_uniforms(shape, seed)
    u = ops.concatenate([u1, u2])[:size] + 2.0**-24
    return ops.reshape(math.sqrt(2.0) * ops.erfinv(2.0 * u - 1.0), shape)


def inverse_cdf_single(shape: tuple, seed: Any) -> Any:
    """One full-size uniform draw through ``erfinv``: slow under XLA.

    Shows that the XLA cost comes from the lone draw, not from the transform.
    """
    u = keras.random.uniform(shape, dtype="float32", seed=seed) + 2.0**-24
    return math.sqrt(2.0) * ops.erfinv(2.0 * u - 1.0)


GENERATORS: dict[str, Callable[[tuple, Any], Any]] = {
    "keras.random.normal": keras_normal,
    "box_muller_normal": box_muller_normal,
    "box_muller_poly": box_muller_poly,
    "erfinv_pair": inverse_cdf_pair,
    "erfinv_single": inverse_cdf_single,
}


@contextlib.contextmanager
def layer_noise(generator: str) -> Iterator[None]:
    """Makes the Sparse VD layers draw their noise with `generator`.

    An experiment hook for the benchmarks, not a feature: while the context
    is open, ``keras_sparsevd.layers.base.standard_normal`` (the function the
    layers call) is replaced by ``GENERATORS[generator]``. Build the models
    and run their first (tracing) step inside the context; traced steps keep
    the generator they were traced with.

    Args:
        generator: a key of `GENERATORS`; ``"box_muller_normal"`` (the
            layers' own) changes nothing.
    """
    if generator not in GENERATORS:
        raise ValueError(f"Unknown generator {generator!r}; have {list(GENERATORS)}.")
    original = layer_base.standard_normal
    layer_base.standard_normal = GENERATORS[generator]
    try:
        yield
    finally:
        layer_base.standard_normal = original
