"""Group variables shared over a channel's positions after `Flatten`.

``DenseSVD(group_sparsity=True, group_channels=C)`` reads its flattened input
as positions x C channels and has one group per channel, so that a pruned
group removes a whole filter of the convolution before the `Flatten`.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd


def _prune_groups(layer, keep):
    mu = keras.ops.convert_to_numpy(layer.group_mu)
    log_mu2 = np.log(mu**2 + 1e-8)
    layer.group_log_sigma2.assign(np.where(keep, log_mu2 - 6.0, log_mu2 + 6.0))


def _conv_net(channels_last_fc1=True, group_channels=6):
    return keras.Sequential(
        [
            keras.Input((16, 16, 2)),
            ksvd.Conv2DSVD(8, 3, activation="relu", group_sparsity=True, name="c1"),
            keras.layers.MaxPooling2D(2, name="p1"),
            ksvd.Conv2DSVD(6, 3, activation="relu", group_sparsity=True, name="c2"),
            keras.layers.MaxPooling2D(2, name="p2"),
            keras.layers.Flatten(name="flat"),
            ksvd.DenseSVD(
                10,
                activation="relu",
                group_sparsity=True,
                group_channels=group_channels,
                name="fc1",
            ),
            ksvd.DenseSVD(3, group_sparsity=True, name="fc2"),
        ]
    )


def _randomise(model, rng):
    for layer in ksvd.svd_layers(model):
        layer.group_mu.assign(
            rng.uniform(0.5, 1.5, layer.group_mu.shape).astype("float32")
        )
        layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype("float32"))


def test_channel_groups_prune_whole_channels_in_training():
    """Trained on targets that only channels 1 and 3 carry, the groups of the
    other channels go, each with all of its positions."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, positions, channels, batch = 2000, 4, 6, 500
    relevant = [1, 3]
    x = rng.normal(size=(n, positions, channels)).astype("float32")
    true_w = np.zeros((positions, channels, 2), "float32")
    true_w[:, relevant] = rng.uniform(0.5, 1.0, (positions, len(relevant), 2))
    x = x.reshape(n, -1)
    y = x @ true_w.reshape(-1, 2)

    def nll(target, pred):
        return keras.ops.sum(keras.ops.square(target - pred), axis=-1) / 0.5

    layer = ksvd.DenseSVD(2, seed=0, group_sparsity=True, group_channels=channels)
    model = keras.Sequential([keras.Input((positions * channels,)), layer])
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
    assert tuple(layer.group_mu.shape) == (channels,)
    log_alpha = keras.ops.convert_to_numpy(layer.group_log_alpha)
    kept = keras.ops.convert_to_numpy(layer.input_units_mask).reshape(
        positions, channels
    )
    # Whole channels: every position of a kept channel is read, none of a
    # pruned one.
    assert np.flatnonzero(kept.any(axis=0)).tolist() == relevant, log_alpha
    assert kept[:, relevant].all(), kept
    # The groups do part of the pruning (the rest lose all their weights
    # first, after which only the KL moves their group, slowly).
    assert np.any(np.delete(log_alpha, relevant) >= 3.0), np.round(log_alpha, 2)
    assert np.all(log_alpha[relevant] < -5), np.round(log_alpha, 2)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_evaluation_and_training_mean_scale_each_channel(data_format):
    rng = np.random.default_rng(4)
    positions, channels, units = 3, 4, 5
    layer = ksvd.DenseSVD(
        units,
        group_sparsity=True,
        group_channels=channels,
        group_data_format=data_format,
        log_sigma2_initializer=-30.0,
        seed=1,
    )
    layer.build((None, positions * channels))
    ksvd.set_kl_weight(layer, 0.0)
    mu = np.array([1.0, 0.5, -0.8, 1.2], "float32")
    layer.group_mu.assign(mu)
    _prune_groups(layer, np.array([1, 1, 0, 1], bool))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    scale = mu * np.array([1, 1, 0, 1], "float32")
    if data_format == "channels_last":
        per_unit = np.tile(scale, positions)
    else:
        per_unit = np.repeat(scale, positions)
    x = rng.normal(size=(7, positions * channels)).astype("float32")
    expected = (x * per_unit) @ kernel + keras.ops.convert_to_numpy(layer.bias)
    got = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.input_units_mask) > 0, per_unit != 0
    )
    np.testing.assert_allclose(
        layer.inference_kernel(), kernel * per_unit[:, None], rtol=1e-6
    )
    # Training draws one z per example and channel, shared by its positions:
    # an input that is 1 at every position of channel 0 (else 0) gives
    # var = sigma_z^2 * (sum of those rows)^2, not sigma_z^2 * sum of squares.
    layer.kernel.assign(np.full(kernel.shape, 0.5, "float32"))
    layer.bias.assign(np.zeros(units, "float32"))
    layer.group_mu.assign(np.ones(channels, "float32"))
    layer.group_log_sigma2.assign(np.full(channels, -2.0, "float32"))
    one = per_unit * 0 + (np.arange(positions * channels) % channels == 0)
    if data_format == "channels_first":
        one = np.arange(positions * channels) // positions == 0
    batch = np.tile(one.astype("float32"), (8000, 1))
    out = keras.ops.convert_to_numpy(layer(batch, training=True))
    shared = np.exp(-2.0) * (0.5 * positions) ** 2
    np.testing.assert_allclose(out.var(axis=0), shared, rtol=0.1)


