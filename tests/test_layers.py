"""The layers' maths: training-pass moments, evaluation pass, pruning."""

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd

RNG = np.random.default_rng(0)


def _set_posterior(layer, theta, log_sigma2, bias=None):
    layer.kernel.assign(theta.astype("float32"))
    layer.log_sigma2.assign(log_sigma2.astype("float32"))
    if bias is not None:
        layer.bias.assign(bias.astype("float32"))


def _moderate_posterior(shape):
    """theta and log_sigma2 with alpha in about [0.05, 2]: inside the clip."""
    theta = RNG.normal(0.0, 1.0, shape)
    theta = np.sign(theta) * (np.abs(theta) + 0.2)
    alpha = RNG.uniform(0.05, 2.0, shape)
    return theta, np.log(alpha * theta**2)


def _check_moments(samples, mean, variance, n):
    """Sample mean and variance over axis 0 against the expected values."""
    got_mean = samples.mean(axis=0)
    got_var = samples.var(axis=0)
    z = np.abs(got_mean - mean) / np.sqrt(variance / n)
    assert z.max() < 5.0, f"mean off by {z.max():.1f} standard errors"
    np.testing.assert_allclose(got_var, variance, rtol=0.12)


@pytest.mark.all_backends
def test_dense_training_pass_moments():
    n, d, units = 6000, 7, 5
    layer = ksvd.DenseSVD(units, seed=1)
    layer.build((None, d))
    theta, log_sigma2 = _moderate_posterior((d, units))
    bias = RNG.normal(size=units)
    _set_posterior(layer, theta, log_sigma2, bias)
    ksvd.set_kl_weight(layer, 0.0)
    x = RNG.normal(size=(1, d)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(np.repeat(x, n, 0), training=True))
    alpha = np.exp(np.clip(log_sigma2 - np.log(theta**2 + 1e-8), -8, 8))
    mean = x @ theta + bias
    variance = (x * x) @ (alpha * theta**2) + 1e-8
    _check_moments(out.astype("float64"), mean[0], variance[0], n)


@pytest.mark.slow
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.all_backends
def test_conv2d_training_pass_moments(data_format):
    n = 3000
    layer = ksvd.Conv2DSVD(3, 3, data_format=data_format, seed=2)
    shape = (None, 6, 6, 2) if data_format == "channels_last" else (None, 2, 6, 6)
    layer.build(shape)
    theta, log_sigma2 = _moderate_posterior((3, 3, 2, 3))
    bias = RNG.normal(size=3)
    _set_posterior(layer, theta, log_sigma2, bias)
    ksvd.set_kl_weight(layer, 0.0)
    x = RNG.normal(size=(1,) + shape[1:]).astype("float32")
    out = keras.ops.convert_to_numpy(layer(np.repeat(x, n, 0), training=True))

    # Expected moments from plain Keras convolutions of x and x * x.
    alpha = np.exp(np.clip(log_sigma2 - np.log(theta**2 + 1e-8), -8, 8))
    conv = keras.layers.Conv2D(3, 3, data_format=data_format, use_bias=False)
    conv.build(shape)
    conv.kernel.assign(theta.astype("float32"))
    mean = keras.ops.convert_to_numpy(conv(x))[0]
    mean = mean + (bias if data_format == "channels_last" else bias[:, None, None])
    conv.kernel.assign((alpha * theta**2).astype("float32"))
    variance = keras.ops.convert_to_numpy(conv(x * x))[0] + 1e-8
    _check_moments(out.astype("float64"), mean, variance, n)


@pytest.mark.all_backends
def test_noise_is_fresh_every_call_and_per_example():
    layer = ksvd.DenseSVD(4, seed=3)
    layer.build((None, 3))
    ksvd.set_kl_weight(layer, 0.0)
    layer.log_sigma2.assign(np.full((3, 4), -1.0, "float32"))
    x = np.ones((2, 3), "float32")
    a = keras.ops.convert_to_numpy(layer(x, training=True))
    b = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(a, b)
    assert not np.allclose(a[0], a[1])


