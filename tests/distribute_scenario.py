"""Data-parallel training on 2 CPU devices, run in a fresh process.

    python tests/distribute_scenario.py            # TensorFlow, MirroredStrategy
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/distribute_scenario.py        # JAX, DataParallel

Checks: replicas given identical inputs draw different noise; one step on 2
replicas equals one step on 1 device (the KL counted once); a short `fit`
with `KLScheduler` and `SparsityLogger`; a model saved under the strategy
loads and evaluates on one device. Prints ``DISTRIBUTE_OK <backend>``.
"""

import os
import sys
import tempfile

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sparsevd as ksvd  # noqa: E402

N = 32


def make_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            ksvd.DenseSVD(5, activation="relu", seed=1, name="fc1"),
            ksvd.DenseSVD(3, seed=2, name="fc2"),
        ]
    )


def data():
    rng = np.random.default_rng(0)
    return rng.random((N, 6)).astype("float32"), rng.integers(0, 3, N)


def compile_model(model):
    model.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def one_step(model, weights, x, y):
    """How far one SGD step on the whole batch moves fc1's log_sigma2.

    The KL weight is large, so that the KL term's gradient dominates: counted
    once per replica instead of once per global batch, the step would be
    twice as large. The rest (the noise's effect through the data term)
    differs between runs by well under 1%.
    """
    model.set_weights(weights)
    theta = keras.ops.convert_to_numpy(model.layers[0].kernel)
    start = np.log(theta**2 + 1e-8) - 4.0  # log alpha -4: inside the clip range
    model.layers[0].log_sigma2.assign(start)
    ksvd.set_kl_weight(model, 10.0)
    compile_model(model)
    model.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0)
    return keras.ops.convert_to_numpy(model.layers[0].log_sigma2) - start


def check_step_and_fit(scope, x, y):
    """One step and a short fit inside `scope`; the saved model and its output.

    `scope` enters the engine (a strategy's scope, or a JAX distribution set
    and reset); the reference step runs outside it, on one device.
    """
    reference = make_model()
    weights = reference.get_weights()
    single = one_step(reference, weights, x, y)
    with scope():
        replicated = one_step(make_model(), weights, x, y)
        model = make_model()
        compile_model(model)
        history = model.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[ksvd.KLScheduler(N, 0, 1), ksvd.SparsityLogger()],
        )
        expected = model.predict(x, verbose=0)
        path = os.path.join(tempfile.mkdtemp(), "m.keras")
        model.save(path)
    assert np.all(np.abs(single) > 0.1), single
    np.testing.assert_allclose(replicated, single, rtol=0.02)
    assert np.all(np.isfinite(history.history["loss"]))
    assert "sparsity/fc1" in history.history
    assert ksvd.get_kl_weight(model) == 1 / N
    return path, expected


def main_tensorflow():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    x, y = data()
    with strategy.scope():
        model = make_model()
    ksvd.set_kl_weight(model, 0.0)
    same = tf.constant(np.ones((4, 6), "float32"))

    @tf.function
    def noisy(inputs):
        return model(inputs, training=True)

    outputs = strategy.experimental_local_results(strategy.run(noisy, args=(same,)))
    first, second = (o.numpy() for o in outputs)
    assert first.std() > 0 and not np.allclose(first, second), (first, second)
    # The next step draws new noise on each replica.
    again = strategy.experimental_local_results(strategy.run(noisy, args=(same,)))
    assert not np.allclose(again[0].numpy(), first)

    path, expected = check_step_and_fit(strategy.scope, x, y)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)


def main_jax():
    import contextlib

    import jax

    devices = jax.devices()
    assert len(devices) == 2, devices
    x, y = data()
    distribution = keras.distribution.DataParallel(devices=devices)

    @contextlib.contextmanager
    def scope():
        keras.distribution.set_distribution(distribution)
        try:
            yield
        finally:
            keras.distribution.set_distribution(None)

    with scope():
        model = make_model()
        ksvd.set_kl_weight(model, 0.0)
        same = np.ones((8, 6), "float32")
        out = keras.ops.convert_to_numpy(model(same, training=True))
    assert out.std() > 0 and not np.allclose(out[:4], out[4:])

    path, expected = check_step_and_fit(scope, x, y)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)


if __name__ == "__main__":
    {"tensorflow": main_tensorflow, "jax": main_jax}[BACKEND]()
    print("DISTRIBUTE_OK", BACKEND)
    sys.exit(0)
