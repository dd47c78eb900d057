"""Magnitude pruning (TF Model Optimization) on the LeNets, beside Sparse VD.

Trains LeNet-300-100 or LeNet-5-Caffe with ``prune_low_magnitude`` from TF
Model Optimization (tfmot) on every Dense and Conv kernel, with what
``examples.train`` gives Sparse VD: the MNIST files shipped in
``examples/mnist/``, the same preprocessing (pixels / 256 minus the training
mean image), Adam (1e-3, betas 0.9 / 0.999, epsilon 1e-8), batch 100, the
same learning-rate schedule for each net (LeNet-300-100: constant for the
first half, then linear to 0; LeNet-5-Caffe: linear to 0) and the same
epochs (200). The nets are the examples' dense baselines, Keras' default
initialisers included.

Pruning schedule: tfmot's ``PolynomialDecay`` (power 3, as Zhu and Gupta,
2017) from 0 sparsity at step 0 to the target at ``--prune-end`` (default
0.6) of the training steps, the masks updated every 100 steps (fewer in very
short runs, so that the target is still reached); from there to the end the
masks stay fixed and the kept weights are fine-tuned. Only kernels are
pruned: biases are neither pruned nor counted.

Targets:

* ``--sparsity 0.9``: the same sparsity in every layer.
* ``--per-layer-from results/lenet300-mnist-svd-seed0.json``: each layer's
  sparsity taken from a Sparse VD run's JSON report (its
  ``sparsity_report``), so that both methods keep the same number of weights
  in each layer and magnitude alone decides which ones.
* ``--units-from results/lenet300-mnist-svd-structured-seed0.json``
  (LeNet-300-100 only): whole units, to the architecture a structured Sparse
  VD run kept. Each Dense kernel loses whole input rows, those of the
  smallest mean absolute weight, until it reads only as many inputs as the
  Sparse VD run's layer kept (``inputs_kept`` in its ``sparsity_report``);
  the weights inside the kept units stay dense. tfmot cannot do this: its
  block sparsity fails on a block as wide as the kernel ("Input tensor must
  be rank 2", tensorflow-model-optimization 0.8) and refuses conv kernels.
  So a callback here (`UnitMasks`) ranks the rows and holds them at zero,
  with tfmot's own schedule (`polynomial_sparsity`, the same window and
  mask updates); the rest of the run is the same.

The JSON report (``--out``) holds the test error (%), the compression (total
weights / nonzero weights, kernels only, as in the Sparse VD reports; with
``--units-from``, after removing the weights of units that no later layer
reads, which changes no output), the sparsity and the inputs kept of each
layer, the per-epoch history, the exact command, epochs,
seed, library versions and wall time.

tfmot does not import under Keras 3, so this runs on Keras 2 (``tf_keras``)
in a virtual environment of its own, kept out of keras_sparsevd's
dependencies. From the repository root::

    bash research/peers_venv.sh     # once: creates .venv-peers/
    .venv-peers/bin/python -m research.magnitude_pruning \\
        --model lenet300 --sparsity 0.99 \\
        --out results/lenet300-mnist-magnitude-s0.99-seed0.json
    .venv-peers/bin/python -m research.magnitude_pruning \\
        --model lenet5 --per-layer-from results/lenet5-mnist-svd-seed0.json

A run stopped part-way (the session ends, the machine restarts) resumes from
its last finished epoch when started again with the same command: a
``BackupAndRestore`` checkpoint (weights, masks, pruning step, optimizer) and
the per-epoch history are kept in ``--backup-dir`` (default
``runs/magnitude/<report name>/``) until the run finishes.

A smoke test: add ``--epochs 2 --train-limit 2000``. ``python -m
research.pruning_plot`` draws the reports beside Sparse VD's threshold
sweeps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

MODELS = ("lenet300", "lenet5")
# The prunable layers of each net, named as in examples/models.py, so that a
# Sparse VD report's per-layer figures map onto them by name.
PRUNABLE_LAYERS = {
    "lenet300": ("fc1", "fc2", "fc3"),
    "lenet5": ("conv1", "conv2", "fc1", "fc2"),
}
# The nets whose prunable layers are all Dense. A row of a 4-D conv kernel
# would be one tap of one channel, not a unit.
ALL_DENSE = ("lenet300",)
# Kernel sizes, to check that a Sparse VD report is of the same net.
KERNEL_SIZES = {
    "lenet300": {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10},
    "lenet5": {
        "conv1": 5 * 5 * 1 * 20,
        "conv2": 5 * 5 * 20 * 50,
        "fc1": 800 * 500,
        "fc2": 500 * 10,
    },
}
BASE_LR = 1e-3
MAX_PRUNING_FREQUENCY = 100
VENV_HINT = (
    "Make its virtual environment once, from the repository root, with "
    "`bash research/peers_venv.sh` (tensorflow, tf_keras, "
    "tensorflow-model-optimization in .venv-peers/), then run "
    "`.venv-peers/bin/python -m research.magnitude_pruning ...`."
)


class PeersUnavailable(SystemExit):
    """tf_keras / tfmot cannot be used in this interpreter (e.g. Keras 3)."""


def lr_schedule(model: str, base_lr: float, epochs: int) -> Callable[[int], float]:
    """The learning rate of each epoch, as ``examples.train`` gives the net.

    Args:
        model: "lenet300" or "lenet5".
        base_lr: the rate at epoch 0.
        epochs: the length of training the schedule is stretched to.

    Returns:
        A function of the epoch (0-based) to the learning rate.
    """
    if model == "lenet300":
        half = epochs / 2

        def schedule(epoch: int) -> float:
            return base_lr if epoch < half else base_lr * (epochs - epoch) / half

    else:

        def schedule(epoch: int) -> float:
            return base_lr * (epochs - epoch) / epochs

    return schedule


def uniform_targets(model: str, sparsity: float) -> dict[str, float]:
    """The same target sparsity (a fraction) for every prunable layer.

    Args:
        model: "lenet300" or "lenet5".
        sparsity: fraction of each kernel to prune, in [0, 1).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"`--sparsity` must be in [0, 1), got {sparsity}.")
    return {name: float(sparsity) for name in PRUNABLE_LAYERS[model]}


