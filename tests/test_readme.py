"""The README's Python code runs as written (every block is run by a test here)."""

import os
import re
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
README = os.path.join(ROOT, "README.md")


def _blocks(section: str | None = None) -> list:
    text = open(README).read()
    if section is not None:
        text = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, re.S)


# The sections whose blocks the tests below run, and how many each has.
TESTED = {
    "Quick start": 1,
    "Sparsify your own model": 2,
    "The smallest and fastest files": 1,
}


def test_every_python_block_of_the_readme_is_run_by_a_test():
    assert len(_blocks()) == sum(TESTED.values())
    for section, count in TESTED.items():
        assert len(_blocks(section)) == count, section


@pytest.fixture
def in_a_copy_of_the_root(tmp_path, monkeypatch):
    """A working folder that sees the repository's examples/ and results/."""
    for name in ("examples", "results"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("examples", None)
    return tmp_path


@pytest.mark.slow
def test_sparsify_your_own_model_snippets_run(tmp_path, monkeypatch, capsys):
    blocks = _blocks("Sparsify your own model")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "sparse.keras").exists()
    assert "compression" in capsys.readouterr().out
    ksvd, keras = namespace["ksvd"], namespace["keras"]
    assert not ksvd.svd_layers(namespace["plain"])
    # The declared pair is the one sparsify and strip use.
    inputs = keras.Input((4,))
    model = keras.Model(inputs, namespace["Scale"](2)(inputs))
    sparse = ksvd.sparsify(model, verbose=False)
    assert type(sparse.layers[-1]) is namespace["ScaleSVD"]


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_quick_start_runs_with_one_epoch_on_part_of_mnist(
    in_a_copy_of_the_root, capsys
):
    (block,) = _blocks("Quick start")
    assert "epochs=200" in block
    # One epoch on 2,000 images instead of 200 on 60,000; the rest as written.
    block = block.replace("epochs=200", "epochs=1").replace(
        'data.load("mnist")\n',
        'data.load("mnist")\nx, y, x_test, y_test = x[:2000], y[:2000], x_test[:500], '
        "y_test[:500]\n",
    )
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert "compression" in capsys.readouterr().out
    assert (in_a_copy_of_the_root / "lenet300_savedmodel" / "saved_model.pb").exists()


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_smallest_files_snippet_runs_and_its_size_is_the_one_it_states(
    in_a_copy_of_the_root,
):
    (block,) = _blocks("The smallest and fastest files")
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    stated = re.search(r"# ([\d,]+) B", block).group(1).replace(",", "")
    assert os.path.getsize("lenet5.ksvd") == int(stated)
    ksvd = namespace["ksvd"]
    assert not ksvd.svd_layers(namespace["plain"])
    kernels = [w for w in namespace["int8"].weights if "kernel" in w.path]
    assert kernels and os.path.getsize("lenet5.tflite") > 0
    x = namespace["x"][:50]
    expected = namespace["model"].predict(x, verbose=0)
    got = namespace["plain"].predict(x, verbose=0)
    assert np.mean(np.argmax(got, -1) == np.argmax(expected, -1)) >= 0.96
