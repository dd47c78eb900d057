"""The layer types beyond Dense and Conv: Keras equivalence, moments, pruning.

Every new Sparse VD layer (EinsumDense, Embedding, depthwise, separable and
transposed convolutions, grouped and causal convolutions, multi-head
attention) against its plain Keras layer: the evaluation pass, the training
pass's moments, pruning above the threshold, config and `.keras` round
trips, the KL term and the unsupported arguments.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from keras_sparsevd.layers.attention import PROJECTIONS

RNG = np.random.default_rng(11)
PRECISE = keras.initializers.Constant(-30.0)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


# id -> (Sparse VD class, Keras class, positional args, keyword args, input).
CASES = {
    "einsum": (
        ksvd.EinsumDenseSVD,
        keras.layers.EinsumDense,
        ("abc,cd->abd",),
        {"output_shape": (3, 5), "bias_axes": "d", "activation": "tanh"},
        lambda: _normal(2, 3, 4),
    ),
    "embedding": (
        ksvd.EmbeddingSVD,
        keras.layers.Embedding,
        (7, 4),
        {},
        # Every row of the table is looked up.
        lambda: np.stack([np.arange(7), RNG.permutation(7)]).astype("int32"),
    ),
    "depthwise1d": (
        ksvd.DepthwiseConv1DSVD,
        keras.layers.DepthwiseConv1D,
        (3,),
        {"depth_multiplier": 2},
        lambda: _normal(2, 8, 3),
    ),
    "depthwise2d": (
        ksvd.DepthwiseConv2DSVD,
        keras.layers.DepthwiseConv2D,
        (3,),
        {"depth_multiplier": 2, "padding": "same", "activation": "sigmoid"},
        lambda: _normal(2, 5, 5, 2),
    ),
    "separable1d": (
        ksvd.SeparableConv1DSVD,
        keras.layers.SeparableConv1D,
        (4, 3),
        {"depth_multiplier": 2},
        lambda: _normal(2, 8, 3),
    ),
    "separable2d": (
        ksvd.SeparableConv2DSVD,
        keras.layers.SeparableConv2D,
        (4, 3),
        {"padding": "same"},
        lambda: _normal(2, 5, 5, 2),
    ),
    "conv1d_transpose": (
        ksvd.Conv1DTransposeSVD,
        keras.layers.Conv1DTranspose,
        (3, 3),
        {"strides": 2, "output_padding": 1},
        lambda: _normal(2, 5, 2),
    ),
    "conv2d_transpose": (
        ksvd.Conv2DTransposeSVD,
        keras.layers.Conv2DTranspose,
        (3, 3),
        {"strides": 2, "padding": "same", "activation": "tanh"},
        lambda: _normal(2, 4, 4, 2),
    ),
    "conv3d_transpose": (
        ksvd.Conv3DTransposeSVD,
        keras.layers.Conv3DTranspose,
        (2, 2),
        {"strides": 2},
        lambda: _normal(2, 3, 3, 3, 2),
    ),
    "conv2d_groups": (
        ksvd.Conv2DSVD,
        keras.layers.Conv2D,
        (4, 3),
        {"groups": 2},
        lambda: _normal(2, 5, 5, 4),
    ),
    "conv3d_groups": (
        ksvd.Conv3DSVD,
        keras.layers.Conv3D,
        (4, 2),
        {"groups": 2},
        lambda: _normal(2, 3, 3, 3, 4),
    ),
    "conv1d_causal": (
        ksvd.Conv1DSVD,
        keras.layers.Conv1D,
        (3, 3),
        {"padding": "causal", "dilation_rate": 2},
        lambda: _normal(2, 8, 2),
    ),
    "mha": (
        ksvd.MultiHeadAttentionSVD,
        keras.layers.MultiHeadAttention,
        (2, 3),
        {},
        lambda: _normal(2, 4, 6),
    ),
}


def _make(case, **svd_kwargs):
    """A Sparse VD layer, its plain Keras layer and an input, both built."""
    svd_cls, plain_cls, args, kwargs, make_x = CASES[case]
    svd = svd_cls(*args, **kwargs, **svd_kwargs)
    plain = plain_cls(*args, **kwargs)
    x = make_x()
    _call(svd, x)
    _call(plain, x)
    return svd, plain, x


def _call(layer, x, **kwargs):
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return layer(x, x, **kwargs)
    return layer(x, **kwargs)


def _pairs(svd, plain):
    """``[(Sparse VD layer, kernel name, plain kernel, svd bias, plain bias)]``.

    One entry per Sparse VD kernel; the bias goes with the first kernel of
    its layer (None for the others and for layers without one).
    """
    if isinstance(svd, keras.layers.MultiHeadAttention):
        layers = [(getattr(svd, a), getattr(plain, a)) for a in PROJECTIONS]
    else:
        layers = [(svd, plain)]
    pairs = []
    for sub, plain_sub in layers:
        for i, name in enumerate(sub.svd_kernels):
            bias = getattr(sub, "bias", None) if i == 0 else None
            plain_bias = getattr(plain_sub, "bias", None) if i == 0 else None
            pairs.append((sub, name, getattr(plain_sub, name), bias, plain_bias))
    return pairs


def _copy_plain_weights(svd, plain):
    """Random biases in the plain layer, then its kernels and biases copied."""
    for sub, name, kernel, bias, plain_bias in _pairs(svd, plain):
        sub.theta(name).assign(_np(kernel))
        if plain_bias is not None:
            plain_bias.assign(_normal(*plain_bias.shape))
            bias.assign(_np(plain_bias))


# ----------------------------------------------------------------------
# 1 and 3. Evaluation with negligible noise is the plain Keras layer, and a
# weight with log_alpha >= threshold is zero in it. (One test per layer
# type for both: the per-test session reset is a good part of the runtime.)
@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.all_backends
def test_evaluation_equals_plain_layer_and_pruned_weights_are_zero(case):
    svd, plain, x = _make(case, log_sigma2_initializer=PRECISE)
    _copy_plain_weights(svd, plain)
    expected = _np(_call(plain, x))
    got = _np(_call(svd, x, training=False))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    for sub, name, *_ in _pairs(svd, plain):
        np.testing.assert_array_equal(_np(sub.mask_of(name)), 1.0)
    if case == "mha":
        assert set(svd.projections) == {"query", "key", "value", "attention_output"}
        assert all(type(p) is ksvd.EinsumDenseSVD for p in svd.projections.values())
        # The projections are found as the Sparse VD layers.
        assert len(ksvd.svd_layers(svd)) == 4

    # Each kernel in turn gets one weight with log_alpha >= threshold.
    for sub, name, kernel, _, _ in _pairs(svd, plain):
        original = _np(kernel).copy()
        index = np.unravel_index(original.size // 2, original.shape)
        theta = original.copy()
        theta[index] = 0.3
        log_sigma2 = np.full(theta.shape, -30.0, "float32")
        log_sigma2[index] = 5.0  # log_alpha = 5 - log(0.09) = 7.4 >= 3
        sub.theta(name).assign(theta)
        sub.log_sigma2_of(name).assign(log_sigma2)
        expected_mask = np.ones(theta.shape, "float32")
        expected_mask[index] = 0.0
        np.testing.assert_array_equal(_np(sub.mask_of(name)), expected_mask)
        np.testing.assert_array_equal(_np(sub.kernel_masks[name]), expected_mask)
        assert _np(sub.log_alpha_of(name))[index] == pytest.approx(
            5.0 - np.log(0.09), abs=1e-4
        )
        kernel.assign(theta)
        unpruned = _np(_call(plain, x))
        kernel.assign(theta * expected_mask)
        expected = _np(_call(plain, x))
        # The pruned weight matters for this input.
        assert np.abs(unpruned - expected).max() > 1e-3, name
        np.testing.assert_allclose(
            _np(_call(svd, x, training=False)),
            expected,
            rtol=1e-5,
            atol=1e-5,
            err_msg=f"{sub.name}.{name}",
        )
        # Back to the unpruned kernel before the next one.
        sub.theta(name).assign(original)
        sub.log_sigma2_of(name).assign(np.full(theta.shape, -30.0, "float32"))
        kernel.assign(original)


# ----------------------------------------------------------------------
# 2. The training pass's moments.
def _moderate_posterior(shape):
    """theta of size 0.3-1 and log_sigma2 near -2: log_alpha inside the clip."""
    theta = RNG.choice([-1.0, 1.0], shape) * RNG.uniform(0.3, 1.0, shape)
    log_sigma2 = RNG.uniform(-2.5, -1.5, shape)
    return theta.astype("float32"), log_sigma2.astype("float32")


def _check_moments(samples, mean, variance, n, var_rtol=None):
    """Sample mean and variance over axis 0, within 5 standard errors."""
    samples = samples.astype("float64")
    got_mean, got_var = samples.mean(axis=0), samples.var(axis=0)
    assert got_mean.shape == mean.shape and got_var.shape == variance.shape
    # Not trivially satisfied by a deterministic layer.
    assert variance.min() > 1e-2
    assert got_var.min() > 0.5 * variance.min()
    z = np.abs(got_mean - mean) / np.sqrt(variance / n)
    assert z.max() < 5.0, f"mean off by {z.max():.1f} standard errors"
    # Standard error of a Gaussian sample variance: var * sqrt(2 / n).
    rel = np.abs(got_var - variance) / variance
    limit = 5.0 * np.sqrt(2.0 / n) if var_rtol is None else var_rtol
    assert rel.max() < limit, f"variance off by {rel.max():.3f} (limit {limit:.3f})"


MOMENT_CASES = [
    "einsum",
    "embedding",
    "depthwise2d",
    "conv2d_transpose",
    "conv2d_groups",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", MOMENT_CASES)
@pytest.mark.all_backends
def test_training_pass_moments(case):
    n = 3000
    svd_cls, plain_cls, args, kwargs, make_x = CASES[case]
    kwargs = {k: v for k, v in kwargs.items() if k != "activation"}
    svd = svd_cls(*args, **kwargs, seed=5)
    # One example; the embedding looks up token 5 twice.
    x = np.array([[2, 5, 5, 0]], "int32") if case == "embedding" else make_x()[:1]
    _call(svd, x)
    name = svd.svd_kernels[0]
    theta, log_sigma2 = _moderate_posterior(tuple(svd.theta(name).shape))
    svd.theta(name).assign(theta)
    svd.log_sigma2_of(name).assign(log_sigma2)
    bias = getattr(svd, "bias", None)
    bias_value = 0.0
    if bias is not None:
        bias_value = _normal(*bias.shape)
        bias.assign(bias_value)
    ksvd.set_kl_weight(svd, 0.0)
    samples = _np(svd(np.repeat(x, n, axis=0), training=True))

    if case == "embedding":
        mean = theta[x[0]]
        variance = np.exp(log_sigma2)[x[0]]
    elif case == "einsum":
        mean = x[0] @ theta + bias_value
        variance = (x[0] * x[0]) @ np.exp(log_sigma2)
    else:
        plain = plain_cls(*args, **kwargs, use_bias=False)
        plain(x)
        getattr(plain, name).assign(theta)
        mean = _np(plain(x))[0] + bias_value
        getattr(plain, name).assign(np.exp(log_sigma2))
        variance = _np(plain(x * x))[0]
    _check_moments(samples, mean, variance + 1e-8, n)
    if case == "embedding":
        # Fresh noise for every looked-up vector: the two lookups of token 5
        # are uncorrelated (standard error of a correlation: 1 / sqrt(n)).
        a, b = samples[:, 1] - mean[1], samples[:, 2] - mean[2]
        corr = (a * b).mean(axis=0) / np.sqrt(variance[1] * variance[2])
        assert np.abs(corr).max() < 5.0 / np.sqrt(n)
    # Every example of a batch draws its own noise.
    again = _np(svd(np.repeat(x, 2, axis=0), training=True))
    assert not np.allclose(again[0], again[1])


@pytest.mark.all_backends
def test_separable_training_pass_moments_stage_by_stage():
    n = 4000
    svd = ksvd.SeparableConv2DSVD(3, 3, seed=6)
    x = _normal(1, 4, 4, 2)
    svd(x)
    posterior = {}
    for name in svd.svd_kernels:
        theta, log_sigma2 = _moderate_posterior(tuple(svd.theta(name).shape))
        svd.theta(name).assign(theta)
        svd.log_sigma2_of(name).assign(log_sigma2)
        posterior[name] = (theta, np.exp(log_sigma2))
    bias = _normal(3)
    svd.bias.assign(bias)
    ksvd.set_kl_weight(svd, 0.0)
    samples = _np(svd(np.repeat(x, n, axis=0), training=True))

    depthwise = keras.layers.DepthwiseConv2D(3, use_bias=False)
    depthwise(x)
    pointwise = keras.layers.Conv2D(3, 1, use_bias=False)
    pointwise(np.zeros((1, 2, 2, 2), "float32"))

    def dw(inputs, kernel):
        depthwise.kernel.assign(kernel)
        return _np(depthwise(inputs))

    def pw(inputs, kernel):
        pointwise.kernel.assign(kernel)
        return _np(pointwise(inputs))

    theta_dw, sigma2_dw = posterior["depthwise_kernel"]
    theta_pw, sigma2_pw = posterior["pointwise_kernel"]
    # Mean: the plain SeparableConv2D with theta.
    plain = keras.layers.SeparableConv2D(3, 3)
    plain(x)
    plain.depthwise_kernel.assign(theta_dw)
    plain.pointwise_kernel.assign(theta_pw)
    plain.bias.assign(bias)
    mean = _np(plain(x))[0]
    # Variance: the depthwise output h is independent Gaussian per unit,
    # mean m and variance v; the pointwise sample has variance
    # E[pw(h^2, sigma2)] + Var[pw(h, theta)] = pw(m^2 + v, sigma2) + pw(v, theta^2).
    m = dw(x, theta_dw)
    v = dw(x * x, sigma2_dw)
    variance = pw(m * m + v, sigma2_pw)[0] + pw(v, theta_pw**2)[0]
    # The output is a Gaussian scale mixture, not Gaussian: looser variance.
    _check_moments(samples, mean, variance + 1e-8, n, var_rtol=0.2)


# ----------------------------------------------------------------------
# 4 and 5. Config and `.keras` round trips, and the KL term.
def _expected_kl(layers, weight):
    """weight * sum of the KL of every kernel of `layers`, each > 1."""
    total = 0.0
    for layer in layers:
        for name in layer.svd_kernels:
            theta = _np(layer.theta(name)).astype("float64")
            log_sigma2 = _np(layer.log_sigma2_of(name)).astype("float64")
            log_alpha = np.clip(log_sigma2 - np.log(theta**2 + 1e-8), -8, 8)
            np.testing.assert_allclose(
                _np(layer.log_alpha_of(name)), log_alpha, rtol=1e-5, atol=1e-4
            )
            kl = float(np.sum(_np(ksvd.kl_divergence(layer.log_alpha_of(name)))))
            # Every kernel adds a clearly positive term.
            assert kl > 1.0, (layer.name, name)
            total += kl
    return weight * total


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.all_backends
def test_round_trips_and_kl_term(case, tmp_path):
    svd_cls, _, args, kwargs, make_x = CASES[case]
    layer = svd_cls(
        *args,
        **kwargs,
        threshold=2.5,
        train_clip=True,
        seed=7,
        log_sigma2_initializer=keras.initializers.Constant(-7.0),
    )
    config = layer.get_config()
    assert config["threshold"] == 2.5 and config["train_clip"] is True
    assert config["seed"] == 7
    clone = svd_cls.from_config(config)
    assert clone.get_config() == config
    assert clone.threshold == 2.5 and clone.train_clip is True
    assert float(clone.log_sigma2_initializer.value) == -7.0

    x = make_x()
    inputs = keras.Input(x.shape[1:], dtype=str(x.dtype))
    model = keras.Model(inputs, _call(layer, inputs))
    svd_layers = ksvd.svd_layers(model)
    assert len(svd_layers) == (4 if case == "mha" else 1)
    # log_sigma2 in [-12, 4]: log_alpha spans both clips and the threshold.
    for sub in svd_layers:
        for name in sub.svd_kernels:
            shape = tuple(sub.theta(name).shape)
            sub.theta(name).assign(_normal(*shape))
            sub.log_sigma2_of(name).assign(RNG.uniform(-12, 4, shape))
    ksvd.set_kl_weight(model, 0.125)  # exact in float32
    pred = _np(model(x, training=False))
    expected_kl = _expected_kl(svd_layers, 0.125)
    losses = layer.losses
    assert len(losses) == len(svd_layers)
    assert float(sum(_np(v) for v in losses)) == pytest.approx(expected_kl, rel=1e-5)
    assert len(model.losses) == len(svd_layers)

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(_np(loaded(x, training=False)), pred)
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(_np(a), _np(b), err_msg=a.path)
    assert sum(w.path.endswith("log_sigma2") for w in loaded.weights) == sum(
        len(sub.svd_kernels) for sub in svd_layers
    )
    assert ksvd.get_kl_weight(loaded) == 0.125
    (loaded_layer,) = [lay for lay in loaded.layers if isinstance(lay, svd_cls)]
    assert type(loaded_layer) is svd_cls
    assert loaded_layer.get_config() == layer.get_config()
    if case == "mha":
        projections = loaded_layer.projections
        assert len(projections) == 4
        assert all(type(p) is ksvd.EinsumDenseSVD for p in projections.values())
        assert len(ksvd.svd_layers(loaded)) == 4


# ----------------------------------------------------------------------
# 5b. Every layer type trains: a fit step reaches theta and log_sigma2.
@pytest.mark.slow
@pytest.mark.all_backends
@pytest.mark.parametrize("case", list(CASES))
def test_every_layer_type_trains(case):
    svd_cls, _, args, kwargs, make_x = CASES[case]
    layer = svd_cls(*args, **kwargs, seed=3)
    x = make_x()
    inputs = keras.Input(x.shape[1:], dtype=str(x.dtype))
    h = keras.layers.Flatten()(_call(layer, inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    start = []
    for sub in ksvd.svd_layers(model):
        for name in sub.svd_kernels:
            theta = _normal(*sub.theta(name).shape)
            sub.theta(name).assign(theta)
            # log_alpha = -2: inside the clip, where log_sigma2 has a gradient.
            sub.log_sigma2_of(name).assign(np.log(theta**2 + 1e-8) - 2.0)
            start += [
                (w, _np(w).copy()) for w in (sub.theta(name), sub.log_sigma2_of(name))
            ]
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ksvd.set_kl_weight(model, 1.0 / len(x))
    y = np.arange(len(x)) % 3
    history = model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"])), history.history
    for variable, before in start:
        assert not np.allclose(_np(variable), before), variable.path


# ----------------------------------------------------------------------
# 6. Unsupported arguments.
@pytest.mark.all_backends
def test_unsupported_arguments_and_quantize_are_errors():
    with pytest.raises(ValueError, match="`weights`"):
        ksvd.EmbeddingSVD(5, 3, weights=[np.zeros((5, 3), "float32")])
    with pytest.raises(ValueError, match="`lora_rank`"):
        ksvd.DenseSVD(3, lora_rank=2)
    with pytest.raises(ValueError, match="`lora_rank`"):
        ksvd.EinsumDenseSVD("ab,bc->ac", output_shape=3, lora_rank=2)
    with pytest.raises(ValueError):
        ksvd.Conv2DSVD(4, 3, groups=3)
    for layer, x in [
        (ksvd.DenseSVD(3), _normal(2, 4)),
        (ksvd.EinsumDenseSVD("ab,bc->ac", output_shape=3), _normal(2, 4)),
        (ksvd.EmbeddingSVD(5, 3), np.array([[0, 4]], "int32")),
    ]:
        layer(x)
        with pytest.raises(NotImplementedError):
            layer.quantize("int8")


# ----------------------------------------------------------------------
# The JAX backend, in a fresh process.
JAX_SCRIPT = """
import keras
import numpy as np

