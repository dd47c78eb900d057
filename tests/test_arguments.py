"""Bad arguments are refused at construction; a new threshold reaches predict."""

import glob
import importlib.util
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from keras_sparsevd.layers.args import ArgumentTypeError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(4)


def model_with_spread_log_alpha():
    """A model whose log alphas spread over [-6, 6], so thresholds matter."""
    model = keras.Sequential(
        [
            keras.Input((6,)),
            ksvd.DenseSVD(5, activation="relu", name="d1", train_clip=True),
            ksvd.DenseSVD(2, name="d2"),
        ]
    )
    for layer in ksvd.svd_layers(model):
        theta = RNG.normal(size=tuple(layer.kernel.shape)).astype("float32")
        layer.kernel.assign(theta)
        log_alpha = RNG.uniform(-6, 6, theta.shape)
        layer.log_sigma2.assign(log_alpha + np.log(theta**2 + 1e-8))
    return model


def masked_output(model, x):
    """The evaluation output computed by hand from the layers' thresholds."""
    h = x
    for layer in ksvd.svd_layers(model):
        theta = keras.ops.convert_to_numpy(layer.kernel)
        log_alpha = keras.ops.convert_to_numpy(layer.log_alpha)
        h = h @ (theta * (log_alpha < layer.threshold)) + keras.ops.convert_to_numpy(
            layer.bias
        )
        if layer.name == "d1":
            h = np.maximum(h, 0)
    return h


def test_a_new_threshold_reaches_predict_and_evaluate_after_a_first_call():
    model = model_with_spread_log_alpha()
    model.compile(loss="mse")
    x = RNG.normal(size=(16, 6)).astype("float32")
    y = np.zeros((16, 2), "float32")
    first = model.predict(x, verbose=0)
    np.testing.assert_allclose(first, masked_output(model, x), atol=1e-5)
    loss_first = model.evaluate(x, y, verbose=0)
    for layer in ksvd.svd_layers(model):
        layer.threshold = -1.0
    second = model.predict(x, verbose=0)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(second, masked_output(model, x), atol=1e-5)
    expected_loss = float(np.mean((masked_output(model, x) - y) ** 2))
    loss_second = model.evaluate(x, y, verbose=0)
    assert loss_second != pytest.approx(loss_first)
    assert loss_second == pytest.approx(expected_loss, rel=1e-5)


def test_a_new_threshold_reaches_a_compiled_train_step():
    # log alpha = -8 everywhere (the clip's floor): the training noise is small
    # and zero-mean, so over a large batch the step's loss is that of the
    # masked means plus a little (train_clip on d1). With a batch of 8 the
    # noise's cross term alone could move the loss by 0.03.
    model = model_with_spread_log_alpha()
    for layer in ksvd.svd_layers(model):
        theta = keras.ops.convert_to_numpy(layer.kernel)
        layer.log_sigma2.assign(np.log(theta**2 + 1e-8) - 8.0)
    model.compile(keras.optimizers.SGD(0.0), loss="mse")
    ksvd.set_kl_weight(model, 0.0)
    x = RNG.normal(size=(4096, 6)).astype("float32")
    y = masked_output(model, x) + 0.5  # the kept model's loss is 0.25

    def expected_loss():
        return float(np.mean((masked_output(model, x) - y) ** 2))

    kept = expected_loss()
    assert model.train_on_batch(x, y) == pytest.approx(kept, abs=0.05)
    model.get_layer("d1").threshold = -8.0  # every weight of d1 pruned
    pruned = expected_loss()
    assert pruned > 1.0
    assert model.train_on_batch(x, y) == pytest.approx(pruned, rel=0.05)


def test_threshold_is_not_saved_as_a_weight_and_old_files_load(tmp_path):
    model = model_with_spread_log_alpha()
    model.get_layer("d1").threshold = 2.0
    assert all("threshold" not in w.path for w in model.weights)
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "model.weights.h5" in archive.namelist()
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("d1").threshold == 2.0
    x = RNG.normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    # A model saved by an earlier version (committed results).
    old = sorted(
        glob.glob(os.path.join(REPO_ROOT, "results", "lenet300-mnist-svd-*.keras"))
    )
    assert old, "no committed LeNet-300-100 model in results/"
    lenet = keras.models.load_model(old[0])
    report = ksvd.sparsity_report(lenet)
    for layer in ksvd.svd_layers(lenet):
        layer.threshold = 8.0
    assert ksvd.sparsity_report(lenet).compression < report.compression


def test_attention_threshold_reaches_its_projections():
    inputs = keras.Input((3, 4))
    outputs = ksvd.MultiHeadAttentionSVD(2, 2, name="mha")(inputs, inputs)
    model = keras.Model(inputs, outputs)
    mha = model.get_layer("mha")
    mha.threshold = -2.0
    assert {p.threshold for p in mha.projections.values()} == {-2.0}
    with pytest.raises(ValueError, match="`threshold`"):
        mha.threshold = 9.0


