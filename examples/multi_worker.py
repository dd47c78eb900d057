"""Sparse VD on two MultiWorkerMirroredStrategy workers on this machine.

    python -m examples.multi_worker

Starts two worker processes that find each other on 127.0.0.1 through
``TF_CONFIG`` (what a cluster of machines does with their host names) and
trains LeNet-300-100 for ``--epochs`` (2), then prints each worker's output
and the wall time. On real machines, start one worker per machine with
``python -m examples.multi_worker --worker`` and that machine's ``TF_CONFIG``.

The workers use a custom training loop, not ``model.fit``: in Keras 3 (3.15
here) ``fit`` under a MultiWorkerMirroredStrategy of two or more workers
fails inside Keras for any model ("Attempt to convert a value (PerReplica
...)", keras-team/keras#20585; reproduced here with a plain Dense model).
The loop shows what the layers need there: the KL weight set per epoch by
`KLScheduler.rw` (as in `fit`), the KL term counted once per global batch
(each replica adds ``sum(model.losses) / replicas``), and each replica's
own noise, which the layers draw by themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

WORKERS = 2


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker(args: argparse.Namespace) -> None:
    """One worker: builds, trains and evaluates LeNet-300-100 with the others."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_sparsevd as ksvd
    from examples import data as data_lib
    from examples import models as models_lib

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    replicas = strategy.num_replicas_in_sync
    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test) = data_lib.load("mnist", args.data_dir)
    if args.train_limit:
        x, y = x[: args.train_limit], y[: args.train_limit]
    with strategy.scope():
        model = models_lib.lenet300(sparse=True, mean_image=x.mean(axis=0))
        optimizer = keras.optimizers.Adam(args.lr)
    scheduler = ksvd.KLScheduler(num_train_examples=len(x))
    per_example = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="none"
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
        .shuffle(len(x), seed=args.seed)
        .batch(args.batch_size, drop_remainder=True)
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    batches = strategy.experimental_distribute_dataset(dataset.with_options(options))

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            data_term = tf.nn.compute_average_loss(
                per_example(labels, logits), global_batch_size=args.batch_size
            )
            # Every replica computes the whole KL: count it once in all.
            kl_term = tf.add_n(model.losses) / replicas
            loss = data_term + kl_term
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def train_step(batch):
        losses = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    for epoch in range(args.epochs):
        ksvd.set_kl_weight(model, scheduler.rw(epoch) / len(x))
        started = time.perf_counter()
        total, steps = 0.0, 0
        for batch in batches:
            total += float(train_step(batch))
            steps += 1
        seconds = time.perf_counter() - started
        error = 100.0 * float(
            np.mean(model.predict(x_test, verbose=0).argmax(-1) != y_test)
        )
        report = ksvd.sparsity_report(model)
        print(
            f"epoch {epoch + 1}/{args.epochs}: {steps} steps of {args.batch_size} "
            f"on {replicas} replicas, {seconds:.1f} s, loss {total / steps:.4f}, "
            f"test error {error:.2f}%, compression {report.compression:.1f}x",
            flush=True,
        )


def launch(args: argparse.Namespace) -> int:
    workers = [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]
    command = [sys.executable, "-m", "examples.multi_worker", "--worker"]
    command += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.train_limit:
        command += ["--train-limit", str(args.train_limit)]
    started = time.perf_counter()
    processes = []
    for index in range(WORKERS):
        task = {"type": "worker", "index": index}
        config = {"cluster": {"worker": workers}, "task": task}
        env = dict(os.environ, TF_CONFIG=json.dumps(config), TF_CPP_MIN_LOG_LEVEL="3")
        processes.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    status = 0
    for index, process in enumerate(processes):
        output, _ = process.communicate(timeout=args.timeout)
        noise = ("WARNING", "I0000", "E0000", "W0000")
        lines = [line for line in output.splitlines() if not line.startswith(noise)]
        print(f"--- worker {index} (exit status {process.returncode})")
        print("\n".join(lines[-20:]))
        status = status or process.returncode
    print(f"wall time, both workers: {time.perf_counter() - started:.1f} s")
    return status


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.multi_worker")
    p.add_argument("--worker", action="store_true", help="run as one worker")
    p.add_argument(
        "--data-dir",
        default=None,
        help="MNIST folder (default: the shipped examples/mnist)",
    )
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100, help="global batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--timeout", type=int, default=1800)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
