"""Per-replica noise seeds under `tf.distribute` strategies.

Keras' `SeedGenerator` state is mirrored: under `MirroredStrategy` (and
`MultiWorkerMirroredStrategy`, `TPUStrategy`) every replica advances the same
state and so draws the same noise, which for Sparse VD halves the number of
independent noise samples per step on 2 replicas (and worse on more). The
layers draw through `replica_seed(generator)`, which offsets the seed by the
replica's id inside a replica context. Outside any strategy it returns the
generator itself: the single-device path is unchanged, bit for bit. JAX's
`keras.distribution.DataParallel` draws one global array, sharded, so its
shards already differ.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# Replica r draws from seed + r * _STRIDE: far from the stream of any other
# replica or layer seed over a run's number of steps.
_STRIDE = 1_000_003


class _ReplicaSeedGenerator(keras.random.SeedGenerator):
    """A replica's view of a `SeedGenerator`: its state, offset by the replica id.

    Not a new generator: no state of its own, nothing to save. Only ``next``
    is used by `keras.random`.
    """

    def __init__(self, generator: keras.random.SeedGenerator, replica_id: Any):
        # No super().__init__: that would create a state variable.
        self._generator = generator
        self._replica_id = replica_id

    def next(self, ordered: bool = True) -> Any:
        seed = self._generator.next(ordered=ordered)
        offset = ops.cast(self._replica_id, seed.dtype) * ops.cast(_STRIDE, seed.dtype)
        return seed + ops.stack([offset, ops.zeros_like(offset)])


def replica_seed(generator: keras.random.SeedGenerator) -> Any:
    """`generator`, or inside a tf.distribute replica context its replica's view."""
    if keras.backend.backend() != "tensorflow":
        return generator
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return generator
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return generator
    return _ReplicaSeedGenerator(generator, context.replica_id_in_sync_group)
