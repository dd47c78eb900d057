"""The layers inside models: fit, save, load, callbacks, precision, XLA."""

import json

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd

RNG = np.random.default_rng(1)
X_IMG = RNG.random((64, 12, 12, 1)).astype("float32")
Y_IMG = RNG.integers(0, 3, 64)


def conv_model():
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            ksvd.Conv2DSVD(4, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            ksvd.DenseSVD(8, activation="relu", name="d1"),
            ksvd.DenseSVD(3, name="d2"),
        ]
    )


def functional_model():
    inputs = keras.Input((12, 12, 1))
    a = ksvd.Conv2DSVD(4, 3, padding="same", name="c1")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="plain")(inputs)
    h = keras.layers.Flatten()(keras.layers.Add()([a, b]))
    h = keras.layers.BatchNormalization()(h)
    outputs = ksvd.DenseSVD(3, name="d1")(h)
    return keras.Model(inputs, outputs)


def compile_(model, **kwargs):
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **kwargs,
    )
    return model


@pytest.mark.parametrize(
    "build",
    [pytest.param(conv_model, marks=pytest.mark.all_backends), functional_model],
)
@pytest.mark.slow
def test_fit_evaluate_predict_and_keras_round_trip(build, tmp_path):
    model = compile_(build())
    history = model.fit(
        X_IMG,
        Y_IMG,
        batch_size=16,
        epochs=2,
        verbose=0,
        validation_data=(X_IMG, Y_IMG),
        callbacks=[ksvd.KLScheduler(len(X_IMG), 0, 1), ksvd.SparsityLogger()],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    loss, _ = model.evaluate(X_IMG, Y_IMG, verbose=0)
    assert np.isfinite(loss)
    pred = model.predict(X_IMG, verbose=0)
    # Evaluation is deterministic.
    np.testing.assert_array_equal(pred, model.predict(X_IMG, verbose=0))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(pred, loaded.predict(X_IMG, verbose=0))
    assert ksvd.get_kl_weight(loaded) == pytest.approx(ksvd.get_kl_weight(model))
    # A saved trained model trains on without being told N again.
    compile_(loaded).fit(X_IMG, Y_IMG, epochs=1, verbose=0)


@pytest.mark.slow
@pytest.mark.all_backends
def test_loss_includes_kl_over_n():
    model = compile_(conv_model())
    model.fit(
        X_IMG,
        Y_IMG,
        epochs=1,
        verbose=0,
        callbacks=[ksvd.KLScheduler(1000, start_epoch=0, end_epoch=0)],
    )
    kl = sum(
        float(np.sum(keras.ops.convert_to_numpy(ksvd.kl_divergence(lay.log_alpha))))
        for lay in ksvd.svd_layers(model)
    )
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        Y_IMG, model.predict(X_IMG, verbose=0)
    )
    loss = model.evaluate(X_IMG, Y_IMG, batch_size=64, verbose=0)[0]
    assert loss == pytest.approx(float(ce) + kl / 1000, rel=1e-4)


@pytest.mark.all_backends
def test_training_without_kl_weight_is_an_error_that_names_both_fixes():
    model = compile_(conv_model())
    with pytest.raises(ksvd.KLWeightNotSetError) as info:
        model.fit(X_IMG, Y_IMG, epochs=1, verbose=0)
    assert "KLScheduler" in str(info.value) and "set_kl_weight" in str(info.value)


# Not on JAX: Keras' JAX fit detaches the variables' values while it steps and
# reattaches them at the epoch's end, so an error in the first step leaves the
# model without weights ("'NoneType' object is not callable" on the next fit).
@pytest.mark.slow
def test_fixing_the_kl_weight_on_the_same_compiled_model_trains():
    model = compile_(conv_model())
    with pytest.raises(ksvd.KLWeightNotSetError):
        model.fit(X_IMG, Y_IMG, epochs=1, verbose=0)
    model.fit(X_IMG, Y_IMG, epochs=1, verbose=0, callbacks=[ksvd.KLScheduler(64)])


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_custom_training_loop_with_set_kl_weight():
    import tensorflow as tf

    model = conv_model()
    ksvd.set_kl_weight(model, 1.0 / len(X_IMG))
    opt = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)) + tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = [float(step(X_IMG, Y_IMG)) for _ in range(5)]
    assert np.all(np.isfinite(losses))
    assert len(model.losses) == 3


