"""Trains one of the paper's models with `model.fit` and writes a run folder.

    python -m examples.train --model lenet300 --dataset mnist

MNIST comes from the files shipped in ``examples/mnist/`` unless ``--data-dir``
says otherwise (see `examples.data`).

The run folder (``--out``, default ``runs/<model>-<dataset>-<variant>-seed<seed>``)
receives ``model.keras``, ``history.csv`` (loss, accuracy, test error,
sparsity per layer, compression per epoch), ``report.json``, and the
pictures ``curves.png`` and ``masks.png``, each written atomically.

A run killed at any point continues from its last finished epoch when the same
command is started again (`examples.run_folder`: a checkpoint per epoch, kept
until the results are written). The same command on a finished run says so
and exits without training; ``--restart`` trains it again from scratch. A
folder in use by a live run, or holding another command's run, is refused.
With ``--animate`` it also writes ``weights.gif``, the weights of the first
layers epoch by epoch as Sparse VD prunes them (`examples.animation`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

import keras_sparsevd as ksvd
from examples import animation, distribute, plots, run_folder
from examples import data as data_lib
from examples import models as models_lib
from examples import thresholds as thresholds_lib
from keras_sparsevd import files

LR_SCHEDULES = ("paper", "linear", "constant-linear", "constant")


def paper_lr_schedule(model: str, variant: str, pretrained: bool) -> str:
    """The paper's learning-rate schedule for `model`, by its `LR_SCHEDULES` name."""
    if model == "lenet300":
        return "constant-linear"
    if model == "vgglike" and variant == "svd" and pretrained:
        return "constant"
    return "linear"


def lr_schedule(
    model: str,
    base_lr: float,
    epochs: int,
    variant: str,
    pretrained: bool,
    kind: str = "paper",
):
    """A learning-rate schedule by epoch, stretched to `epochs`.

    Args:
        model, variant, pretrained: pick the paper's schedule for
            ``kind="paper"``.
        base_lr: the learning rate at epoch 0.
        epochs: the run's length.
        kind: one of `LR_SCHEDULES`: "linear" from `base_lr` to 0
            (LeNet-5 in the paper), "constant-linear" constant for the
            first half and then linear to 0 (LeNet-300-100 in the paper),
            "constant", or "paper" for the paper's choice for `model`.
    """
    if kind not in LR_SCHEDULES:
        raise ValueError(f"`kind` must be one of {LR_SCHEDULES}, got {kind!r}.")
    if kind == "paper":
        kind = paper_lr_schedule(model, variant, pretrained)
    if kind == "constant-linear":
        half = epochs / 2

        def schedule(epoch: int) -> float:
            return base_lr if epoch < half else base_lr * (epochs - epoch) / half

    elif kind == "constant":

        def schedule(epoch: int) -> float:
            return base_lr

    else:

        def schedule(epoch: int) -> float:
            return base_lr * (epochs - epoch) / epochs

    return schedule


def default_lr(model: str, variant: str, pretrained: bool) -> float:
    if model == "vgglike" and variant == "svd" and pretrained:
        return 1e-5
    return 1e-3


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall time of the epoch) to the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


class TestError(keras.callbacks.Callback):
    """Adds ``test_error`` (percent, from val_accuracy) to the logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "val_accuracy" in logs:
            logs["test_error"] = 100.0 * (1.0 - logs["val_accuracy"])


class EpochLine(keras.callbacks.Callback):
    """Prints one short line per epoch: loss, accuracy, test error, sparsity.

    Keras' own progress bar would print every figure in the logs (17 of them,
    with the per-layer sparsities); those go to history.csv instead.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        if "loss" in logs:
            parts.append(f"loss {logs['loss']:.4f}")
        if "accuracy" in logs:
            parts.append(f"accuracy {100.0 * logs['accuracy']:.2f}%")
        if "test_error" in logs:
            parts.append(f"test error {logs['test_error']:.2f}%")
        if "sparsity" in logs:
            parts.append(f"sparsity {100.0 * logs['sparsity']:.1f}%")
        if "compression" in logs:
            parts.append(f"compression {logs['compression']:.1f}x")
        if "epoch_seconds" in logs:
            parts.append(f"{logs['epoch_seconds']:.1f} s")
        print("  ".join(parts), flush=True)


