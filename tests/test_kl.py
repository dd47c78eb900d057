import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd

pytestmark = pytest.mark.all_backends


def numpy_kl(log_alpha):
    """The paper's approximation, written independently in numpy."""
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    neg_kl = (
        k1 / (1.0 + np.exp(-(k2 + k3 * log_alpha)))
        - 0.5 * np.log1p(np.exp(-log_alpha))
        - k1
    )
    return -neg_kl


def test_kl_matches_numpy_formula():
    points = np.array([-8.0, -5.0, -2.0, -0.5, 0.0, 0.7, 3.0, 5.0, 8.0], "float32")
    got = np.asarray(ksvd.kl_divergence(points))
    np.testing.assert_allclose(
        got, numpy_kl(points.astype("float64")), rtol=1e-5, atol=1e-6
    )
    # Spot values: nearly 0 for pure noise, large for precise weights.
    assert abs(got[-1]) < 1e-3
    assert got[0] > 3.5


def test_kl_is_nonnegative_and_decreasing():
    grid = np.linspace(-8, 8, 401).astype("float32")
    kl = np.asarray(ksvd.kl_divergence(grid))
    assert kl.min() > -1e-3
    assert np.all(np.diff(kl) < 0)


def test_kl_is_float32_for_float16_input():
    kl = ksvd.kl_divergence(np.array([-8.0, 8.0], "float16"))
    assert keras.backend.standardize_dtype(kl.dtype) == "float32"
    assert np.all(np.isfinite(np.asarray(kl)))


@pytest.mark.slow
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "x"])
def test_set_kl_weight_rejects_bad_values(bad):
    model = ksvd.DenseSVD(3)
    with pytest.raises(ValueError, match="`value`"):
        ksvd.set_kl_weight(model, bad)


@pytest.mark.slow
def test_set_kl_weight_needs_svd_layers():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no Sparse VD"):
        ksvd.set_kl_weight(model, 0.1)


@pytest.mark.slow
def test_set_kl_weight_before_and_after_build():
    import keras

    layer = ksvd.DenseSVD(2)
    ksvd.set_kl_weight(layer, 0.25)
    assert ksvd.get_kl_weight(layer) == 0.25
    model = keras.Sequential([keras.Input((3,)), layer])
    assert ksvd.get_kl_weight(model) == pytest.approx(0.25)
    ksvd.set_kl_weight(model, 0.5)
    assert float(layer.kl_weight.numpy()) == pytest.approx(0.5)
