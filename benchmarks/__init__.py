"""Benchmarks of keras_sparsevd: training cost and inference savings.

- ``python -m benchmarks.train_speed``: training steps per second of the
  paper's models built from Sparse VD layers against the same models built
  from plain Keras layers, with and without ``jit_compile``, and of real
  networks (MobileNetV2, ResNet50, the MNIST Transformer, a KerasHub BERT)
  against their ``sparsify`` twins.
- ``bash benchmarks/gpu_check.sh OUT_DIR``: on an NVIDIA GPU, in under 8
  minutes: installs, checks the devices, takes train_speed's ratios on
  TensorFlow and JAX and trains LeNet-5-Caffe for 3 epochs; JSON to OUT_DIR.
- ``python -m benchmarks.inference``: latency and throughput of a Sparse VD
  model in evaluation mode, stripped, compacted and reloaded from the sparse
  file format, and the bytes on disk of each.
- ``python -m benchmarks.replicas``: training throughput on 1 and 2
  replicas (``tf.distribute.MirroredStrategy``).
- ``python -m benchmarks.coverage``: which Keras 3 models `sparsify` takes
  (``docs/coverage.md``).

The finished studies (the noise generators, XLA profiles, the step
breakdown, magnitude pruning beside Sparse VD) are in ``research/``.

The timings of train_speed, inference and replicas are medians over rounds in
which the variants being compared run interleaved in the same process, so
that a change of machine load during the run hits all of them alike. Read
the ratios; the absolute times depend on the machine and on whatever else it
is doing. See ``BENCHMARKS.md``.
"""

import sys

# Run as ``python -m benchmarks.X`` (Python sets argv[0] to "-m" while it
# imports this package, before the module runs): TensorFlow's start-up notices
# are left out of the tables (`keras_sparsevd._quiet`).
if sys.argv[:1] == ["-m"]:
    from keras_sparsevd import _quiet

    _quiet.quiet_if_program()
