"""keras_sparsevd.files: a destination is its old self or complete, never cut."""

import os
import stat

import keras
import pytest

from keras_sparsevd import files


def test_write_replaces_whole_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "report.json"
    files.write_text(path, "old")
    with pytest.raises(RuntimeError, match="killed"):
        with files.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half of the new")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]
    files.write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["report.json"]
    # The mode a plain open() gives, not a temporary file's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_save_model_keeps_the_suffix_keras_needs(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    files.save_model(model, tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").count_params() == 3
    assert os.listdir(tmp_path) == ["m.keras"]


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False])
def test_atomic_folder_keeps_the_old_folder_until_the_new_is_complete(
    tmp_path, monkeypatch, exchange
):
    if not exchange:  # the two-rename path of systems without renameat2
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    target = tmp_path / "savedmodel"
    with files.atomic_folder(target) as tmp:
        (tmp_path / tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with files.atomic_folder(target) as tmp:
            (tmp_path / tmp / "a").write_text("2, cut")
            raise RuntimeError("killed while writing")
    assert (target / "a").read_text() == "1"
    with files.atomic_folder(target) as tmp:
        (tmp_path / tmp / "b").write_text("2")
    assert sorted(os.listdir(target)) == ["b"]
    assert os.listdir(tmp_path) == ["savedmodel"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / "model.keras").write_text("kept")
    (tmp_path / f".model.keras{files.TMP_MARK}1234.keras").write_text("cut")
    (tmp_path / f".backup{files.TMP_MARK}abcd").mkdir()
    removed = files.remove_stale_temporaries(tmp_path)
    assert len(removed) == 2 and os.listdir(tmp_path) == ["model.keras"]