def per_layer_targets(report: dict | str | os.PathLike, model: str) -> dict[str, float]:
    """Each layer's sparsity (a fraction) from a Sparse VD run's JSON report.

    Reads the report's ``sparsity_report`` (exact kept counts) where present,
    else its ``per_layer_sparsity`` (percent), and checks that the report is
    of the same net: the same layer names and, where given, kernel sizes.

    Args:
        report: the report, or the path of its JSON file.
        model: "lenet300" or "lenet5", the net to be pruned.

    Returns:
        Layer name -> fraction of its kernel to prune, in the net's order.

    Raises:
        ValueError: the report is of another net or lacks per-layer sparsity.
    """
    if not isinstance(report, dict):
        report = json.loads(Path(report).read_text())
    if report.get("model") not in (None, model):
        raise ValueError(
            f"The Sparse VD report is of {report['model']!r}, not {model!r}."
        )
    layers = (report.get("sparsity_report") or {}).get("layers")
    if layers:
        for layer in layers:
            expected = KERNEL_SIZES[model].get(layer["name"])
            if expected is not None and layer["weights"] != expected:
                raise ValueError(
                    f"Layer {layer['name']!r} of the Sparse VD report has "
                    f"{layer['weights']} weights; {model}'s has {expected}."
                )
        found = {layer["name"]: float(layer["sparsity"]) for layer in layers}
    elif report.get("per_layer_sparsity"):
        found = {k: float(v) / 100.0 for k, v in report["per_layer_sparsity"].items()}
    else:
        raise ValueError(
            "The Sparse VD report has neither `sparsity_report` nor "
            "`per_layer_sparsity`: is it a report of examples.train --variant svd?"
        )
    expected_names = PRUNABLE_LAYERS[model]
    if set(found) != set(expected_names):
        raise ValueError(
            f"The Sparse VD report's layers {sorted(found)} are not {model}'s "
            f"{sorted(expected_names)}."
        )
    # tfmot takes a final sparsity in [0, 1); a layer pruned whole cannot be
    # represented and would mean a net that predicts nothing anyway.
    for name, value in found.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"Layer {name!r} has sparsity {value}, not in [0, 1).")
    return {name: found[name] for name in expected_names}