def transfer_dense_weights(dense: keras.Model, sparse: keras.Model) -> int:
    """Copies a dense net's weights into the SVD net, layer by layer name.

    Conv/Dense kernels and biases go to the SVD layers' ``kernel`` and
    ``bias``; other layers (BatchNorm) are copied whole. Returns the number
    of layers copied.
    """
    by_name = {layer.name: layer for layer in dense.layers}
    copied = 0
    for layer in sparse.layers:
        source = by_name.get(layer.name)
        if source is None or not source.weights:
            continue
        if isinstance(layer, ksvd.SparseVDLayer):
            layer.kernel.assign(source.kernel)
            if layer.use_bias and getattr(source, "bias", None) is not None:
                layer.bias.assign(source.bias)
        else:
            layer.set_weights(source.get_weights())
        copied += 1
    if copied == 0:
        raise ValueError("`--init-from`: no layer names in common with the model.")
    return copied


def compilation(model: keras.Model) -> str:
    """How Keras compiles `model`'s train step, in words (after `compile`)."""
    backend = keras.backend.backend()
    if backend == "torch":
        return "torch.compile" if model.jit_compile is True else "eager (torch)"
    if backend == "jax":
        return "XLA (jax.jit)" if model.jit_compile else "jax, no jit"
    return "XLA" if model.jit_compile else "tf.function, no XLA"


def backend_hint(model_name: str) -> str | None:
    """A line for users of a slower backend for `model_name` on this machine.

    From `benchmarks.train_speed` on a 2-core CPU (BENCHMARKS.md): dense-only
    nets train faster per step on JAX than on TensorFlow, conv nets much
    slower (XLA's CPU convolutions and random numbers). A hint, not a switch:
    the backend is chosen before Keras is imported, and is the user's.
    """
    import tensorflow as tf

    on_cpu = not tf.config.list_physical_devices("GPU")
    backend = keras.backend.backend()
    if on_cpu and model_name == "lenet300" and backend == "tensorflow":
        return (
            "hint: on a CPU, LeNet-300-100 trains 1.2-1.7x faster per step on "
            "JAX (KERAS_BACKEND=jax; see BENCHMARKS.md)"
        )
    if on_cpu and model_name != "lenet300" and backend == "jax":
        return (
            f"hint: on a CPU, {model_name} trains 2.5-3x faster per step on "
            "TensorFlow (KERAS_BACKEND=tensorflow; see BENCHMARKS.md)"
        )
    return None


def hardware() -> dict:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    details = []
    for gpu in gpus:
        try:
            details.append(
                tf.config.experimental.get_device_details(gpu).get(
                    "device_name", gpu.name
                )
            )
        except Exception:  # noqa: BLE001 - details are best effort
            details.append(gpu.name)
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": details,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def test_error_percent(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Percent of `x` whose argmax prediction is not `y` (evaluation mode)."""
    logits = model.predict(x, batch_size=1000, verbose=0)
    return 100.0 * float(np.mean(np.argmax(logits, -1) != y))


def threshold_sweep(
    model: keras.Model, x: np.ndarray, y: np.ndarray, thresholds: list
) -> list:
    """Test error and compression of one trained model at several thresholds."""
    return thresholds_lib.sweep(
        model,
        thresholds,
        lambda model: {
            "test_error_percent": test_error_percent(model, x, y),
            "compression": ksvd.sparsity_report(model).compression,
        },
    )


