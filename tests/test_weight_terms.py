"""The fused per-weight training terms against the plain expressions.

`training_terms` hand-writes its gradient; here its values and gradients are
compared with automatic differentiation of the textbook formulas, on weights
whose log alpha lies inside the clip range, at both ends of it, and beyond.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

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


def _tf_values_and_grads(fn, theta, log_sigma2, upstream):
    theta = tf.Variable(theta)
    log_sigma2 = tf.Variable(log_sigma2)
    with tf.GradientTape() as tape:
        mean, variance, kl = fn(theta, log_sigma2)
        objective = (
            tf.reduce_sum(mean * upstream[0])
            + tf.reduce_sum(variance * upstream[1])
            + 3.0 * kl
        )
    grads = tape.gradient(objective, [theta, log_sigma2])
    return [v.numpy() for v in (mean, variance, kl)], [g.numpy() for g in grads]


@pytest.mark.parametrize("train_clip", [False, True])
def test_values_and_gradients_match_autodiff(train_clip):
    theta, log_sigma2 = _weights()
    rng = np.random.default_rng(1)
    upstream = [
        rng.normal(size=theta.shape).astype("float32"),
        rng.normal(size=theta.shape).astype("float32"),
    ]
    fused = _tf_values_and_grads(
        lambda t, s: training_terms(t, s, 3.0, train_clip), theta, log_sigma2, upstream
    )
    reference = _tf_values_and_grads(
        lambda t, s: _reference(t, s, 3.0, train_clip), theta, log_sigma2, upstream
    )
    for got, want in zip(fused[0], reference[0]):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    for got, want in zip(fused[1], reference[1]):
        scale = np.max(np.abs(want))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
    # The clipped rows get no gradient through log alpha.
    assert np.all(fused[1][1][1] == 0.0) and np.all(fused[1][1][2] == 0.0)


def test_unused_outputs_get_no_gradient_from_them():
    theta, log_sigma2 = _weights()
    theta_v = tf.Variable(theta)
    with tf.GradientTape() as tape:
        _, _, kl = training_terms(theta_v, tf.constant(log_sigma2), 3.0, False)
    grad = tape.gradient(kl, theta_v).numpy()
    with tf.GradientTape() as tape:
        _, _, kl_ref = _reference(theta_v, tf.constant(log_sigma2), 3.0, False)
    want = tape.gradient(kl_ref, theta_v).numpy()
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


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


def test_jax_gradients_match_autodiff():
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
