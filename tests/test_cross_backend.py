"""A model trained and saved on one backend loads and predicts the same on the others.

The model is trained and saved in this process, on whichever backend it runs;
each other backend loads the ``.keras`` file in a fresh process (Keras picks
its backend once per process). With ``compile=False``: a file saved on
PyTorch names a torch optimizer class, which a TensorFlow process cannot
rebuild (loading one with ``compile=True`` crashed TensorFlow), so the
optimizer is not carried across.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd

# The backends other than this process's: its own round trip is in-process
# (tests/test_model.py).
OTHER_BACKENDS = [
    b for b in ("tensorflow", "jax", "torch") if b != keras.backend.backend()
]
# The checkout whose keras_sparsevd this process imported: the loading
# process must run the same code, not another installed copy.
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ksvd.__file__)))

LOAD_SCRIPT = """
import json
import sys

import keras
import numpy as np

import keras_sparsevd as ksvd

path, x_path, out_path, backend = sys.argv[1:]
assert keras.backend.backend() == backend, keras.backend.backend()
model = keras.models.load_model(path, compile=False)
np.save(out_path, model.predict(np.load(x_path), verbose=0))
kept = ksvd.sparsity_report(model).total_kept
print("LOADED", json.dumps({"kept": kept, "kl_weight": ksvd.get_kl_weight(model)}))
"""


def _trained_model():
    """A small LeNet-like Sparse VD net, trained a little, some weights pruned."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 10, 10, 1)).astype("float32")
    y = rng.integers(0, 3, 64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            ksvd.Conv2DSVD(4, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            ksvd.DenseSVD(8, activation="relu", group_sparsity=True, name="fc1"),
            ksvd.DenseSVD(3, name="fc2"),
        ]
    )
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[ksvd.KLScheduler(len(x), 0, 1), ksvd.SparsityLogger()],
    )
    # Half of fc1's weights pruned, so that the masks matter after loading.
    fc1 = model.get_layer("fc1")
    log_sigma2 = keras.ops.convert_to_numpy(fc1.log_sigma2).copy()
    log_sigma2.reshape(-1)[::2] = 30.0
    fc1.log_sigma2.assign(log_sigma2)
    return model, x


@pytest.mark.slow
@pytest.mark.all_backends
@pytest.mark.parametrize("target", OTHER_BACKENDS)
def test_model_saved_here_loads_and_predicts_the_same_on(target, tmp_path):
    here = keras.backend.backend()
    if importlib.util.find_spec(target) is None:
        pytest.skip(f"{target} is not installed (CI installs every backend)")
    model, x = _trained_model()
    expected = model.predict(x, verbose=0)
    report = ksvd.sparsity_report(model)
    assert report.total_kept < report.total_weights
    path = tmp_path / f"trained_on_{here}.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "pred.npy"
    env = dict(
        os.environ,
        KERAS_BACKEND=target,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join(
            p for p in (SOURCE_ROOT, os.environ.get("PYTHONPATH")) if p
        ),
    )
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT]
        + [str(path), str(tmp_path / "x.npy"), str(out), target],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [s for s in result.stdout.splitlines() if s.startswith("LOADED ")]
    loaded = json.loads(line[len("LOADED ") :])
    assert loaded["kept"] == report.total_kept
    assert loaded["kl_weight"] == pytest.approx(ksvd.get_kl_weight(model))
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-5)
