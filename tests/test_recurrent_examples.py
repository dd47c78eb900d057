"""The recurrent examples' data: char LM corpus split, IMDb/AGNews loaders offline."""

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from examples import char_lm, text_data
from examples.data import DataError


def test_char_lm_split_is_by_file_and_disjoint(tmp_path):
    for i in range(25):
        (tmp_path / f"m{i:02d}.py").write_text(f"x = {i}\n")
    (tmp_path / "_sysconfigdata__linux.py").write_text("build = {}\n")
    (tmp_path / "notes.txt").write_text("not python\n")
    split = char_lm.corpus_files(str(tmp_path))
    names = {
        part: [p.rsplit("/", 1)[-1] for p in paths] for part, paths in split.items()
    }
    assert names["valid"] == ["m08.py", "m18.py"]
    assert names["test"] == ["m09.py", "m19.py"]
    assert len(names["train"]) == 21
    assert not set(names["train"]) & (set(names["valid"]) | set(names["test"]))
    assert "_sysconfigdata__linux.py" not in sum(names.values(), [])


def test_char_lm_encoding_and_windows():
    ids = char_lm.encode("ab\n\u00e9")
    assert ids[-1] == 0  # outside the alphabet: unknown
    assert ids[0] == 1 + char_lm.ALPHABET.index("a")
    assert ids.max() < char_lm.VOCABULARY
    x, y = char_lm.sequences(np.arange(11, dtype="int32"), 5)
    np.testing.assert_array_equal(x, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(y, x + 1)


def test_char_lm_models_and_per_matrix_figures():
    x = np.random.default_rng(0).integers(0, char_lm.VOCABULARY, (2, 7))
    for mode in ("dense", "svd"):
        model = char_lm.build_model(mode, 8, seed=0)
        assert tuple(model(x).shape) == (2, 7, char_lm.VOCABULARY)
    figures = char_lm.matrix_figures(model)
    assert set(figures["matrices"]) == {
        "lstm/kernel",
        "lstm/recurrent_kernel",
        "logits/kernel",
    }
    assert figures["weights"] == (
        char_lm.VOCABULARY * 32 + 8 * 32 + 8 * char_lm.VOCABULARY
    )


def test_imdb_loader_pads_at_the_front(monkeypatch):
    train = ([[1, 2, 3], [4] * 10], [0, 1])
    test = ([[5]], [1])
    monkeypatch.setattr(
        keras.datasets.imdb, "load_data", lambda num_words: (train, test)
    )
    (x_train, y_train), (x_test, _) = text_data.load_imdb(maxlen=4)
    np.testing.assert_array_equal(x_train, [[0, 1, 2, 3], [4, 4, 4, 4]])
    np.testing.assert_array_equal(x_test, [[0, 0, 0, 5]])
    assert y_train.dtype == np.int32


def test_imdb_loader_offline_is_a_clear_error(monkeypatch):
    def offline(num_words):
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.imdb, "load_data", offline)
    with pytest.raises(DataError, match="network"):
        text_data.load_imdb()


def test_vectorize_uses_the_training_vocabulary_only():
    (x_train, _), (x_test, _) = text_data.vectorize(
        (["a b c", "a a"], np.array([0, 1])),
        (["z a"], np.array([1])),
        num_words=10,
        maxlen=3,
    )
    assert x_train.shape == (2, 3) and x_test.shape == (1, 3)
    assert x_test[0, 0] == 0 and x_test[0, 1] == 1  # padding, then OOV "z"


def test_text_classifier_sparse_and_dense():
    x = np.ones((2, 6), "int32")
    sparse = text_data.lstm_classifier(50, 4, sparse=True, embedding_dim=8, units=5)
    dense = text_data.lstm_classifier(50, 4, sparse=False, embedding_dim=8, units=5)
    assert tuple(sparse(x).shape) == tuple(dense(x).shape) == (2, 4)
    assert isinstance(sparse.layers[1], ksvd.LSTMSVD)


def test_lstm_mnist_init_from_starts_a_structured_model(tmp_path):
    from examples import lstm_mnist

    source = lstm_mnist.build_model("svd", seed=0)
    rng = np.random.default_rng(1)
    for variable in source.trainable_variables:
        shape = tuple(variable.shape)
        variable.assign(rng.normal(size=shape).astype("float32"))
    path = str(tmp_path / "svd.keras")
    source.save(path)
    target = lstm_mnist.build_model("structured", seed=0)
    missing = lstm_mnist.init_from(target, path)
    copied = target.get_layer("lstm").cell
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(copied.recurrent_log_sigma2),
        keras.ops.convert_to_numpy(source.get_layer("lstm").cell.recurrent_log_sigma2),
    )
    assert missing and all("group" in p or "seed_generator" in p for p in missing)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(copied.group_mu), 1.0)


@pytest.mark.tensorflow_only
def test_rnn_inference_unrolled_copy_predicts_the_same():
    from benchmarks import rnn_inference

    model = keras.Sequential(
        [keras.Input((28, 28)), keras.layers.LSTM(5), keras.layers.Dense(3)]
    )
    x = np.random.default_rng(2).random((2, 28, 28)).astype("float32")
    copy = rnn_inference.unrolled(model)
    assert copy.layers[0].unroll and not model.layers[0].unroll
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy(x)),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-6,
    )


def test_result_files_are_written_whole_with_the_usual_mode(tmp_path):
    import os

    from examples import recurrent_training
    from keras_sparsevd import files

    path = tmp_path / "result.json"
    recurrent_training.write_result(str(path), {"test_error": 1.0})
    path.write_text("old")
    with pytest.raises(RuntimeError):
        # A writer that fails midway leaves the old file and no temporary.
        files.write_with(path, _failing_writer)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.json"]
    recurrent_training.write_result(str(path), {"test_error": 2.0})
    umask = os.umask(0)
    os.umask(umask)
    # What a plain `open` gives, as Keras' own `save` does; not mkstemp's 0600.
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def _failing_writer(handle):
    handle.write(b"half")
    raise RuntimeError("killed")


def test_lstm_mnist_threshold_sweep_and_its_flag_errors(capsys):
    from examples import lstm_mnist

    model = lstm_mnist.build_model("svd", seed=0)
    rng = np.random.default_rng(2)
    cell = model.get_layer("lstm").cell
    # Spread log sigma2 so that the thresholds keep different counts.
    for log_sigma2 in (cell.log_sigma2, cell.recurrent_log_sigma2):
        log_sigma2.assign(rng.uniform(-8, 4, tuple(log_sigma2.shape)).astype("float32"))
    x = rng.uniform(0, 1, (64, 28, 28)).astype("float32")
    y = rng.integers(0, 10, 64)
    rows = lstm_mnist.threshold_sweep(model, [-2.0, 0.0, 3.0], x, y)
    kept = [row["lstm_kept"] for row in rows]
    assert kept[0] < kept[1] < kept[2]
    assert rows[2]["lstm_kept"] == lstm_mnist.lstm_figures(model)["lstm_kept"]
    assert cell.threshold == 3.0 and model.get_layer("logits").threshold == 3.0
    for argv, message in (
        (["--mode", "dense", "--thresholds", "0"], "a dense model has no threshold"),
        (["--thresholds", "0,x"], "is not a list such as 0,1,2,3"),
    ):
        with pytest.raises(SystemExit):
            lstm_mnist.main(argv)
        assert message in capsys.readouterr().err
