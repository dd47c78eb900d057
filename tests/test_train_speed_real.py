"""benchmarks.train_speed's real architectures: fair twins, right inputs, JSON.

The twins must differ only in the Sparse VD layers (else the ratio measures
something else than the method's cost), start from the same weights, and the
report must carry the load average that says whether its figures count. They
measure nothing; see BENCHMARKS.md for the figures.
"""

import json
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest

from benchmarks import train_speed
from keras_sparsevd import registry
from keras_sparsevd.convert import tree

# Over ~5 s each on a loaded 2-core CPU: building and copying a model zoo net.
_SLOW = {"mobilenetv2", "resnet", "hub"}


def _param(name):
    marks = [pytest.mark.slow] if name in _SLOW else []
    return pytest.param(name, marks=marks, id=name)


def _differences(plain, svd):
    """Where the twins' layer trees differ other than plain -> its SVD pair.

    Compared in walk order: Keras numbers the names of unnamed sublayers
    (``softmax`` then ``softmax_2``) per process, so paths may differ.
    """
    plain_nodes, svd_nodes = tree.walk(plain), tree.walk(svd)
    assert len(plain_nodes) == len(svd_nodes)
    differences, converted = [], 0
    for p, s in zip(plain_nodes, svd_nodes):
        if type(s.layer) is type(p.layer):
            continue
        pair = registry.pair_for_sparse(s.layer)
        if pair is not None and pair.plain is type(p.layer):
            converted += 1
        else:
            differences.append((p.path, s.path, type(s.layer).__name__))
    return differences, converted


@pytest.mark.parametrize("name", [_param(n) for n in train_speed.REAL_MODELS])
def test_real_twins_differ_only_in_sparse_vd_layers_and_predict_alike(name):
    if name == "hub":
        pytest.importorskip("keras_hub")
    plain = train_speed.build_model(name, sparse=False)
    # At log sigma2 = -30 the noise is nil: the twins compute the same thing.
    svd = train_speed.build_model(name, sparse=True, log_sigma2_initializer=-30.0)
    assert type(svd) is type(plain)
    differences, converted = _differences(plain, svd)
    assert not differences
    assert converted > 0
    # Nothing convertible is left dense: the twin is what sparsify makes.
    assert not [
        node.path for node in tree.walk(svd) if registry.pair_for_plain(node.layer)
    ]
    x, _ = train_speed.model_batch(name, 4)
    expected = np.asarray(plain.predict(x, verbose=0))
    assert expected.shape == (4, train_speed.NUM_CLASSES)
    np.testing.assert_allclose(
        np.asarray(svd.predict(x, verbose=0)), expected, atol=1e-5
    )


def test_real_twins_start_from_the_same_weights():
    plain = train_speed.build_model("transformer", sparse=False)
    svd = train_speed.build_model("transformer", sparse=True)
    theta = {
        w.path.rsplit("/", 1)[0]: w
        for w in svd.weights
        if w.path.endswith("kernel") or w.path.endswith("theta")
    }
    kernels = [w for w in plain.weights if w.path.endswith("kernel")]
    assert kernels
    for w in kernels:
        (match,) = [v for p, v in theta.items() if p == w.path.rsplit("/", 1)[0]]
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(match), keras.ops.convert_to_numpy(w)
        )


def test_batch_sizes_per_model():
    sizes = train_speed.batch_sizes_for(("lenet300", "mobilenetv2", "hub"))
    assert sizes == {"lenet300": (100, 1000), "mobilenetv2": (32,), "hub": (32,)}
    quick = train_speed.batch_sizes_for(("lenet300", "resnet"), quick=True)
    assert quick == {"lenet300": (100,), "resnet": (32,)}
    # --batch-sizes replaces every model's own.
    assert train_speed.batch_sizes_for(("resnet", "lstm"), (8,)) == {
        "resnet": (8,),
        "lstm": (8,),
    }


def test_hub_batch_is_token_ids():
    pytest.importorskip("keras_hub")
    x, y = train_speed.model_batch("hub", 3)
    assert set(x) == {"token_ids", "segment_ids", "padding_mask"}
    ids = keras.ops.convert_to_numpy(x["token_ids"])
    assert ids.shape == (3,) + train_speed.INPUT_SHAPES["hub"]
    assert ids.dtype.kind == "i"
    assert 0 <= ids.min() and ids.max() < train_speed.HUB_CONFIG["vocabulary_size"]
    assert keras.ops.convert_to_numpy(y).shape == (3,)
    images, _ = train_speed.model_batch("mobilenetv2", 2)
    assert tuple(images.shape) == (2, 64, 64, 3)


@pytest.mark.slow
def test_quick_on_a_real_model_writes_the_load_average(tmp_path, capsys):
    out = tmp_path / "train.json"
    # This process's backend: no child process, every compilation it has.
    backend = keras.backend.backend()
    argv = ["--quick", "--models", "transformer", "--batch-sizes", "8"]
    # Keras' default only: XLA's compilation would triple the test's time.
    argv += ["--compilations", "default"]
    argv += ["--backends", backend, "--json", str(out)]
    assert train_speed.main(argv) == 0
    report = json.loads(out.read_text())
    labels = {"default"}
    assert {
        (r["model"], r["batch_size"], r["compilation"]) for r in report["results"]
    } == {("transformer", 8, label) for label in labels}
    for load in [report["load_average"]] + [
        r["load_average"] for r in report["results"]
    ]:
        for when in ("start", "end"):
            assert len(load[when]) == 3
            assert all(v >= 0 for v in load[when])
    for r in report["results"]:
        assert r["svd_ms_per_step"] > 0 and r["plain_ms_per_step"] > 0
        assert r["ratio_svd_over_plain"] > 0 and r["backend"] == backend
    assert "quiet machine" in report["note"]
    assert report["settings"]["batch_sizes_per_model"] == {"transformer": [8]}
    assert report["settings"]["compilations"] == ["default"]
    printed = capsys.readouterr().out
    assert "load average" in printed and "quiet machine" in printed


def test_gpu_check_script_parses():
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    # What the issue asks of it: both backends, both models, a time limit each.
    for needed in ("tensorflow[and-cuda]", "jax[cuda12]", "lenet5,mobilenetv2"):
        assert needed in text
    assert "timeout" in text and "CPU_OK" in text


def test_unknown_compilation_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as raised:
        train_speed.main(["--quick", "--compilations", "default,bogus"])
    assert raised.value.code == 2
    assert "--compilations" in capsys.readouterr().err


def test_torch_compile_is_timed_only_when_named(monkeypatch):
    # torch.compile takes minutes to compile and made the step slower: a run
    # without --compilations must not time it.
    backend = keras.backend.backend()
    table = (("default", "auto"), ("compile", True))
    monkeypatch.setitem(train_speed.COMPILATIONS, backend, table)
    assert train_speed.backend_compilations() == (("default", "auto"),)
    assert train_speed.backend_compilations(("compile",)) == (("compile", True),)
    assert "compile" in train_speed.ON_REQUEST