def group_kl_scale(text: str) -> float | dict:
    """``--group-kl-scale``: a number, or ``LAYER=N,LAYER=N``."""
    if "=" not in text:
        return float(text)
    scales = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if not name.strip():
            raise ValueError(f"no layer name in {item!r}")
        scales[name.strip()] = float(value)
    return scales


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m examples.train",
        description="Train the paper's models with Sparse VD (or a dense baseline).",
    )
    p.add_argument("--model", choices=models_lib.MODELS, default="lenet300")
    p.add_argument("--dataset", choices=data_lib.DATASETS, default="mnist")
    p.add_argument(
        "--variant",
        choices=("svd", "dense"),
        default="svd",
        help="Sparse VD model, or the dense baseline (default: svd).",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"local data folder, or {data_lib.TFDS!r} to load with "
        f"tensorflow_datasets (default: ${data_lib.DATA_DIR_ENV} if set; else "
        "MNIST from the files shipped in examples/mnist/, offline, and CIFAR "
        "from tensorflow_datasets)",
    )
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="base learning rate (default: the paper's)",
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="paper",
        help="linear: to 0 over the run (the paper's LeNet-5); constant-linear: "
        "constant for the first half, then linear to 0 (the paper's "
        "LeNet-300-100); constant; paper: the paper's for the model (default)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=float, default=1.0, help="VGG-like width scale")
    p.add_argument(
        "--init-from",
        default=None,
        help="trained dense .keras model to start the Sparse VD net from: the "
        "LeNets are converted with keras_sparsevd.sparsify, the VGG-like's "
        "weights are copied by layer name",
    )
    p.add_argument(
        "--log-sigma2-init",
        type=float,
        default=None,
        help="initial log sigma^2 (default -10; -15 for VGG-like with --init-from)",
    )
    p.add_argument(
        "--kl-warmup",
        type=int,
        nargs=2,
        metavar=("START", "END"),
        default=(5, 20),
        help="KL weight 0 before epoch START, linear to 1 at END (default: "
        "the paper's 5 20)",
    )
    p.add_argument(
        "--preprocess",
        choices=("zca", "standardize"),
        default="zca",
        help="VGG-like input preprocessing, inside the model (default: the "
        "paper's ZCA whitening)",
    )
    p.add_argument("--zca-epsilon", type=float, default=1e-2)
    p.add_argument("--threshold", type=float, default=3.0)
    p.add_argument(
        "--structured",
        action="store_true",
        help="LeNets: group variables on every layer's inputs, so that whole "
        "units and filters are pruned (structured Sparse VD)",
    )
    p.add_argument(
        "--channel-groups",
        action="store_true",
        help="with --structured, LeNet-5: fc1's groups are one per conv2 filter, "
        "shared over its positions after Flatten, so they prune whole filters",
    )
    p.add_argument(
        "--group-kl-scale",
        type=group_kl_scale,
        default=1.0,
        help="with --structured: weight of the group variables' KL against the "
        "weights' (keras_sparsevd.set_group_kl_scale), a number for every layer "
        "or LAYER=N,LAYER=N for some (default 1, the paper's prior)",
    )
    p.add_argument(
        "--no-train-clip",
        action="store_true",
        help="do not zero pruned weights in the training mean (LeNets)",
    )
    p.add_argument(
        "--no-mean-image",
        action="store_true",
        help="MNIST: do not subtract the training mean image",
    )
    p.add_argument(
        "--mixed-precision", choices=("mixed_float16", "mixed_bfloat16"), default=None
    )
    jit = p.add_mutually_exclusive_group()
    jit.add_argument(
        "--jit",
        dest="jit",
        action="store_const",
        const=True,
        default="auto",
        help="compile with XLA (default: Keras' choice, which is the faster "
        "one on a CPU: no XLA on TensorFlow, see BENCHMARKS.md)",
    )
    jit.add_argument(
        "--no-jit", dest="jit", action="store_const", const=False, help="no XLA"
    )
    p.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use only the first N training examples (smoke tests)",
    )
    distribute.add_arguments(p)
    p.add_argument("--out", default=None, help="run folder")
    p.add_argument(
        "--restart",
        action="store_true",
        help="train the run folder's run again from scratch, discarding its "
        "checkpoint, history, report and model (without it, a finished run is "
        "left alone and an interrupted one resumes)",
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--animate",
        action="store_true",
        help="--variant svd: write <out>/weights.gif, an animation of conv1's "
        "filters and a patch of fc1 (LeNet-300: fc1's receptive fields) over the "
        "epochs, pruned weights grey; frames go to <out>/animation_frames/ "
        "after each epoch (a resumed run keeps them; render again with python -m "
        "examples.animation)",
    )
    p.add_argument(
        "--animate-every",
        type=int,
        default=1,
        metavar="N",
        help="with --animate: a frame every N epochs (default 1)",
    )
    p.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=2,
        help="2: one short line per epoch (default); 1: Keras' progress bar with "
        "every figure; 0: nothing per epoch",
    )
    return p


