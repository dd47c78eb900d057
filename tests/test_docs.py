"""The code of docs/own-layer-pair.md runs as written (the docs site's example)."""

import os
import re

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _blocks(page: str) -> list:
    with open(os.path.join(HERE, "..", "docs", page), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.mark.slow
def test_own_layer_pair_page_runs(tmp_path, monkeypatch, capsys):
    blocks = _blocks("own-layer-pair.md")
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        # The page's own asserts check the classes and the predictions.
        exec(compile(block, "docs/own-layer-pair.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "own_pair.keras").exists()
    out = capsys.readouterr().out
    assert "proj" in out and "compression" in out
    ksvd = namespace["ksvd"]
    kinds = {type(layer) for layer in ksvd.svd_layers(namespace["sparse"])}
    assert kinds == {namespace["ProjectionSVD"], ksvd.DenseSVD}
    assert not ksvd.svd_layers(namespace["plain"])
