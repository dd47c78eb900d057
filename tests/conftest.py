import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Skip `tensorflow_only` tests, saying why, on the other backends.

    Keras picks its backend once per process (``KERAS_BACKEND``), so a test
    that needs TensorFlow's own APIs cannot switch to it.
    """
    for item in items:
        # A test is run on every backend or on TensorFlow only, never both.
        if "all_backends" in item.keywords and "tensorflow_only" in item.keywords:
            raise pytest.UsageError(
                f"{item.nodeid} is marked both all_backends and tensorflow_only"
            )
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(
        reason=f"TensorFlow only (SavedModel, TFLite, tf.distribute or tf.* APIs); "
        f"the backend is {backend}"
    )
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the float32 policy and a cleared session."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.clear_session()
    yield
    keras.mixed_precision.set_global_policy("float32")
