"""Examples: the paper's models trained with `model.fit`."""

import sys

# Run as ``python -m examples.X`` (Python sets argv[0] to "-m" while it imports
# this package, before the module runs): TensorFlow's start-up notices are
# left out (`keras_sparsevd._quiet`). Imported as a library, nothing happens.
if sys.argv[:1] == ["-m"]:
    from keras_sparsevd import _quiet

    _quiet.quiet_if_program()