@pytest.mark.tensorflow_only
def test_noise_is_fresh_every_call_and_inside_tf_function():
    import tensorflow as tf

    layer = ksvd.DenseSVD(4, seed=3)
    layer.build((None, 3))
    ksvd.set_kl_weight(layer, 0.0)
    layer.log_sigma2.assign(np.full((3, 4), -1.0, "float32"))
    x = np.ones((2, 3), "float32")
    step = tf.function(lambda v: layer(v, training=True))
    a, b = np.asarray(step(x)), np.asarray(step(x))
    assert not np.allclose(a, b)
    assert not np.allclose(a[0], a[1])  # per example, not per batch


@pytest.mark.all_backends
def test_bias_is_not_in_the_variance():
    layer = ksvd.DenseSVD(3, seed=4)
    layer.build((None, 2))
    theta = np.ones((2, 3))
    _set_posterior(layer, theta, np.full((2, 3), -30.0), bias=np.full(3, 100.0))
    ksvd.set_kl_weight(layer, 0.0)
    out = keras.ops.convert_to_numpy(
        layer(np.zeros((500, 2), "float32"), training=True)
    )
    # Zero input: the variance is 1e-8 whatever the bias.
    assert out.std(axis=0).max() < 1e-3
    np.testing.assert_allclose(out.mean(axis=0), 100.0, atol=1e-3)


@pytest.mark.parametrize(
    "svd_layer, keras_layer, input_shape",
    [
        (
            lambda: ksvd.DenseSVD(6, activation="relu"),
            lambda: keras.layers.Dense(6, activation="relu"),
            (4, 5),
        ),
        (
            lambda: ksvd.Conv1DSVD(4, 3, strides=2, padding="same"),
            lambda: keras.layers.Conv1D(4, 3, strides=2, padding="same"),
            (4, 11, 3),
        ),
        (
            lambda: ksvd.Conv2DSVD(5, (3, 2), dilation_rate=2, activation="tanh"),
            lambda: keras.layers.Conv2D(5, (3, 2), dilation_rate=2, activation="tanh"),
            (3, 9, 8, 2),
        ),
        (
            lambda: ksvd.Conv2DSVD(5, 3, data_format="channels_first"),
            lambda: keras.layers.Conv2D(5, 3, data_format="channels_first"),
            (3, 2, 7, 7),
        ),
        (
            lambda: ksvd.Conv3DSVD(2, 2, padding="same"),
            lambda: keras.layers.Conv3D(2, 2, padding="same"),
            (2, 4, 5, 3, 2),
        ),
    ],
)
@pytest.mark.slow
@pytest.mark.all_backends
def test_evaluation_equals_plain_keras_layer(svd_layer, keras_layer, input_shape):
    svd, plain = svd_layer(), keras_layer()
    x = RNG.normal(size=input_shape).astype("float32")
    plain(x)
    svd(x)
    kernel, bias = plain.get_weights()
    bias = RNG.normal(size=bias.shape).astype("float32")
    # The bias is added by hand: Keras 3.15's Conv2D on the TF CPU backend
    # adds it along the wrong axis for channels_first.
    plain.set_weights([kernel, np.zeros_like(bias)])
    channels_first = getattr(plain, "data_format", None) == "channels_first"
    if channels_first:
        bias_shape = (1, -1) + (1,) * (x.ndim - 2)
    else:
        bias_shape = (1,) * (x.ndim - 1) + (-1,)
    plain.activation = keras.activations.get("linear")
    expected = keras.ops.convert_to_numpy(plain(x)) + bias.reshape(bias_shape)
    expected = keras.ops.convert_to_numpy(keras_layer().activation(expected))
    _set_posterior(svd, kernel, np.full(kernel.shape, -40.0), bias)
    assert svd.compute_output_shape(input_shape) == plain.compute_output_shape(
        input_shape
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(svd(x, training=False)),
        expected,
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(svd.kernel_mask), 1.0)


