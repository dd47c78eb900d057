"""`benchmarks.coverage`: one row of the route, and the page it writes."""

import json

import keras
import numpy as np
import pytest

from benchmarks import coverage


def _tiny():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(2)]
    )
    return model, np.random.default_rng(0).random((4, 4)).astype("float32"), None


@pytest.mark.slow
def test_a_row_runs_the_whole_route_and_a_failure_says_where(tmp_path):
    row: dict = {}
    coverage.route(_tiny, row)
    assert row["ok"] and row["step"] == "done" and row["layers_converted"] == 2
    assert row["keras_load_model"] is True and row["max_abs_diff"] < 1e-6

    def broken():
        model, x, _ = _tiny()
        return model, x, np.zeros(3)  # wrong number of labels: fit fails

    bad: dict = {}
    try:
        coverage.route(broken, bad)
    except Exception as error:  # noqa: BLE001
        bad.update(ok=False, error=str(error)[:50])
    assert not bad["ok"] and bad["step"] == "fit"
    result = {
        "command": "python -m benchmarks.coverage",
        "backend": "tensorflow",
        "keras": keras.__version__,
        "rows": {"tiny": row, "broken": bad},
    }
    (tmp_path / "c.json").write_text(json.dumps(result))
    coverage.main(
        [
            "--out",
            str(tmp_path / "c.json"),
            "--table",
            str(tmp_path / "c.md"),
            "--page-only",
        ]
    )
    page = (tmp_path / "c.md").read_text()
    assert "1 of 2 rows pass" in page
    assert "| tiny | 23 | 2 |" in page and "FAIL at fit" in page
