"""`ReversibleEmbeddingSVD`: both directions, tied or not, against Keras'."""

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd


@pytest.mark.slow
@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.all_backends
def test_sparsified_reversible_embedding_equals_keras_with_masked_tables(
    tie_weights, tmp_path
):
    keras.utils.set_random_seed(0)
    ids = keras.Input((5,), dtype="int32")
    embedding = keras.layers.ReversibleEmbedding(
        30, 6, tie_weights=tie_weights, name="emb"
    )
    logits = embedding(embedding(ids), reverse=True)
    model = keras.Model(ids, logits)
    x = np.random.default_rng(0).integers(0, 30, (4, 5)).astype("int32")
    expected = model.predict(x, verbose=0)

    sparse = ksvd.sparsify(model, log_sigma2_initializer=-30.0, verbose=False)
    layer = sparse.get_layer("emb")
    assert type(layer) is ksvd.ReversibleEmbeddingSVD
    assert layer.svd_kernels == (
        ("embeddings",) if tie_weights else ("embeddings", "reverse_embeddings")
    )
    np.testing.assert_allclose(sparse.predict(x, verbose=0), expected, atol=1e-5)

    # Prune half of every table: evaluation uses the masked tables both ways.
    rng = np.random.default_rng(1)
    for name in layer.svd_kernels:
        theta = keras.ops.convert_to_numpy(layer.theta(name))
        prune = rng.random(theta.shape) < 0.5
        log_theta2 = np.log(theta**2 + 1e-8)
        layer.log_sigma2_of(name).assign(
            np.where(prune, log_theta2 + 8, log_theta2 - 8)
        )
    plain = ksvd.strip_sparsevd(sparse)
    assert type(plain.get_layer("emb")) is keras.layers.ReversibleEmbedding
    pruned = sparse.predict(x, verbose=0)
    assert not np.allclose(pruned, expected, atol=1e-3)
    np.testing.assert_allclose(plain.predict(x, verbose=0), pruned, atol=1e-5)

    # The forward call adds the KL of every table once; training is noisy.
    ksvd.set_kl_weight(sparse, 1.0)
    out = sparse(x, training=True)
    assert len(sparse.losses) == 1
    assert not np.allclose(keras.ops.convert_to_numpy(out), pruned, atol=1e-4)

    sparse.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned, atol=1e-6)
