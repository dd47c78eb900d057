"""The research tests share the suite's conftest: quiet TensorFlow, a fresh
Keras state per test, `tensorflow_only` tests skipped on the other backends."""

from tests.conftest import (  # noqa: F401 - hooks and fixtures pytest finds by name
    _fresh_keras_state,
    pytest_collection_modifyitems,
)
