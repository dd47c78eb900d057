"""`sparsify`: conversion of users' models, selection, errors, round trips."""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from keras_sparsevd.export import cli

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sparsify_scenario  # noqa: E402


@pytest.mark.slow
def test_done_when_scenario_in_process():
    assert sparsify_scenario.run()["backend"] == keras.backend.backend()


@pytest.mark.slow
def test_done_when_scenario_jax():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "sparsify_scenario.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SCENARIO_OK jax" in result.stdout


def _mlp(name="mlp"):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="relu", name="fc1"),
            keras.layers.Dropout(0.1, name="drop"),
            keras.layers.Dense(3, name="fc2"),
        ],
        name=name,
    )


@pytest.mark.all_backends
def test_weights_config_and_other_layers_carried_over():
    model = _mlp()
    model.layers[0].trainable = False
    sparse = ksvd.sparsify(model, threshold=2.5, log_sigma2_initializer=-12.0)
    fc1, drop, fc2 = sparse.layers
    assert type(fc1) is ksvd.DenseSVD and type(fc2) is ksvd.DenseSVD
    assert type(drop) is keras.layers.Dropout and drop.rate == 0.1
    assert not fc1.trainable and fc2.trainable
    assert fc1.threshold == 2.5 and fc1.activation is keras.activations.relu
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fc1.kernel),
        keras.ops.convert_to_numpy(model.layers[0].kernel),
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fc2.bias),
        keras.ops.convert_to_numpy(model.layers[2].bias),
    )
    assert np.all(keras.ops.convert_to_numpy(fc2.log_sigma2) == -12.0)
    assert not sparse.compiled and sparse.name == "mlp"


@pytest.mark.all_backends
def test_layers_by_name_by_predicate_and_as_one_string():
    model = _mlp()
    only = ksvd.sparsify(model, ["fc2"])
    assert [type(x).__name__ for x in only.layers] == ["Dense", "Dropout", "DenseSVD"]
    one = ksvd.sparsify(model, "fc1")
    assert type(one.layers[0]) is ksvd.DenseSVD and type(one.layers[2]) is not (
        ksvd.DenseSVD
    )
    picked = ksvd.sparsify(model, lambda layer: layer.name == "fc1")
    assert type(picked.layers[0]) is ksvd.DenseSVD


class MyDense(keras.layers.Dense):
    def call(self, inputs):
        return 2.0 * super().call(inputs)


class DoublingDenseSVD(ksvd.DenseSVD):
    def call(self, inputs, training=None):
        return 2.0 * super().call(inputs, training=training)


def _with_subclass():
    return keras.Sequential(
        [
            keras.Input((4,)),
            MyDense(3, name="mine"),
            keras.layers.Dense(2, name="plain"),
        ]
    )


@pytest.mark.all_backends
def test_selection_errors_name_the_layer():
    model = _mlp()
    with pytest.raises(ValueError, match="`layers` names 'nope'.*no layer"):
        ksvd.sparsify(model, ["nope"])
    with pytest.raises(ValueError, match="'drop' \\(Dropout\\).*cannot be converted"):
        ksvd.sparsify(model, ["drop"])
    with pytest.raises(ValueError, match="picked layer 'drop'"):
        ksvd.sparsify(model, lambda layer: True)
    with pytest.raises(ValueError, match="layer names or paths"):
        ksvd.sparsify(model, [3])
    with pytest.raises(ValueError, match="no layer to convert"):
        ksvd.sparsify(keras.Sequential([keras.Input((3,)), keras.layers.ReLU()]))
    with pytest.raises(ValueError, match="`threshold`"):
        ksvd.sparsify(model, threshold=float("nan"))
    with pytest.raises(ValueError, match="`log_sigma2_initializer`"):
        ksvd.sparsify(model, log_sigma2_initializer="not-an-initializer")


@pytest.mark.all_backends
def test_subclass_of_a_keras_layer_is_never_taken_for_its_base():
    model = _with_subclass()
    with pytest.warns(UserWarning, match="'mine' \\(MyDense\\) is left as it is"):
        sparse = ksvd.sparsify(model)
    assert type(sparse.layers[0]) is MyDense
    assert type(sparse.layers[1]) is ksvd.DenseSVD
    with pytest.raises(ValueError, match="'mine'.*subclass of Dense"):
        ksvd.sparsify(model, ["mine"])


