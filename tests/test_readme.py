"""The README's "Sparsify your own model" code runs as written."""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))


def _blocks(section: str) -> list:
    text = open(os.path.join(HERE, "..", "README.md")).read()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_sparsify_your_own_model_snippets_run(tmp_path, monkeypatch, capsys):
    blocks = _blocks("Sparsify your own model")
    assert len(blocks) == 2
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