def unit_targets(report: dict | str | os.PathLike, model: str) -> dict[str, float]:
    """Each layer's fraction of input rows to prune, from a Sparse VD report.

    The fraction is ``1 - inputs_kept / inputs`` of the layer in the report's
    ``sparsity_report``: with that fraction of its rows zero, the layer reads
    as many inputs as the Sparse VD net does (the units of the previous
    layer, or the pixels for the first).

    Args:
        report: the report (of ``examples.train --structured``, typically),
            or the path of its JSON file.
        model: the net to be pruned; only "lenet300", whose layers are all
            Dense.

    Returns:
        Layer name -> fraction of its input rows to prune, in the net's order.

    Raises:
        ValueError: the net has convolutions, or the report is of another net
            or does not count the inputs each layer kept.
    """
    if model not in ALL_DENSE:
        raise ValueError(
            f"`--units-from` prunes whole rows of Dense kernels, and {model} "
            f"has convolutions; use "
            f"`--model lenet300`, or `--per-layer-from` for {model}."
        )
    if not isinstance(report, dict):
        report = json.loads(Path(report).read_text())
    # The same net, layer names and kernel sizes as for per-layer targets.
    per_layer_targets(report, model)
    layers = (report.get("sparsity_report") or {}).get("layers") or []
    found = {}
    for layer in layers:
        if layer.get("inputs_kept") is None or not layer.get("inputs"):
            raise ValueError(
                f"Layer {layer['name']!r} of the Sparse VD report does not count "
                "the inputs it kept (`inputs_kept`): write the report again with "
                "today's examples.train."
            )
        found[layer["name"]] = 1.0 - layer["inputs_kept"] / layer["inputs"]
    for name, value in found.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"Layer {name!r} keeps no input; it cannot be pruned whole."
            )
    return {name: found[name] for name in PRUNABLE_LAYERS[model]}


def inputs_read(kernel) -> np.ndarray:
    """Which inputs a kernel reads: its second-to-last axis, Dense and Conv alike.

    Args:
        kernel: ``(inputs, units)`` or ``(..., in_channels, filters)``.

    Returns:
        Boolean, one per input, True where any weight of that input is nonzero.
    """
    kernel = np.asarray(kernel)
    others = tuple(a for a in range(kernel.ndim) if a != kernel.ndim - 2)
    return np.any(kernel != 0, axis=others)


