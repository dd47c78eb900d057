"""The issue's "done when" scenario, run on whichever backend Keras has.

A trained functional model with a nested Sequential and Conv2D,
DepthwiseConv2D, Dense, EinsumDense, Embedding and MultiHeadAttention
layers: sparsified in one call, predicts the same, trains with
`KLScheduler` and `SparsityLogger`, strips back to its own layer classes.
Imported by tests/test_sparsify.py (TensorFlow, in-process) and run as a
script in a fresh process for JAX (``python tests/sparsify_scenario.py``).
"""

import os
import tempfile

import keras
import numpy as np

import keras_sparsevd as ksvd


def mixed_model() -> keras.Model:
    """Images and tokens in, 3 classes out; every convertible layer type."""
    image = keras.Input((8, 8, 1), name="image")
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    h = keras.layers.DepthwiseConv2D(3, name="depthwise")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(8, activation="relu", name="image_dense")(h)
    e = keras.layers.Embedding(20, 8, name="embedding")(tokens)
    e = keras.layers.MultiHeadAttention(2, 4, name="attention")(e, e)
    e = keras.layers.EinsumDense("btd,de->bte", (6, 8), bias_axes="e", name="proj")(e)
    e = keras.layers.GlobalAveragePooling1D(name="pool")(e)
    head = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(8, activation="relu", name="head_dense"),
            keras.layers.Dense(3, name="head_out"),
        ],
        name="head",
    )
    out = head(keras.layers.Concatenate(name="concat")([h, e]))
    return keras.Model([image, tokens], out, name="mixed")


def data(n: int = 64, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    x = {
        "image": rng.random((n, 8, 8, 1)).astype("float32"),
        "tokens": rng.integers(0, 20, (n, 6)).astype("int32"),
    }
    return x, rng.integers(0, 3, n)


def graph_classes(model: keras.Model) -> list:
    """Class names of the layers, nested Sequential's included, in order."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Sequential):
            names += graph_classes(layer)
        else:
            names.append(type(layer).__name__)
    return names


def run() -> dict:
    keras.utils.set_random_seed(0)
    x, y = data()
    dense = mixed_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dense.compile("adam", loss)
    dense.fit(x, y, batch_size=16, epochs=1, verbose=0)
    dense_weights = [w.copy() for w in dense.get_weights()]
    expected = dense.predict(x, verbose=0)

    sparse = ksvd.sparsify(dense, log_sigma2_initializer=-30.0)
    # The input model is untouched.
    assert all(np.array_equal(a, b) for a, b in zip(dense_weights, dense.get_weights()))
    assert "DenseSVD" not in graph_classes(dense)
    classes = graph_classes(sparse)
    for name in (
        "Conv2DSVD",
        "DepthwiseConv2DSVD",
        "DenseSVD",
        "EinsumDenseSVD",
        "EmbeddingSVD",
        "MultiHeadAttentionSVD",
    ):
        assert name in classes, classes
    np.testing.assert_allclose(sparse.predict(x, verbose=0), expected, atol=1e-5)

    sparse.compile("adam", loss)
    history = sparse.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        verbose=0,
        callbacks=[ksvd.KLScheduler(len(y), 0, 1), ksvd.SparsityLogger()],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert "sparsity/attention/query" in history.history, sorted(history.history)
    assert "sparsity/head/head_out" in history.history
    assert ksvd.get_kl_weight(sparse) == 1 / len(y)
    report = ksvd.sparsity_report(sparse)
    names = [row.name for row in report.layers]
    assert sorted(names) == sorted(
        [
            "conv",
            "depthwise",
            "image_dense",
            "embedding",
            "attention/query",
            "attention/key",
            "attention/value",
            "attention/attention_output",
            "proj",
            "head/head_dense",
            "head/head_out",
        ]
    ), names
    projections = [name for name in names if name.startswith("attention/")]
    assert projections == [
        "attention/query",
        "attention/key",
        "attention/value",
        "attention/attention_output",
    ], projections

    # Prune some weights so that stripping has something to drop.
    for layer in ksvd.svd_layers(sparse):
        for name in layer.svd_kernels:
            theta = keras.ops.convert_to_numpy(layer.theta(name))
            rng = np.random.default_rng(len(theta.shape))
            keep = rng.random(theta.shape) < 0.5
            log_theta2 = np.log(theta**2 + 1e-8)
            layer.log_sigma2_of(name).assign(
                np.where(keep, log_theta2 - 8.0, log_theta2 + 8.0)
            )
    assert 1.8 < ksvd.sparsity_report(sparse).compression < 2.2
    trained = sparse.predict(x, verbose=0)
    plain = ksvd.strip_sparsevd(sparse)
    assert graph_classes(plain) == graph_classes(dense), graph_classes(plain)
    np.testing.assert_allclose(plain.predict(x, verbose=0), trained, atol=1e-5)
    zeros = sum(int(np.sum(w == 0)) for w in plain.get_weights())
    assert zeros >= report.total_weights * 0.4

    path = os.path.join(tempfile.mkdtemp(), "sparse.keras")
    sparse.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), trained, atol=1e-6)
    return {"backend": keras.backend.backend(), "compression": report.compression}


if __name__ == "__main__":
    result = run()
    print("SCENARIO_OK", result["backend"])
