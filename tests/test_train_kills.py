"""examples.train killed (SIGKILL) at random points resumes with nothing lost.

Each launch is a real process running tests/kill_scenario.py, which kills
itself at a chosen point: inside the write of an epoch's checkpoint, at a
random time, inside the write of the final model, after the report. After
every kill, each file under its final name must be complete, and the next
launch must resume from the last complete checkpoint.
"""

import csv
import json
import os
import random
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import keras
import pytest
from test_examples import make_mnist_folder

from examples import run_folder, train
from keras_sparsevd import files

REPO_ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 3


def train_args(data: Path, out: Path, *extra: str) -> list:
    return [
        "--model",
        "lenet300",
        "--data-dir",
        str(data),
        "--epochs",
        str(EPOCHS),
        "--out",
        str(out),
        "--no-plots",
        "--verbose",
        "0",
        *extra,
    ]


def launch(point: str, args: list) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "kill_scenario.py"), point, "--"]
        + args,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_consistent(out: Path) -> tuple:
    """Every file under its final name is whole; returns (files checked, epoch).

    The epoch is that of the newest complete checkpoint (0 if none).
    """
    checked = 0
    if (out / "model.keras").exists():
        with zipfile.ZipFile(out / "model.keras") as archive:
            assert archive.testzip() is None
        checked += 1
    if (out / "report.json").exists():
        assert json.loads((out / "report.json").read_text())["epochs"] == EPOCHS
        checked += 1
    if (out / "history.csv").exists():
        rows = list(csv.reader((out / "history.csv").open()))
        assert rows[0][0] == "epoch" and "loss" in rows[0]
        assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
        assert all(len(r) == len(rows[0]) for r in rows)
        checked += 1
    newest = 0
    backup = out / run_folder.BACKUP_DIR
    for path in sorted(backup.glob("epoch-*")) if backup.is_dir() else ():
        epoch = int(path.name.split("-")[1])
        meta = json.loads((path / "meta.json").read_text())
        assert meta["epoch"] == epoch and len(meta["history"]) == epoch + 1
        with h5py.File(path / "state.weights.h5", "r") as weights:
            assert "optimizer" in weights and "layers" in weights
        newest = max(newest, epoch)
        checked += 2
    return checked, newest


def resumed_after(output: str) -> int:
    found = re.search(r"resuming .* after epoch (\d+) of", output)
    return int(found.group(1)) if found else 0


@pytest.mark.slow
def test_killed_runs_resume_with_nothing_lost(tmp_path):
    seed = int(os.environ.get("KILL_TEST_SEED", "0"))
    rng = random.Random(seed)
    make_mnist_folder(tmp_path / "mnist", n_train=200, n_test=50)
    out = tmp_path / "run"
    args = train_args(tmp_path / "mnist", out)
    schedule = [
        # Inside the backup write of epoch 1 or 2.
        f"inside:state.weights.h5:{rng.randint(1, 2)}",
        # A random point of training: a rename, or a moment.
        rng.choice(
            [
                f"before:epoch-:{rng.randint(1, 2)}",
                f"after:history.csv:{rng.randint(1, 2)}",
                f"time:{rng.uniform(0.2, 2.0):.2f}",
            ]
        ),
        # Inside the final save, then after the report.
        "inside:model.keras:1",
        rng.choice(["before:report.json:1", "after:report.json:1"]),
    ]
    started = time.perf_counter()
    kills = files_checked = 0
    newest = 0
    log = []
    for point in schedule + ["none"]:
        finished = (out / "report.json").exists()
        result = launch(point, args)
        output = result.stdout + result.stderr
        if finished:  # killed after its report: recognised, not retrained
            assert "holds this run, finished" in result.stdout, output[-3000:]
        else:  # nothing lost: resumed from the last complete checkpoint
            assert resumed_after(result.stdout) == newest, (point, output[-3000:])
        if point == "none" or result.returncode == 0:
            assert result.returncode == 0, output[-3000:]
            if point != "none":
                log.append(f"{point}: not reached, run finished")
            continue
        assert result.returncode == -9, (point, output[-3000:])
        assert "KILLED" in result.stdout or point.startswith("time"), output[-3000:]
        kills += 1
        checked, newest = check_consistent(out)
        files_checked += checked
        log.append(f"{point}: killed, {checked} files whole, resume after {newest}")
    seconds = time.perf_counter() - started
    print(
        f"seed {seed}: {kills} kills, {files_checked} files checked, "
        f"{seconds:.0f} s\n" + "\n".join(log)
    )
    assert kills >= 3
    # The finished run: whole, its backup and lock gone, no temporaries.
    files_checked += check_consistent(out)[0]
    report = json.loads((out / "report.json").read_text())
    rows = list(csv.reader((out / "history.csv").open()))
    assert len(rows) == EPOCHS + 1
    assert not (out / run_folder.BACKUP_DIR).exists()
    assert not (out / run_folder.LOCK_FILE).exists()
    leftovers = [
        name
        for _, folders, names in os.walk(out)
        for name in folders + names
        if files.TMP_MARK in name
    ]
    assert leftovers == []
    model = keras.models.load_model(out / "model.keras")
    assert model.count_params() > 0 and report["train_examples"] == 200


