"""``python -m keras_sparsevd.export``: outputs, reports, refusals, errors."""

import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from keras_sparsevd.export import cli
from keras_sparsevd.export.tflite import TFLiteNotSupportedError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def svd_model_path(tmp_path):
    """A small saved Sparse VD model: 80% of fc1's weights and 3 units pruned."""
    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Flatten(),
            ksvd.DenseSVD(30, activation="relu", name="fc1"),
            ksvd.DenseSVD(5, name="fc2"),
        ],
        name="tiny",
    )
    for layer, density in zip(model.layers[1:], (0.2, 1.0)):
        theta = keras.ops.convert_to_numpy(layer.kernel)
        keep = rng.random(theta.shape) < density
        if layer.name == "fc1":
            keep[..., :3] = False
        log_theta2 = np.log(theta**2 + 1e-8)
        layer.log_sigma2.assign(np.where(keep, log_theta2 - 8.0, log_theta2 + 8.0))
    path = tmp_path / "tiny.keras"
    model.save(path)
    return str(path)


def _single_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("python -m keras_sparsevd.export: error: ")
    return lines[0]


@pytest.mark.tensorflow_only
def test_cli_writes_formats_and_prints_reports(svd_model_path, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main([svd_model_path, str(out), "--compact"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert sorted(os.listdir(out)) == ["model.keras", "model.npz", "savedmodel"]
    assert os.path.isfile(out / "savedmodel" / "saved_model.pb")
    # The sparsity report, the compaction, the check and the size report.
    assert "fc1    DenseSVD" in captured.out and "compression:" in captured.out
    assert "fc1: 30 -> 27" in captured.out
    assert "Sparse VD model match on 8 random inputs" in captured.out
    for label in ("stripped .keras", "gzipped", "sparse .npz"):
        assert label in captured.out
    assert "SavedModel (folder)" in captured.out
    # Every size against the dense float32 model: 4 B per parameter of the
    # architecture (6*6*30 + 30 + 30*5 + 5), not the Sparse VD input file.
    table = captured.out[captured.out.index("file ") :]
    assert "vs dense float32 parameters" in table.splitlines()[0]
    baseline = 4 * (36 * 30 + 30 + 30 * 5 + 5)
    assert f"dense float32 parameters {baseline:,}" in " ".join(table.split())
    input_row = next(row for row in table.splitlines() if "the input" in row)
    assert "larger" in input_row
    assert f"{os.path.getsize(svd_model_path):,}" in input_row
    assert f"wrote {out / 'model.npz'}" in captured.out

    original = keras.saving.load_model(svd_model_path)
    plain = keras.saving.load_model(out / "model.keras")
    sparse = ksvd.load_sparse(out / "model.npz")
    assert plain.get_layer("fc1").units == 27
    x = np.random.default_rng(1).random((4, 6, 6, 1)).astype("float32")
    expected = original.predict(x, verbose=0)
    for exported in (plain, sparse):
        assert np.max(np.abs(exported.predict(x, verbose=0) - expected)) <= 1e-5


@pytest.mark.slow
def test_cli_drop_unread_inputs(tmp_path, capsys):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Flatten(),
            ksvd.DenseSVD(8, activation="relu", name="fc1"),
            ksvd.DenseSVD(3, name="fc2"),
        ]
    )
    fc1 = model.get_layer("fc1")
    theta = keras.ops.convert_to_numpy(fc1.kernel)
    log_theta2 = np.log(theta**2 + 1e-8)
    # Pixels 0-9 are pruned: fc1 reads 26 of the 36.
    fc1.log_sigma2.assign(np.where(np.arange(36)[:, None] < 10, 8.0, -8.0) + log_theta2)
    path = str(tmp_path / "model.keras")
    model.save(path)
    out = tmp_path / "out"

    status = cli.main([path, str(out), "--drop-unread-inputs"])
    assert status == 2
    assert "pass --compact too" in _single_error_line(capsys.readouterr().err)

    argv = [
        path,
        str(out),
        "--compact",
        "--drop-unread-inputs",
        "--format",
        "keras,sparse",
    ]
    status = cli.main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "fc1_read_inputs: 36 -> 26 input features read" in captured.out
    x = np.random.default_rng(1).random((4, 6, 6, 1)).astype("float32")
    expected = model.predict(x, verbose=0)
    for exported in (
        keras.saving.load_model(out / "model.keras"),
        ksvd.load_sparse(out / "model.npz"),
    ):
        assert exported.get_layer("fc1").kernel.shape == (26, 8)
        assert np.max(np.abs(exported.predict(x, verbose=0) - expected)) <= 1e-5


def test_cli_refuses_existing_out_dir_and_overwrites_only_its_files(
    svd_model_path, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "model.keras").write_text("stale")

    status = cli.main([svd_model_path, str(out), "--format", "keras"])
    line = _single_error_line(capsys.readouterr().err)
    assert status == 2
    assert "already exists" in line and "--overwrite" in line
    assert sorted(os.listdir(out)) == ["model.keras", "notes.txt"]
    assert (out / "model.keras").read_text() == "stale"

    status = cli.main(
        [svd_model_path, str(out), "--format", "keras,sparse", "--overwrite"]
    )
    assert status == 0, capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["model.keras", "model.npz", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
    assert keras.saving.load_model(out / "model.keras").get_layer("fc1").units == 30


@pytest.mark.slow
def test_cli_never_writes_over_its_input(tmp_path, svd_model_path, capsys):
    # examples.train saves <run>/model.keras: exporting it into <run>.
    run = tmp_path / "run"
    run.mkdir()
    model_path = run / "model.keras"
    os.replace(svd_model_path, model_path)
    before = model_path.read_bytes()
    for argv in (
        [str(model_path), str(run), "--overwrite"],
        [str(model_path), str(run) + "/", "--overwrite", "--format", "keras"],
        [str(run / ".." / "run" / "model.keras"), str(run), "--overwrite"],
    ):
        status = cli.main(argv)
        line = _single_error_line(capsys.readouterr().err)
        assert status == 2, argv
        assert "would replace its input" in line and "--overwrite" not in line
        assert model_path.read_bytes() == before
    assert sorted(os.listdir(run)) == ["model.keras"]
    # Formats that do not collide are fine.
    status = cli.main([str(model_path), str(run), "--overwrite", "--format", "sparse"])
    assert status == 0, capsys.readouterr().err
    assert sorted(os.listdir(run)) == ["model.keras", "model.npz"]
    assert model_path.read_bytes() == before


@pytest.mark.slow
def test_cli_killed_while_publishing_leaves_no_partial_or_mixed_export(
    svd_model_path, tmp_path, monkeypatch, capsys
):
    from keras_sparsevd import files

    def killed(source, target):
        raise KeyboardInterrupt  # stands for a kill at the rename

    # A new OUT_DIR appears whole or not at all.
    out = tmp_path / "out"
    monkeypatch.setattr(files, "_commit", killed)
    with pytest.raises(KeyboardInterrupt):
        cli.main([svd_model_path, str(out), "--format", "keras,sparse"])
    monkeypatch.undo()
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []

    # --overwrite: old outputs move aside before new ones move in, so a kill
    # in between leaves no old output beside a new one.
    assert cli.main([svd_model_path, str(out), "--format", "keras,sparse"]) == 0
    old = {name: (out / name).read_bytes() for name in ("model.keras", "model.npz")}
    renames = []
    real_rename = os.rename

    def rename_then_die(source, target):
        renames.append(target)
        if len(renames) == 3:  # both old outputs aside, the first new one in
            raise KeyboardInterrupt
        real_rename(source, target)

    monkeypatch.setattr(cli.os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        cli.main([svd_model_path, str(out), "--format", "keras,sparse", "--overwrite"])
    monkeypatch.undo()
    for name in ("model.keras", "model.npz"):
        assert not (out / name).exists() or (out / name).read_bytes() != old[name]
    capsys.readouterr()
    # The next export clears what the killed one left.
    status = cli.main(
        [svd_model_path, str(out), "--format", "keras,sparse", "--overwrite"]
    )
    assert status == 0, capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["model.keras", "model.npz"]


def test_cli_skips_tflite_with_a_message_when_unsupported(
    svd_model_path, tmp_path, capsys, monkeypatch
):
    def unsupported(model, filepath):
        raise TFLiteNotSupportedError("no TFLite in this Keras")

    monkeypatch.setattr(cli, "export_tflite", unsupported)
    status = cli.main([svd_model_path, str(tmp_path / "out"), "--format", "tflite"])
    captured = capsys.readouterr()
    assert status == 0
    assert "tflite: skipped: no TFLite in this Keras" in captured.err
    assert os.listdir(tmp_path / "out") == []


def test_cli_bad_inputs_give_one_line_errors(tmp_path, capsys):
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    (tmp_path / "junk.keras").write_text("not a model")
    (tmp_path / "file").write_text("")
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("readme.txt", "a zip, but no model")
    out = str(tmp_path / "out")
    cases = [
        ([str(tmp_path / "plain.keras"), out], "no Sparse VD layer"),
        ([str(tmp_path / "junk.keras"), out], "not a .keras model file"),
        ([str(tmp_path / "other.keras"), out], "cannot read"),
        ([str(tmp_path / "missing.keras"), out], "no such file"),
        ([str(tmp_path), out], "not a file"),
        ([str(tmp_path / "plain.keras"), str(tmp_path / "file")], "not a folder"),
        ([str(tmp_path / "plain.keras"), out, "--format", "onnx"], "unknown --format"),
    ]
    for argv, message in cases:
        status = cli.main(argv)
        line = _single_error_line(capsys.readouterr().err)
        assert status == 2, argv
        assert message in line, line
    assert not os.path.exists(out)


@pytest.mark.slow
def test_module_entry_point_exits_2_without_traceback(tmp_path):
    (tmp_path / "junk.keras").write_bytes(b"PK\x03\x04 truncated zip")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "keras_sparsevd.export", "junk.keras", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: junk.keras is not a .keras model file" in result.stderr
    assert not (tmp_path / "out").exists()
