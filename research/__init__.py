"""Finished studies: what was measured once to choose the package's design.

Each module is a program, ``python -m research.<module>``; what each found,
and the command that found it, is in ``research/README.md``. Nothing in
``keras_sparsevd``, ``examples`` or ``benchmarks`` imports from here.
"""

import sys

# Run as ``python -m research.X``: TensorFlow's start-up notices left out
# (`keras_sparsevd._quiet`), except for magnitude_pruning, which runs in a
# Keras 2 environment of its own and must import TensorFlow itself, after
# choosing Keras 2 (it sets its own log level).
if sys.argv[:1] == ["-m"] and "research.magnitude_pruning" not in sys.orig_argv:
    from keras_sparsevd import _quiet

    _quiet.quiet_if_program()
