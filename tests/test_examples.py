"""The examples: model zoo, local loaders, and the training entry point."""

import gzip
import json
import pickle

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from examples import data, models, train

RNG = np.random.default_rng(2)


def _fit_a_few_steps(model, x, y):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [ksvd.KLScheduler(len(x), 0, 0)] if ksvd.svd_layers(model) else []
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=callbacks)
    assert np.isfinite(history.history["loss"][0])
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
@pytest.mark.parametrize("sparse", [True, False])
def test_mnist_models_build_and_train(name, sparse):
    x = RNG.random((16, 28, 28, 1)).astype("float32")
    y = RNG.integers(0, 10, 16)
    model = models.BUILDERS[name](sparse=sparse, mean_image=x.mean(0))
    _fit_a_few_steps(model, x, y)
    assert model.output_shape == (None, 10)
    n_svd = len(ksvd.svd_layers(model))
    assert n_svd == ((3 if name == "lenet300" else 4) if sparse else 0)
    if sparse:
        weights = ksvd.sparsity_report(model).total_weights
        assert weights == (266_200 if name == "lenet300" else 430_500)


@pytest.mark.slow
@pytest.mark.parametrize("classes", [10, 100])
@pytest.mark.parametrize("sparse", [True, False])
def test_vgglike_builds_and_trains_on_cifar_shapes(classes, sparse):
    x = RNG.random((8, 32, 32, 3)).astype("float32")
    y = RNG.integers(0, classes, 8)
    model = models.vgglike(
        sparse=sparse,
        num_classes=classes,
        k=0.125,
        preprocessing=models.channel_standardisation(x),
    )
    _fit_a_few_steps(model, x, y)
    assert model.output_shape == (None, classes)
    convs = [lay for lay in model.layers if "conv" in lay.name]
    assert len(convs) == 13
    assert sum(isinstance(lay, keras.layers.Dropout) for lay in model.layers) == (
        0 if sparse else 15
    )


def test_mnist_preprocessing_is_paper_scale_minus_mean_image():
    x = RNG.random((5, 28, 28, 1)).astype("float32")
    mean = x.mean(0)
    pre = keras.Sequential(
        [keras.Input((28, 28, 1))] + models.mnist_preprocessing(mean)
    )
    expected = x * 255 / 256 - mean * 255 / 256
    np.testing.assert_allclose(pre.predict(x, verbose=0), expected, atol=1e-5)