@pytest.mark.all_backends
def test_subclassed_models_and_nested_ones_are_converted_too():
    class Net(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    x = np.ones((2, 3), "float32")
    expected = net.predict(x, verbose=0)
    sparse = ksvd.sparsify(net, log_sigma2_initializer=-30.0, verbose=False)
    assert type(sparse) is Net and type(sparse.fc) is ksvd.DenseSVD
    assert type(net.fc) is keras.layers.Dense  # the input model is untouched
    np.testing.assert_allclose(sparse.predict(x, verbose=0), expected, atol=1e-6)
    inputs = keras.Input((3,))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="top")(net(inputs)))
    sparse_outer = ksvd.sparsify(outer, verbose=False)
    assert len(ksvd.svd_layers(sparse_outer)) == 2
    with pytest.raises(ValueError, match="must be a Keras model"):
        ksvd.sparsify(keras.layers.Dense(3))


@pytest.mark.all_backends
def test_inplace_converts_the_model_itself_and_refuses_non_bools():
    model = _mlp()
    same = ksvd.sparsify(model, inplace=True, verbose=False)
    assert same is model and type(model.get_layer("fc1")) is ksvd.DenseSVD
    stripped = ksvd.strip_sparsevd(model, inplace=True)
    assert stripped is model and type(model.get_layer("fc1")) is keras.layers.Dense
    with pytest.raises(TypeError, match="`inplace` must be True or False"):
        ksvd.sparsify(_mlp(), inplace="yes")
    with pytest.raises(TypeError, match="`structured` must be True or False"):
        ksvd.sparsify(_mlp(), structured="no")


@pytest.mark.all_backends
def test_a_model_keras_cannot_copy_names_inplace():
    class Unbuildable(keras.layers.Layer):
        def __init__(self, units, helper, **kwargs):  # helper: not serializable
            super().__init__(**kwargs)
            self.helper = helper
            self.inner = keras.layers.Dense(units)

        def call(self, x):
            return self.inner(x)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Unbuildable(2, object())(inputs))
    with pytest.raises(ValueError, match="inplace=True"):
        ksvd.sparsify(model, verbose=False)
    sparse = ksvd.sparsify(model, inplace=True, verbose=False)
    assert len(ksvd.svd_layers(sparse)) == 1


@pytest.mark.all_backends
def test_strip_refuses_a_subclass_of_a_sparse_layer(tmp_path):
    model = keras.Sequential([keras.Input((4,)), DoublingDenseSVD(3, name="twice")])
    with pytest.raises(ValueError, match="'twice'.*subclasses DenseSVD.*register"):
        ksvd.strip_sparsevd(model)
    with pytest.raises(ValueError, match="'twice'"):
        ksvd.compact_model(model)
    with pytest.raises(ValueError, match="'twice'"):
        ksvd.save_sparse(model, str(tmp_path / "m.npz"))


def test_cli_refuses_what_it_cannot_reproduce(tmp_path, capsys):
    keras.saving.get_custom_objects()["DoublingDenseSVD"] = DoublingDenseSVD
    try:
        model = keras.Sequential([keras.Input((4,)), DoublingDenseSVD(3, name="twice")])
        path = str(tmp_path / "twice.keras")
        model.save(path)
        out = tmp_path / "out"
        status = cli.main([path, str(out)])
        err = capsys.readouterr().err
    finally:
        del keras.saving.get_custom_objects()["DoublingDenseSVD"]
    assert status == 2
    assert "Traceback" not in err and "'twice'" in err
    assert not out.exists()


