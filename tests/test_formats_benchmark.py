"""benchmarks.smallest's choice and benchmarks.formats' table and picture."""

import json

import pytest

from benchmarks import formats, smallest


def row(bytes_, held, reference=0.30, **extra):
    return {
        "bytes": bytes_,
        "held_train_error_percent": held,
        "reference_held_train_error_percent": reference,
        **extra,
    }


def test_choose_takes_the_smallest_file_within_the_margin():
    rows = [row(2600, 1.2), row(2800, 0.38, name="a"), row(3000, 0.33), row(2700, 0.41)]
    assert smallest.choose(rows, 0.1)["name"] == "a"
    # The test error never enters the choice.
    rows[1]["test_error_percent"] = 50.0
    assert smallest.choose(rows, 0.1)["name"] == "a"
    with pytest.raises(SystemExit):
        smallest.choose([row(100, 2.0)], 0.1)


def test_formats_plot_only_redraws_from_the_json(tmp_path):
    report = {
        "nets": {
            "lenet5": [
                {
                    "format": "Keras dense float32",
                    "bytes": 1_780_795,
                    "test_error_percent": 0.86,
                    "ratio_to_dense_float32": 0.97,
                    "ms_batch1": 1.0,
                    "ms_batch100": 10.0,
                },
                {
                    "format": "sparse v2 .ksvd 2 bits, linear",
                    "bytes": 2447,
                    "test_error_percent": 8.5,
                    "ratio_to_dense_float32": 704.7,
                    "ms_batch1": 1.0,
                    "ms_batch100": 7.0,
                },
                {
                    "format": "LiteRT compact int8, sparse",
                    "bytes": 20_624,
                    "test_error_percent": 0.83,
                    "ratio_to_dense_float32": 83.6,
                    "ms_batch1": 0.1,
                    "ms_batch100": 12.0,
                    "tflite_kernels": "built-in kernels",
                },
            ]
        }
    }
    (tmp_path / "formats.json").write_text(json.dumps(report))
    assert formats.main(["--plot-only", "--out-dir", str(tmp_path)]) == 0
    table = (tmp_path / "formats.md").read_text()
    assert "| sparse v2 .ksvd 2 bits, linear | 2,447 | 704.7 | 8.50 |" in table
    assert "(built-in kernels)" in table
    assert (tmp_path / "formats.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        formats.main(["--nets", "vgg"])