@pytest.mark.slow
@pytest.mark.all_backends
def test_kl_scheduler_follows_the_paper_warm_up():
    sched = ksvd.KLScheduler(num_train_examples=60000)
    rws = [sched.rw(e) for e in range(25)]
    assert rws[:5] == [0.0] * 5
    assert rws[5] == 0.0 and rws[11] == pytest.approx(6 / 15)
    assert rws[19] == pytest.approx(14 / 15)
    assert rws[20:] == [1.0] * 5
    model = compile_(conv_model())
    model.fit(
        X_IMG,
        Y_IMG,
        epochs=3,
        verbose=0,
        callbacks=[ksvd.KLScheduler(64, start_epoch=1, end_epoch=3)],
    )
    assert ksvd.get_kl_weight(model) == pytest.approx((1 / 2) / 64)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_train_examples": 0},
        {"num_train_examples": 1.5},
        {"num_train_examples": 10, "start_epoch": 5, "end_epoch": 2},
    ],
)
@pytest.mark.slow
@pytest.mark.all_backends
def test_kl_scheduler_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ksvd.KLScheduler(**kwargs)


@pytest.mark.slow
@pytest.mark.all_backends
def test_sparsity_logger_feeds_history_and_csv(tmp_path):
    model = compile_(conv_model())
    csv_path = tmp_path / "log.csv"
    history = model.fit(
        X_IMG,
        Y_IMG,
        epochs=2,
        verbose=0,
        callbacks=[
            ksvd.KLScheduler(64, 0, 1),
            ksvd.SparsityLogger(),
            keras.callbacks.CSVLogger(str(csv_path)),
        ],
    )
    for key in (
        "sparsity",
        "compression",
        "sparsity/c1",
        "sparsity/d1",
        "sparsity/d2",
        "kl_rw",
    ):
        assert key in history.history
        assert len(history.history[key]) == 2
    report = ksvd.sparsity_report(model)
    assert history.history["sparsity"][-1] == pytest.approx(report.sparsity)
    header = csv_path.read_text().splitlines()[0]
    assert "sparsity/d1" in header and "compression" in header


@pytest.mark.all_backends
def test_sparsity_report_counts_weights_only():
    model = conv_model()
    layers = ksvd.svd_layers(model)
    # Prune exactly half of d1's weights.
    d1 = model.get_layer("d1")
    log_sigma2 = np.full(d1.kernel.shape, -30.0, "float32")
    log_sigma2.reshape(-1)[: log_sigma2.size // 2] = 30.0
    d1.log_sigma2.assign(log_sigma2)
    for layer in layers:
        if layer is not d1:
            layer.log_sigma2.assign(np.full(layer.kernel.shape, -30.0, "float32"))
    report = ksvd.sparsity_report(model)
    total = sum(int(np.prod(lay.kernel.shape)) for lay in layers)
    assert report.total_weights == total  # no biases
    assert report.total_kept == total - log_sigma2.size // 2
    assert report.compression == pytest.approx(total / report.total_kept)
    text = str(report)
    assert "d1" in text and "50.00%" in text and "compression" in text
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["layers"][1]["name"] == "d1"
    assert as_dict["total_weights"] == total


@pytest.mark.all_backends
def test_sparsity_report_errors():
    with pytest.raises(ValueError, match="no Sparse VD"):
        ksvd.sparsity_report(
            keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        )
    with pytest.raises(ValueError, match="not built"):
        ksvd.sparsity_report(ksvd.DenseSVD(2))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.all_backends
def test_mixed_precision_trains_without_nan(policy):
    keras.mixed_precision.set_global_policy(policy)
    model = compile_(conv_model())
    layer = model.get_layer("d1")
    assert layer.compute_dtype != "float32"
    assert keras.backend.standardize_dtype(layer.log_alpha.dtype) == "float32"
    assert layer.kernel.dtype == "float32"
    history = model.fit(
        X_IMG * 255.0,
        Y_IMG,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[ksvd.KLScheduler(64, 0, 1)],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.all(np.isfinite(model.predict(X_IMG, verbose=0).astype("float32")))
    for lay in ksvd.svd_layers(model):
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(lay.kernel)))


