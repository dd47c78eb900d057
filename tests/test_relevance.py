"""A problem with a known answer: only a few of many inputs matter."""

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd


@pytest.mark.slow
def test_irrelevant_inputs_are_pruned_and_relevant_ones_kept():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, d, batch = 2000, 40, 500
    relevant = [3, 17, 29]
    # Orthogonal unit-variance inputs: the irrelevant ones then have no chance
    # correlation with the target. (With chance correlation, a fully
    # factorised posterior keeps, as ARD does, the weights whose least-squares
    # estimate is over about one standard error: a right answer, not a
    # known one.)
    x = (np.linalg.qr(rng.normal(size=(n, d)))[0] * np.sqrt(n)).astype("float32")
    true_w = np.zeros((d, 1), "float32")
    true_w[relevant, 0] = [1.5, -2.0, 1.0]
    y = x @ true_w

    def nll(target, pred):
        # Gaussian likelihood with noise variance 0.25, per example, so that
        # KLScheduler's KL / N has the paper's scale.
        return keras.ops.mean(keras.ops.square(target - pred), axis=-1) / 0.5

    model = keras.Sequential([keras.Input((d,)), ksvd.DenseSVD(1, seed=0)])
    # The steps must shrink well below the irrelevant weights' posterior std
    # for their theta to settle at 0.
    lr = keras.optimizers.schedules.ExponentialDecay(0.03, n // batch, 0.97)
    model.compile(keras.optimizers.Adam(lr), loss=nll)
    model.fit(
        x,
        y,
        batch_size=batch,
        epochs=180,
        verbose=0,
        callbacks=[ksvd.KLScheduler(n, start_epoch=0, end_epoch=5)],
    )

    layer = model.layers[0]
    log_alpha = keras.ops.convert_to_numpy(layer.log_alpha)[:, 0]
    kept = np.flatnonzero(keras.ops.convert_to_numpy(layer.kernel_mask)[:, 0])
    assert kept.tolist() == relevant, f"log_alpha: {np.round(log_alpha, 2)}"
    assert np.all(log_alpha[relevant] < -5)
    w = keras.ops.convert_to_numpy(layer.kernel)[:, 0]
    np.testing.assert_allclose(w[relevant], true_w[relevant, 0], atol=0.05)
    report = ksvd.sparsity_report(model)
    assert report.total_kept == 3 and report.compression == d / 3
    pred = model.predict(x, verbose=0)
    assert np.sqrt(np.mean((pred - y) ** 2)) < 0.05
