"""The programs start without TensorFlow's start-up notices, and keep real errors.

`keras_sparsevd._quiet`: which lines are notices, how the module run with
``python -m`` is found, that the user's own ``TF_CPP_MIN_LOG_LEVEL`` wins, and
one real program (the export CLI) started in a fresh process.
"""

import os
import subprocess
import sys

import pytest

from keras_sparsevd import _quiet

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lines TensorFlow 2.21 prints at start-up on a CPU machine.
ONEDNN = (
    "I0000 00:00:1796168151.125186   15571 port.cc:153] oneDNN custom operations "
    "are on. You may see slightly different numerical results due to "
    "floating-point round-off errors from different computation orders.\n"
)
ABSL = (
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR\n"
)
CPU_GUARD = (
    "I0000 00:00:1796168151.228329   15571 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized to use available CPU instructions.\n"
)
CPU_GUARD_2 = (
    "To enable the following instructions: AVX2 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.\n"
)
CUDA_STUB = (
    "I0000 00:00:1796168151.125499   15571 cudart_stub.cc:31] Could not find "
    "cuda drivers on your machine, GPU will not be used.\n"
)
CUINIT = (
    "E0000 00:00:1796168204.704631   16017 cuda_platform.cc:52] failed call to "
    "cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
)
REAL = [
    "E0000 00:00:1796168204.704631   16017 op_kernel.cc:1857] OP_REQUIRES "
    "failed at strided_slice_op.cc:117 : INVALID_ARGUMENT: slice index 5\n",
    "W0000 00:00:1796168204.704631   16017 loader.cc:12] oneDNN is slow here\n",
    "Traceback (most recent call last):\n",
    "UserWarning: To enable the following instructions is not a notice\n",
    "error: junk.keras is not a .keras model file\n",
]


@pytest.mark.slow
@pytest.mark.all_backends
@pytest.mark.parametrize("line", [ONEDNN, ABSL, CPU_GUARD, CPU_GUARD_2])
def test_start_up_notices_are_dropped_on_every_machine(line):
    assert _quiet.is_notice(line, gpu=False)
    assert _quiet.is_notice(line, gpu=True)


@pytest.mark.slow
@pytest.mark.all_backends
@pytest.mark.parametrize("line", [CUDA_STUB, CUINIT])
def test_cuda_lines_are_dropped_only_without_an_nvidia_device(line):
    assert _quiet.is_notice(line, gpu=False)
    # On a GPU machine they say that its driver is broken: kept.
    assert not _quiet.is_notice(line, gpu=True)


@pytest.mark.slow
@pytest.mark.all_backends
@pytest.mark.parametrize("line", REAL)
def test_other_lines_are_kept(line):
    assert not _quiet.is_notice(line, gpu=False)


@pytest.mark.all_backends
@pytest.mark.parametrize(
    "argv, module",
    [
        (["python", "-m", "examples.train", "--help"], "examples.train"),
        (
            ["python", "-u", "-W", "ignore", "-m", "benchmarks.inference"],
            "benchmarks.inference",
        ),
        (
            ["python", "-X", "importtime", "-mkeras_sparsevd.export", "a"],
            "keras_sparsevd.export",
        ),
        (["python", "-Im", "research.noise"], "research.noise"),
        (["python", "script.py", "-m", "examples.train"], None),
        (["python", "-c", "import x", "-m", "y"], None),
        (["python", "-"], None),
        (["python"], None),
    ],
)
@pytest.mark.slow
def test_program_module_reads_the_interpreters_command_line(argv, module):
    assert _quiet.program_module(argv) == module


@pytest.mark.all_backends
def test_the_users_own_log_level_wins():
    environ = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    assert _quiet.quiet_tensorflow(environ) is False
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "0"}


@pytest.mark.all_backends
def test_an_unset_log_level_is_set_to_keep_errors(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    environ = {"KERAS_BACKEND": "jax"}
    assert _quiet.quiet_tensorflow(environ) is True
    # 2: info and warnings off, errors kept (3 would hide errors).
    assert environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


@pytest.mark.all_backends
def test_first_import_runs_filtered_then_the_hook_is_gone(tmp_path, monkeypatch, capfd):
    package = tmp_path / "noisy_start"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os\n"
        f"os.write(2, {(ABSL + ONEDNN + REAL[0]).encode()!r})\n"
        "started = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delitem(sys.modules, "noisy_start", raising=False)
    seen = []
    hook = _quiet.QuietImport("noisy_start", _quiet.is_notice, seen.append)
    sys.meta_path.insert(0, hook)

    import noisy_start

    assert noisy_start.started and seen == [noisy_start]
    assert capfd.readouterr().err == REAL[0]
    assert hook not in sys.meta_path
    # The loader is left as it was found.
    assert "exec_module" not in vars(noisy_start.__spec__.loader)


@pytest.mark.slow
@pytest.mark.all_backends
def test_the_hook_leaves_other_imports_alone(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    hook = _quiet.QuietImport("noisy_start", _quiet.is_notice)
    sys.meta_path.insert(0, hook)
    assert hook.find_spec("json") is None
    assert sys.meta_path[0] is hook


@pytest.mark.slow
@pytest.mark.all_backends
def test_filtered_stderr_keeps_real_lines_in_order_and_drops_notices(capfd):
    with _quiet.filtered_stderr(_quiet.is_notice):
        for line in [ABSL, REAL[0], ONEDNN, REAL[1], CPU_GUARD, REAL[2]]:
            os.write(2, line.encode())
    assert capfd.readouterr().err == REAL[0] + REAL[1] + REAL[2]


@pytest.mark.all_backends
def test_filtered_stderr_writes_back_before_an_exception_propagates(capfd):
    with pytest.raises(ImportError, match="boom"):
        with _quiet.filtered_stderr(_quiet.is_notice):
            os.write(2, (ONEDNN + "the reason it failed\n").encode())
            raise ImportError("boom")
    assert capfd.readouterr().err == "the reason it failed\n"
    # File descriptor 2 is the real stream again.
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


@pytest.mark.slow
def test_export_cli_starts_quietly_and_still_reports_its_error(tmp_path):
    # A fresh process, as a user starts it: no TF_CPP_MIN_LOG_LEVEL.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=REPO_ROOT, KERAS_BACKEND="tensorflow")
    (tmp_path / "junk.keras").write_bytes(b"PK\x03\x04 truncated zip")
    result = subprocess.run(
        [sys.executable, "-m", "keras_sparsevd.export", "junk.keras", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    gpu = _quiet.has_nvidia_device()
    notices = [x for x in result.stderr.splitlines(True) if _quiet.is_notice(x, gpu)]
    assert not notices, result.stderr
    assert "I0000" not in result.stderr  # TF_CPP_MIN_LOG_LEVEL=2 took effect
    assert "error: junk.keras is not a .keras model file" in result.stderr
