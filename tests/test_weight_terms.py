"""The fused per-weight training terms against the plain expressions.

`training_terms` hand-writes its gradient; here its values and gradients are
compared with automatic differentiation of the textbook formulas, on weights
whose log alpha lies inside the clip range, at both ends of it, and beyond.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import keras_sparsevd as ksvd
from keras_sparsevd.kl import kl_divergence
from keras_sparsevd.layers.weight_terms import training_terms


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.1, size=(40, 30)).astype("float32")
    theta[0, :5] = 0.0  # exactly zero: log(theta^2 + eps) must stay finite
    log_sigma2 = rng.uniform(-14.0, 4.0, size=theta.shape).astype("float32")
    # Some weights far below and far above the clip range [-8, 8].
    log_sigma2[1, :] = -30.0
    log_sigma2[2, :] = 10.0
    return theta, log_sigma2


def _reference(theta, log_sigma2, threshold, train_clip):
    log_alpha = ops.clip(log_sigma2 - ops.log(ops.square(theta) + 1e-8), -8.0, 8.0)
    mask = ops.cast(ops.less(log_alpha, threshold), "float32")
    mean = theta * mask if train_clip else theta
    variance = ops.exp(log_alpha) * ops.square(theta)
    return mean, variance, ops.sum(kl_divergence(log_alpha))


def _objective(outputs, upstream):
    """sum(mean * u_mean) + sum(variance * u_variance) + 3 KL; None drops a term."""
    mean, variance, kl = outputs
    total = 3.0 * kl
    for output, weights in zip((mean, variance), upstream):
        if weights is not None:
            total = total + ops.sum(ops.multiply(output, weights))
    return total


def _values_and_grads(fn, theta, log_sigma2, upstream):
    """`fn`'s three outputs and the gradient of `_objective` on this backend.

    Each backend differentiates in its own way (a tape, a function
    transformation, a backward pass), so the fused terms are checked against
    each backend's own automatic differentiation of `_reference`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        theta, log_sigma2 = tf.Variable(theta), tf.Variable(log_sigma2)
        with tf.GradientTape() as tape:
            outputs = fn(theta, log_sigma2)
            objective = _objective(outputs, upstream)
        grads = tape.gradient(objective, [theta, log_sigma2])
    elif backend == "jax":
        import jax

        def objective(t, s):
            outputs = fn(t, s)
            return _objective(outputs, upstream), outputs

        grads, outputs = jax.grad(objective, argnums=(0, 1), has_aux=True)(
            theta, log_sigma2
        )
    elif backend == "torch":
        theta = ops.convert_to_tensor(theta).requires_grad_()
        log_sigma2 = ops.convert_to_tensor(log_sigma2).requires_grad_()
        outputs = fn(theta, log_sigma2)
        _objective(outputs, upstream).backward()
        grads = [theta.grad, log_sigma2.grad]
        outputs = [o.detach() for o in outputs]
    else:
        raise AssertionError(f"no gradient helper for backend {backend!r}")
    return (
        [ops.convert_to_numpy(v) for v in outputs],
        [ops.convert_to_numpy(g) for g in grads],
    )


@pytest.mark.all_backends
@pytest.mark.parametrize("train_clip", [False, True])
def test_values_and_gradients_match_autodiff(train_clip):
    theta, log_sigma2 = _weights()
    rng = np.random.default_rng(1)
    upstream = [
        rng.normal(size=theta.shape).astype("float32"),
        rng.normal(size=theta.shape).astype("float32"),
    ]
    fused = _values_and_grads(
        lambda t, s: training_terms(t, s, 3.0, train_clip), theta, log_sigma2, upstream
    )
    reference = _values_and_grads(
        lambda t, s: _reference(t, s, 3.0, train_clip), theta, log_sigma2, upstream
    )
    for got, want in zip(fused[0], reference[0]):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    for got, want in zip(fused[1], reference[1]):
        scale = np.max(np.abs(want))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
    # The clipped rows get no gradient through log alpha.
    assert np.all(fused[1][1][1] == 0.0) and np.all(fused[1][1][2] == 0.0)
    if train_clip:
        # Some weights are pruned from the mean, so the mask is exercised.
        assert np.sum(fused[0][0] == 0.0) > np.sum(theta == 0.0)