BAD_ARGUMENTS = [
    # make, error type, argument the message names
    (lambda: ksvd.DenseSVD(3, train_clip="no"), ArgumentTypeError, "`train_clip`"),
    (lambda: ksvd.DenseSVD(3, train_clip=1), ArgumentTypeError, "`train_clip`"),
    (lambda: ksvd.DenseSVD(3, group_sparsity="no"), ArgumentTypeError, "`group"),
    (lambda: ksvd.Conv2DSVD(3, 3, group_sparsity=None), ArgumentTypeError, "`group"),
    (lambda: ksvd.DenseSVD(3, threshold=True), ArgumentTypeError, "`threshold`"),
    (lambda: ksvd.DenseSVD(3, threshold="3"), ArgumentTypeError, "`threshold`"),
    (lambda: ksvd.DenseSVD(3, threshold=8.5), ValueError, r"\[-8, 8\]"),
    (lambda: ksvd.DenseSVD(3, threshold=-9), ValueError, r"\[-8, 8\]"),
    (lambda: ksvd.DenseSVD(3, seed=2**70), ValueError, "`seed`"),
    (lambda: ksvd.DenseSVD(3, seed=-1), ValueError, "`seed`"),
    (lambda: ksvd.DenseSVD(3, seed=1.5), ArgumentTypeError, "`seed`"),
    (
        lambda: ksvd.MultiHeadAttentionSVD(2, 2, train_clip="yes"),
        ArgumentTypeError,
        "`train_clip`",
    ),
    (
        lambda: ksvd.DenseSVD(
            3, log_sigma2_initializer=lambda shape, dtype=None: np.zeros((7,))
        ),
        ValueError,
        "`log_sigma2_initializer`.*returned shape",
    ),
    (
        lambda: ksvd.DenseSVD(3, log_sigma2_initializer=lambda: 0.0),
        ValueError,
        "`log_sigma2_initializer`.*failed",
    ),
    (
        lambda: ksvd.DenseSVD(3, log_sigma2_initializer=True),
        ArgumentTypeError,
        "`log_sigma2_initializer`",
    ),
    (
        lambda: ksvd.DenseSVD(3, log_sigma2_initializer=np.float32(np.nan)),
        ValueError,
        "`log_sigma2_initializer`",
    ),
    (lambda: ksvd.set_kl_weight("notamodel", 0.1), TypeError, "`model`"),
    (lambda: ksvd.sparsity_report("notamodel"), TypeError, "`model`"),
]


@pytest.mark.slow
@pytest.mark.parametrize("make, error, match", BAD_ARGUMENTS)
def test_bad_arguments_are_refused_at_construction_naming_them(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_wrong_types_are_value_errors_too_as_before():
    with pytest.raises(ValueError, match="`train_clip`"):
        ksvd.DenseSVD(3, train_clip="no")


def test_numpy_numbers_are_accepted():
    theta = RNG.normal(size=(50, 4)).astype("float32")
    # The README's formula gives a NumPy float32.
    value = np.log(np.median(theta**2)) - 4
    assert isinstance(value, np.float32)
    layer = ksvd.DenseSVD(
        4,
        log_sigma2_initializer=value,
        threshold=np.float32(2.5),
        train_clip=np.bool_(True),
        seed=np.int64(3),
    )
    layer.build((None, 50))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.log_sigma2), np.full((50, 4), value)
    )
    assert (layer.threshold, layer.train_clip, layer.seed) == (2.5, True, 3)
    assert ksvd.DenseSVD(3, seed=2**31 - 1).seed == 2**31 - 1
    # A custom initializer of the right shape is kept as it is.
    layer = ksvd.DenseSVD(
        2, log_sigma2_initializer=lambda shape, dtype=None: np.full(shape, -7.0)
    )
    layer.build((None, 3))
    assert float(keras.ops.convert_to_numpy(layer.log_sigma2).max()) == -7.0


SCRIPT = """
import keras
import numpy as np

import keras_sparsevd as ksvd

rng = np.random.default_rng(0)
model = keras.Sequential([keras.Input((6,)), ksvd.DenseSVD(4, name="d")])
layer = model.get_layer("d")
theta = keras.ops.convert_to_numpy(layer.kernel)
layer.log_sigma2.assign(rng.uniform(-6, 6, theta.shape) + np.log(theta**2 + 1e-8))
x = rng.normal(size=(5, 6)).astype("float32")
first = model.predict(x, verbose=0)
layer.threshold = -1.0
second = model.predict(x, verbose=0)
log_alpha = keras.ops.convert_to_numpy(layer.log_alpha)
expected = x @ (theta * (log_alpha < -1.0))
np.testing.assert_allclose(second, expected, atol=1e-5)
assert not np.allclose(first, second)
print("ok", keras.backend.backend())
"""


@pytest.mark.slow
def test_a_new_threshold_reaches_predict_on_jax(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (an optional backend)")
    path = tmp_path / "check.py"
    path.write_text(SCRIPT)
    env = dict(
        os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO_ROOT
    )
    result = subprocess.run(
        [sys.executable, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok jax" in result.stdout