def test_cli_fails_when_predictions_differ(tmp_path, capsys, monkeypatch):
    model = keras.Sequential([keras.Input((4,)), ksvd.DenseSVD(3, name="fc")])
    path = str(tmp_path / "m.keras")
    model.save(path)
    real_strip = cli.strip_sparsevd

    def broken_strip(model, **options):
        plain = real_strip(model, **options)
        plain.layers[-1].bias.assign(np.ones(3, "float32"))
        return plain

    monkeypatch.setattr(cli, "strip_sparsevd", broken_strip)
    out = tmp_path / "out"
    status = cli.main([path, str(out)])
    captured = capsys.readouterr()
    assert status == 1
    assert "DIFFER" in captured.out and "nothing was written" in captured.err
    assert not out.exists()


@pytest.mark.all_backends
def test_register_layer_pair_hook():
    class ScaledDense(keras.layers.Dense):
        pass

    class ScaledDenseSVD(ksvd.DenseSVD):
        pass

    ksvd.register_layer_pair(ScaledDense, ScaledDenseSVD)
    model = keras.Sequential([keras.Input((4,)), ScaledDense(3, name="s")])
    sparse = ksvd.sparsify(model, log_sigma2_initializer=-30.0)
    assert type(sparse.layers[0]) is ScaledDenseSVD
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(
        sparse.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    assert type(ksvd.strip_sparsevd(sparse).layers[0]) is ScaledDense
    with pytest.raises(ValueError, match="already registered"):
        ksvd.register_layer_pair(ScaledDense, ksvd.DenseSVD)
    with pytest.raises(ValueError, match="must subclass"):
        ksvd.register_layer_pair(keras.layers.ReLU, keras.layers.ReLU)


def test_counterpart_of_is_the_one_declaration_of_a_pair(tmp_path):
    @keras.saving.register_keras_serializable(package="test_pairs")
    class Scale(keras.layers.Layer):
        """A user's own layer: x @ kernel, no bias."""

        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape):
            self.kernel = self.add_weight(
                name="kernel", shape=(input_shape[-1], self.units)
            )

        def call(self, x):
            return keras.ops.matmul(x, self.kernel)

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    @ksvd.counterpart_of(Scale, package="test_pairs")
    class ScaleSVD(ksvd.SparseVDLayer, Scale):
        def _apply_kernel(self, inputs, kernel):
            return keras.ops.matmul(inputs, kernel)

    model = keras.Sequential([keras.Input((4,)), Scale(3, name="s")])
    x = np.random.default_rng(0).random((5, 4)).astype("float32")
    sparse = ksvd.sparsify(model, log_sigma2_initializer=-30.0, verbose=False)
    assert type(sparse.layers[0]) is ScaleSVD
    np.testing.assert_allclose(
        sparse.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    sparse.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.layers[0]) is ScaleSVD
    assert type(ksvd.strip_sparsevd(sparse).layers[0]) is Scale


@pytest.mark.slow
def test_compact_and_sparse_file_accept_the_new_layer_types(tmp_path):
    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.SeparableConv2D(6, 3, activation="relu", name="sep"),
            keras.layers.Conv2D(6, 3, groups=2, activation="relu", name="grouped"),
            keras.layers.Conv2DTranspose(4, 3, activation="relu", name="up"),
            keras.layers.Conv2D(5, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="out"),
        ]
    )
    sparse = ksvd.sparsify(model)
    for layer in ksvd.svd_layers(sparse):
        for name in layer.svd_kernels:
            theta = keras.ops.convert_to_numpy(layer.theta(name))
            keep = rng.random(theta.shape) < 0.3
            if layer.name == "conv":
                keep[..., :2] = False  # two dead filters for compaction
            log_theta2 = np.log(theta**2 + 1e-8)
            layer.log_sigma2_of(name).assign(
                np.where(keep, log_theta2 - 8.0, log_theta2 + 8.0)
            )
    x = rng.random((4, 10, 10, 3)).astype("float32")
    expected = sparse.predict(x, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        small = ksvd.compact_model(sparse)
    assert small.get_layer("conv").filters == 3
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, atol=1e-5)
    ksvd.save_sparse(sparse, str(tmp_path / "m.npz"))
    loaded = ksvd.load_sparse(str(tmp_path / "m.npz"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
    report = ksvd.sparsity_report(sparse)
    sep = report.layers[0]
    assert sep.name == "sep" and sep.weights == 3 * 9 + 3 * 6
