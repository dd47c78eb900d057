"""Uniform noise with a stream of its own per replica under `tf.distribute`.

Keras' `SeedGenerator` state is mirrored: under `MirroredStrategy` (and
`MultiWorkerMirroredStrategy`, `TPUStrategy`) every replica advances the same
state and so draws the same noise, which for Sparse VD halves the number of
independent noise samples per step on 2 replicas (and worse on more). The
layers draw through `uniform(shape, generator)`, which inside a replica
context offsets the generator's seed by the replica's id and draws with
TensorFlow's public stateless op. Outside any strategy it is
`keras.random.uniform`: the single-device path is unchanged, bit for bit.
JAX's `keras.distribution.DataParallel` draws one global array, sharded, so
its shards already differ.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# Replica r draws from seed + r * _STRIDE: far from the stream of any other
# replica or layer seed over a run's number of steps.
_STRIDE = 1_000_003


def _replica_id() -> Any:
    """The replica's id inside a multi-replica tf.distribute context, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context.replica_id_in_sync_group


def uniform(shape: tuple, generator: keras.random.SeedGenerator) -> Any:
    """Float32 uniform [0, 1) noise of `shape` drawn from `generator`.

    Args:
        shape: the output shape; dimensions may be symbolic.
        generator: the layer's `keras.random.SeedGenerator`; advanced once.

    Returns:
        A float32 tensor of `shape`; each tf.distribute replica gets its own.
    """
    replica = _replica_id()
    if replica is None:
        return keras.random.uniform(shape, dtype="float32", seed=generator)
    import tensorflow as tf

    seed = generator.next()
    offset = ops.cast(replica, seed.dtype) * ops.cast(_STRIDE, seed.dtype)
    seed = seed + ops.stack([offset, ops.zeros_like(offset)])
    # tf.random.stateless_* take int32/int64 seeds; the state may be uint32.
    seed = tf.cast(tf.math.floormod(tf.cast(seed, "int64"), tf.int32.max - 1), "int32")
    return tf.random.stateless_uniform(shape, seed=seed, dtype="float32")
