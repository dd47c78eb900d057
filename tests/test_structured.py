"""Structured Sparse VD: group variables on the layers' input units."""

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd


@pytest.mark.slow
def test_irrelevant_input_groups_are_pruned_and_relevant_ones_kept():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, d, batch = 2000, 24, 500
    relevant = [2, 11, 19]
    x = (np.linalg.qr(rng.normal(size=(n, d)))[0] * np.sqrt(n)).astype("float32")
    true_w = np.zeros((d, 2), "float32")
    true_w[relevant] = [[1.5, -1.0], [-2.0, 0.5], [1.0, 1.0]]
    y = x @ true_w

    def nll(target, pred):
        return keras.ops.sum(keras.ops.square(target - pred), axis=-1) / 0.5

    layer = ksvd.DenseSVD(2, seed=0, group_sparsity=True)
    model = keras.Sequential([keras.Input((d,)), layer])
    lr = keras.optimizers.schedules.ExponentialDecay(0.03, n // batch, 0.97)
    model.compile(keras.optimizers.Adam(lr), loss=nll)
    model.fit(
        x,
        y,
        batch_size=batch,
        epochs=150,
        verbose=0,
        callbacks=[ksvd.KLScheduler(n, start_epoch=0, end_epoch=5)],
    )
    log_alpha = keras.ops.convert_to_numpy(layer.group_log_alpha)
    kept = keras.ops.convert_to_numpy(layer.input_units_mask)
    assert np.flatnonzero(kept).tolist() == relevant, np.round(log_alpha, 2)
    assert np.all(log_alpha[relevant] < -5), np.round(log_alpha, 2)
    # The groups themselves do the pruning: most irrelevant ones are at the
    # top of the clip range (the rest lost all their weights first, after
    # which only the KL moves them, slowly).
    irrelevant = np.delete(log_alpha, relevant)
    assert np.mean(irrelevant >= 3.0) >= 0.7, np.round(log_alpha, 2)
    pred = model.predict(x, verbose=0)
    assert np.sqrt(np.mean((pred - y) ** 2)) < 0.1


@pytest.mark.slow
@pytest.mark.all_backends
def test_groups_train_with_the_weights():
    """A fit step reaches the group variables of a dense and a conv layer."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 16)
    conv = ksvd.Conv2DSVD(3, 3, group_sparsity=True, seed=0)
    dense = ksvd.DenseSVD(3, group_sparsity=True, seed=1)
    model = keras.Sequential(
        [keras.Input((6, 6, 2)), conv, keras.layers.Flatten(), dense]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ksvd.set_kl_weight(model, 1.0 / len(x))
    variables = [
        v
        for layer in (conv, dense)
        for v in (
            layer.kernel,
            layer.log_sigma2,
            layer.group_mu,
            layer.group_log_sigma2,
        )
    ]
    before = [keras.ops.convert_to_numpy(v).copy() for v in variables]
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for variable, old in zip(variables, before):
        assert not np.allclose(keras.ops.convert_to_numpy(variable), old), variable.path


@pytest.mark.all_backends
def test_training_pass_moments_with_groups():
    rng = np.random.default_rng(1)
    d, units, samples = 4, 3, 20000
    layer = ksvd.DenseSVD(units, group_sparsity=True, seed=3)
    layer.build((None, d))
    ksvd.set_kl_weight(layer, 0.0)
    theta = rng.uniform(0.3, 1.0, (d, units)).astype("float32")
    log_sigma2 = rng.uniform(-2.5, -1.5, (d, units)).astype("float32")
    mu = np.array([1.0, 0.5, -0.8, 1.2], "float32")
    group_log_sigma2 = np.array([-2.0, -1.5, -3.0, -2.5], "float32")
    layer.kernel.assign(theta)
    layer.log_sigma2.assign(log_sigma2)
    layer.bias.assign(np.zeros(units, "float32"))
    layer.group_mu.assign(mu)
    layer.group_log_sigma2.assign(group_log_sigma2)
    x = np.array([0.7, -1.1, 0.4, 0.9], "float32")
    out = keras.ops.convert_to_numpy(layer(np.tile(x, (samples, 1)), training=True))
    sigma2_w = np.exp(log_sigma2)
    sigma2_z = np.exp(group_log_sigma2)
    # E[out] = (x * mu) @ theta;
    # Var[out] = (x^2 (mu^2 + s_z^2)) @ s_w^2 + (x^2 s_z^2) @ theta^2.
    mean = (x * mu) @ theta
    var = (x**2 * (mu**2 + sigma2_z)) @ sigma2_w + (x**2 * sigma2_z) @ theta**2
    assert np.all(var > 0.05)
    np.testing.assert_allclose(
        out.mean(0), mean, atol=float(5 * np.sqrt(var.max() / samples))
    )
    np.testing.assert_allclose(out.var(0), var, rtol=0.08)
    # Evaluation: x * mu, no noise.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x[None], training=False))[0],
        mean,
        rtol=1e-5,
    )


def _prune_groups(layer, keep):
    mu = keras.ops.convert_to_numpy(layer.group_mu)
    log_mu2 = np.log(mu**2 + 1e-8)
    layer.group_log_sigma2.assign(np.where(keep, log_mu2 - 6.0, log_mu2 + 6.0))


@pytest.mark.slow
def test_compaction_removes_pruned_groups_with_identical_predictions(tmp_path):
    rng = np.random.default_rng(2)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            ksvd.Conv2DSVD(8, 3, activation="relu", group_sparsity=True, name="c1"),
            ksvd.Conv2DSVD(6, 3, activation="relu", group_sparsity=True, name="c2"),
            keras.layers.Flatten(),
            ksvd.DenseSVD(12, activation="relu", group_sparsity=True, name="fc1"),
            ksvd.DenseSVD(4, group_sparsity=True, name="fc2"),
        ]
    )
    for layer in ksvd.svd_layers(model):
        mu = rng.uniform(0.5, 1.5, layer.group_mu.shape).astype("float32")
        layer.group_mu.assign(mu)
        layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype("float32"))
    c2 = model.get_layer("c2")
    fc2 = model.get_layer("fc2")
    # Pruned inputs of c2 are filters of c1; of fc2, units of fc1.
    _prune_groups(c2, np.array([1, 0, 1, 1, 0, 0, 1, 1], bool))
    _prune_groups(fc2, np.array([1] * 5 + [0] * 7, bool))
    x = rng.random((5, 10, 10, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    rows = {row.name: row for row in ksvd.sparsity_report(model).layers}
    assert (rows["c2"].inputs, rows["c2"].inputs_kept) == (8, 5)
    assert (rows["fc2"].inputs, rows["fc2"].inputs_kept) == (12, 5)
    assert "5/8" in str(ksvd.sparsity_report(model))
    plain = ksvd.strip_sparsevd(model)
    assert [type(layer).__name__ for layer in plain.layers] == [
        "Conv2D",
        "Conv2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    np.testing.assert_allclose(plain.predict(x, verbose=0), expected, atol=1e-5)
    small = ksvd.compact_model(model)
    assert small.get_layer("c1").filters == 5
    assert small.get_layer("fc1").units == 5
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, atol=1e-5)


@pytest.mark.all_backends
def test_groups_config_and_keras_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    layer = ksvd.EinsumDenseSVD(
        "abc,cd->abd", (None, 5), bias_axes="d", group_sparsity=True, name="e"
    )
    inputs = keras.Input((3, 4))
    model = keras.Model(inputs, layer(inputs))
    layer.group_mu.assign(rng.uniform(0.5, 1.5, 4).astype("float32"))
    _prune_groups(layer, np.array([1, 0, 1, 1], bool))
    assert type(layer).from_config(layer.get_config()).get_config() == (
        layer.get_config()
    )
    x = rng.random((2, 3, 4)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    again = loaded.get_layer("e")
    assert again.group_sparsity
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again.group_log_sigma2),
        keras.ops.convert_to_numpy(layer.group_log_sigma2),
    )
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    # The group KL is part of the layer's loss.
    ksvd.set_kl_weight(loaded, 1.0)
    loaded(x)
    group_kl = float(
        np.sum(keras.ops.convert_to_numpy(ksvd.kl_divergence(again.group_log_alpha)))
    )
    kernel_kl = float(
        np.sum(keras.ops.convert_to_numpy(ksvd.kl_divergence(again.log_alpha)))
    )
    total = float(sum(keras.ops.convert_to_numpy(v) for v in loaded.losses))
    np.testing.assert_allclose(total, group_kl + kernel_kl, rtol=1e-5)


@pytest.mark.all_backends
def test_group_errors_and_sparsify_structured():
    with pytest.raises(ValueError, match="`group_sparsity`.*EmbeddingSVD"):
        ksvd.EmbeddingSVD(10, 4, group_sparsity=True)
    with pytest.raises(ValueError, match="`group_sparsity` with `groups=2`"):
        ksvd.Conv2DSVD(4, 3, groups=2, group_sparsity=True).build((None, 8, 8, 4))
    with pytest.raises(ValueError, match="contracted with the kernel"):
        ksvd.EinsumDenseSVD("abc,bd->acd", (3, 5), group_sparsity=True).build(
            (None, 4, 3)
        )
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(10, 4),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    sparse = ksvd.sparsify(model, structured=True, log_sigma2_initializer=-30.0)
    embedding, _, dense = sparse.layers
    assert not embedding.group_sparsity and dense.group_sparsity
    x = np.arange(12).reshape(2, 6) % 10
    np.testing.assert_allclose(
        sparse.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


@pytest.mark.slow
def test_architecture_picture(tmp_path):
    from examples import plots

    model = keras.Sequential(
        [
            keras.Input((6,)),
            ksvd.DenseSVD(4, group_sparsity=True, name="a"),
            ksvd.DenseSVD(2, group_sparsity=True, name="b"),
        ]
    )
    _prune_groups(model.get_layer("b"), np.array([1, 0, 0, 1], bool))
    path = plots.save_architecture(tmp_path / "arch.png", model)
    assert path.stat().st_size > 1000
    assert ksvd.sparsity_report(model).layers[1].inputs_kept == 2
    # b reads 2 of a's 4 units, so a keeps 2 after compaction.
    assert plots.kept_architecture(model) == [
        ("inputs", 6, 6),
        ("a", 4, 2),
        ("b", 2, 2),
    ]