@pytest.mark.slow
def test_a_finished_run_is_recognised_and_other_options_refused(tmp_path, capsys):
    make_mnist_folder(tmp_path / "mnist", n_train=100, n_test=20)
    out = tmp_path / "run"
    args = train_args(tmp_path / "mnist", out)
    args[args.index("--epochs") + 1] = "1"
    first = train.main(args)
    model_bytes = (out / "model.keras").read_bytes()
    capsys.readouterr()
    # The same command: nothing retrained, nothing rewritten.
    assert train.main(args) == json.loads(json.dumps(first))
    assert "holds this run, finished" in capsys.readouterr().out
    assert (out / "model.keras").read_bytes() == model_bytes
    with pytest.raises(SystemExit, match="finished run of other options.*--epochs"):
        train.main(args[:-2] + ["--epochs", "2", "--verbose", "0"])
    assert (out / "model.keras").read_bytes() == model_bytes
    # --restart trains it again.
    again = train.main(args + ["--restart"])
    assert again["options"]["restart"] is True
    assert "holds this run" not in capsys.readouterr().out


@pytest.mark.slow
def test_an_unfinished_run_resumes_only_for_its_own_options(
    tmp_path, capsys, monkeypatch
):
    make_mnist_folder(tmp_path / "mnist", n_train=100, n_test=20)
    out = tmp_path / "run"
    args = train_args(tmp_path / "mnist", out)
    args[args.index("--epochs") + 1] = "2"
    # A run killed after its last epoch's checkpoint: the backup is kept.
    monkeypatch.setattr(run_folder.RunBackup, "remove", lambda self: None)
    train.main(args)
    monkeypatch.undo()
    (out / "report.json").unlink()
    with pytest.raises(SystemExit, match="unfinished run of other options.*--lr"):
        train.main(args + ["--lr", "0.01"])
    capsys.readouterr()
    report = train.main(args)
    assert "after epoch 2 of 2" in capsys.readouterr().out
    assert report["epochs"] == 2 and not (out / run_folder.BACKUP_DIR).exists()


@pytest.mark.slow
def test_a_folder_in_use_is_refused_naming_the_process(tmp_path, capsys):
    make_mnist_folder(tmp_path / "mnist", n_train=100, n_test=20)
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, str(os.getpid()).encode())\n"
            "print('holding', flush=True)\n"
            "time.sleep(60)\n",
            str(out / run_folder.LOCK_FILE),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        args = train_args(tmp_path / "mnist", out)
        args[args.index("--epochs") + 1] = "1"
        with pytest.raises(SystemExit) as info:
            train.main(args)
        message = str(info.value)
        assert f"in use by process {holder.pid}" in message
        assert "import fcntl" in message and "another --out" in message
        assert sorted(os.listdir(out)) == [run_folder.LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead: its lock (and PID) left behind is taken over.
    assert (out / run_folder.LOCK_FILE).read_text() == str(holder.pid)
    train.main(args)
    assert f"process {holder.pid}, which held it, is gone" in capsys.readouterr().out
    assert (out / "report.json").exists()
    assert not (out / run_folder.LOCK_FILE).exists()


def test_train_refuses_an_empty_training_set(tmp_path):
    make_mnist_folder(tmp_path / "mnist", n_train=0, n_test=20)
    args = train_args(tmp_path / "mnist", tmp_path / "run")
    with pytest.raises(SystemExit, match="holds no examples"):
        train.main(args)
    with pytest.raises(SystemExit, match="--train-limit must be >= 1"):
        train.main(args + ["--train-limit", "0"])