def test_pruned_channel_group_removes_the_filter_in_compaction():
    rng = np.random.default_rng(2)
    model = _conv_net()
    _randomise(model, rng)
    fc1 = model.get_layer("fc1")
    assert tuple(fc1.group_mu.shape) == (6,)
    _prune_groups(fc1, np.array([1, 0, 1, 1, 0, 1], bool))
    x = rng.random((5, 16, 16, 2)).astype("float32")
    expected = model.predict(x, verbose=0)
    row = {r.name: r for r in ksvd.sparsity_report(model).layers}["fc1"]
    # 2 of 6 channels pruned: all 4 positions of each.
    assert (row.inputs, row.inputs_kept) == (24, 16)
    small = ksvd.compact_model(model)
    assert small.get_layer("c2").filters == 4
    assert small.get_layer("fc1").kernel.shape == (16, 10)
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, atol=1e-5)


@pytest.mark.all_backends
def test_config_and_save_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    model = _conv_net()
    _randomise(model, rng)
    fc1 = model.get_layer("fc1")
    _prune_groups(fc1, np.array([1, 1, 0, 1, 1, 0], bool))
    config = fc1.get_config()
    assert config["group_channels"] == 6
    assert config["group_data_format"] == "channels_last"
    again = ksvd.DenseSVD.from_config(config)
    assert again.get_config() == config
    x = rng.random((3, 16, 16, 2)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("fc1").group_channels == 6
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    # A layer without the option reads as before (files of earlier versions).
    old = dict(config)
    del old["group_channels"], old["group_data_format"]
    assert ksvd.DenseSVD.from_config(old).group_channels is None


def _plain_conv_net():
    inputs = keras.Input((16, 16, 2))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="c2")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.Dense(10, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(3, name="fc2")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_sparsify_channel_groups_finds_the_flatten(tmp_path, kind):
    plain = _plain_conv_net()
    if kind == "sequential":
        plain = keras.Sequential(
            [keras.Input((16, 16, 2))]
            + [
                layer
                for layer in plain.layers
                if not isinstance(layer, keras.layers.InputLayer)
            ]
        )
    sparse = ksvd.sparsify(
        plain,
        structured=True,
        channel_groups=True,
        log_sigma2_initializer=-30.0,
        verbose=False,
    )
    fc1, fc2 = sparse.get_layer("fc1"), sparse.get_layer("fc2")
    assert fc1.group_channels == 6 and tuple(fc1.group_mu.shape) == (6,)
    assert fc2.group_channels is None and tuple(fc2.group_mu.shape) == (10,)
    x = np.random.default_rng(0).random((4, 16, 16, 2)).astype("float32")
    np.testing.assert_allclose(
        sparse.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5
    )
    # The saved record converts it again with the same groups.
    path = tmp_path / "s.keras"
    sparse.save(path)
    loaded = ksvd.load_model(path)
    assert loaded.get_layer("fc1").group_channels == 6
    # Stripped, the groups fold into fc1's kernel.
    stripped = ksvd.strip_sparsevd(loaded)
    assert type(stripped.get_layer("fc1")) is keras.layers.Dense


def test_sparsify_channel_groups_leaves_an_image_flatten_alone():
    # LeNet-300-100: the Flatten reads the image, whose last axis is no
    # channel of filters.
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
            keras.layers.Dense(2),
        ]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sparse = ksvd.sparsify(
            model, structured=True, channel_groups=True, verbose=False
        )
    assert any("channel_groups" in str(w.message) for w in caught)
    assert all(layer.group_channels is None for layer in ksvd.svd_layers(sparse))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"group_channels": 0}, "positive integer"),
        ({"group_channels": -3}, "positive integer"),
        ({"group_channels": 2.5}, "positive integer"),
        ({"group_channels": True}, "positive integer"),
        ({"group_channels": "50"}, "positive integer"),
        ({"group_channels": 4, "group_data_format": "nhwc"}, "group_data_format"),
    ],
)
def test_bad_option_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ksvd.DenseSVD(3, group_sparsity=True, **kwargs)