import keras_sparsevd as ksvd

assert keras.backend.backend() == "jax"
rng = np.random.default_rng(0)


def build(sparse):
    # One model of each kind: the plain Keras layers, or their Sparse VD
    # counterparts with a negligible noise.
    kw = {"log_sigma2_initializer": keras.initializers.Constant(-30.0)}
    kw = kw if sparse else {}
    pick = lambda plain, svd: svd if sparse else plain
    L = keras.layers
    inputs = keras.Input((6,), dtype="int32")
    h = pick(L.Embedding, ksvd.EmbeddingSVD)(10, 4, **kw)(inputs)
    h = pick(L.MultiHeadAttention, ksvd.MultiHeadAttentionSVD)(2, 3, **kw)(h, h)
    h = pick(L.EinsumDense, ksvd.EinsumDenseSVD)(
        "abc,cd->abd", output_shape=(None, 4), bias_axes="d", **kw)(h)
    h = L.Reshape((6, 4, 1))(h)
    h = pick(L.DepthwiseConv2D, ksvd.DepthwiseConv2DSVD)(
        3, depth_multiplier=2, padding="same", **kw)(h)
    h = pick(L.SeparableConv2D, ksvd.SeparableConv2DSVD)(
        3, 3, padding="same", **kw)(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, pick(L.Dense, ksvd.DenseSVD)(3, **kw)(h))


