"""Sparse VD recurrent layers: LSTMSVD, GRUSVD, SimpleRNNSVD and their cells."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd

L = keras.layers
# (Sparse VD layer, Keras layer, extra arguments of both)
PAIRS = [
    (ksvd.LSTMSVD, L.LSTM, {}),
    (ksvd.GRUSVD, L.GRU, {}),
    (ksvd.GRUSVD, L.GRU, {"reset_after": False}),
    (ksvd.SimpleRNNSVD, L.SimpleRNN, {}),
]
PAIR_IDS = ["lstm", "gru", "gru-reset-before", "simple-rnn"]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _randomise(cell, rng, scale=0.5):
    """Random theta (and groups) so that equalities are not trivially 0 == 0."""
    for variable in cell.weights:
        if variable.name in ("kernel", "recurrent_kernel", "bias"):
            shape = tuple(variable.shape)
            variable.assign(rng.normal(scale=scale, size=shape).astype("float32"))
        elif variable.name.endswith("group_mu"):
            shape = tuple(variable.shape)
            variable.assign(rng.uniform(0.5, 1.5, size=shape).astype("float32"))


def _copy_weights(sparse_cell, plain_cell, kernels=None):
    kernels = kernels or {}
    for variable in plain_cell.weights:
        value = kernels.get(variable.name, getattr(sparse_cell, variable.name))
        variable.assign(_np(value))


@pytest.mark.parametrize("svd_cls, keras_cls, extra", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize(
    "options",
    [{}, {"return_sequences": True, "go_backwards": True}, {"return_state": True}],
    ids=["last", "sequences-backwards", "state"],
)
@pytest.mark.slow
def test_evaluation_equals_keras_layer(svd_cls, keras_cls, extra, options):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6, 3)).astype("float32")
    # Examples end at different steps: the mask reaches the cell loop.
    mask = np.arange(6)[None, :] < np.array([6, 4, 1, 5, 3])[:, None]
    sparse = svd_cls(4, log_sigma2_initializer=-30.0, seed=0, **extra, **options)
    plain = keras_cls(4, **extra, **options)
    sparse(x)
    plain(x)
    _randomise(sparse.cell, rng)
    # Some weights pruned: their log alpha is at the top of the clip range.
    log_sigma2 = np.full(tuple(sparse.cell.kernel.shape), -30.0, "float32")
    log_sigma2[0] = 30.0
    sparse.cell.log_sigma2.assign(log_sigma2)
    masked = _np(sparse.cell.kernel) * (log_sigma2 < 0)
    _copy_weights(sparse.cell, plain.cell, {"kernel": masked})
    got = sparse(x, mask=mask, training=False)
    want = plain(x, mask=mask, training=False)
    for a, b in zip(keras.tree.flatten(got), keras.tree.flatten(want)):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-5, atol=1e-6)
    assert float(_np(sparse.cell.kernel_mask)[0].sum()) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("svd_cls, keras_cls, extra", PAIRS, ids=PAIR_IDS)
def test_structured_evaluation_equals_keras_layer_with_folded_kernels(
    svd_cls, keras_cls, extra
):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    sparse = svd_cls(4, group_sparsity=True, return_sequences=True, **extra)
    plain = keras_cls(4, return_sequences=True, **extra)
    sparse(x)
    plain(x)
    cell = sparse.cell
    _randomise(cell, rng)
    # One pruned group of each kind.
    for kind, index in (("group", 1), ("hidden_group", 2), ("gate_group", 3)):
        variable = getattr(cell, f"{kind}_log_sigma2")
        value = np.full(tuple(variable.shape), -6.0, "float32")
        value[index] = 20.0
        variable.assign(value)
    assert _np(cell.group_mask_of("hidden")).tolist() == [1, 1, 0, 1]
    _copy_weights(cell, plain.cell, cell.inference_kernels())
    np.testing.assert_allclose(_np(sparse(x)), _np(plain(x)), rtol=1e-5, atol=1e-6)
    kernels = {k: _np(v) for k, v in cell.inference_kernels().items()}
    assert not kernels["kernel"][1].any()  # the pruned input feature
    assert not kernels["recurrent_kernel"][2].any()  # the pruned hidden unit
    assert (
        not kernels["kernel"][:, 3].any()
        and not kernels["recurrent_kernel"][:, 3].any()
    )
    assert _np(cell.hidden_units_mask).tolist() == [1, 1, 0, 1]
    assert _np(cell.gates_mask)[3] == 0


def _linear_rnn(**kwargs):
    """A SimpleRNNSVD whose outputs are ``x_t @ W``: no bias, no recurrence."""
    layer = ksvd.SimpleRNNSVD(
        3, activation=None, use_bias=False, return_sequences=True, seed=3, **kwargs
    )
    layer.build((None, 4, 2))
    ksvd.set_kl_weight(layer, 0.0)
    layer.cell.kernel.assign(np.ones((2, 3), "float32"))
    # theta = 1, log alpha = -1 for the input kernel; the recurrent kernel
    # is 0 with variance alpha * 0 = 0.
    layer.cell.log_sigma2.assign(np.full((2, 3), -1.0, "float32"))
    layer.cell.recurrent_kernel.assign(np.zeros((3, 3), "float32"))
    return layer


@pytest.mark.slow
def test_one_weight_sample_per_batch_shared_by_examples_and_steps():
    layer = _linear_rnn()
    x = np.ones((8, 4, 2), "float32")
    draws = np.stack([_np(layer(x, training=True)) for _ in range(400)])
    # Within a call: identical inputs give identical outputs (one kernel
    # for all examples) at every step (one kernel for all steps).
    np.testing.assert_allclose(
        draws, draws[:, :1, :1, :].repeat(8, 1).repeat(4, 2), atol=1e-6
    )
    # Across calls: fresh samples, y = x @ (1 + sigma * eps), two inputs of 1
    # and variance alpha * theta^2 = exp(-1) per weight.
    outputs = draws[:, 0, 0, :]
    assert np.ptp(outputs[:, 0]) > 0.5
    np.testing.assert_allclose(outputs.mean(axis=0), 2.0, atol=0.15)
    np.testing.assert_allclose(outputs.std(axis=0), np.sqrt(2 / np.e), rtol=0.12)
    # Units use independent weights.
    assert abs(np.corrcoef(outputs.T)[0, 1]) < 0.2
    # Evaluation is deterministic: theta.
    np.testing.assert_allclose(_np(layer(x)), 2.0)


def test_group_noise_once_per_sequence_shared_by_its_steps():
    layer = _linear_rnn(group_sparsity=True)
    # Weight noise out of the way: what remains is the groups'.
    layer.cell.log_sigma2.assign(np.full((2, 3), -40.0, "float32"))
    cell = layer.cell
    cell.group_log_sigma2.assign(np.full((2,), -2.0, "float32"))
    x = np.ones((3000, 4, 2), "float32")
    y = _np(layer(x, training=True))
    # The same draw at every step of a sequence, another in each sequence.
    np.testing.assert_allclose(y, y[:, :1, :].repeat(4, 1), rtol=1e-6)
    first = y[:, 0, 0]
    assert np.std(first) > 0.1
    # y = (z1 + z2) * w * z_g, z ~ N(1, exp(-2)) for inputs, gate groups at
    # their initial sigma^2 = exp(-6), weights at the clip (alpha = e^-8).
    expected = np.sqrt(2 * np.exp(-2) + 4 * np.exp(-6) + 4 * np.exp(-8))
    np.testing.assert_allclose(np.std(first), expected, rtol=0.08)
    np.testing.assert_allclose(np.mean(first), 2.0, atol=0.02)


def test_kl_is_added_once_per_call_and_sums_both_kernels_and_groups():
    layer = ksvd.LSTMSVD(3, group_sparsity=True)
    x = np.ones((2, 7, 4), "float32")
    layer(x)
    ksvd.set_kl_weight(layer, 0.5)
    layer(x, training=True)
    assert len(layer.losses) == 1
    cell = layer.cell
    expected = sum(
        float(_np(keras.ops.sum(ksvd.kl_divergence(cell.log_alpha_of(name)))))
        for name in ("kernel", "recurrent_kernel")
    ) + sum(
        float(_np(keras.ops.sum(ksvd.kl_divergence(cell.group_log_alpha_of(kind)))))
        for kind in ("input", "hidden", "gate")
    )
    np.testing.assert_allclose(float(_np(layer.losses[0])), 0.5 * expected, rtol=1e-5)


def test_training_without_kl_weight_is_an_error():
    layer = ksvd.GRUSVD(3)
    with pytest.raises(ksvd.KLWeightNotSetError):
        layer(np.ones((2, 3, 4), "float32"), training=True)


@pytest.mark.slow
def test_irrelevant_input_features_are_pruned_and_the_relevant_one_kept():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, steps, features, batch = 512, 3, 4, 64
    x = rng.normal(size=(n, steps, features)).astype("float32")
    # The target reads feature 0 only (its last two steps).
    y = (x[:, -1, 0] + 0.5 * x[:, -2, 0])[:, None].astype("float32")

    def nll(target, pred):
        return keras.ops.sum(keras.ops.square(target - pred), axis=-1)

    lstm = ksvd.LSTMSVD(4, seed=0, log_sigma2_initializer=-6.0)
    model = keras.Sequential([keras.Input((steps, features)), lstm, L.Dense(1)])
    # One weight draw per batch makes the variance gradients noisier than
    # local reparameterisation does: a fast test needs a decaying learning
    # rate (Adam's steps would keep theta from settling at 0) and a prior 4x
    # stronger than 1 / N.
    lr = keras.optimizers.schedules.ExponentialDecay(0.03, n // batch, 0.95)
    model.compile(keras.optimizers.Adam(lr), loss=nll)
    model.fit(
        x,
        y,
        batch_size=batch,
        epochs=100,
        verbose=0,
        callbacks=[ksvd.KLScheduler(n // 4, start_epoch=0, end_epoch=5)],
    )
    rows = _np(lstm.cell.input_units_mask)
    log_alpha = _np(lstm.cell.log_alpha_of("kernel"))
    assert rows.tolist() == [1, 0, 0, 0], np.round(log_alpha, 1)
    pred = model.predict(x, verbose=0)
    assert np.sqrt(np.mean((pred - y) ** 2)) < 0.35


@pytest.mark.slow
@pytest.mark.parametrize("svd_cls, keras_cls, extra", PAIRS, ids=PAIR_IDS)
def test_masking_and_states_in_training(svd_cls, keras_cls, extra):
    x = np.random.default_rng(2).normal(size=(3, 5, 2)).astype("float32")
    x[0, 3:] = 0.0
    inputs = keras.Input((5, 2))
    masked = L.Masking(0.0)(inputs)
    layer = svd_cls(4, return_sequences=True, return_state=True, **extra)
    outputs = layer(masked)
    model = keras.Model(inputs, outputs)
    ksvd.set_kl_weight(model, 1e-3)
    got = model(x, training=True)
    sequence, last = _np(got[0]), _np(got[1])
    # Masked steps repeat the last unmasked output; the state is that output.
    np.testing.assert_allclose(sequence[0, 3], sequence[0, 2])
    np.testing.assert_allclose(sequence[0, 4], sequence[0, 2])
    np.testing.assert_allclose(last[0], sequence[0, 2])
    np.testing.assert_allclose(last[1:], sequence[1:, -1])
    assert len(got) == (3 if svd_cls is ksvd.LSTMSVD else 2)


@pytest.mark.slow
def test_bidirectional_trains_and_reports_both_directions():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5, 3)).astype("float32")
    y = (x[:, :, 0].sum(axis=1) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            L.Bidirectional(ksvd.LSTMSVD(4, seed=1)),
            ksvd.DenseSVD(2),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapper = model.layers[0]
    before = [
        _np(c.log_sigma2).copy()
        for c in (wrapper.forward_layer.cell, wrapper.backward_layer.cell)
    ]
    history = model.fit(
        x, y, batch_size=16, epochs=2, verbose=0, callbacks=[ksvd.KLScheduler(64, 0, 1)]
    )
    assert np.all(np.isfinite(history.history["loss"]))
    for cell, old in zip(
        (wrapper.forward_layer.cell, wrapper.backward_layer.cell), before
    ):
        assert not np.allclose(_np(cell.log_sigma2), old)
    names = [row.name for row in ksvd.sparsity_report(model).layers]
    assert names[:2] == [
        "bidirectional/forward_lstmsvd/lstm_cell",
        "bidirectional/backward_lstmsvd/lstm_cell",
    ], names
    # 4 * 4 * (3 + 4) weights per direction.
    assert ksvd.sparsity_report(model).layers[0].weights == 112


@pytest.mark.slow
@pytest.mark.parametrize("svd_cls, keras_cls, extra", PAIRS, ids=PAIR_IDS)
def test_config_and_keras_round_trip(svd_cls, keras_cls, extra, tmp_path):
    layer = svd_cls(
        4,
        threshold=2.5,
        log_sigma2_initializer=-8.0,
        train_clip=True,
        seed=7,
        group_sparsity=True,
        return_sequences=True,
        dropout=0.1,
        **extra,
    )
    config = layer.get_config()
    for key in (
        "threshold",
        "log_sigma2_initializer",
        "train_clip",
        "seed",
        "group_sparsity",
    ):
        assert key in config
    assert svd_cls.from_config(config).get_config() == config
    # The Keras layer's config plus the Sparse VD keys, nothing else.
    plain_keys = set(keras_cls(4, **extra).get_config())
    assert set(config) - plain_keys == set(svd_cls.svd_config_keys)
    x = np.random.default_rng(3).normal(size=(2, 3, 5)).astype("float32")
    model = keras.Sequential([keras.Input((3, 5)), layer])
    _randomise(layer.cell, np.random.default_rng(4))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[0]) is svd_cls
    assert type(loaded.layers[0].cell) is type(layer.cell)
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), rtol=1e-6)
    cell = loaded.layers[0].cell
    assert cell.threshold == 2.5 and cell.train_clip and cell.group_sparsity
    assert layer.seed == 7 if hasattr(layer, "seed") else True


def _pruned_lstm_model(x, **kwargs):
    model = keras.Sequential(
        [keras.Input(x.shape[1:]), ksvd.LSTMSVD(6, seed=0, **kwargs), L.Dense(3)]
    )
    model(x)
    cell = model.layers[0].cell
    rng = np.random.default_rng(5)
    _randomise(cell, rng)
    for name in ("kernel", "recurrent_kernel"):
        variable = cell.log_sigma2_of(name)
        value = rng.choice([-20.0, 20.0], size=tuple(variable.shape)).astype("float32")
        variable.assign(value)
    return model


@pytest.mark.slow
def test_strip_gives_keras_lstm_with_same_predictions():
    x = np.random.default_rng(6).normal(size=(4, 5, 3)).astype("float32")
    model = _pruned_lstm_model(x)
    stripped = ksvd.strip_sparsevd(model)
    assert type(stripped.layers[0]) is L.LSTM
    assert type(stripped.layers[0].cell) is L.LSTMCell
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    kernel = _np(stripped.layers[0].cell.recurrent_kernel)
    assert 0.3 < np.mean(kernel == 0) < 0.7


@pytest.mark.slow
def test_strip_of_structured_lstm_gives_same_predictions():
    x = np.random.default_rng(6).normal(size=(4, 5, 3)).astype("float32")
    model = _pruned_lstm_model(x, group_sparsity=True)
    stripped = ksvd.strip_sparsevd(model)
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow
def test_sparsify_converts_keras_recurrent_layers():
    x = np.random.default_rng(7).normal(size=(4, 5, 3)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            L.LSTM(4, return_sequences=True),
            L.GRU(4, return_sequences=True),
            L.SimpleRNN(4),
            L.Dense(2),
        ]
    )
    want = model.predict(x, verbose=0)
    sparse = ksvd.sparsify(model, log_sigma2_initializer=-12.0)
    kinds = [type(layer) for layer in sparse.layers]
    assert kinds[:3] == [ksvd.LSTMSVD, ksvd.GRUSVD, ksvd.SimpleRNNSVD]
    assert type(sparse.layers[0].cell) is ksvd.LSTMCellSVD
    np.testing.assert_allclose(sparse.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(sparse.layers[0].cell.log_sigma2), -12.0)


def test_mixed_precision_keeps_log_alpha_and_kl_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = ksvd.LSTMSVD(4, group_sparsity=True)
    x = np.ones((2, 3, 5), "float32")
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert layer.cell.kernel.dtype == "float32"
    assert (
        keras.backend.standardize_dtype(layer.cell.log_alpha_of("kernel").dtype)
        == "float32"
    )
    ksvd.set_kl_weight(layer, 1.0)
    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert keras.backend.standardize_dtype(layer.losses[0].dtype) == "float32"
    assert np.all(np.isfinite(_np(y)))


def test_bare_cell_in_keras_rnn_draws_once_per_sequence():
    cell = ksvd.SimpleRNNCellSVD(3, activation=None, use_bias=False, seed=0)
    layer = L.RNN(cell, return_sequences=True)
    layer.build((None, 4, 2))
    ksvd.set_kl_weight(layer, 1.0)
    cell.kernel.assign(np.ones((2, 3), "float32"))
    cell.log_sigma2.assign(np.full((2, 3), -1.0, "float32"))
    cell.recurrent_kernel.assign(np.zeros((3, 3), "float32"))
    y = _np(layer(np.ones((5, 4, 2), "float32"), training=True))
    np.testing.assert_allclose(y, y[:1, :1].repeat(5, 0).repeat(4, 1))
    assert len(layer.losses) == 1


JAX_SCRIPT = """
import os, tempfile
import keras, numpy as np
import keras_sparsevd as ksvd
assert keras.backend.backend() == "jax"
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 5, 3)).astype("float32")
y = (x[:, :, 0].sum(axis=1) > 0).astype("int32")
for group_sparsity in (False, True):
    model = keras.Sequential([
        keras.Input((5, 3)),
        keras.layers.Bidirectional(ksvd.GRUSVD(4, return_sequences=True,
                                               group_sparsity=group_sparsity)),
        ksvd.LSTMSVD(4, group_sparsity=group_sparsity),
        keras.layers.Dense(2),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cell = model.layers[1].cell
    before = keras.ops.convert_to_numpy(cell.recurrent_log_sigma2).copy()
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                        callbacks=[ksvd.KLScheduler(64, 0, 1)])
    assert np.all(np.isfinite(history.history["loss"]))
    after = keras.ops.convert_to_numpy(cell.recurrent_log_sigma2)
    assert not np.allclose(before, after)
    pred = model.predict(x, verbose=0)
    path = os.path.join(tempfile.mkdtemp(), "m.keras")
    model.save(path)
    again = keras.models.load_model(path).predict(x, verbose=0)
    np.testing.assert_allclose(again, pred, rtol=1e-5, atol=1e-6)
layer = ksvd.SimpleRNNSVD(3, activation=None, use_bias=False, return_sequences=True)
layer.build((None, 4, 2))
ksvd.set_kl_weight(layer, 0.0)
layer.cell.kernel.assign(np.ones((2, 3), "float32"))
layer.cell.log_sigma2.assign(np.full((2, 3), -1.0, "float32"))
layer.cell.recurrent_kernel.assign(np.zeros((3, 3), "float32"))
ones = np.ones((6, 4, 2), "float32")
a = keras.ops.convert_to_numpy(layer(ones, training=True))
b = keras.ops.convert_to_numpy(layer(ones, training=True))
np.testing.assert_allclose(a, a[:1, :1].repeat(6, 0).repeat(4, 1), atol=1e-6)
assert not np.allclose(a, b)
print("ok")
"""


@pytest.mark.slow
def test_recurrent_layers_on_jax(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (an optional backend)")
    path = tmp_path / "check.py"
    path.write_text(JAX_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