@pytest.mark.all_backends
@pytest.mark.parametrize(
    "upstream", [(None, None), ("mean", None), (None, "variance")], ids=str
)
def test_unused_outputs_get_no_gradient_from_them(upstream):
    theta, log_sigma2 = _weights()
    rng = np.random.default_rng(2)
    upstream = [
        None if u is None else rng.normal(size=theta.shape).astype("float32")
        for u in upstream
    ]
    fused = _values_and_grads(
        lambda t, s: training_terms(t, s, 3.0, False), theta, log_sigma2, upstream
    )
    reference = _values_and_grads(
        lambda t, s: _reference(t, s, 3.0, False), theta, log_sigma2, upstream
    )
    for got, want in zip(fused[1], reference[1]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
@pytest.mark.all_backends
def test_lenet_like_fit_lowers_the_loss():
    """A small LeNet-5-like net learns a separable task on every backend."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 12, 12, 1)).astype("float32")
    # The class is which quadrant holds the largest mean: learnable in a few
    # epochs by the convolution and the dense layers.
    quadrants = x.reshape(256, 2, 6, 2, 6).mean(axis=(2, 4)).reshape(256, 4)
    y = quadrants.argmax(axis=1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            ksvd.Conv2DSVD(6, 3, activation="relu", train_clip=True),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            ksvd.DenseSVD(32, activation="relu"),
            ksvd.DenseSVD(4),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ksvd.set_kl_weight(model, 1.0 / len(x))
    before = [ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
    # Every trainable weight moved, log_sigma2 included: gradients reached them.
    after = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    for weight, old, new in zip(model.trainable_weights, before, after):
        assert not np.allclose(old, new), weight.path


_JAX_SCRIPT = r"""
import jax, numpy as np
from keras import ops
from keras_sparsevd.kl import kl_divergence
from keras_sparsevd.layers.weight_terms import training_terms
rng = np.random.default_rng(0)
theta = rng.normal(0, 0.1, (20, 10)).astype("float32")
log_sigma2 = rng.uniform(-14, 4, theta.shape).astype("float32")
log_sigma2[0] = -30.0
up = rng.normal(size=theta.shape).astype("float32")
for clip in (False, True):
    def fused(t, s):
        m, v, k = training_terms(t, s, 3.0, clip)
        return (m * up).sum() + (v * up).sum() + 3.0 * k
    def ref(t, s):
        la = ops.clip(s - ops.log(t * t + 1e-8), -8.0, 8.0)
        mask = (la < 3.0).astype("float32")
        m = t * mask if clip else t
        variance = ops.exp(la) * t * t
        return (m * up).sum() + (variance * up).sum() + 3.0 * kl_divergence(la).sum()
    got = jax.grad(fused, argnums=(0, 1))(theta, log_sigma2)
    want = jax.grad(ref, argnums=(0, 1))(theta, log_sigma2)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * abs(w).max())
    want = ref(theta, log_sigma2)
    np.testing.assert_allclose(fused(theta, log_sigma2), want, rtol=1e-5)
print("JAX_OK")
"""


@pytest.mark.slow
def test_jax_gradients_match_autodiff():
    """From a TensorFlow process too, for runs that test one backend only."""
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "JAX_OK" in result.stdout, result.stderr[-3000:]


# Backend-independent (no torch import: torch._dynamo must not load beside
# TensorFlow): `_Fused` is given the compiler, and a stand-in for a tensor on
# the meta device.
@pytest.mark.all_backends
def test_fused_torch_terms_fall_back_to_eager_with_one_warning(monkeypatch):
    import types
    import warnings

    from keras_sparsevd.layers import weight_terms

    calls = []

    def double(x):
        calls.append(x)
        return x if isinstance(x, types.SimpleNamespace) else x * 2

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    fused = weight_terms._Fused(double, compiler=lambda function: broken)
    # Shape inference on the meta device never reaches the compiler.
    meta = types.SimpleNamespace(device=types.SimpleNamespace(type="meta"))
    assert fused(meta) is meta
    assert fused.compiled is broken
    with pytest.warns(RuntimeWarning, match="compile failed.*no C.. compiler"):
        out = fused(np.ones(3, "float32"))
    np.testing.assert_array_equal(out, [2.0, 2.0, 2.0])
    assert fused.compiled is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused(np.ones(1, "float32"))  # eager from now on, without another warning
    assert len(calls) == 3
    monkeypatch.setenv("KERAS_SPARSEVD_TORCH_COMPILE", "0")
    assert (
        weight_terms._Fused(double, compiler=lambda function: broken).compiled is None
    )
