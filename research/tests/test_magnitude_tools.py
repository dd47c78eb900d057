"""The parts of the magnitude pruning benchmark that run without tf_keras.

research/magnitude_pruning.py trains in its own environment (tf_keras and
tfmot, .venv-peers); what it shares with the examples, and everything that
decides what it prunes, is plain Python checked here: the learning-rate
schedule, the preprocessing, the per-layer and per-unit targets read from Sparse VD
reports, the pruning window, the weight counts, the refusal under Keras 3,
and the picture and table of research/pruning_plot.py.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from research import magnitude_pruning as mp
from research import pruning_plot

ROOT = Path(__file__).resolve().parents[2]
SVD_REPORTS = {
    "lenet300": ROOT / "results" / "lenet300-mnist-svd-seed0.json",
    "lenet5": ROOT / "results" / "lenet5-mnist-svd-seed0.json",
}
STRUCTURED_REPORT = ROOT / "results" / "lenet300-mnist-svd-structured-seed0.json"


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
@pytest.mark.parametrize("epochs", [1, 2, 7, 200])
def test_lr_schedule_is_examples_train(model, epochs):
    from examples import train

    ours = mp.lr_schedule(model, 1e-3, epochs)
    for variant in ("svd", "dense"):
        theirs = train.lr_schedule(model, 1e-3, epochs, variant, False)
        assert [ours(e) for e in range(epochs)] == [theirs(e) for e in range(epochs)]


def test_preprocess_is_the_examples_model_preprocessing():
    import keras

    from examples import models

    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (50, 28, 28, 1)).astype("float32") / 255.0
    x_test = rng.integers(0, 256, (7, 28, 28, 1)).astype("float32") / 255.0
    ours_train, ours_test = mp.preprocess(x_train, x_test)
    layers = models.mnist_preprocessing(x_train.mean(axis=0))
    inside = keras.Sequential([keras.Input((28, 28, 1))] + layers)
    np.testing.assert_allclose(ours_test, inside(x_test).numpy(), atol=1e-6)
    np.testing.assert_allclose(ours_train, inside(x_train).numpy(), atol=1e-6)
    assert ours_train.dtype == ours_test.dtype == np.float32


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_per_layer_targets_keep_sparse_vds_weight_counts(model):
    report = json.loads(SVD_REPORTS[model].read_text())
    targets = mp.per_layer_targets(SVD_REPORTS[model], model)
    assert tuple(targets) == mp.PRUNABLE_LAYERS[model]
    # tfmot keeps round(size * (1 - s)) weights of each kernel: the same
    # counts as Sparse VD's, hence the same compression.
    kept = {
        name: round(mp.KERNEL_SIZES[model][name] * (1.0 - s))
        for name, s in targets.items()
    }
    expected = {
        layer["name"]: layer["kept"] for layer in report["sparsity_report"]["layers"]
    }
    assert kept == expected
    # The rounded percentages of the report's summary agree to their rounding.
    for name, percent in report["per_layer_sparsity"].items():
        assert 100.0 * targets[name] == pytest.approx(percent, abs=1e-9)


def test_per_layer_targets_fall_back_to_percentages():
    report = {
        "model": "lenet300",
        "per_layer_sparsity": {"fc3": 50.0, "fc1": 99.0, "fc2": 90.0},
    }
    # The net's layer order, whatever the report's.
    assert mp.per_layer_targets(report, "lenet300") == {
        "fc1": pytest.approx(0.99),
        "fc2": pytest.approx(0.90),
        "fc3": pytest.approx(0.50),
    }
    assert list(mp.per_layer_targets(report, "lenet300")) == ["fc1", "fc2", "fc3"]


@pytest.mark.parametrize(
    "report, message",
    [
        ({"model": "lenet5", "per_layer_sparsity": {}}, "not 'lenet300'"),
        ({"model": "lenet300"}, "neither"),
        ({"per_layer_sparsity": {"fc1": 90.0, "fc2": 90.0}}, "layers"),
        (
            {"per_layer_sparsity": {"fc1": 90.0, "fc2": 90.0, "fc3": 100.0}},
            "not in",
        ),
        (
            {
                "sparsity_report": {
                    "layers": [
                        {"name": "fc1", "weights": 784 * 500, "sparsity": 0.9},
                        {"name": "fc2", "weights": 30000, "sparsity": 0.9},
                        {"name": "fc3", "weights": 1000, "sparsity": 0.9},
                    ]
                }
            },
            "weights",
        ),
    ],
)
def test_per_layer_targets_refuse_another_net(report, message):
    with pytest.raises(ValueError, match=message):
        mp.per_layer_targets(report, "lenet300")


def test_uniform_targets():
    assert mp.uniform_targets("lenet5", 0.99) == {
        "conv1": 0.99,
        "conv2": 0.99,
        "fc1": 0.99,
        "fc2": 0.99,
    }
    with pytest.raises(ValueError):
        mp.uniform_targets("lenet300", 1.0)


@pytest.mark.parametrize(
    "epochs, steps, fraction",
    [(200, 600, 0.6), (2, 20, 0.6), (1, 1, 0.6), (3, 7, 1.0), (200, 600, 0.05)],
)
def test_pruning_window_reaches_the_target_inside_training(epochs, steps, fraction):
    begin, end, frequency = mp.pruning_window(epochs, steps, fraction)
    total = epochs * steps
    assert begin == 0
    assert 1 <= frequency <= mp.MAX_PRUNING_FREQUENCY
    # The last mask update is at `end`, so `end` must be on the update grid,
    # and inside the steps that run (0 .. total - 1) when there are two or more.
    assert (end - begin) % frequency == 0
    assert end <= max(1, total - 1)
    assert end <= max(frequency, round(fraction * total))


def test_pruning_window_of_the_full_runs():
    # 200 epochs of 600 steps: the target at 60%, masks updated every 100 steps.
    assert mp.pruning_window(200, 600, 0.6) == (0, 72000, 100)


def test_weight_report_counts_kernels_only():
    kernels = {
        "fc1": np.array([[0.0, 1.0], [0.0, 0.0]]),
        "fc2": np.ones((2, 3)),
    }
    report = mp.weight_report(kernels)
    assert [layer["kept"] for layer in report["layers"]] == [1, 6]
    assert [layer["inputs_kept"] for layer in report["layers"]] == [1, 2]
    assert report["layers"][0]["sparsity"] == 0.75
    assert report["total_weights"] == 10 and report["total_kept"] == 7
    assert report["compression"] == pytest.approx(10 / 7)


def test_weight_report_counts_the_input_channels_a_conv_kernel_reads():
    kernel = np.zeros((5, 5, 4, 3))
    kernel[2, 2, 1, 0] = 1.0
    kernel[0, 4, 3, 2] = -1.0
    (layer,) = mp.weight_report({"conv": kernel})["layers"]
    assert (layer["inputs"], layer["inputs_kept"], layer["kept"]) == (4, 2, 2)


def test_unit_targets_read_the_inputs_each_layer_kept():
    report = json.loads(STRUCTURED_REPORT.read_text())
    kept = {
        layer["name"]: layer["inputs_kept"]
        for layer in report["sparsity_report"]["layers"]
    }
    targets = mp.unit_targets(STRUCTURED_REPORT, "lenet300")
    assert list(targets) == ["fc1", "fc2", "fc3"]
    assert targets["fc1"] == pytest.approx(1 - kept["fc1"] / 784)
    assert targets["fc2"] == pytest.approx(1 - kept["fc2"] / 300)
    assert targets["fc3"] == pytest.approx(1 - kept["fc3"] / 100)


def test_unit_targets_refuse_convolutions_and_reports_without_counts(tmp_path):
    with pytest.raises(ValueError, match="--per-layer-from"):
        mp.unit_targets(STRUCTURED_REPORT, "lenet5")
    with pytest.raises(ValueError, match="not 'lenet300'"):
        mp.unit_targets(SVD_REPORTS["lenet5"], "lenet300")
    report = json.loads(STRUCTURED_REPORT.read_text())
    for layer in report["sparsity_report"]["layers"]:
        del layer["inputs_kept"]
    with pytest.raises(ValueError, match="inputs_kept"):
        mp.unit_targets(report, "lenet300")


def test_polynomial_sparsity_is_tfmots_schedule():
    window = (0, 1000, 100)
    assert mp.polynomial_sparsity(0, 0.8, window) == 0.0
    # tfmot's PolynomialDecay, power 3: final * (1 - (1 - progress) ** 3).
    assert mp.polynomial_sparsity(500, 0.8, window) == pytest.approx(0.8 * 0.875)
    assert mp.polynomial_sparsity(1000, 0.8, window) == pytest.approx(0.8)
    # No update between two of them, nor after the window.
    assert mp.polynomial_sparsity(550, 0.8, window) is None
    assert mp.polynomial_sparsity(1100, 0.8, window) is None


def test_unit_mask_keeps_the_rows_of_largest_mean_magnitude():
    kernel = np.array([[0.1, -0.1], [-3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert mp.unit_mask(kernel, 0.5).tolist() == [False, True, True, False]
    assert mp.unit_mask(kernel, 0.0).all()
    assert mp.unit_mask(kernel, 0.74).tolist() == [False, True, False, False]


def test_drop_unread_units_changes_no_output():
    rng = np.random.default_rng(0)
    kernels = {
        "fc1": rng.normal(size=(6, 5)),
        "fc2": rng.normal(size=(5, 4)),
        "fc3": rng.normal(size=(4, 3)),
    }
    kernels["fc2"][[1, 3]] = 0.0  # fc1's units 1 and 3 are read by no one
    kernels["fc3"][2] = 0.0
    biases = [rng.normal(size=5), rng.normal(size=4), rng.normal(size=3)]
    x = rng.normal(size=(7, 6))

    def forward(ks):
        h = x
        for i, (k, b) in enumerate(zip(ks.values(), biases)):
            h = h @ k + b
            h = np.maximum(h, 0) if i < 2 else h
        return h

    dropped = mp.drop_unread_units(kernels)
    np.testing.assert_allclose(forward(dropped), forward(kernels))
    assert not dropped["fc1"][:, [1, 3]].any() and dropped["fc1"][:, 0].all()
    assert not dropped["fc2"][:, 2].any()
    np.testing.assert_array_equal(dropped["fc3"], kernels["fc3"])
    assert kernels["fc1"][:, 1].all()  # the input is not changed


def test_unit_masks_callback_prunes_whole_rows_while_training():
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the benchmark's callback runs on tf_keras; checked on TensorFlow")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(8, activation="relu", name="fc1"),
            keras.layers.Dense(3, name="fc2"),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")
    targets = {"fc1": 0.75, "fc2": 0.5}
    window = (0, 12, 2)
    callback = mp.unit_masks_callback(keras, targets, window)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[callback], verbose=0)

    def zero_rows(name):
        return int((~np.any(model.get_layer(name).kernel.numpy() != 0, axis=1)).sum())

    assert (zero_rows("fc1"), zero_rows("fc2")) == (9, 4)
    # The rows stay pruned while training goes on past the window, and a new
    # callback (a resumed run) takes its masks from the zero rows.
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        callbacks=[mp.unit_masks_callback(keras, targets, window)],
        verbose=0,
    )
    assert (zero_rows("fc1"), zero_rows("fc2")) == (9, 4)
    # Without the callback, Adam brings the pruned rows back.
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert zero_rows("fc1") < 9


def test_resume_state_reads_the_last_row_of_each_epoch(tmp_path):
    assert not mp.has_backup(tmp_path)
    assert mp.read_history(tmp_path / "history.jsonl") == {}
    rows = [
        {"epoch": 1, "loss": 0.9},
        {"epoch": 2, "loss": 0.8},
        # Written again after a stop between the row and the epoch's checkpoint.
        {"epoch": 2, "loss": 0.7},
        {"epoch": 3, "loss": 0.6},
    ]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    history = mp.read_history(path)
    assert sorted(history) == [1, 2, 3]
    assert history[2]["loss"] == 0.7
    (tmp_path / "chief").mkdir()
    assert not mp.has_backup(tmp_path)
    (tmp_path / "chief" / "checkpoint").write_text("")
    assert mp.has_backup(tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("tf_keras") is not None
    and importlib.util.find_spec("tensorflow_model_optimization") is not None,
    reason="this environment has the peers installed",
)
def test_refuses_to_run_without_the_peers_venv(tmp_path):
    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as info:
        mp.main(["--sparsity", "0.9", "--epochs", "1", "--out", str(out)])
    assert "peers_venv.sh" in str(info.value)
    assert "Keras 3" in str(info.value)
    assert not out.exists()


def test_module_imports_without_tensorflow():
    # Top-level imports stay light, so the tests and the plot can read it
    # in any environment; TensorFlow starts only in main().
    code = (
        "import sys; import research.magnitude_pruning; "
        "assert 'tensorflow' not in sys.modules; assert 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def _svd(model, seed, points, epochs=200):
    return {
        "model": model,
        "variant": "svd",
        "seed": seed,
        "epochs": epochs,
        "train_examples": 60000,
        "test_error_percent": points[3][1],
        "compression": points[3][0],
        "per_layer_sparsity": {"a": 99.0},
        "options": {"threshold": 3.0},
        "threshold_sweep": [
            {"threshold": float(t), "compression": c, "test_error_percent": e}
            for t, (c, e) in enumerate(points)
        ],
    }


def _magnitude(model, mode, sparsity, error, train_examples=60000):
    return {
        "method": "magnitude_pruning",
        "model": model,
        "mode": mode,
        "per_layer_from": "results/x-svd-seed0.json" if mode == "per_layer" else None,
        "units_from": "results/s-svd.json" if mode == "units" else None,
        "units_kept": [321, 83, 51, 10] if mode == "units" else None,
        "target_sparsity_percent": {"fc1": 100.0 * sparsity},
        "seed": 0,
        "epochs": 200,
        "train_examples": train_examples,
        "test_error_percent": error,
        "compression": 1.0 / (1.0 - sparsity),
        "per_layer_sparsity": {"fc1": 100.0 * sparsity},
    }


def _write(folder, name, report):
    path = folder / name
    path.write_text(json.dumps(report))
    return str(path)


def test_plot_draws_one_panel_per_net_and_a_table(tmp_path):
    import matplotlib.image

    sweep = [(130.0, 2.0), (114.0, 1.9), (107.0, 1.9), (105.0, 1.9), (105.0, 1.9)]
    paths = [
        _write(tmp_path, "svd300-0.json", _svd("lenet300", 0, sweep)),
        _write(tmp_path, "svd300-1.json", _svd("lenet300", 1, sweep)),
        _write(tmp_path, "svd5.json", _svd("lenet5", 0, sweep)),
        _write(tmp_path, "m1.json", _magnitude("lenet300", "uniform", 0.99, 2.5)),
        _write(tmp_path, "m2.json", _magnitude("lenet300", "per_layer", 0.99, 2.1)),
        _write(tmp_path, "m3.json", _magnitude("lenet5", "uniform", 0.996, 3.0, 2000)),
        _write(tmp_path, "m4.json", _magnitude("lenet300", "units", 0.88, 1.9)),
        # A dense baseline's report is neither kind: skipped.
        _write(tmp_path, "dense.json", {"model": "lenet300", "variant": "dense"}),
    ]
    out = tmp_path / "pictures" / "pruning.png"
    table_path = tmp_path / "table.md"
    written = pruning_plot.main(paths + ["--out", str(out), "--table", str(table_path)])
    assert written == out
    two_panels = matplotlib.image.imread(out)

    single = pruning_plot.plot(
        *pruning_plot.read_reports(paths[:2]), tmp_path / "1.png"
    )
    one_panel = matplotlib.image.imread(single)
    # One panel per net, side by side, the same height.
    assert two_panels.shape[0] == one_panel.shape[0]
    assert two_panels.shape[1] == pytest.approx(2 * one_panel.shape[1], rel=0.01)

    table = table_path.read_text().splitlines()
    assert len(table) == 2 + 7  # header and rule, 3 Sparse VD, 4 magnitude
    assert table[2].startswith("| LeNet-300-100 | Sparse VD |")
    assert table[-1].startswith("| LeNet-5-Caffe | magnitude | uniform 99.6% (2,000")
    assert any("per layer from x-svd-seed0.json" in line for line in table)
    assert any("units 321-83-51-10 from s-svd.json" in line for line in table)


def test_read_reports_sorts_kinds():
    svd, magnitude = pruning_plot.read_reports(
        [
            str(SVD_REPORTS["lenet300"]),
            str(ROOT / "results/lenet300-mnist-dense-seed0.json"),
        ]
    )
    assert [r["seed"] for r in svd] == [0] and magnitude == []


def test_svd_labels_tell_a_rerun_apart():
    run = {"seed": 1, "epochs": 200, "options": {}}
    labels = pruning_plot.svd_labels(
        [
            {**run, "path": "results/l-seed1.json"},
            {**run, "path": "results/l-seed1-rerun.json"},
            {**run, "seed": 2, "path": "results/l-seed2.json"},
            {**run, "options": {"init_from": "d.keras"}, "path": "results/d.json"},
            {**run, "seed": 5, "model": "lenet5", "lr_schedule": "linear", "path": "p"},
            {
                **run,
                "seed": 6,
                "model": "lenet5",
                "lr_schedule": "constant-linear",
                "path": "c",
            },
        ]
    )
    assert labels == [
        "Sparse VD seed 1 (200 ep) l-seed1",
        "Sparse VD seed 1 (200 ep) l-seed1-rerun",
        "Sparse VD seed 2 (200 ep)",
        "Sparse VD seed 1 (from dense, 200 ep)",
        "Sparse VD seed 5 (200 ep)",  # the paper's schedule for LeNet-5
        "Sparse VD seed 6 (constant-linear lr, 200 ep)",
    ]


def test_curves_past_the_colour_cycle_look_different():
    styles = [pruning_plot.curve_style(i) for i in range(25)]
    assert len(set(styles)) == 25
    assert styles[0] == ("C0", "-") and styles[10] == ("C0", "--")


def test_plot_refuses_nothing_to_draw(tmp_path):
    with pytest.raises(ValueError, match="No Sparse VD"):
        pruning_plot.plot([], [], tmp_path / "x.png")


def test_tick_labels_are_plain_numbers_and_do_not_crowd():
    narrow = pruning_plot.tick_label(0.8, 1.3)
    assert [narrow(v, None) for v in (0.8, 0.9, 1.0)] == ["0.8", "0.9", "1"]
    wide = pruning_plot.tick_label(1.5, 70.0)
    assert [wide(v, None) for v in (2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0)] == [
        "2",
        "",
        "5",
        "10",
        "20",
        "",
        "50",
    ]
    assert wide(1000.0, None) == "1000"