def parse_args(argv: list | None = None) -> argparse.Namespace:
    """The command line, checked: a wrong combination exits with a message."""
    args = build_parser().parse_args(argv)
    if args.epochs <= 0:
        raise SystemExit("--epochs must be positive")
    if args.init_from and args.variant != "svd":
        raise SystemExit("--init-from applies to --variant svd only")
    if args.structured and (args.variant != "svd" or args.model == "vgglike"):
        raise SystemExit("--structured applies to the LeNets with --variant svd")
    if args.channel_groups and not (args.structured and args.model == "lenet5"):
        raise SystemExit("--channel-groups applies to --model lenet5 --structured")
    if args.group_kl_scale != 1.0 and not args.structured:
        raise SystemExit("--group-kl-scale applies to --structured runs")
    if args.animate and args.variant != "svd":
        raise SystemExit("--animate applies to --variant svd only")
    if args.animate_every < 1:
        raise SystemExit("--animate-every must be >= 1")
    if args.model in ("lenet300", "lenet5") and args.dataset != "mnist":
        raise SystemExit(f"--model {args.model} is for --dataset mnist")
    if args.train_limit is not None and args.train_limit < 1:
        raise SystemExit("--train-limit must be >= 1")
    return args


def main(argv: list | None = None) -> dict:
    """Parses, then builds, fits and reports in the run folder it has locked."""
    args = parse_args(argv)
    scope, is_chief, engine = distribute.setup(args)
    print(f"engine: {engine}")
    hint = backend_hint(args.model)
    if hint:
        print(hint)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy(args.mixed_precision)

    out = Path(
        args.out
        or f"runs/{args.model}-{args.dataset}-{args.variant}"
        f"{'-structured' if args.structured else ''}-seed{args.seed}"
    )
    if not is_chief:
        # Every worker writes its checkpoints; only the chief's are the run's.
        out = out / f"worker-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"run folder: {out}")
    lock = run_folder.RunLock(out)
    try:
        taken_over = lock.acquire()
    except run_folder.RunFolderError as e:
        raise SystemExit(f"error: {e}") from None
    if taken_over:
        print(f"{out}: process {taken_over}, which held it, is gone: taking over")
    try:
        return _run(args, argv, out, scope)
    finally:
        lock.release()


def run_signature(options: dict) -> dict:
    """The options that make a run what it is (not how it prints or where)."""
    ignored = ("verbose", "no_plots", "restart", "out")
    kept = {k: v for k, v in options.items() if k not in ignored}
    # Added later: at their defaults they are left out, so that runs of
    # earlier versions, whose signature lacks them, still resume.
    if not kept.get("channel_groups"):
        kept.pop("channel_groups", None)
    if kept.get("group_kl_scale") == 1.0:
        kept.pop("group_kl_scale", None)
    return json.loads(json.dumps(kept))  # tuples as lists, as saved


def _start_over(out: Path) -> None:
    # The report first: without it, nothing here reads as finished.
    for name in ("report.json", run_folder.BACKUP_DIR, "history.csv", "model.keras"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _finished_run(out: Path, signature: dict) -> dict | None:
    """The report of the finished run in `out`, if it is this command's.

    Raises:
        SystemExit: if `out` holds a finished run of other options.
    """
    path = out / "report.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    different = run_folder.differences(
        run_signature(saved.get("options", {})), signature
    )
    if different:
        raise SystemExit(
            f"error: {out} holds a finished run of other options "
            f"({'; '.join(different)}). Pass --restart to replace it with this "
            "run, or choose another --out."
        )
    return saved