def drop_unread_units(kernels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Dense kernels with the columns of units that the next layer never reads.

    A unit whose row of the next kernel is all zero changes no output, so its
    weights are zeroed, as compacting the net would remove them. The last
    layer's units are the outputs, and all are read.

    Args:
        kernels: layer name -> 2-D kernel (inputs, units), in the net's order.

    Returns:
        The same kernels, copies, with those columns zero.
    """
    names = list(kernels)
    out = {name: np.array(kernels[name], copy=True) for name in names}
    for name, next_name in zip(names, names[1:]):
        out[name][:, ~inputs_read(out[next_name])] = 0
    return out


def polynomial_sparsity(step: int, final: float, window: tuple) -> float | None:
    """tfmot's ``PolynomialDecay`` (power 3, from 0): the target at a step.

    Args:
        step: optimizer steps done.
        final: the final sparsity.
        window: ``(begin_step, end_step, frequency)`` of `pruning_window`.

    Returns:
        The sparsity the masks take at this step, or None where tfmot would
        not update them (outside the window or between updates).
    """
    begin, end, frequency = window
    if step < begin or step > end or (step - begin) % frequency:
        return None
    progress = (step - begin) / (end - begin) if end > begin else 1.0
    return final * (1.0 - (1.0 - progress) ** 3)


def unit_mask(kernel: np.ndarray, fraction: float) -> np.ndarray:
    """Which rows (inputs) of a Dense kernel to keep: the largest mean |w|.

    Args:
        kernel: ``(inputs, units)``.
        fraction: of the rows to prune, in [0, 1); rounded as tfmot rounds.

    Returns:
        Boolean ``(inputs,)``, True for a kept row.
    """
    rows = kernel.shape[0]
    keep = int(round(rows * (1.0 - fraction)))
    # Stable, so that tied rows (all zero already) go in a fixed order.
    order = np.argsort(-np.abs(kernel).mean(axis=1), kind="stable")
    mask = np.zeros(rows, dtype=bool)
    mask[order[:keep]] = True
    return mask


def pruning_window(
    epochs: int, steps_per_epoch: int, end_fraction: float
) -> tuple[int, int, int]:
    """Begin step, end step and frequency of the mask updates.

    tfmot updates the masks at steps ``begin + k * frequency`` up to ``end``;
    the target sparsity is reached only if ``end`` is one of them, so ``end``
    is rounded down to a multiple of the frequency. Short runs get a smaller
    frequency (about 20 updates), so that smoke tests prune at all.

    Args:
        epochs: training epochs.
        steps_per_epoch: optimizer steps per epoch.
        end_fraction: where in training the target is reached, in (0, 1].

    Returns:
        ``(begin_step, end_step, frequency)``.
    """
    if not 0.0 < end_fraction <= 1.0:
        raise ValueError(f"`--prune-end` must be in (0, 1], got {end_fraction}.")
    total = epochs * steps_per_epoch
    # The last step that runs is total - 1 (tfmot counts steps from 0).
    end = max(1, min(total - 1, int(round(end_fraction * total))))
    frequency = max(1, min(MAX_PRUNING_FREQUENCY, end // 20))
    end = max(frequency, (end // frequency) * frequency)
    return 0, end, frequency


def preprocess(
    x_train: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The examples' MNIST preprocessing, in numpy.

    ``examples.models.mnist_preprocessing`` (inside the Keras 3 models):
    inputs are pixels / 255, rescaled to the authors' pixels / 256, minus the
    training mean image on the same scale.

    Args:
        x_train: training images, float in [0, 1] (pixels / 255).
        x_test: test images, the same.

    Returns:
        Both, preprocessed, float32.
    """
    scale = np.float32(255.0 / 256.0)
    mean = x_train.mean(axis=0).astype("float32") * scale
    return (
        (x_train.astype("float32") * scale - mean).astype("float32"),
        (x_test.astype("float32") * scale - mean).astype("float32"),
    )


def load_mnist(data_dir: str | None, train_limit: int | None) -> tuple:
    """MNIST as ``examples.train`` loads it (examples.data, numpy only)."""
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        # Run as a file rather than with -m: the examples are a sibling package.
        sys.path.insert(0, str(root))
    from examples import data as data_lib

    try:
        (x_train, y_train), (x_test, y_test) = data_lib.load("mnist", data_dir)
    except data_lib.DataError as e:
        raise SystemExit(f"error: {e}") from None
    if train_limit:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    # The mean image is of the (limited) training set, as in examples.train.
    x_train, x_test = preprocess(x_train, x_test)
    return (x_train, y_train), (x_test, y_test)


def weight_report(kernels: dict[str, np.ndarray]) -> dict:
    """Weights, nonzero weights, sparsity and inputs read of each kernel, and in total.

    The layout of ``keras_sparsevd.sparsity_report(model).to_dict()``, so that
    both methods' reports read alike.

    Args:
        kernels: layer name -> kernel, in the net's order.
    """
    layers = []
    for name, kernel in kernels.items():
        kernel = np.asarray(kernel)
        size = int(kernel.size)
        kept = int(np.count_nonzero(kernel))
        layers.append(
            {
                "name": name,
                "weights": size,
                "kept": kept,
                "sparsity": 1.0 - kept / size if size else 0.0,
                "inputs": int(kernel.shape[-2]),
                "inputs_kept": int(np.count_nonzero(inputs_read(kernel))),
            }
        )
    total = sum(layer["weights"] for layer in layers)
    kept = sum(layer["kept"] for layer in layers)
    return {
        "layers": layers,
        "total_weights": total,
        "total_kept": kept,
        "sparsity": 1.0 - kept / total if total else 0.0,
        "compression": total / kept if kept else math.inf,
    }


def import_peers() -> tuple:
    """tensorflow, tf_keras and tfmot, refusing Keras 3 with a way out.

    Raises:
        PeersUnavailable: tf_keras or tfmot is missing, or tfmot would build on
            Keras 3 (TensorFlow was imported before with Keras 3 as tf.keras).
    """
    # Set before TensorFlow's first import: tf.keras is then tf_keras, the
    # Keras that tfmot builds on.
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    missing = [
        name
        for name in ("tf_keras", "tensorflow_model_optimization")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        # Said before TensorFlow is imported: seconds sooner in the wrong venv.
        raise PeersUnavailable(
            f"research.magnitude_pruning needs {' and '.join(missing)} (Keras 2 "
            "and TF Model Optimization, which does not import under Keras 3); "
            f"this interpreter ({sys.executable}) lacks them. {VENV_HINT}"
        )
    try:
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras
        from tensorflow_model_optimization.python.core.keras import compat
    except ImportError as e:
        raise PeersUnavailable(
            "research.magnitude_pruning needs Keras 2 (tf_keras) and "
            "tensorflow-model-optimization, which does not import under Keras 3 "
            f"({type(e).__name__}: {e}). {VENV_HINT}"
        ) from None
    if compat.keras.layers.Dense is not tf_keras.layers.Dense:
        raise PeersUnavailable(
            "tensorflow-model-optimization is building on Keras 3 here "
            "(TensorFlow was imported with Keras 3 before this script could "
            f"select tf_keras). {VENV_HINT}"
        )
    return tf, tf_keras, tfmot


def versions() -> dict:
    """Library versions of the peers environment."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("tensorflow", "tf_keras", "tensorflow-model-optimization", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def machine() -> dict:
    info: dict = {"machine": platform.machine(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        # Other jobs share the cores: the load says how comparable times are.
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def build_model(keras, tfmot, model: str, targets: dict[str, float], window: tuple):
    """The net with each target layer wrapped by ``prune_low_magnitude``.

    Args:
        keras: the tf_keras module.
        tfmot: the tensorflow_model_optimization module.
        model: "lenet300" or "lenet5".
        targets: layer name -> final sparsity; a layer at 0 is left unwrapped.
        window: ``(begin_step, end_step, frequency)`` of `pruning_window`.
    """
    begin, end, frequency = window

    def prunable(layer):
        sparsity = targets.get(layer.name, 0.0)
        if sparsity <= 0.0:
            return layer
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=sparsity,
            begin_step=begin,
            end_step=end,
            frequency=frequency,
        )
        return tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=schedule
        )

    layers = keras.layers
    if model == "lenet300":
        body = [
            layers.Flatten(),
            prunable(layers.Dense(300, activation="relu", name="fc1")),
            prunable(layers.Dense(100, activation="relu", name="fc2")),
            prunable(layers.Dense(10, name="fc3")),
        ]
    else:
        body = [
            prunable(layers.Conv2D(20, 5, name="conv1")),
            layers.MaxPooling2D(2, name="pool1"),
            prunable(layers.Conv2D(50, 5, name="conv2")),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(),
            prunable(layers.Dense(500, activation="relu", name="fc1")),
            prunable(layers.Dense(10, name="fc2")),
        ]
    return keras.Sequential([keras.Input((28, 28, 1))] + body, name=model)


def unit_masks_callback(keras, targets: dict[str, float], window: tuple):
    """A tf_keras callback that prunes whole rows of Dense kernels by magnitude.

    At each of tfmot's mask updates (`polynomial_sparsity`) the rows of each
    kernel are ranked again (`unit_mask`); after every step the pruned rows
    are set to zero, as tfmot's wrapper does with its masks. A resumed run
    takes its masks from the rows that are zero in the restored kernels.

    Args:
        keras: the tf_keras module.
        targets: layer name -> final fraction of its rows to prune.
        window: ``(begin_step, end_step, frequency)``.
    """

    class UnitMasks(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.layers = {
                layer.name: layer
                for layer in self.model.layers
                if targets.get(layer.name, 0.0) > 0.0
            }
            self.dtypes = {
                name: layer.kernel.numpy().dtype for name, layer in self.layers.items()
            }
            resumed = int(self.model.optimizer.iterations.numpy()) > 0
            self.masks = {
                name: (
                    inputs_read(layer.kernel.numpy())
                    if resumed
                    else np.ones(layer.kernel.shape[0], dtype=bool)
                )
                for name, layer in self.layers.items()
            }

        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            for name, layer in self.layers.items():
                fraction = polynomial_sparsity(step, targets[name], window)
                if fraction is not None:
                    self.masks[name] = unit_mask(layer.kernel.numpy(), fraction)
                kept = self.masks[name].astype(self.dtypes[name])
                layer.kernel.assign(layer.kernel * kept[:, None])

    return UnitMasks()


def kernels_of(model, names: tuple) -> dict[str, np.ndarray]:
    """The kernels of the named layers of a model without pruning wrappers."""
    by_name = {layer.name: layer for layer in model.layers}
    return {name: by_name[name].kernel.numpy() for name in names}


def mask_sparsity(model) -> dict[str, float]:
    """Fraction of each wrapped kernel that its current pruning mask removes."""
    out = {}
    for layer in model.layers:
        pruning_vars = getattr(layer, "pruning_vars", None)
        if pruning_vars:
            mask = pruning_vars[0][1].numpy()
            out[layer.layer.name] = 1.0 - float(mask.mean())
    return out


def row_sparsity(model, names) -> dict[str, float]:
    """Fraction of each named Dense kernel's rows (inputs) that are all zero."""
    by_name = {layer.name: layer for layer in model.layers}
    return {
        name: 1.0 - float(inputs_read(by_name[name].kernel.numpy()).mean())
        for name in names
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m research.magnitude_pruning",
        description="Magnitude pruning (tfmot prune_low_magnitude) of the LeNets.",
    )
    p.add_argument("--model", choices=MODELS, default="lenet300")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--sparsity", type=float, help="uniform target sparsity of every layer"
    )
    target.add_argument(
        "--per-layer-from",
        metavar="SVD_JSON",
        help="take each layer's sparsity from this Sparse VD report",
    )
    target.add_argument(
        "--units-from",
        metavar="SVD_JSON",
        help="prune whole units (kernel rows) to the inputs each layer of this "
        "Sparse VD report kept (lenet300 only)",
    )
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--prune-end",
        type=float,
        default=0.6,
        help="fraction of training at which the target is reached (default 0.6)",
    )
    p.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use only the first N training examples (smoke tests)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="as examples.train's (default: the MNIST files in examples/mnist/)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON report (default: runs/magnitude/<model>-<target>-e<epochs>"
        "-seed<seed>.json)",
    )
    p.add_argument(
        "--backup-dir",
        default=None,
        help="where a stopped run's checkpoint and history are kept so that the "
        "same command resumes it (default: runs/magnitude/<report name>/)",
    )
    p.add_argument("--verbose", type=int, default=2)
    return p


