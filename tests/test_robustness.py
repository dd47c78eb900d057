"""Non-finite weights are never reported as sparsity; KLScheduler's arguments."""

import json

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from keras_sparsevd.model_helpers import NonFiniteWeightsError

RNG = np.random.default_rng(3)
X = RNG.normal(size=(32, 4)).astype("float32")
Y = RNG.integers(0, 2, 32)


def dense_model():
    return keras.Sequential(
        [
            keras.Input((4,)),
            ksvd.DenseSVD(3, activation="relu", name="d1"),
            ksvd.DenseSVD(2, name="d2"),
        ]
    )


def attention_model():
    inputs = keras.Input((3, 4))
    h = ksvd.MultiHeadAttentionSVD(num_heads=2, key_dim=2, name="mha")(inputs, inputs)
    outputs = ksvd.DenseSVD(2, name="d1")(keras.layers.Flatten()(h))
    return keras.Model(inputs, outputs)


def with_value(variable, index, value):
    array = keras.ops.convert_to_numpy(variable).copy()
    array[index] = value
    variable.assign(array)


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs or {}))


@pytest.mark.slow
@pytest.mark.all_backends
def test_fit_on_data_with_one_nan_pixel_stops_naming_the_layer():
    x = X.copy()
    x[5, 2] = np.nan
    model = dense_model()
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    recorder = Recorder()
    with pytest.raises(NonFiniteWeightsError) as info:
        model.fit(
            x,
            Y,
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[
                ksvd.KLScheduler(len(x), 0, 0),
                ksvd.SparsityLogger(),
                recorder,
            ],
        )
    # Stops like TerminateOnNaN(raise_error=True), and is a ValueError too.
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "'d1'" in message and "after epoch 1" in message
    assert "SparsityLogger" in message and "NaN" in message
    assert "learning rate" in message and "checkpoint" in message
    # The NaN weights never reached the logs of later callbacks or History.
    assert recorder.logs == []
    assert 1.0 not in model.history.history.get("sparsity", [])
    assert not np.isfinite(keras.ops.convert_to_numpy(model.layers[0].kernel)).all()


NON_FINITE_CASES = [
    # layer, weight, index, value, how the message names the weight
    ("d2", "theta", (1, 0), np.nan, "'kernel' (theta)"),
    ("d1", "log_sigma2", (0, 2), np.inf, "'log_sigma2'"),
    ("d1", "log_sigma2", (3, 1), -np.inf, "'log_sigma2'"),
    ("d2", "bias", (1,), np.nan, "'bias'"),
]


@pytest.mark.all_backends
def test_report_and_strip_refuse_non_finite_weights():
    for layer_name, weight, index, value, named in NON_FINITE_CASES:
        model = dense_model()
        layer = model.get_layer(layer_name)
        variable = {
            "theta": layer.theta(),
            "log_sigma2": layer.log_sigma2,
            "bias": layer.bias,
        }[weight]
        with_value(variable, index, value)
        for call, action in (
            (ksvd.sparsity_report, "report sparsity"),
            (ksvd.strip_sparsevd, "strip"),
            (ksvd.compact_model, "strip"),
        ):
            with pytest.raises(ValueError) as info:
                call(model)
            message = str(info.value)
            assert message.startswith(
                f"Cannot {action}: Sparse VD layer '{layer_name}'"
            ), message
            assert named in message and "1 of" in message, message
            assert "NaN/inf" in message and "learning rate" in message


@pytest.mark.all_backends
def test_non_finite_projection_of_attention_is_named_as_in_reports():
    model = attention_model()
    with_value(model.get_layer("mha")._value_dense.bias, (0, 0), np.nan)
    for call in (ksvd.sparsity_report, ksvd.strip_sparsevd):
        with pytest.raises(ValueError, match="layer 'mha/value' .*'bias'"):
            call(model)


def test_healthy_models_still_report_and_strip():
    for model in (dense_model(), attention_model()):
        report = ksvd.sparsity_report(model)
        assert report.total_weights > 0 and 0.0 <= report.sparsity < 1.0
        plain = ksvd.strip_sparsevd(model)
        x = RNG.normal(size=(2,) + model.input_shape[1:]).astype("float32")
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(plain(x)),
            keras.ops.convert_to_numpy(model(x, training=False)),
            atol=1e-5,
        )


# --------------------------------------------------------------------------
# KLScheduler's arguments


@pytest.mark.all_backends
def test_kl_scheduler_accepts_integer_like_values():
    for n in (1000, np.int64(1000), np.int32(1000), 1000.0, np.float32(1000.0)):
        sched = ksvd.KLScheduler(num_train_examples=n)
        assert sched.num_train_examples == 1000
        assert type(sched.num_train_examples) is int
        config = json.loads(json.dumps(sched.get_config()))
        assert config["num_train_examples"] == 1000
        assert ksvd.KLScheduler(**config).get_config() == config
    sched = ksvd.KLScheduler(100, start_epoch=np.int64(2), end_epoch=4.0)
    assert (sched.start_epoch, sched.end_epoch) == (2, 4)
    assert type(sched.end_epoch) is int
    assert sched.rw(3) == pytest.approx(0.5)
    assert ksvd.KLScheduler(100, max_rw=np.float32(0.5)).max_rw == 0.5


BAD_KL_SCHEDULER_ARGUMENTS = [
    ({"num_train_examples": 1000.5}, "num_train_examples"),
    ({"num_train_examples": 0}, "num_train_examples"),
    ({"num_train_examples": 0.0}, "num_train_examples"),
    ({"num_train_examples": -1}, "num_train_examples"),
    ({"num_train_examples": True}, "num_train_examples"),
    ({"num_train_examples": np.bool_(True)}, "num_train_examples"),
    ({"num_train_examples": "1000"}, "num_train_examples"),
    ({"num_train_examples": float("nan")}, "num_train_examples"),
    ({"num_train_examples": float("inf")}, "num_train_examples"),
    ({"num_train_examples": None}, "num_train_examples"),
    ({"num_train_examples": 10, "max_rw": float("inf")}, "max_rw"),
    ({"num_train_examples": 10, "max_rw": float("nan")}, "max_rw"),
    ({"num_train_examples": 10, "max_rw": -0.5}, "max_rw"),
    ({"num_train_examples": 10, "max_rw": "1"}, "max_rw"),
    ({"num_train_examples": 10, "max_rw": True}, "max_rw"),
    ({"num_train_examples": 10, "start_epoch": 1.5}, "start_epoch"),
    ({"num_train_examples": 10, "start_epoch": "5"}, "start_epoch"),
    ({"num_train_examples": 10, "start_epoch": -1}, "start_epoch"),
    ({"num_train_examples": 10, "start_epoch": None}, "start_epoch"),
    ({"num_train_examples": 10, "end_epoch": 20.5}, "end_epoch"),
    ({"num_train_examples": 10, "end_epoch": "20"}, "end_epoch"),
    ({"num_train_examples": 10, "start_epoch": 5, "end_epoch": 2}, "end_epoch"),
]


@pytest.mark.all_backends
def test_kl_scheduler_rejects_bad_arguments_naming_them():
    for kwargs, name in BAD_KL_SCHEDULER_ARGUMENTS:
        with pytest.raises(ValueError, match=f"`{name}`"):
            ksvd.KLScheduler(**kwargs)
