"""`compact_model` on recurrent layers: pruned hidden units and inputs removed."""

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from keras_sparsevd.export.compact import compact_plain

L = keras.layers
# (Keras layer, extra arguments, gate blocks)
RECURRENT = [
    (L.LSTM, {}, 4),
    (L.GRU, {}, 3),
    (L.GRU, {"reset_after": False}, 3),
    (L.SimpleRNN, {}, 1),
]
IDS = ["lstm", "gru", "gru-reset-before", "simple-rnn"]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _randomise(model, rng):
    for layer in model.layers:
        layer.set_weights(
            [
                rng.normal(scale=0.6, size=w.shape).astype("float32")
                for w in layer.get_weights()
            ]
        )


def _unread(cell, units, next_kernel):
    """Makes hidden `units` of `cell` read by nothing: its recurrent rows and
    the next layer's input rows are zeroed (their own gates are not)."""
    recurrent = _np(cell.recurrent_kernel).copy()
    recurrent[units] = 0.0
    cell.recurrent_kernel.assign(recurrent)
    value = _np(next_kernel).copy()
    value[units] = 0.0
    next_kernel.assign(value)


@pytest.mark.parametrize("rnn_cls, extra, gates", RECURRENT, ids=IDS)
@pytest.mark.parametrize("drop_unread_inputs", [False, True])
def test_unread_hidden_units_are_removed_with_identical_predictions(
    rnn_cls, extra, gates, drop_unread_inputs
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 4)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((5, 4)),
            L.Dense(6, activation="relu", name="features"),
            rnn_cls(8, return_sequences=True, name="rnn1", **extra),
            rnn_cls(7, name="rnn2", **extra),
            L.Dense(3, name="head"),
        ]
    )
    _randomise(model, rng)
    features, rnn1, rnn2, head = model.layers
    # Feature unit 2 has no inputs: a constant, folded into rnn1's bias.
    kernel = _np(features.kernel).copy()
    kernel[:, 2] = 0.0
    features.kernel.assign(kernel)
    # Input feature 1 is read by nobody.
    kernel[1] = 0.0
    features.kernel.assign(kernel)
    _unread(rnn1.cell, [0, 3, 5], rnn2.cell.kernel)
    _unread(rnn2.cell, [1, 6], head.kernel)
    # rnn2's unit 0 is not read by the head but by the recurrence: it stays.
    value = _np(head.kernel).copy()
    value[0] = 0.0
    head.kernel.assign(value)
    # rnn2's unit 4 has no inputs but its state still moves from step to
    # step and the head reads it: it must stay.
    for name in ("kernel", "recurrent_kernel"):
        value = _np(getattr(rnn2.cell, name)).copy()
        value.reshape(value.shape[0], gates, 7)[:, :, 4] = 0.0
        getattr(rnn2.cell, name).assign(value)

    small = compact_plain(model, drop_unread_inputs=drop_unread_inputs)

    np.testing.assert_allclose(_np(small(x)), _np(model(x)), rtol=1e-5, atol=1e-5)
    layers = {layer.name: layer for layer in small.layers}
    assert layers["features"].units == 5
    assert layers["rnn1"].units == 5
    assert layers["rnn2"].units == 5
    assert type(layers["rnn1"]) is rnn_cls
    assert layers["head"].kernel.shape == (5, 3)
    assert tuple(layers["rnn2"].cell.recurrent_kernel.shape) == (5, gates * 5)
    if drop_unread_inputs:
        assert tuple(layers["features"].kernel.shape) == (3, 5)
    else:
        assert tuple(layers["features"].kernel.shape) == (4, 5)


def test_unread_input_features_of_a_first_lstm_are_dropped():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5, 4)).astype("float32")
    model = keras.Sequential(
        [keras.Input((5, 4)), L.LSTM(6, name="lstm"), L.Dense(2, name="head")]
    )
    _randomise(model, rng)
    kernel = _np(model.layers[0].cell.kernel).copy()
    kernel[[0, 2]] = 0.0
    model.layers[0].cell.kernel.assign(kernel)
    small = compact_plain(model, drop_unread_inputs=True)
    np.testing.assert_allclose(_np(small(x)), _np(model(x)), rtol=1e-5, atol=1e-6)
    lstm = [layer for layer in small.layers if isinstance(layer, L.LSTM)][0]
    assert tuple(lstm.cell.kernel.shape) == (2, 24)


def test_stateful_or_state_returning_layers_are_left_alone():
    model = keras.Sequential(
        [keras.Input((5, 4), batch_size=2), L.LSTM(6, stateful=True), L.Dense(2)]
    )
    cell = model.layers[0].cell
    cell.recurrent_kernel.assign(np.zeros(tuple(cell.recurrent_kernel.shape)))
    model.layers[1].kernel.assign(np.zeros((6, 2)))
    small = compact_plain(model)
    assert small.layers[0].units == 6


def test_structured_lstm_svd_compacts_pruned_neurons_with_same_predictions():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 5, 4)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((5, 4)),
            ksvd.LSTMSVD(8, seed=0, group_sparsity=True, name="lstm"),
            ksvd.DenseSVD(3, seed=1, group_sparsity=True, name="head"),
        ]
    )
    model(x)
    cell, head = model.layers[0].cell, model.layers[1]
    for variable in cell.weights + head.weights:
        if variable.name in ("kernel", "recurrent_kernel", "bias"):
            value = rng.normal(scale=0.6, size=tuple(variable.shape))
            variable.assign(value.astype("float32"))
    # Prune hidden units 1, 4, 6 where the recurrence reads them (hidden
    # groups) and where the head reads them (the head's input groups), and
    # input feature 3: the neurons pruned as W+G+N prunes them.
    for layer, kind, units in ((cell, "hidden", [1, 4, 6]), (cell, "input", [3])):
        mu, log_sigma2 = layer._group_variables(kind)
        value = np.full(tuple(log_sigma2.shape), -8.0, "float32")
        value[units] = 10.0
        log_sigma2.assign(value)
        mu.assign(rng.uniform(0.5, 1.5, size=tuple(mu.shape)).astype("float32"))
    value = np.full(tuple(head.group_log_sigma2.shape), -8.0, "float32")
    value[[1, 4, 6]] = 10.0
    head.group_log_sigma2.assign(value)

    small = ksvd.compact_model(model, drop_unread_inputs=True)

    np.testing.assert_allclose(_np(small(x)), _np(model(x)), rtol=1e-5, atol=1e-5)
    lstm = [layer for layer in small.layers if isinstance(layer, L.LSTM)][0]
    assert type(lstm) is L.LSTM
    assert lstm.units == 5
    assert tuple(lstm.cell.kernel.shape) == (3, 20)
    assert tuple(lstm.cell.recurrent_kernel.shape) == (5, 20)


def test_sequences_of_any_length_compact():
    rng = np.random.default_rng(3)
    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            L.LSTM(6, return_sequences=True, name="lstm"),
            L.Dense(3, name="head"),
        ]
    )
    _randomise(model, rng)
    _unread(model.layers[0].cell, [2, 5], model.layers[1].kernel)
    small = compact_plain(model)
    assert small.layers[0].units == 4
    for steps in (3, 9):
        x = rng.normal(size=(2, steps, 4)).astype("float32")
        np.testing.assert_allclose(_np(small(x)), _np(model(x)), atol=1e-5)
