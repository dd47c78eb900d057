#!/usr/bin/env bash
# Makes the virtual environment for research/magnitude_pruning.py.
#
#     bash research/peers_venv.sh            # creates .venv-peers/ at the repo root
#     .venv-peers/bin/python -m research.magnitude_pruning --model lenet300 --sparsity 0.9
#
# TF Model Optimization (tfmot) does not import under Keras 3, so it runs on
# Keras 2 (`tf_keras`) in an environment of its own; keras_sparsevd's own
# dependencies stay free of it. tf_keras releases follow TensorFlow's minor
# version (tf_keras 2.21.x goes with tensorflow 2.21.x): the two are pinned
# together, and a mismatched pair fails at import.
#
# Environment variables:
#   PEERS_VENV   where to create it (default: .venv-peers at the repo root)
#   PYTHON       the interpreter to build it from (default: python3)
#   TF_VERSION   tensorflow version (default: 2.21.0, the one the package's
#                results were measured with)
#   TFMOT_VERSION  tensorflow-model-optimization version (default: 0.8.0)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PEERS_VENV:-$root/.venv-peers}"
python="${PYTHON:-python3}"
tf_version="${TF_VERSION:-2.21.0}"
tfmot_version="${TFMOT_VERSION:-0.8.0}"
# "2.21.0" -> "2.21": tf_keras must share TensorFlow's major.minor.
tf_minor="$(echo "$tf_version" | cut -d. -f1,2)"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip
"$venv/bin/python" -m pip install \
    "tensorflow==$tf_version" \
    "tf_keras==$tf_minor.*" \
    "tensorflow-model-optimization==$tfmot_version" \
    numpy

# Fail here, not at the first training run, if the three do not import together.
TF_CPP_MIN_LOG_LEVEL=3 TF_USE_LEGACY_KERAS=1 "$venv/bin/python" - <<'EOF'
from importlib.metadata import version

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from tensorflow_model_optimization.python.core.keras import compat

# tfmot must build on the same Keras 2 classes as the benchmark's models.
assert compat.keras.layers.Dense is tf_keras.layers.Dense, compat.keras
print(
    f"ok: tensorflow {tf.__version__}, tf_keras {version('tf_keras')}, "
    f"tfmot {tfmot.__version__}"
)
EOF
echo "peers venv ready: $venv"