def test_option_misuse_is_refused():
    with pytest.raises(ValueError, match="pass `group_sparsity=True`"):
        ksvd.DenseSVD(3, group_channels=4)
    with pytest.raises(ValueError, match="must divide its 10 input units"):
        ksvd.DenseSVD(3, group_sparsity=True, group_channels=4).build((None, 10))
    # A convolution's groups are per channel already.
    with pytest.raises(ValueError, match="group_channels"):
        ksvd.Conv2DSVD(3, 3, group_sparsity=True, group_channels=4)
    model = _plain_conv_net()
    with pytest.raises(ValueError, match="pass `structured=True`"):
        ksvd.sparsify(model, channel_groups=True, verbose=False)
    with pytest.raises(TypeError, match="`channel_groups` must be True or False"):
        ksvd.sparsify(model, structured=True, channel_groups="yes", verbose=False)


def test_train_flag_and_lenet5_builder():
    from examples import models, train

    with pytest.raises(SystemExit, match="--channel-groups applies"):
        train.main(["--model", "lenet300", "--structured", "--channel-groups"])
    with pytest.raises(SystemExit, match="--channel-groups applies"):
        train.main(["--model", "lenet5", "--channel-groups"])
    # Off, the option stays out of the signature: earlier runs still resume.
    options = vars(train.build_parser().parse_args(["--model", "lenet5"]))
    assert "channel_groups" not in train.run_signature(options)
    model = models.lenet5(structured=True, channel_groups=True)
    fc1 = model.get_layer("fc1")
    assert fc1.group_channels == 50 and tuple(fc1.group_mu.shape) == (50,)
    with pytest.raises(ValueError, match="needs `sparse` and `structured`"):
        models.lenet5(channel_groups=True)


@pytest.mark.all_backends
def test_group_kl_scale_weights_only_the_group_terms():
    model = _conv_net()
    x = np.random.default_rng(5).random((2, 16, 16, 2)).astype("float32")
    ksvd.set_kl_weight(model, 1.0)

    def kl_parts():
        model(x)
        total = float(sum(keras.ops.convert_to_numpy(v) for v in model.losses))
        groups = sum(
            float(np.sum(keras.ops.convert_to_numpy(ksvd.kl_divergence(la))))
            for la in (layer.group_log_alpha for layer in ksvd.svd_layers(model))
        )
        return total, groups

    total, groups = kl_parts()
    assert ksvd.set_group_kl_scale(model, 10.0) == 4
    scaled, _ = kl_parts()
    np.testing.assert_allclose(scaled - total, 9.0 * groups, rtol=1e-4)
    for bad in (-1.0, float("nan"), "x"):
        with pytest.raises(ValueError, match="`scale`"):
            ksvd.set_group_kl_scale(model, bad)
    # By layer name: the others keep theirs.
    assert ksvd.set_group_kl_scale(model, {"fc1": 2.0}) == 1
    assert [layer.group_kl_scale for layer in ksvd.svd_layers(model)] == [
        10.0,
        10.0,
        2.0,
        10.0,
    ]
    with pytest.raises(ValueError, match=r"names \['nope'\]"):
        ksvd.set_group_kl_scale(model, {"nope": 2.0})
    from examples import train

    assert train.group_kl_scale("conv2=1e3, fc1=300") == {"conv2": 1e3, "fc1": 300.0}
    assert train.group_kl_scale("7") == 7.0
    plain = keras.Sequential([keras.Input((3,)), ksvd.DenseSVD(2)])
    with pytest.raises(ValueError, match="no Sparse VD layer with group"):
        ksvd.set_group_kl_scale(plain, 2.0)
