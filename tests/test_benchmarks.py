"""The benchmark scripts run (in --quick mode) and report what they promise.

These check that the scripts do not rot: they run, write JSON with the
expected keys and positive numbers, and the inference variants agree with the
Sparse VD model. They measure nothing; see BENCHMARKS.md for the figures.
"""

import json
import math

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from benchmarks import inference, noise, train_speed


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_train_speed_rows(results, expected):
    assert {
        (r["backend"], r["model"], r["batch_size"], r["compilation"]) for r in results
    } == expected
    for r in results:
        for key in (
            "svd_ms_per_step",
            "plain_ms_per_step",
            "ratio_svd_over_plain",
            "ratio_best_rounds",
        ):
            assert _positive(r[key]), (key, r[key])


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_train_speed_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert train_speed.main(["--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "train_speed"
    assert {"settings", "environment", "results"} <= set(report)
    assert report["settings"]["batch_sizes"] == [100]
    _check_train_speed_rows(
        report["results"],
        {
            ("tensorflow", "lenet300", 100, "default"),
            ("tensorflow", "lenet300", 100, "xla"),
        },
    )
    compiled_as = {r["compilation"]: r["compiled_as"] for r in report["results"]}
    # Keras' default on a CPU-only TensorFlow is a tf.function without XLA.
    assert compiled_as == {"default": "tf.function, no XLA", "xla": "XLA"}
    assert "SVD/plain" in capsys.readouterr().out


@pytest.mark.slow
def test_train_speed_other_backend_runs_in_its_own_process(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "train.json"
    argv = ["--quick", "--backends", "jax", "--batch-sizes", "8", "--json", str(out)]
    assert train_speed.main(argv) == 0
    report = json.loads(out.read_text())
    _check_train_speed_rows(report["results"], {("jax", "lenet300", 8, "default")})
    assert report["results"][0]["compiled_as"] == "XLA (jax.jit)"
    assert report["environments"]["jax"]["backend"] == "jax"


def test_train_speed_twins_have_the_same_layers():
    svd = train_speed.build_model("vgglike", sparse=True)
    plain = train_speed.build_model("vgglike", sparse=False)
    assert not any(isinstance(x, keras.layers.Dropout) for x in plain.layers)
    assert len(svd.layers) == len(plain.layers)
    assert svd.output_shape == plain.output_shape == (None, 10)


def test_train_speed_lstm_twins_differ_only_in_sparse_vd_layers():
    svd = train_speed.build_model("lstm", sparse=True)
    plain = train_speed.build_model("lstm", sparse=False)
    assert [type(x) for x in plain.layers] == [keras.layers.LSTM, keras.layers.Dense]
    assert [type(x) for x in svd.layers] == [ksvd.LSTMSVD, ksvd.DenseSVD]
    assert [tuple(w.shape) for w in plain.trainable_weights] == [
        tuple(w.shape) for w in svd.trainable_weights if "log_sigma2" not in w.path
    ]
    x, y = train_speed.random_batch(train_speed.INPUT_SHAPES["lstm"], 4)
    assert tuple(svd(x).shape) == tuple(plain(x).shape) == (4, 10)


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_inference_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "inference.json"
    # An empty model folder: the synthetic model path is exercised.
    argv = ["--quick", "--json", str(out), "--model-dir", str(tmp_path / "none")]
    assert inference.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "inference"
    assert {"settings", "environment", "results"} <= set(report)
    (result,) = report["results"]
    assert result["model"] == "lenet300"
    assert result["source"].startswith("synthetic")
    assert [r["variant"] for r in result["variants"]] == list(inference.VARIANTS)
    for r in result["variants"]:
        for key in (
            "params",
            "latency_ms_batch1",
            "throughput_examples_per_s_batch100",
            "latency_speedup_vs_svd",
            "throughput_speedup_vs_svd",
            "latency_speedup_vs_dense",
            "throughput_speedup_vs_dense",
        ):
            assert _positive(r[key]), (key, r[key])
        if r["variant"] == "dense":
            # Plain layers of the same architecture, its own weights.
            assert r["max_abs_diff_vs_svd_eval"] is None
            assert r["params"] == 266610
        else:
            # Every export computes the Sparse VD model's evaluation pass.
            assert r["max_abs_diff_vs_svd_eval"] < 1e-4
    sizes = result["bytes_on_disk"]
    assert all(_positive(v) for v in sizes.values())
    assert (
        sizes["sparse .npz (compact)"] < sizes["stripped .keras"] < sizes["svd .keras"]
    )
    # The TFLite runtime (on by default): one thread, the three variants.
    assert report["settings"]["runtimes"] == ["keras", "tflite"]
    tflite = result["tflite_variants"]
    assert [(r["threads"], r["variant"]) for r in tflite] == [
        (1, v) for v in inference.TFLITE_VARIANTS
    ]
    for r in tflite:
        for key in (
            "params",
            "flatbuffer_bytes",
            "latency_ms_batch1",
            "throughput_ms_batch100",
            "throughput_examples_per_s_batch100",
            "latency_speedup_vs_dense",
            "throughput_speedup_vs_dense",
            "latency_speedup_vs_keras",
            "throughput_speedup_vs_keras",
        ):
            assert _positive(r[key]), (key, r[key])
        # Checked against the Keras model before timing.
        assert 0 <= r["max_abs_diff_vs_keras"] < 1e-3
    by_variant = {r["variant"]: r for r in tflite}
    dense_bytes = by_variant["dense"]["flatbuffer_bytes"]
    assert by_variant["compact"]["flatbuffer_bytes"] < dense_bytes
    out = capsys.readouterr().out
    assert "svd (eval)" in out and "tflite, 1 thread" in out


def test_inference_tflite_output_must_match():
    want = np.array([[1.0, -2.0]], "float32")
    assert inference.check_tflite_output("x", want + 1e-6, want) < 1e-5
    with pytest.raises(inference.OutputMismatchError, match="differs"):
        inference.check_tflite_output("x", want + 0.1, want)
    with pytest.raises(inference.OutputMismatchError, match="differs"):
        inference.check_tflite_output("x", want * np.nan, want)
    with pytest.raises(inference.OutputMismatchError, match="shape"):
        inference.check_tflite_output("x", want.T, want)


def test_inference_rejects_an_unknown_runtime():
    with pytest.raises(SystemExit):
        inference.main(["--quick", "--runtime", "onnx"])


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_synthetic_model_has_the_planned_sparsity(name):
    model = inference.synthetic_sparse_model(name)
    report = ksvd.sparsity_report(model).to_dict()
    kept = [layer["kept"] for layer in report["layers"]]
    assert kept == [k for k, _ in inference.SYNTHETIC_PLANS[name]]
    # The dead units make compaction shrink the model.
    compact = ksvd.strip_sparsevd(model, compact=True)
    assert compact.count_params() < ksvd.strip_sparsevd(model).count_params() / 3


def test_find_trained_model_skips_other_files(tmp_path):
    (tmp_path / "lenet300-notes.keras").write_text("not a model")
    assert inference.find_trained_model(tmp_path, "lenet300") is None
    assert inference.find_trained_model(tmp_path / "missing", "lenet5") is None


@pytest.mark.parametrize("name", sorted(noise.GENERATORS))
def test_noise_generator_shapes(name):
    seed = keras.random.SeedGenerator(0)
    for shape in [(1,), (3, 5), (2, 3, 3, 1)]:
        z = np.asarray(noise.GENERATORS[name](shape, seed))
        assert z.shape == shape and z.dtype == np.float32
        assert np.all(np.isfinite(z))


@pytest.mark.tensorflow_only
def test_layer_noise_swaps_and_restores_the_layers_generator():
    from keras_sparsevd.layers import base

    original = base.standard_normal
    with noise.layer_noise("keras.random.normal"):
        assert base.standard_normal is noise.keras_normal
        layer = ksvd.DenseSVD(3, seed=0)
        layer.build((None, 2))
        ksvd.set_kl_weight(layer, 0.0)
        out = layer(np.ones((4, 2), "float32"), training=True)
        assert np.all(np.isfinite(np.asarray(out)))
    assert base.standard_normal is original
    with pytest.raises(ValueError, match="Unknown generator"):
        with noise.layer_noise("nope"):
            pass