# On PyTorch, jit_compile=True is torch.compile: minutes on a 2-core CPU, so
# only the default ("auto") is in the subset that CI runs on every backend.
@pytest.mark.parametrize(
    "jit_compile", [True, pytest.param("auto", marks=pytest.mark.all_backends)]
)
@pytest.mark.slow
def test_jit_compile_trains(jit_compile):
    model = compile_(conv_model(), jit_compile=jit_compile)
    before = keras.ops.convert_to_numpy(model.get_layer("d1").log_sigma2).copy()
    history = model.fit(
        X_IMG,
        Y_IMG,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[ksvd.KLScheduler(64, 0, 1)],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    after = keras.ops.convert_to_numpy(model.get_layer("d1").log_sigma2)
    assert not np.allclose(before, after)


@pytest.mark.parametrize(
    "layer",
    [
        ksvd.DenseSVD(
            7,
            activation="relu",
            use_bias=False,
            threshold=2.5,
            train_clip=True,
            seed=3,
            log_sigma2_initializer=keras.initializers.Constant(-8.0),
            kernel_regularizer="l2",
            name="dd",
        ),
        ksvd.Conv1DSVD(3, 5, strides=2, padding="same", dilation_rate=1),
        ksvd.Conv2DSVD(4, (3, 1), data_format="channels_first", dilation_rate=2),
        ksvd.Conv3DSVD(2, 2, kernel_initializer="he_normal"),
    ],
)
@pytest.mark.slow
@pytest.mark.all_backends
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # Registered: plain keras deserialisation finds the class.
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(again) is type(layer)
    assert again.get_config() == config


@pytest.mark.all_backends
def test_summary_is_readable():
    lines = []
    conv_model().summary(print_fn=lambda line, **_: lines.append(line))
    text = "\n".join(lines)
    assert "Conv2DSVD" in text and "DenseSVD" in text


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ksvd.DenseSVD(0), "`units`"),
        (lambda: ksvd.DenseSVD(-3), "`units`"),
        (lambda: ksvd.DenseSVD(2.5), "`units`"),
        (lambda: ksvd.Conv2DSVD(0, 3), "`filters`"),
        (lambda: ksvd.DenseSVD(3, threshold=float("nan")), "`threshold`"),
        (lambda: ksvd.Conv1DSVD(3, 3, threshold=float("inf")), "`threshold`"),
        (lambda: ksvd.Conv2DSVD(3, (3, 3, 3)), "`kernel_size`"),
        (lambda: ksvd.Conv3DSVD(3, (3, 3)), "`kernel_size`"),
        (lambda: ksvd.Conv2DSVD(3, 3, strides=(1, 0)), "`strides`"),
        (lambda: ksvd.Conv2DSVD(3, 3, padding="causal"), "`padding`"),
        (lambda: ksvd.Conv2DSVD(3, 3, data_format="nhwc"), "`data_format`"),
        (lambda: ksvd.DenseSVD(3, seed="a"), "`seed`"),
    ],
)
@pytest.mark.slow
@pytest.mark.all_backends
def test_bad_arguments_are_clear_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.all_backends
def test_bad_inputs_are_clear_value_errors():
    with pytest.raises(ValueError, match="expected min_ndim=4, found ndim=3"):
        ksvd.Conv2DSVD(3, 3)(np.zeros((2, 5, 5), "float32"))
    with pytest.raises(ValueError, match="last dimension"):
        keras.Sequential([keras.Input((None,)), ksvd.DenseSVD(3)])
    with pytest.raises(ValueError, match="channel dimension"):
        keras.Sequential([keras.Input((8, 8, None)), ksvd.Conv2DSVD(3, 3)])
    with pytest.raises(TypeError, match="abstract"):
        ksvd.BaseConvSVD(3, 3)


@keras.saving.register_keras_serializable(package="tests")
class _AlwaysNoisy(keras.layers.Layer):
    """Calls its Sparse VD layer in training mode whatever it is asked."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = ksvd.DenseSVD(3)

    def call(self, inputs):
        return self.inner(inputs, training=True)


@pytest.mark.all_backends
def test_kl_weight_error_only_in_a_real_training_step():
    # Building the model traces the call symbolically: no error there.
    model = keras.Sequential([keras.Input((4,)), _AlwaysNoisy()])
    assert model.output_shape == (None, 3)
    with pytest.raises(ksvd.KLWeightNotSetError, match="KLScheduler"):
        model(np.ones((2, 4), "float32"))
