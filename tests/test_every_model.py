"""`sparsify`, save/load and strip on every kind of Keras model (issue 21).

The scenario (tests/every_model_scenario.py) runs in-process on TensorFlow
and in a fresh process on JAX and on PyTorch.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import every_model_scenario  # noqa: E402

pytest.importorskip("keras_hub")


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(every_model_scenario.CASES))
def test_every_kind_of_model_converts_fits_saves_and_strips(case):
    assert every_model_scenario.check(case)["converted"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_kind_of_model_on_the_other_backends(backend):
    pytest.importorskip(backend)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "every_model_scenario.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every model:" in result.stdout


def test_sparsify_says_what_it_converted_and_what_it_left(capsys):
    model, _ = every_model_scenario.hub_backbone()
    ksvd.sparsify(model)
    printed = capsys.readouterr().out
    assert "converted 7 layers" in printed and "4 EinsumDense" in printed
    assert "1 ReversibleEmbedding" in printed
    assert "position_embedding (PositionEmbedding): no Sparse VD counterpart" in printed


def test_layers_by_path_by_name_and_by_container():
    model, _ = every_model_scenario.hub_backbone()
    query = "transformer_layer_0/self_attention/query"
    one = ksvd.sparsify(model, [query], verbose=False)
    assert [layer.name for layer in ksvd.svd_layers(one)] == ["query"]
    block = ksvd.sparsify(model, ["transformer_layer_0"], verbose=False)
    assert len(ksvd.svd_layers(block)) == 6
    by_name = ksvd.sparsify(model, ["feedforward_output_dense"], verbose=False)
    assert len(ksvd.svd_layers(by_name)) == 1
    with pytest.raises(ValueError, match="'layer_norm'.*holds no layer that can"):
        ksvd.sparsify(model, ["layer_norm"], verbose=False)


def test_report_counts_every_kernel_of_a_partly_converted_model():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(5, name="kept_dense")(inputs)
    h = keras.layers.LayerNormalization(name="norm")(h)
    out = keras.layers.Dense(3, name="converted")(h)
    model = keras.Model(inputs, out)
    sparse = ksvd.sparsify(model, ["converted"], verbose=False)
    layer = sparse.get_layer("converted")
    theta = keras.ops.convert_to_numpy(layer.kernel)
    prune = np.zeros(theta.shape, bool)
    prune[:, 0] = True  # 5 of the 15 weights
    log_theta2 = np.log(theta**2 + 1e-8)
    layer.log_sigma2.assign(np.where(prune, log_theta2 + 8, log_theta2 - 8))
    report = ksvd.sparsity_report(sparse)
    rows = {row.name: row for row in report.layers}
    assert set(rows) == {"kept_dense", "converted"}  # the norm has no kernel
    assert rows["kept_dense"].weights == 20 and not rows["kept_dense"].sparse
    assert rows["converted"].kept == 10 and rows["converted"].sparse
    assert report.total_weights == 35 and report.total_kept == 30
    assert report.compression == pytest.approx(35 / 30)
    assert report.to_dict()["sparse_vd_weights"] == 15
    assert "(dense)" in str(report)


def test_loading_needs_keras_sparsevd_load_model_only_for_hidden_layers(tmp_path):
    graph, x = every_model_scenario.ops_graph()
    sparse = ksvd.sparsify(graph, verbose=False)
    sparse.save(tmp_path / "graph.keras")
    plain_keras = keras.models.load_model(tmp_path / "graph.keras")
    np.testing.assert_allclose(
        plain_keras.predict(x, verbose=0), sparse.predict(x, verbose=0), atol=1e-6
    )
    backbone, tokens = every_model_scenario.hub_backbone()
    sparse = ksvd.sparsify(backbone, verbose=False)
    sparse.save(tmp_path / "hub.keras")
    with pytest.raises(ValueError):
        keras.models.load_model(tmp_path / "hub.keras")
    assert len(ksvd.svd_layers(ksvd.load_model(tmp_path / "hub.keras"))) == 7


def test_a_graph_with_an_add_layer_and_an_add_op_copies():
    # By bare name, the graph op `ops.Add` shadowed the layer `layers.Add`
    # when the copy was loaded (MobileNetV3 has both).
    inputs = keras.Input((4,))
    h = keras.layers.Dense(4, name="d")(inputs)
    h = keras.layers.Add(name="add_layer")([h, inputs]) + 3.0
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    x = np.ones((2, 4), "float32")
    sparse = ksvd.sparsify(model, log_sigma2_initializer=-30.0, verbose=False)
    np.testing.assert_allclose(
        sparse.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
