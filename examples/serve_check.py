"""Serves a TF SavedModel in a process where keras_sparsevd cannot be imported.

    python -I examples/serve_check.py SAVEDMODEL X.npy EXPECTED.npy

Blocks every ``keras_sparsevd`` import, loads the SavedModel with TensorFlow
alone, serves ``X`` and compares with ``EXPECTED`` (at most 1e-5 apart).
Prints ``SERVED_OK`` and exits 0 when it serves and matches. Run it with
``python -I`` so that the checkout is not on ``sys.path``.
"""

import importlib.abc
import sys


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "keras_sparsevd":
            raise ModuleNotFoundError("blocked: " + name)
        return None


def main(argv: list) -> int:
    sys.meta_path.insert(0, _Blocker())
    saved_model, x_path, expected_path = argv
    import numpy as np
    import tensorflow as tf

    x, expected = np.load(x_path), np.load(expected_path)
    # Keep the loaded object: its variables die with it.
    loaded = tf.saved_model.load(saved_model)
    try:
        served = loaded.serve(tf.constant(x))
    except (TypeError, ValueError):
        # A functional model exports a signature taking a list of inputs.
        served = loaded.serve([tf.constant(x)])
    served = served.numpy()
    diff = float(np.max(np.abs(served - expected)))
    if any(name.startswith("keras_sparsevd") for name in sys.modules):
        print("keras_sparsevd was imported", file=sys.stderr)
        return 1
    if diff > 1e-5:
        print(f"served predictions differ by {diff:.3g}", file=sys.stderr)
        return 1
    print(f"SERVED_OK max abs difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