def write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist_folder(folder, n_train=200, n_test=50, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": RNG.integers(0, 256, (n_train, 28, 28)),
        "y_train": RNG.integers(0, 10, n_train),
        "x_test": RNG.integers(0, 256, (n_test, 28, 28)),
        "y_test": RNG.integers(0, 10, n_test),
    }
    for key, filename in data.MNIST_FILES.items():
        write_idx(folder / filename, arrays[key], gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_loader(tmp_path, gz):
    arrays = make_mnist_folder(tmp_path, gz=gz)
    (x_train, y_train), (x_test, y_test) = data.load("mnist", tmp_path)
    assert x_train.shape == (200, 28, 28, 1) and x_train.dtype == np.float32
    np.testing.assert_allclose(x_train[..., 0], arrays["x_train"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert x_test.shape == (50, 28, 28, 1) and y_train.dtype == np.int32


def test_data_dir_from_environment(tmp_path, monkeypatch):
    make_mnist_folder(tmp_path)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    (x_train, _), _ = data.load("mnist")
    assert len(x_train) == 200


def _cifar_batch(n, label_key):
    return {
        b"data": RNG.integers(0, 256, (n, 3072)).astype(np.uint8),
        label_key: RNG.integers(0, 10, n).tolist(),
    }


def test_cifar10_and_cifar100_pickle_loaders(tmp_path):
    c10 = tmp_path / "c10" / "cifar-10-batches-py"
    c10.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _cifar_batch(4, b"labels")
        with open(c10 / name, "wb") as f:
            pickle.dump(batches[name], f)
    (x_train, y_train), (x_test, y_test) = data.load("cifar10", tmp_path / "c10")
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (4, 32, 32, 3)
    # Channel-major rows become HWC images.
    raw = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_allclose(x_train[0], raw / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y_test, batches["test_batch"][b"labels"])

    c100 = tmp_path / "c100"
    c100.mkdir()
    for name in ("train", "test"):
        with open(c100 / name, "wb") as f:
            pickle.dump(_cifar_batch(6, b"fine_labels"), f)
    (x_train, y_train), _ = data.load("cifar100", c100)
    assert x_train.shape == (6, 32, 32, 3) and y_train.dtype == np.int32


def test_bad_folders_give_clear_errors(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load("mnist", tmp_path / "nowhere")
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte"):
        data.load("mnist", tmp_path)
    make_mnist_folder(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00")
    with pytest.raises(data.DataError, match="truncated|t10k-labels"):
        data.load("mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"garbage!")
    with pytest.raises(data.DataError, match="magic"):
        data.load("mnist", tmp_path)
    with pytest.raises(data.DataError, match="data_batch_1"):
        data.load("cifar10", tmp_path)
    with pytest.raises(ValueError, match="`dataset`"):
        data.load("imagenet", tmp_path)


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_train_entry_point_writes_the_run_folder(tmp_path):
    make_mnist_folder(tmp_path / "mnist", n_train=300, n_test=100)
    out = tmp_path / "run"
    report = train.main(
        [
            "--model",
            "lenet300",
            "--data-dir",
            str(tmp_path / "mnist"),
            "--epochs",
            "2",
            "--out",
            str(out),
            "--verbose",
            "0",
        ]
    )
    for name in (
        "model.keras",
        "history.csv",
        "report.json",
        "curves.png",
        "masks.png",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "report.json").read_text())
    for key in (
        "model",
        "dataset",
        "epochs",
        "seed",
        "test_error_percent",
        "compression",
        "per_layer_sparsity",
        "seconds_per_epoch",
    ):
        assert key in saved
    assert saved == json.loads(json.dumps(report))
    # Keras' default compilation, which is no XLA on a CPU-only TensorFlow.
    assert (saved["backend"], saved["compilation"]) == (
        "tensorflow",
        "tf.function, no XLA",
    )
    assert set(saved["per_layer_sparsity"]) == {"fc1", "fc2", "fc3"}
    header = (out / "history.csv").read_text().splitlines()
    assert len(header) == 3 and "sparsity/fc1" in header[0]
    assert "test_error" in header[0] and "compression" in header[0]
    # The saved model re-evaluates to the reported error.
    model = keras.models.load_model(out / "model.keras")
    (_, _), (x_test, y_test) = data.load("mnist", tmp_path / "mnist")
    error = 100 * np.mean(np.argmax(model.predict(x_test, verbose=0), -1) != y_test)
    assert error == pytest.approx(saved["test_error_percent"])


@pytest.mark.slow
def test_train_same_seed_repeats_the_run_bit_for_bit(tmp_path):
    # RESULTS.md counts runs as independent only across seeds or code changes.
    make_mnist_folder(tmp_path / "mnist", n_train=200, n_test=50)

    def run(seed, name):
        out = tmp_path / name
        train.main(
            ["--model", "lenet300", "--data-dir", str(tmp_path / "mnist")]
            + ["--epochs", "2", "--seed", str(seed), "--out", str(out)]
            + ["--no-plots", "--verbose", "0"]
        )
        history = (out / "history.csv").read_text().splitlines()
        losses = [
            line.split(",")[history[0].split(",").index("loss")] for line in history[1:]
        ]
        return losses, keras.models.load_model(out / "model.keras").get_weights()

    losses_a, weights_a = run(3, "a")
    losses_b, weights_b = run(3, "b")
    losses_c, weights_c = run(4, "c")
    assert losses_a == losses_b
    for a, b in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert losses_a != losses_c
    assert not np.array_equal(weights_a[0], weights_c[0])


def test_train_compilation_flags_and_backend_hint(capsys):
    args = train.build_parser().parse_args(["--model", "lenet5"])
    assert args.jit == "auto"
    assert train.build_parser().parse_args(["--jit"]).jit is True
    assert train.build_parser().parse_args(["--no-jit"]).jit is False
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--jit", "--no-jit"])
    # TensorFlow on a CPU: JAX is the faster backend only for LeNet-300-100.
    assert "KERAS_BACKEND=jax" in train.backend_hint("lenet300")
    assert train.backend_hint("lenet5") is None


@pytest.mark.slow
def test_train_dense_baseline_and_vgg_init_from(tmp_path):
    make_mnist_folder(tmp_path / "mnist", n_train=100, n_test=20)
    report = train.main(
        [
            "--model",
            "lenet5",
            "--variant",
            "dense",
            "--data-dir",
            str(tmp_path / "mnist"),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "d"),
            "--verbose",
            "0",
            "--no-plots",
            "--lr-schedule",
            "constant-linear",
        ]
    )
    assert report["compression"] == 1.0 and report["variant"] == "dense"
    assert report["lr_schedule"] == "constant-linear"

    x = RNG.random((8, 32, 32, 3)).astype("float32")
    dense = models.vgglike(sparse=False, k=0.125)
    dense(x)
    sparse = models.vgglike(sparse=True, k=0.125)
    sparse(x)
    assert train.transfer_dense_weights(dense, sparse) == 13 + 14 + 2
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(sparse.get_layer("conv5").kernel),
        keras.ops.convert_to_numpy(dense.get_layer("conv5").kernel),
    )


def test_paper_learning_rate_schedules():
    lenet300 = train.lr_schedule("lenet300", 1e-3, 200, "svd", False)
    assert lenet300(0) == lenet300(99) == 1e-3
    assert lenet300(150) == pytest.approx(0.5e-3)
    lenet5 = train.lr_schedule("lenet5", 1e-3, 200, "svd", False)
    assert lenet5(0) == 1e-3 and lenet5(100) == pytest.approx(0.5e-3)


def test_other_learning_rate_schedules():
    # LeNet-5 with LeNet-300-100's schedule, as the issue's recipe asks.
    lenet5 = train.lr_schedule("lenet5", 1e-3, 200, "svd", False, "constant-linear")
    lenet300 = train.lr_schedule("lenet300", 1e-3, 200, "svd", False)
    assert [lenet5(e) for e in range(200)] == [lenet300(e) for e in range(200)]
    linear = train.lr_schedule("lenet300", 1e-3, 200, "svd", False, "linear")
    assert linear(100) == pytest.approx(0.5e-3)
    constant = train.lr_schedule("lenet5", 1e-3, 200, "svd", False, "constant")
    assert constant(0) == constant(199) == 1e-3
    with pytest.raises(ValueError, match="kind"):
        train.lr_schedule("lenet5", 1e-3, 200, "svd", False, "cosine")
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--lr-schedule", "cosine"])


def test_tfds_failure_names_the_local_folder_way_out(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(data.DataError, match="--data-dir") as info:
        data.load("cifar10")
    assert data.DATA_DIR_ENV in str(info.value)
    assert "data_batch_1" in str(info.value)


def _tfds_must_not_be_called(monkeypatch):
    import tensorflow_datasets as tfds

    def forbidden(*args, **kwargs):
        raise AssertionError("tensorflow_datasets was called")

    monkeypatch.setattr(tfds, "load", forbidden)


@pytest.mark.slow
def test_mnist_defaults_to_the_shipped_files_offline(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    _tfds_must_not_be_called(monkeypatch)
    read = []
    real = data.load_mnist_idx
    monkeypatch.setattr(
        data, "load_mnist_idx", lambda folder: read.append(folder) or real(folder)
    )
    (x_train, y_train), (x_test, y_test) = data.load("mnist")
    assert read == [data.SHIPPED_MNIST_DIR]
    assert data.SHIPPED_MNIST_DIR.parts[-2:] == ("examples", "mnist")
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    np.testing.assert_array_equal(np.unique(y_test), np.arange(10))
    # An empty environment variable counts as unset.
    monkeypatch.setenv(data.DATA_DIR_ENV, "")
    assert len(data.load("mnist")[1][0]) == 10000


def test_shipped_mnist_checksums_match_files_and_readme():
    import hashlib

    readme = (data.SHIPPED_MNIST_DIR / "README.md").read_text()
    for filename, digest in data.SHIPPED_MNIST_SHA256.items():
        path = data.SHIPPED_MNIST_DIR / filename
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, filename
        assert f"{digest}  {filename}" in readme, filename
    assert "CC BY-SA 3.0" in readme


def test_shipped_mnist_mismatch_or_missing_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    wrong = dict(data.SHIPPED_MNIST_SHA256, **{"t10k-labels-idx1-ubyte.gz": "0" * 64})
    monkeypatch.setattr(data, "SHIPPED_MNIST_SHA256", wrong)
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz.*SHA-256"):
        data.load("mnist")
    monkeypatch.setattr(data, "SHIPPED_MNIST_DIR", tmp_path)
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz"):
        data.load("mnist")


def test_env_and_data_dir_take_precedence_over_the_shipped_files(tmp_path, monkeypatch):
    _tfds_must_not_be_called(monkeypatch)
    make_mnist_folder(tmp_path / "env", n_train=30, n_test=7)
    make_mnist_folder(tmp_path / "flag", n_train=40, n_test=9)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    (x_train, _), (x_test, _) = data.load("mnist")
    assert (len(x_train), len(x_test)) == (30, 7)
    (x_train, _), (x_test, _) = data.load("mnist", tmp_path / "flag")
    assert (len(x_train), len(x_test)) == (40, 9)
    monkeypatch.delenv(data.DATA_DIR_ENV)
    (x_train, _), _ = data.load("mnist", str(tmp_path / "flag"))
    assert len(x_train) == 40


def _fake_tfds(monkeypatch):
    import tensorflow_datasets as tfds

    calls = []

    def fake_load(name, **kwargs):
        calls.append(name)
        split = (np.full((3, 28, 28, 1), 255, np.uint8), np.arange(3, dtype=np.int64))
        return [split, split]

    monkeypatch.setattr(tfds, "load", fake_load)
    monkeypatch.setattr(tfds, "as_numpy", lambda tree: tree)
    return calls


def test_tfds_keyword_routes_mnist_to_tensorflow_datasets(monkeypatch):
    calls = _fake_tfds(monkeypatch)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    (x_train, y_train), _ = data.load("mnist", "tfds")
    assert calls == ["mnist"]
    assert x_train.shape == (3, 28, 28, 1) and x_train.max() == 1.0
    assert y_train.dtype == np.int32
    monkeypatch.setenv(data.DATA_DIR_ENV, data.TFDS)
    data.load("mnist")
    # With no source given, CIFAR still comes from tensorflow_datasets.
    monkeypatch.delenv(data.DATA_DIR_ENV)
    data.load("cifar10")
    assert calls == ["mnist", "mnist", "cifar10"]


def test_tfds_keyword_offline_error_points_to_the_shipped_files(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(data.DataError, match="tensorflow_datasets") as info:
        data.load("mnist", "tfds")
    assert "examples/mnist" in str(info.value)


@pytest.mark.slow
def test_train_without_data_flag_reads_the_shipped_mnist(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    _tfds_must_not_be_called(monkeypatch)
    assert train.build_parser().parse_args([]).data_dir is None
    assert "tfds" in train.build_parser().format_help()
    small = make_mnist_folder(tmp_path / "small", n_train=60, n_test=20)
    used = []

    def shipped():
        used.append(True)
        return data.load_mnist_idx(tmp_path / "small")

    monkeypatch.setattr(data, "load_shipped_mnist", shipped)
    report = train.main(
        ["--model", "lenet300", "--epochs", "1", "--no-plots", "--verbose", "0"]
        + ["--out", str(tmp_path / "run")]
    )
    assert used == [True] and len(small["y_test"]) == 20
    assert report["dataset"] == "mnist"
    assert report["lr_schedule"] == "constant-linear"  # the paper's, for LeNet-300


def test_results_table_lists_runs_beside_the_paper(tmp_path):
    from examples import results_table

    report = {
        "seed": 3,
        "model": "lenet300",
        "variant": "svd",
        "epochs": 200,
        "test_error_percent": 1.5,
        "per_layer_sparsity": {"fc1": 99.0},
        "compression": 80.0,
        "seconds_per_epoch": 3.0,
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    table = results_table.main([str(path)])
    assert (
        "| LeNet-300-100 | Sparse VD | 3 | 200 | 1.50 | 99.0 | 80.0x | 1.92 |" in table
    )


def test_zca_whitening_whitens_and_lives_in_the_model():
    x = RNG.random((500, 6, 6, 3)).astype("float32")
    x[..., 1] = 0.5 * x[..., 0] + 0.5 * x[..., 1]  # correlated channels
    pre = keras.Sequential([keras.Input((6, 6, 3))] + models.zca_whitening(x, 1e-6))
    out = pre.predict(x, verbose=0).reshape(500, -1)
    assert out.shape == (500, 108)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(
        np.cov(out, rowvar=False, bias=True), np.eye(108), atol=2e-2
    )
    assert not pre.trainable_weights


def test_results_table_seed_summary_groups_recipes(tmp_path):
    from examples import results_table

    def report(seed, error, compression, **extra):
        return {
            "seed": seed,
            "model": "lenet5",
            "variant": "svd",
            "epochs": 200,
            "test_error_percent": error,
            "per_layer_sparsity": {},
            "compression": compression,
            **extra,
        }

    reports = [
        # Written before lr_schedule was recorded: the paper's schedule.
        report(0, 0.83, 246.7),
        report(1, 0.81, 240.5, lr_schedule="linear"),
        report(2, 0.77, 250.0, lr_schedule="linear"),
        report(0, 0.70, 300.0, lr_schedule="constant-linear"),
    ]
    paths = []
    for i, r in enumerate(reports):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    table = results_table.main([str(p) for p in paths], seeds=True)
    rows = [line for line in table.splitlines() if line.startswith("| LeNet")]
    assert rows == [
        "| LeNet-5-Caffe | Sparse VD | 200 | 0, 1, 2 | 0.80 | 0.77-0.83 "
        "| 245.7x | 240.5-250.0x |",
        "| LeNet-5-Caffe | Sparse VD, constant-linear lr | 200 | 0 | 0.70 "
        "| 0.70-0.70 | 300.0x | 300.0-300.0x |",
    ]


class _RunsCode:
    """Unpickling this calls os.system: what a crafted data folder could do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def test_cifar_pickles_are_read_without_running_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = _cifar_batch(2, b"labels")
        if name == "data_batch_3":
            batch[b"labels"] = _RunsCode(f"touch {marker}")
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with pytest.raises(data.DataError, match="data_batch_3.*refused posix.system"):
        data.load("cifar10", tmp_path)
    assert not marker.exists()
    # Python 2's layout (protocol 2, str keys as bytes) still loads.
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(_cifar_batch(2, b"labels"), f, protocol=2)
    (x_train, _), _ = data.load("cifar10", tmp_path)
    assert x_train.shape == (10, 32, 32, 3)


def test_an_empty_dataset_is_refused(tmp_path):
    make_mnist_folder(tmp_path, n_train=0, n_test=5)
    with pytest.raises(data.DataError, match="training set .* holds no examples"):
        data.load("mnist", tmp_path)
    make_mnist_folder(tmp_path, n_train=5, n_test=0)
    with pytest.raises(data.DataError, match="test set .* holds no examples"):
        data.load("mnist", tmp_path)