plain, model = build(False), build(True)
assert len(ksvd.svd_layers(model)) == 9
for w in plain.weights:
    if w.path.endswith("bias"):
        w.assign(rng.normal(size=w.shape).astype("float32"))
theta = [w for w in model.weights if not w.path.endswith(("log_sigma2", "kl_weight"))]
assert len(theta) == len(plain.weights) == 18, (len(theta), len(plain.weights))
for a, b in zip(theta, plain.weights):
    assert a.path.split("/")[-1] == b.path.split("/")[-1], (a.path, b.path)
    a.assign(keras.ops.convert_to_numpy(b))
n = 16
ids = rng.integers(0, 10, (n, 6)).astype("int32")
y = rng.integers(0, 3, n)
expected = plain.predict(ids, verbose=0)
np.testing.assert_allclose(
    model.predict(ids, verbose=0), expected, rtol=1e-5, atol=1e-5)

# log_alpha = -2, inside the clip, where log_sigma2 has a gradient.
sigma = []
for layer in ksvd.svd_layers(model):
    for name in layer.svd_kernels:
        theta = keras.ops.convert_to_numpy(layer.theta(name))
        start = np.log(theta**2 + 1e-8) - 2.0
        layer.log_sigma2_of(name).assign(start)
        sigma.append((layer.log_sigma2_of(name), start))
assert len(sigma) == 10
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(ids, y, batch_size=n, epochs=1, verbose=0, callbacks=[
    ksvd.KLScheduler(num_train_examples=n, start_epoch=0, end_epoch=0)])
loss = history.history["loss"]
assert len(loss) == 1 and np.isfinite(loss[0]), loss
assert ksvd.get_kl_weight(model) == 1 / n
for w, start in sigma:
    assert not np.allclose(keras.ops.convert_to_numpy(w), start), w.path
print("ok jax", loss[0])
"""


@pytest.mark.slow
def test_new_layers_on_jax_backend(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (an optional backend)")
    path = tmp_path / "check_jax.py"
    path.write_text(JAX_SCRIPT)
    # XLA's cheapest CPU code generation: the script compiles about 40 small
    # programs and runs each once.
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_backend_optimization_level=0",
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
