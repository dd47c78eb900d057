"""The layers on the JAX and PyTorch backends, each in a fresh process.

Keras picks its backend once per process, so each backend runs the same
script in a subprocess with ``KERAS_BACKEND`` set.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

import keras_sparsevd as ksvd

SCRIPT = """
import os
import tempfile

import keras
import numpy as np

import keras_sparsevd as ksvd

backend = keras.backend.backend()
assert backend == os.environ["KERAS_BACKEND"], backend
rng = np.random.default_rng(0)
x = rng.random((64, 12, 12, 1)).astype("float32")
y = rng.integers(0, 3, 64)
model = keras.Sequential([
    keras.Input((12, 12, 1)),
    ksvd.Conv2DSVD(4, 3, activation="relu"),
    keras.layers.Flatten(),
    ksvd.DenseSVD(8, activation="relu"),
    ksvd.DenseSVD(3),
])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
before = keras.ops.convert_to_numpy(model.layers[0].log_sigma2).copy()
history = model.fit(x, y, batch_size=16, epochs=3, verbose=0,
                    callbacks=[ksvd.KLScheduler(64, 0, 1), ksvd.SparsityLogger()])
assert np.all(np.isfinite(history.history["loss"]))
assert "sparsity" in history.history
after = keras.ops.convert_to_numpy(model.layers[0].log_sigma2)
assert not np.allclose(before, after)
# The weight set by the callback reached the stateful variables.
assert ksvd.get_kl_weight(model) == 1 / 64
pred = model.predict(x, verbose=0)
path = os.path.join(tempfile.mkdtemp(), "m.keras")
model.save(path)
loaded = keras.models.load_model(path).predict(x, verbose=0)
np.testing.assert_allclose(pred, loaded, atol=1e-6)

layer = ksvd.DenseSVD(5, seed=1)
layer.build((None, 3))
ksvd.set_kl_weight(layer, 0.0)
layer.kernel.assign(np.ones((3, 5), "float32"))
layer.log_sigma2.assign(np.full((3, 5), -1.0, "float32"))
ones = np.ones((4000, 3), "float32")
a = keras.ops.convert_to_numpy(layer(ones, training=True))
b = keras.ops.convert_to_numpy(layer(ones, training=True))
assert not np.allclose(a, b)
# theta = 1, log alpha = -1: three weights of variance exp(-1) each.
assert abs(a.std(axis=0).mean() - np.sqrt(3 / np.e)) < 0.05
print("ok", backend, ksvd.sparsity_report(model).compression, ksvd.__file__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_fit_save_load_and_noise_on_backend(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        # CI installs every backend, so this case runs there.
        pytest.skip(f"{backend} is not installed (an optional backend)")
    path = tmp_path / "check.py"
    path.write_text(SCRIPT)
    # The fresh process imports the keras_sparsevd this one runs (the
    # checkout under test), not another installed copy.
    source_root = os.path.dirname(os.path.dirname(os.path.abspath(ksvd.__file__)))
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join(
            p for p in (source_root, os.environ.get("PYTHONPATH")) if p
        ),
    )
    result = subprocess.run(
        [sys.executable, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ok {backend}" in result.stdout
    assert result.stdout.strip().endswith(ksvd.__file__), result.stdout