@pytest.mark.all_backends
def test_weight_above_threshold_is_zero_in_evaluation():
    layer = ksvd.DenseSVD(3, use_bias=False)
    layer.build((None, 4))
    theta = RNG.normal(size=(4, 3)) + 2.0
    log_sigma2 = np.full((4, 3), -20.0)
    log_sigma2[1, 2] = 20.0  # log_alpha clips to 8 >= 3: pruned
    log_sigma2[0, 0] = np.log(theta[0, 0] ** 2) + 2.9  # just below 3: kept
    _set_posterior(layer, theta, log_sigma2)
    mask = keras.ops.convert_to_numpy(layer.kernel_mask)
    expected_mask = np.ones((4, 3))
    expected_mask[1, 2] = 0.0
    np.testing.assert_array_equal(mask, expected_mask)
    log_alpha = keras.ops.convert_to_numpy(layer.log_alpha)
    assert log_alpha[1, 2] == pytest.approx(8.0)
    assert log_alpha.min() == pytest.approx(-8.0)
    x = RNG.normal(size=(5, 4)).astype("float32")
    expected = x @ (theta * expected_mask)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x, training=False)),
        expected,
        rtol=1e-5,
        atol=1e-5,
    )
    # A different threshold moves the cut.
    layer.threshold = 2.0
    assert keras.ops.convert_to_numpy(layer.kernel_mask)[0, 0] == 0.0


@pytest.mark.all_backends
def test_train_clip_zeroes_pruned_weights_in_the_training_mean():
    layer = ksvd.DenseSVD(1, use_bias=False, train_clip=True, seed=5)
    layer.build((None, 2))
    # Weight 0 kept and precise; weight 1 pruned (log_alpha = 8).
    _set_posterior(layer, np.array([[1.0], [1.0]]), np.array([[-40.0], [3.5]]))
    ksvd.set_kl_weight(layer, 0.0)
    x = np.tile(np.array([[1.0, 1.0]], "float32"), (20000, 1))
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert out.mean() == pytest.approx(1.0, abs=0.2)  # 2.0 without train_clip


@pytest.mark.all_backends
def test_kl_loss_is_weighted_sum():
    layer = ksvd.DenseSVD(3)
    layer.build((None, 4))
    x = np.ones((2, 4), "float32")
    layer(x)
    # Never set: the loss is not added with the -1 sentinel.
    assert float(keras.ops.convert_to_numpy(layer.losses[0])) == 0.0
    ksvd.set_kl_weight(layer, 0.01)
    layer(x)
    expected = 0.01 * np.sum(
        keras.ops.convert_to_numpy(ksvd.kl_divergence(layer.log_alpha))
    )
    assert float(keras.ops.convert_to_numpy(layer.losses[0])) == pytest.approx(
        expected, rel=1e-5
    )


@pytest.mark.all_backends
def test_noise_is_standard_normal_for_odd_shapes():
    import math

    from keras_sparsevd.layers.base import standard_normal

    seed = keras.random.SeedGenerator(7)
    z = keras.ops.convert_to_numpy(standard_normal((401, 333), seed)).ravel()
    assert z.shape == (401 * 333,) and z.dtype == np.float32
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1.0) < 0.02
    # Tails and the CDF at a few points, against the normal distribution.
    for q in (-2.0, -1.0, 0.0, 0.5, 1.5):
        expected = 0.5 * (1 + math.erf(q / math.sqrt(2)))
        assert abs(np.mean(z < q) - expected) < 0.004


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_noise_for_symbolic_shapes_inside_tf_function():
    import tensorflow as tf

    from keras_sparsevd.layers.base import standard_normal

    seed = keras.random.SeedGenerator(7)
    # Unknown batch size inside a traced function; fresh draws every call.
    fn = tf.function(
        lambda x: standard_normal(keras.ops.shape(x), seed),
        input_signature=[tf.TensorSpec((None, 3), tf.float32)],
    )
    a, b = fn(tf.zeros((5, 3))).numpy(), fn(tf.zeros((5, 3))).numpy()
    assert a.shape == (5, 3) and not np.allclose(a, b)