def default_out(args: argparse.Namespace) -> Path:
    if args.sparsity is not None:
        target = f"s{args.sparsity:g}"
    else:
        target = "svdunits" if args.units_from else "svdlayers"
    return Path(
        f"runs/magnitude/{args.model}-{target}-e{args.epochs}-seed{args.seed}.json"
    )


def has_backup(backup_dir: Path) -> bool:
    """Whether tf_keras' BackupAndRestore left a checkpoint to resume from."""
    return (backup_dir / "chief" / "checkpoint").exists()


def read_history(path: Path) -> dict[int, dict]:
    """Epoch -> history row, from the JSON lines a stopped run wrote.

    An epoch recorded twice (the process stopped after the row was written but
    before its checkpoint was) keeps its last row, the one that was resumed.
    """
    rows: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[int(row["epoch"])] = row
    return rows


def main(argv: list | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.epochs <= 0:
        raise SystemExit("--epochs must be positive")
    # Targets are checked before TensorFlow starts: a bad report fails fast.
    try:
        if args.sparsity is not None:
            mode, targets = "uniform", uniform_targets(args.model, args.sparsity)
        elif args.units_from:
            mode, targets = "units", unit_targets(args.units_from, args.model)
        else:
            mode = "per_layer"
            targets = per_layer_targets(args.per_layer_from, args.model)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    tf, keras, tfmot = import_peers()
    out = Path(args.out) if args.out else default_out(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    backup_dir = (
        Path(args.backup_dir) if args.backup_dir else Path("runs/magnitude") / out.stem
    )
    backup_dir.mkdir(parents=True, exist_ok=True)
    history_path = backup_dir / "history.jsonl"
    resuming = has_backup(backup_dir)
    if not resuming:
        # Rows of an earlier run that finished or never checkpointed.
        history_path.unlink(missing_ok=True)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir, args.train_limit)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    window = pruning_window(args.epochs, steps_per_epoch, args.prune_end)
    whole_rows = mode == "units"
    # Unit pruning is UnitMasks' work, so tfmot wraps no layer then.
    model = build_model(keras, tfmot, args.model, {} if whole_rows else targets, window)
    model.compile(
        optimizer=keras.optimizers.Adam(
            BASE_LR, beta_1=0.9, beta_2=0.999, epsilon=1e-8
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    rows = read_history(history_path)
    if resuming:
        print(
            f"resuming from {backup_dir} ({len(rows)} epochs recorded)",
            file=sys.stderr,
        )

    class Record(keras.callbacks.Callback):
        """Per epoch: wall time, learning rate, test error, mask sparsity.

        With --units-from, the sparsity is of each kernel's rows (inputs).
        """

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {
                "epoch": epoch + 1,
                "seconds": time.perf_counter() - self._start,
                "lr": float(
                    keras.backend.get_value(self.model.optimizer.learning_rate)
                ),
                "loss": float(logs.get("loss", math.nan)),
                "test_error_percent": 100.0
                * (1.0 - logs.get("val_accuracy", math.nan)),
                "sparsity_percent": {
                    k: 100.0 * v
                    for k, v in (
                        row_sparsity(self.model, targets)
                        if whole_rows
                        else mask_sparsity(self.model)
                    ).items()
                },
            }
            rows[row["epoch"]] = row
            with history_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    started = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        # Evaluated every epoch as examples.train does, so s / epoch compare.
        validation_data=(x_test, y_test),
        callbacks=[
            # First, so that the restored state is in place before the others.
            keras.callbacks.BackupAndRestore(str(backup_dir)),
            unit_masks_callback(keras, targets, window)
            if whole_rows
            else tfmot.sparsity.keras.UpdatePruningStep(),
            keras.callbacks.LearningRateScheduler(
                lr_schedule(args.model, BASE_LR, args.epochs)
            ),
            Record(),
        ],
        verbose=args.verbose,
    )
    wall = time.perf_counter() - started
    history = [rows[epoch] for epoch in sorted(rows)]

    # Counted on the stripped net: the zeros are really in its kernels.
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    logits = stripped.predict(x_test, batch_size=1000, verbose=0)
    test_error = 100.0 * float(np.mean(np.argmax(logits, -1) != y_test))
    names = PRUNABLE_LAYERS[args.model]
    kernels = kernels_of(stripped, names)
    as_masked = weight_report(kernels)
    if whole_rows:
        # The masks empty whole rows; the columns of the units those rows
        # belonged to are dead weight that no output depends on.
        sparsity = weight_report(drop_unread_units(kernels))
        achieved = {
            layer["name"]: 100.0 * (1.0 - layer["inputs_kept"] / layer["inputs"])
            for layer in as_masked["layers"]
        }
    else:
        sparsity = as_masked
        achieved = {
            layer["name"]: 100.0 * layer["sparsity"] for layer in as_masked["layers"]
        }
    per_layer = {
        layer["name"]: 100.0 * layer["sparsity"] for layer in sparsity["layers"]
    }
    gap = max(abs(achieved[name] - 100.0 * targets[name]) for name in names)
    seconds = [row["seconds"] for row in history]
    report = {
        "benchmark": "magnitude_pruning",
        "method": "magnitude_pruning",
        "model": args.model,
        "dataset": "mnist",
        # No "variant" key: examples.results_table would list the run as dense.
        "mode": mode,
        "per_layer_from": args.per_layer_from,
        "units_from": args.units_from,
        "target_sparsity_percent": {k: 100.0 * v for k, v in targets.items()},
        # With --units-from the targets are of each kernel's rows (its inputs).
        "target_of": "input rows" if whole_rows else "weights",
        "epochs": args.epochs,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "base_lr": BASE_LR,
        "optimizer": "Adam(beta_1=0.9, beta_2=0.999, epsilon=1e-8)",
        "lr_schedule": (
            "constant to half, then linear to 0"
            if args.model == "lenet300"
            else "linear to 0"
        ),
        "pruning_schedule": {
            "kind": "PolynomialDecay",
            "power": 3,
            "initial_sparsity": 0.0,
            "begin_step": window[0],
            "end_step": window[1],
            "frequency": window[2],
            "total_steps": args.epochs * steps_per_epoch,
        },
        "train_examples": len(x_train),
        "test_error_percent": test_error,
        "compression": sparsity["compression"],
        "per_layer_sparsity": per_layer,
        "max_gap_to_target_points": gap,
        "sparsity_report": sparsity,
        # Before the unread units' weights were removed (--units-from only).
        "compression_as_masked": as_masked["compression"],
        "units_kept": (
            [layer["inputs_kept"] for layer in sparsity["layers"]]
            + [kernels[names[-1]].shape[-1]]
            if whole_rows
            else None
        ),
        "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
        "wall_seconds": wall,
        # Over all processes of a resumed run; wall_seconds is this one's.
        "train_seconds_all_epochs": float(sum(seconds)),
        "resumed": resuming,
        "history": history,
        "versions": versions(),
        "hardware": machine(),
        "command": "python -m research.magnitude_pruning "
        + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        ),
        "options": vars(args),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    # The report holds the history now; BackupAndRestore removed its checkpoint.
    history_path.unlink(missing_ok=True)
    layers_text = " - ".join(f"{per_layer[n]:.1f}" for n in names)
    print(
        f"test error: {test_error:.2f}%  compression: {sparsity['compression']:.1f}x  "
        f"sparsity per layer %: {layers_text}  (max gap to target "
        f"{gap:.2f} points)\nreport: {out}"
    )
    if whole_rows:
        print(f"units kept: {'-'.join(str(u) for u in report['units_kept'])}")
    if gap > 1.0:
        print(
            "warning: a layer's sparsity is more than 1 point from its target "
            "(too few mask updates?)",
            file=sys.stderr,
        )
    return report


if __name__ == "__main__":
    main()
