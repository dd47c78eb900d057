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
- ``python -m benchmarks.noise``: the cost of the training noise with and
  without XLA, and a statistical check of cheaper generators.
- ``python -m benchmarks.profile_step``: where the time of a jit-compiled
  Sparse VD training step goes, by category of XLA instruction.
- ``.venv-peers/bin/python -m benchmarks.magnitude_pruning``: the LeNets
  pruned by magnitude with TF Model Optimization (Keras 2, in the virtual
  environment that ``bash benchmarks/peers_venv.sh`` makes), with the
  examples' data, optimizer and epochs; ``python -m benchmarks.pruning_plot``
  draws its reports beside Sparse VD's threshold sweeps.

The timings of train_speed, inference and noise are medians over rounds in
which the variants being compared run interleaved in the same process, so
that a change of machine load during the run hits all of them alike; the
profile reports shares of one model's step. Read the ratios and shares; the
absolute times depend on the machine and on whatever else it is doing. See
``BENCHMARKS.md``.
"""

import os

# Set before TensorFlow is first imported (``python -m benchmarks.X`` runs
# this first), or its C++ start-up logging floods the tables.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
