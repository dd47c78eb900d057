"""``--distribute`` for the examples: data-parallel training on several devices.

- ``mirrored``: `tf.distribute.MirroredStrategy` over this machine's GPUs (or
  its CPU split into ``--cpu-devices`` logical devices), TensorFlow backend.
- ``data-parallel``: `keras.distribution.DataParallel` over all devices, JAX
  backend (``KERAS_BACKEND=jax``).

``--batch-size`` stays the global batch; Keras splits it between replicas and
counts the KL once per global batch; each replica draws its own noise.

Several machines (`tf.distribute.MultiWorkerMirroredStrategy`): Keras 3's
``fit`` fails under it with two or more workers (keras-team/keras#20585), so
``examples/multi_worker.py`` trains there with a custom loop.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import keras

CHOICES = ("none", "mirrored", "data-parallel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--distribute",
        choices=CHOICES,
        default="none",
        help="data-parallel engine (default: none, one device); for several "
        "machines see examples/multi_worker.py",
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="split the CPU into N logical devices (to try --distribute on a "
        "machine without GPUs)",
    )


def setup(args: argparse.Namespace) -> tuple:
    """Starts the engine; returns ``(scope, is_chief, description)``.

    Call it before anything else touches the backend's devices.
    """
    backend = keras.backend.backend()
    needs = {"mirrored": "tensorflow", "data-parallel": "jax"}
    if args.distribute in needs and backend != needs[args.distribute]:
        raise SystemExit(
            f"--distribute {args.distribute} needs the {needs[args.distribute]} "
            f"backend (KERAS_BACKEND={needs[args.distribute]}); this is {backend}."
        )
    if args.cpu_devices:
        _split_cpu(backend, args.cpu_devices)
    if args.distribute == "none":
        return contextlib.nullcontext, True, f"{backend}, one device"
    if args.distribute == "data-parallel":
        import jax

        keras.distribution.set_distribution(keras.distribution.DataParallel())
        return contextlib.nullcontext, True, f"jax DataParallel on {jax.devices()}"
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()
    return (
        strategy.scope,
        True,
        f"tensorflow {type(strategy).__name__}, "
        f"{strategy.num_replicas_in_sync} replicas",
    )


def _split_cpu(backend: str, count: int) -> None:
    if count < 1:
        raise SystemExit("--cpu-devices must be at least 1")
    if backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            raise SystemExit(
                "On JAX, set the CPU device count before Python starts: "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={count}"
            )
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count
    )