def _run(args: argparse.Namespace, argv: list | None, out: Path, scope) -> dict:
    signature = run_signature(vars(args))
    backup = run_folder.RunBackup(
        out / run_folder.BACKUP_DIR,
        signature,
        run_folder.HistoryWriter(out / "history.csv"),
    )
    # What writers killed here left (this process holds the folder's lock).
    files.remove_stale_temporaries(out)
    if args.restart:
        _start_over(out)
    finished = _finished_run(out, signature)
    if finished is not None:
        # Killed after its report, before the backup was deleted.
        backup.remove()
        print(
            f"{out} holds this run, finished: test error "
            f"{finished.get('test_error_percent', float('nan')):.2f}%, compression "
            f"{finished.get('compression', float('nan')):.1f}x (report.json). "
            "Nothing to do; pass --restart to train it again."
        )
        return finished
    saved = backup.latest_meta()
    if saved is not None:
        different = run_folder.differences(saved.get("signature", {}), signature)
        if different:
            raise SystemExit(
                f"error: {out} holds an unfinished run of other options "
                f"({'; '.join(different)}), after epoch {saved['epoch']}. Run its "
                "command again to finish it, pass --restart to discard it, or "
                "choose another --out."
            )

    try:
        (x_train, y_train), (x_test, y_test) = data_lib.load(
            args.dataset, args.data_dir
        )
    except data_lib.DataError as e:
        raise SystemExit(f"error: {e}") from None
    if args.train_limit:
        x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
    # Variables and the optimizer belong to the engine's scope.
    with scope():
        model, base_lr = build_model(args, x_train)
    print(f"compilation: {compilation(model)}")
    # With --init-from: the converted model's error before any fine-tuning.
    start_error = test_error_percent(model, x_test, y_test) if args.init_from else None
    lr_kind, wall = fit(
        args, model, base_lr, backup, out, (x_train, y_train), (x_test, y_test)
    )
    return write_report(
        args,
        argv,
        model,
        out,
        backup,
        (x_test, y_test),
        train_examples=len(x_train),
        base_lr=base_lr,
        lr_kind=lr_kind,
        start_error=start_error,
        wall=wall,
    )


