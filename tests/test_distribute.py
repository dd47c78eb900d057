"""Data-parallel training on 2 CPU devices: TensorFlow and JAX, fresh processes.

Devices are fixed when a backend starts, so tests/distribute_scenario.py
runs in a subprocess per backend.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_replicas(backend):
    pytest.importorskip(backend)
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "distribute_scenario.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"DISTRIBUTE_OK {backend}" in result.stdout