def build_model(args: argparse.Namespace, x_train: np.ndarray) -> tuple:
    """The compiled model the options ask for, and its base learning rate."""
    num_classes = data_lib.NUM_CLASSES[args.dataset]
    sparse = args.variant == "svd"
    pretrained = bool(args.init_from)
    if args.model in ("lenet300", "lenet5") and pretrained:
        # The user's route: a trained Keras model, converted in one call.
        model = ksvd.sparsify(
            keras.models.load_model(args.init_from),
            threshold=args.threshold,
            log_sigma2_initializer=(
                -10.0 if args.log_sigma2_init is None else args.log_sigma2_init
            ),
            train_clip=not args.no_train_clip,
            structured=args.structured,
            channel_groups=args.channel_groups,
        )
    elif args.model in ("lenet300", "lenet5"):
        mean_image = None if args.no_mean_image else x_train.mean(axis=0)
        model = models_lib.BUILDERS[args.model](
            sparse=sparse,
            num_classes=num_classes,
            input_shape=x_train.shape[1:],
            mean_image=mean_image,
            threshold=args.threshold,
            train_clip=not args.no_train_clip,
            structured=args.structured,
            **({"channel_groups": True} if args.channel_groups else {}),
        )
    else:
        log_sigma2 = args.log_sigma2_init
        if log_sigma2 is None:
            log_sigma2 = -15.0 if pretrained else -10.0
        model = models_lib.vgglike(
            sparse=sparse,
            num_classes=num_classes,
            input_shape=x_train.shape[1:],
            k=args.k,
            preprocessing=(
                models_lib.zca_whitening(x_train, args.zca_epsilon)
                if args.preprocess == "zca"
                else models_lib.channel_standardisation(x_train)
            ),
            threshold=args.threshold,
            log_sigma2_init=log_sigma2,
        )
        if pretrained:
            dense = keras.models.load_model(args.init_from)
            transfer_dense_weights(dense, model)

    if args.group_kl_scale != 1.0:
        ksvd.set_group_kl_scale(model, args.group_kl_scale)
    base_lr = (
        args.lr
        if args.lr is not None
        else default_lr(args.model, args.variant, pretrained)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(
            base_lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=args.jit,
    )
    return model, base_lr


def fit(
    args: argparse.Namespace,
    model: keras.Model,
    base_lr: float,
    backup: run_folder.RunBackup,
    out: Path,
    train: tuple,
    test: tuple,
) -> tuple:
    """Trains from the last checkpoint in `out`, if any; (lr schedule, seconds)."""
    pretrained = bool(args.init_from)
    lr_kind = args.lr_schedule
    if lr_kind == "paper":
        lr_kind = paper_lr_schedule(args.model, args.variant, pretrained)
    callbacks = [
        EpochTimer(),
        keras.callbacks.LearningRateScheduler(
            lr_schedule(
                args.model, base_lr, args.epochs, args.variant, pretrained, lr_kind
            )
        ),
        TestError(),
    ]
    if args.variant == "svd":
        callbacks += [
            ksvd.KLScheduler(
                num_train_examples=len(train[0]),
                start_epoch=args.kl_warmup[0],
                end_epoch=args.kl_warmup[1],
            ),
            ksvd.SparsityLogger(),
        ]
    if args.animate:
        callbacks.append(
            animation.WeightAnimation(
                out / "weights.gif",
                frames_dir=out / "animation_frames",
                every=args.animate_every,
                title=f"{args.model} on {args.dataset}",
            )
        )
    # The history writer first: each checkpoint holds the rows up to its epoch.
    restored = backup.restore(model)
    initial_epoch = 0
    if restored is not None:
        initial_epoch = restored["epoch"]
        backup.history = run_folder.HistoryWriter(
            out / "history.csv", restored["history"]
        )
        print(
            f"resuming {out} after epoch {initial_epoch} of {args.epochs}, "
            f"from its checkpoint: epoch {initial_epoch + 1} next"
        )
    callbacks += [backup.history, backup]
    if args.verbose == 2:
        # One short line per epoch; every figure is in history.csv.
        callbacks.append(EpochLine(args.epochs))
    started = time.perf_counter()
    if initial_epoch < args.epochs:
        model.fit(
            train[0],
            train[1],
            batch_size=args.batch_size,
            epochs=args.epochs,
            initial_epoch=initial_epoch,
            validation_data=test,
            callbacks=callbacks,
            verbose=1 if args.verbose == 1 else 0,
        )
    return lr_kind, time.perf_counter() - started


def write_report(
    args: argparse.Namespace,
    argv: list | None,
    model: keras.Model,
    out: Path,
    backup: run_folder.RunBackup,
    test: tuple,
    *,
    train_examples: int,
    base_lr: float,
    lr_kind: str,
    start_error: float | None,
    wall: float,
) -> dict:
    """Saves the model, the report and the pictures; the report marks it finished."""
    x_test, y_test = test
    files.save_model(model, out / "model.keras")
    test_error = test_error_percent(model, x_test, y_test)

    history = plots.read_history(out / "history.csv")
    seconds = history.get("epoch_seconds", [])
    report_dict = {
        "model": args.model,
        "dataset": args.dataset,
        "variant": args.variant,
        "epochs": args.epochs,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "base_lr": base_lr,
        "lr_schedule": lr_kind,
        "train_examples": train_examples,
        "test_error_percent": test_error,
        "test_error_percent_at_start": start_error,
        "compression": 1.0,
        "per_layer_sparsity": {},
        "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
        "wall_seconds_this_process": wall,
        "hardware": hardware(),
        "backend": keras.backend.backend(),
        "compilation": compilation(model),
        "command": "python -m examples.train "
        + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        ),
        "options": {k: v for k, v in vars(args).items()},
    }
    if args.variant == "svd":
        report = ksvd.sparsity_report(model)
        report_dict["compression"] = report.compression
        report_dict["per_layer_sparsity"] = {
            layer.name: 100.0 * layer.sparsity for layer in report.layers
        }
        report_dict["sparsity_report"] = report.to_dict()
        report_dict["threshold_sweep"] = threshold_sweep(
            model, x_test, y_test, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        )
        print(report)
    print(
        f"test error: {test_error:.2f}%  compression: {report_dict['compression']:.1f}x"
    )
    if not args.no_plots:
        plots.save_all(out, model, history)
    # The report last: it marks the run finished. Only then the backup goes.
    files.write_text(out / "report.json", json.dumps(report_dict, indent=2) + "\n")
    backup.remove()
    print(f"run folder: {out}")
    return report_dict


if __name__ == "__main__":
    main()
