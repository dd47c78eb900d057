"""Export: stripping, SavedModel serving, the sparse format, compaction."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from keras_sparsevd.export.sparse_format import (
    decode_deltas,
    encode_array,
    encode_deltas,
)
from keras_sparsevd.model_helpers import svd_layers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5


def force_masks(model, keep, rng, biases=True):
    """Sets log_sigma2 so that each SVD layer keeps exactly `keep`'s weights.

    `keep` is a fraction (random masks) or a dict from layer name to a
    boolean kernel-shaped mask. log_alpha becomes -8 (kept) or 8 (pruned),
    the clip limits, so no weight sits near the threshold 3.
    """
    masks = {}
    for layer in svd_layers(model):
        theta = keras.ops.convert_to_numpy(layer.kernel)
        if isinstance(keep, dict):
            mask = keep[layer.name]
        else:
            mask = rng.random(theta.shape) < keep
        log_theta2 = np.log(theta**2 + 1e-8)
        layer.log_sigma2.assign(np.where(mask, log_theta2 - 8.0, log_theta2 + 8.0))
        if biases and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape).astype("float32"))
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(layer.kernel_mask), mask.astype("float32")
        )
        masks[layer.name] = mask
    return masks


def randomise_batchnorm(model, rng):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, w.shape).astype("float32")
                    for w in layer.get_weights()
                ]
            )


def max_diff(model_a, model_b, x):
    a = model_a.predict(x, verbose=0)
    b = model_b.predict(x, verbose=0)
    return float(np.max(np.abs(a - b)))


def lenet300(rng, flatten=False):
    """LeNet-300-100 at the paper's per-layer sparsity (98.9, 97.2, 62.0 %)."""
    layers = [keras.Input((28, 28, 1) if flatten else (784,))]
    if flatten:
        layers.append(keras.layers.Flatten())
    layers += [
        ksvd.DenseSVD(300, activation="relu", name="fc1"),
        ksvd.DenseSVD(100, activation="relu", name="fc2"),
        ksvd.DenseSVD(10, name="fc3"),
    ]
    model = keras.Sequential(layers, name="lenet300")
    keep = {}
    for layer, kept in zip(svd_layers(model), (0.011, 0.028, 0.38)):
        keep[layer.name] = rng.random(tuple(layer.kernel.shape)) < kept
    force_masks(model, keep, rng)
    return model


def small_cnn(rng):
    """Conv/BN/pool/dense Sequential with Rescaling in front, 60% pruned."""
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Rescaling(1.0 / 255, name="rescale"),
            ksvd.Conv2DSVD(6, 3, activation="relu", name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            ksvd.Conv2DSVD(
                5, (3, 2), strides=(1, 2), padding="same", use_bias=False, name="conv2"
            ),
            keras.layers.Flatten(),
            ksvd.DenseSVD(7, activation="tanh", name="fc1"),
            ksvd.DenseSVD(3, name="fc2"),
        ],
        name="small_cnn",
    )
    force_masks(model, 0.4, rng)
    randomise_batchnorm(model, rng)
    return model


# --------------------------------------------------------------------------
# strip_sparsevd


@pytest.mark.all_backends
def test_strip_sequential_conv_dense_batchnorm():
    rng = np.random.default_rng(0)
    model = small_cnn(rng)
    names = [layer.name for layer in svd_layers(model)]
    x = rng.uniform(0, 255, (6, 12, 12, 3)).astype("float32")
    before = model.predict(x, verbose=0)

    plain = ksvd.strip_sparsevd(model)

    assert isinstance(plain, keras.Sequential) and plain.name == "small_cnn"
    assert not svd_layers(plain)
    assert [type(layer).__name__ for layer in plain.layers] == [
        "Rescaling",
        "Conv2D",
        "BatchNormalization",
        "MaxPooling2D",
        "Conv2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    conv2 = plain.get_layer("conv2")
    assert conv2.filters == 5 and conv2.kernel_size == (3, 2)
    assert conv2.strides == (1, 2) and conv2.padding == "same"
    assert conv2.use_bias is False and conv2.bias is None
    assert plain.get_layer("fc1").activation is keras.activations.tanh
    assert plain.get_layer("conv1").activation is keras.activations.relu
    for name in names:
        svd, dense = model.get_layer(name), plain.get_layer(name)
        theta = keras.ops.convert_to_numpy(svd.kernel)
        mask = keras.ops.convert_to_numpy(svd.kernel_mask) > 0
        kernel = keras.ops.convert_to_numpy(dense.kernel)
        assert 0 < mask.sum() < mask.size
        assert np.all(kernel[~mask] == 0.0)
        np.testing.assert_array_equal(kernel[mask], theta[mask])
        if svd.use_bias:
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(dense.bias),
                keras.ops.convert_to_numpy(svd.bias),
            )
    np.testing.assert_array_equal(
        plain.get_layer("bn1").get_weights(), model.get_layer("bn1").get_weights()
    )
    # Only kernels and biases survive: no log_sigma2, no kl_weight.
    weight_names = [w.name for w in plain.weights]
    assert "log_sigma2" not in weight_names and "kl_weight" not in weight_names
    assert len(plain.weights) == 4 + 2 + 1 + 2 + 2
    assert max_diff(model, plain, x) <= TOLERANCE
    # The Sparse VD model is left as it was.
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)


def test_strip_functional_with_nested_model_and_normalization():
    rng = np.random.default_rng(1)
    block = keras.Sequential(
        [
            keras.Input((10,)),
            ksvd.DenseSVD(8, activation="relu", name="block_fc"),
            keras.layers.BatchNormalization(name="block_bn"),
        ],
        name="block",
    )
    inputs = keras.Input((16, 2), name="signal")
    x = keras.layers.Normalization(axis=-1, mean=[0.5, -1.0], variance=[4.0, 0.25])(
        inputs
    )
    x = ksvd.Conv1DSVD(4, 3, dilation_rate=2, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = ksvd.DenseSVD(10, activation="relu", name="fc")(x)
    x = block(x)
    outputs = ksvd.DenseSVD(3, name="head")(x)
    model = keras.Model(inputs, outputs, name="functional")
    force_masks(model, 0.5, rng)
    randomise_batchnorm(model, rng)
    assert len(svd_layers(model)) == 4

    plain = ksvd.strip_sparsevd(model)

    assert not svd_layers(plain)
    assert not isinstance(plain, keras.Sequential) and plain.name == "functional"
    nested = plain.get_layer("block")
    assert isinstance(nested, keras.Sequential)
    assert nested is not block
    assert type(nested.get_layer("block_fc")) is keras.layers.Dense
    assert plain.get_layer("conv").dilation_rate == (2,)
    x = rng.normal(size=(5, 16, 2)).astype("float32")
    assert max_diff(model, plain, x) <= TOLERANCE


def test_strip_conv3d_and_channels_first_and_shared_layer():
    rng = np.random.default_rng(2)
    inputs = keras.Input((2, 6, 6, 6))
    x = ksvd.Conv3DSVD(3, 3, data_format="channels_first", name="conv3d")(inputs)
    x = keras.layers.Flatten()(x)
    shared = ksvd.DenseSVD(4, activation="relu", name="shared")
    y = keras.layers.Dense(4)(x)
    x = keras.layers.Add()([shared(y), shared(shared(y))])
    model = keras.Model(inputs, ksvd.DenseSVD(2, name="out")(x))
    force_masks(model, 0.5, rng)

    plain = ksvd.strip_sparsevd(model)

    conv = plain.get_layer("conv3d")
    assert type(conv) is keras.layers.Conv3D and conv.data_format == "channels_first"
    # A layer used twice stays one layer, with one set of weights.
    assert sum(layer.name == "shared" for layer in plain.layers) == 1
    x = rng.normal(size=(3, 2, 6, 6, 6)).astype("float32")
    assert max_diff(model, plain, x) <= TOLERANCE


def test_strip_compiled_model_gives_uncompiled_model(tmp_path):
    rng = np.random.default_rng(3)
    model = lenet300(rng)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain = ksvd.strip_sparsevd(model)
    assert not plain.compiled
    path = str(tmp_path / "plain.keras")
    plain.save(path)
    reloaded = keras.saving.load_model(path)
    x = rng.random((4, 784)).astype("float32")
    assert max_diff(model, reloaded, x) <= TOLERANCE
    assert all(type(layer) is keras.layers.Dense for layer in reloaded.layers)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = ksvd.DenseSVD(3)

    def call(self, x):
        return self.fc(x)


@pytest.mark.all_backends
def test_strip_errors_and_models_keras_cannot_copy():
    subclassed = _Subclassed()
    x = np.ones((2, 4), "float32")
    # Called, not `predict`: TensorFlow refuses the name scope "_subclassed".
    expected = keras.ops.convert_to_numpy(subclassed(x))
    # Keras cannot rebuild it (its __init__ takes no config): no copy.
    with pytest.raises(ValueError, match="pass `inplace=True` to strip"):
        ksvd.strip_sparsevd(subclassed)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no Sparse VD layer.*nothing to strip"):
        ksvd.strip_sparsevd(plain)
    with pytest.raises(ValueError, match="must be a Keras model"):
        ksvd.strip_sparsevd(ksvd.DenseSVD(3))
    inputs = keras.Input((4,))
    nested = keras.Model(inputs, subclassed(inputs))
    stripped = ksvd.strip_sparsevd(nested, inplace=True)
    assert stripped is nested and type(subclassed.fc) is keras.layers.Dense
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(subclassed(x)), expected, atol=1e-6
    )


# --------------------------------------------------------------------------
# SavedModel, served where keras_sparsevd cannot be imported

_SERVE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import os
    import sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "keras_sparsevd":
                raise ModuleNotFoundError("blocked: " + name)
            return None

    sys.meta_path.insert(0, Blocker())
    repo, saved_model, keras_file, x_path, y_path, keras_loads = sys.argv[1:]
    # Drop the source checkout itself, not folders inside it: the README's
    # virtual environment lives in repo/.venv.
    root = os.path.realpath(repo)
    sys.path = [p for p in sys.path if p and os.path.realpath(p) != root]
    try:
        import keras_sparsevd  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("keras_sparsevd was importable")

    import numpy as np
    import tensorflow as tf

    x, expected = np.load(x_path), np.load(y_path)
    # Keep the loaded object: its variables die with it.
    loaded = tf.saved_model.load(saved_model)
    served = loaded.serve(tf.constant(x)).numpy()
    diff = float(np.max(np.abs(served - expected)))
    assert diff <= 1e-5, diff
    import keras

    if keras_loads == "yes":
        reloaded = keras.saving.load_model(keras_file)
        diff = float(np.max(np.abs(reloaded.predict(x, verbose=0) - expected)))
        assert diff <= 1e-5, diff
    else:
        # It holds a layer of keras_sparsevd's: Keras cannot find the class.
        try:
            keras.saving.load_model(keras_file)
        except Exception as error:
            assert keras_loads in str(error), error
        else:
            raise SystemExit(".keras file loaded without keras_sparsevd")
    assert not any(m.startswith("keras_sparsevd") for m in sys.modules)
    print("SERVED_OK")
    """
)


def serve_without_package(tmp_path, plain, x, expected, keras_loads="yes"):
    """Exports `plain` and checks it in a process without keras_sparsevd.

    The SavedModel must reproduce `expected`; so must the ``.keras`` file
    if `keras_loads` is "yes", else loading it must fail with an error
    containing `keras_loads`.
    """
    plain.export(str(tmp_path / "savedmodel"), verbose=False)
    plain.save(str(tmp_path / "plain.keras"))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", expected)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run(
        [sys.executable, "-I", "-c", _SERVE_SCRIPT, REPO_ROOT]
        + [str(tmp_path / name) for name in ("savedmodel", "plain.keras")]
        + [str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), keras_loads],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SERVED_OK" in result.stdout


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_savedmodel_serves_in_a_process_without_keras_sparsevd(tmp_path):
    rng = np.random.default_rng(4)
    model = small_cnn(rng)
    x = rng.uniform(0, 255, (5, 12, 12, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    serve_without_package(tmp_path, ksvd.strip_sparsevd(model), x, expected)


# --------------------------------------------------------------------------
# The sparse format and the size report


def test_sparse_format_lenet300_is_30x_smaller(tmp_path):
    rng = np.random.default_rng(5)
    model = lenet300(rng)
    report = ksvd.sparsity_report(model)
    assert report.total_weights == 266_200
    assert 3_500 < report.total_kept < 4_300  # about the paper's 68x

    sizes = ksvd.size_report(model, tmp_path)

    print(sizes)
    # The baseline is the dense float32 model of the same architecture.
    assert sizes.entries[0].label == "dense float32 parameters"
    dense = sizes.size("dense float32 parameters")
    assert dense == 4 * 266_610
    stripped = sizes.size("stripped .keras")
    gzipped = sizes.size("stripped .keras, gzipped")
    sparse = sizes.size("sparse .npz")
    svd = sizes.size("Sparse VD .keras (for training)")
    assert sparse == os.path.getsize(tmp_path / "sparse.npz")
    assert svd == os.path.getsize(tmp_path / "svd.keras")
    # The stripped file is the dense architecture's .keras, zeros stored.
    assert sparse < gzipped < dense < stripped < 1.1 * dense < svd
    assert dense / sparse >= 30, str(sizes)
    assert sizes.ratio("sparse .npz") == pytest.approx(dense / sparse)
    assert sizes.ratio("Sparse VD .keras (for training)") < 1
    assert "vs dense float32 parameters" in str(sizes).splitlines()[0]
    assert json.loads(json.dumps(sizes.to_dict()))["baseline"] == (
        "dense float32 parameters"
    )

    loaded = ksvd.load_sparse(tmp_path / "sparse.npz")
    assert not svd_layers(loaded)
    x = rng.random((8, 784)).astype("float32")
    assert max_diff(model, loaded, x) <= TOLERANCE
    for layer in svd_layers(model):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(loaded.get_layer(layer.name).kernel) != 0,
            keras.ops.convert_to_numpy(layer.kernel_mask) > 0,
        )


@pytest.mark.all_backends
def test_sparse_format_round_trip_cnn_and_float16(tmp_path):
    rng = np.random.default_rng(6)
    model = small_cnn(rng)
    x = rng.uniform(0, 255, (4, 12, 12, 3)).astype("float32")
    ksvd.save_sparse(model, tmp_path / "f32.npz")
    ksvd.save_sparse(model, tmp_path / "f16.npz", values_dtype="float16")
    loaded = ksvd.load_sparse(tmp_path / "f32.npz")
    assert [type(layer).__name__ for layer in loaded.layers][1:3] == [
        "Conv2D",
        "BatchNormalization",
    ]
    assert max_diff(model, loaded, x) <= TOLERANCE
    half = ksvd.load_sparse(tmp_path / "f16.npz")
    assert os.path.getsize(tmp_path / "f16.npz") < os.path.getsize(tmp_path / "f32.npz")
    reference = np.abs(model.predict(x, verbose=0)).max()
    assert 0 < max_diff(model, half, x) <= 1e-2 * max(reference, 1.0)
    with pytest.raises(ValueError, match="values_dtype"):
        ksvd.save_sparse(model, tmp_path / "bad.npz", values_dtype="int8")


@pytest.mark.all_backends
def test_delta_index_coding_round_trips_long_gaps():
    cases = [
        np.array([], np.int64),
        np.array([0]),
        np.array([254, 255, 256]),
        np.array([0, 255, 510, 511, 1000, 70_000]),
        np.sort(np.random.default_rng(7).choice(100_000, 1_500, replace=False)),
    ]
    for positions in cases:
        deltas = encode_deltas(positions)
        assert deltas.dtype == np.uint8
        np.testing.assert_array_equal(decode_deltas(deltas), positions)
    # A gap of 256 costs a skip byte (0 = advance 255) and a 1.
    np.testing.assert_array_equal(encode_deltas(np.array([255])), [0, 1])


@pytest.mark.all_backends
def test_encoding_is_chosen_by_size():
    rng = np.random.default_rng(8)
    very_sparse = np.where(rng.random((300, 100)) < 0.01, 1.0, 0.0).astype("float32")
    half_full = np.where(rng.random((300, 100)) < 0.5, 1.0, 0.0).astype("float32")
    full = rng.normal(size=(50,)).astype("float32")
    assert encode_array(very_sparse)[0] == "delta8"
    assert encode_array(half_full)[0] == "bitmask"
    assert encode_array(full)[0] == "dense"


@pytest.mark.all_backends
def test_load_sparse_rejects_other_files(tmp_path):
    np.savez_compressed(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a keras_sparsevd.sparse file"):
        ksvd.load_sparse(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="Cannot read"):
        ksvd.load_sparse(tmp_path / "text.npz")


# --------------------------------------------------------------------------
# TFLite


@pytest.mark.tensorflow_only
def test_tflite_export_matches(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(9)
    model = small_cnn(rng)
    plain = ksvd.strip_sparsevd(model)
    path = tmp_path / "model.tflite"
    ksvd.export_tflite(plain, path)
    x = rng.uniform(0, 255, (3, 12, 12, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation
        interpreter = tf.lite.Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=TOLERANCE)
    with pytest.raises(ValueError, match=".tflite"):
        ksvd.export_tflite(plain, tmp_path / "model.bin")


# --------------------------------------------------------------------------
# Compaction


def _units(model):
    return {
        layer.name: getattr(layer, "units", None) or layer.filters
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if type(layer) in (keras.layers.Dense, keras.layers.Conv2D)
    }


def test_compact_dense_chain_folds_constant_units():
    rng = np.random.default_rng(10)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            ksvd.DenseSVD(20, activation="relu", name="fc1"),
            keras.layers.Dropout(0.5),
            ksvd.DenseSVD(15, activation="tanh", name="fc2"),
            keras.layers.Activation("sigmoid"),
            ksvd.DenseSVD(4, name="fc3"),
        ]
    )
    keep = {
        "fc1": np.ones((12, 20), bool),
        "fc2": np.ones((20, 15), bool),
        "fc3": np.ones((15, 4), bool),
    }
    keep["fc1"][:, :6] = False  # fc1 units 0-5: no input, output relu(b)
    keep["fc2"][6:9, :] = False  # fc1 units 6-8: nobody reads them
    keep["fc2"][:, :5] = False  # fc2 units 0-4: no input, output tanh(b)
    keep["fc3"][5:7, :] = False  # fc2 units 5-6: nobody reads them
    force_masks(model, keep, rng)
    x = rng.normal(size=(16, 12)).astype("float32")

    small = ksvd.strip_sparsevd(model, compact=True)

    assert _units(small) == {"fc1": 11, "fc2": 8, "fc3": 4}
    assert max_diff(model, small, x) <= TOLERANCE
    # The folded constants live in the biases: fc2 sees relu(b) of fc1 0-5.
    assert small.get_layer("fc2").kernel.shape == (11, 8)
    # compact_model on a Sparse VD model strips it first.
    assert _units(ksvd.compact_model(model)) == _units(small)


def test_compact_conv_pool_bn_flatten_chain():
    rng = np.random.default_rng(11)
    model = keras.Sequential(
        [
            keras.Input((14, 14, 2)),
            ksvd.Conv2DSVD(8, 3, name="conv1"),
            keras.layers.MaxPooling2D(2),
            ksvd.Conv2DSVD(6, 3, name="conv2"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            ksvd.Conv2DSVD(5, 2, padding="same", name="conv3"),
            keras.layers.Flatten(),
            ksvd.DenseSVD(9, activation="relu", name="fc1"),
            ksvd.DenseSVD(3, name="fc2"),
        ]
    )
    keep = {
        layer.name: rng.random(tuple(layer.kernel.shape)) < 0.7
        for layer in svd_layers(model)
    }
    keep["conv1"][..., :3] = False  # constant filters, through a max pool
    keep["conv2"][..., 3, :] = False  # conv1 filter 3: read by nobody
    keep["conv2"][..., :2] = False  # constant filters, through BN and ReLU
    keep["conv3"][..., :2] = False  # constant filters, through Flatten
    force_masks(model, keep, rng)
    randomise_batchnorm(model, rng)
    bn = model.get_layer("bn")
    # conv2's dead filter 0 reaches conv3 ("same" padding) as exactly 0 (BN
    # output negative, then ReLU): it goes. Filter 1 reaches it as a positive
    # constant, which the zero padding makes position-dependent: it stays.
    gamma, beta, mean, variance = bn.get_weights()
    beta[0] = -100.0
    beta[1] = 100.0
    bn.set_weights([gamma, beta, mean, variance])
    x = rng.normal(size=(4, 14, 14, 2)).astype("float32")

    small = ksvd.strip_sparsevd(model, compact=True)

    units = _units(small)
    assert units["conv1"] == 4
    assert units["conv2"] == 5
    assert units["conv3"] == 3
    assert units["fc2"] == 3
    assert small.get_layer("bn").get_weights()[0].shape == (5,)
    assert small.get_layer("fc1").kernel.shape[0] == 4 * 4 * 3
    assert max_diff(model, small, x) <= TOLERANCE


def test_compact_leaves_unsupported_pairs_with_a_warning():
    rng = np.random.default_rng(12)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            ksvd.DenseSVD(8, activation="relu", name="fc1"),
            keras.layers.LayerNormalization(name="norm"),
            ksvd.DenseSVD(8, activation="softmax", name="fc2"),
            ksvd.DenseSVD(5, activation="relu", name="fc3"),
            ksvd.DenseSVD(2, name="fc4"),
        ]
    )
    keep = {
        layer.name: np.ones(tuple(layer.kernel.shape), bool)
        for layer in svd_layers(model)
    }
    for name in ("fc1", "fc2", "fc3"):
        keep[name][..., :2] = False
    force_masks(model, keep, rng)
    with pytest.warns(UserWarning) as record:
        small = ksvd.strip_sparsevd(model, compact=True)
    messages = " ".join(str(w.message) for w in record)
    assert "LayerNormalization 'norm'" in messages
    assert "activation of 'fc2' is not elementwise" in messages
    assert _units(small) == {"fc1": 8, "fc2": 8, "fc3": 3, "fc4": 2}
    x = rng.normal(size=(5, 6)).astype("float32")
    assert max_diff(model, small, x) <= TOLERANCE


def test_compact_rejects_branching_graphs():
    inputs = keras.Input((4,))
    a = ksvd.DenseSVD(3, name="a")(inputs)
    b = ksvd.DenseSVD(3, name="b")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="branches.*compact=False"):
        ksvd.strip_sparsevd(model, compact=True)
    # Stripping alone handles any graph.
    assert not svd_layers(ksvd.strip_sparsevd(model))


# --------------------------------------------------------------------------
# Compaction: input features the first layer does not read


def image_mlp(rng):
    """Rescaling -> Flatten -> fc1 -> fc2 on 6x6 images; fc1 reads 16 pixels.

    fc1 reads none of the 20 border pixels; pixel 14 feeds only fc1's unit
    0, which nobody reads, so compaction removes the unit and then the pixel
    is unread too.
    """
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Rescaling(2.0, offset=-1.0),
            keras.layers.Flatten(),
            ksvd.DenseSVD(10, activation="relu", name="fc1"),
            ksvd.DenseSVD(4, name="fc2"),
        ],
        name="image_mlp",
    )
    border = np.ones((6, 6), bool)
    border[1:-1, 1:-1] = False
    keep = {"fc1": np.ones((36, 10), bool), "fc2": np.ones((10, 4), bool)}
    keep["fc1"][border.ravel()] = False
    keep["fc1"][14] = False
    keep["fc1"][14, 0] = True
    keep["fc2"][0] = False
    force_masks(model, keep, rng)
    read = np.flatnonzero(~border.ravel())
    return model, read[read != 14]


def test_compact_drop_unread_inputs_dense(tmp_path):
    rng = np.random.default_rng(13)
    model, read = image_mlp(rng)
    x = rng.random((8, 6, 6, 1)).astype("float32")

    small = ksvd.compact_model(model, drop_unread_inputs=True)

    assert [type(layer).__name__ for layer in small.layers] == [
        "Rescaling",
        "Flatten",
        "SelectFeatures",
        "Dense",
        "Dense",
    ]
    assert isinstance(small, keras.Sequential) and small.name == "image_mlp"
    select = small.get_layer("fc1_read_inputs")
    assert select.indices == read.tolist() and len(read) == 15
    assert small.get_layer("fc1").kernel.shape == (15, 9)
    assert small.input_shape == (None, 6, 6, 1)
    assert max_diff(model, small, x) <= TOLERANCE
    # The gather is a layer of this package: it saves and loads like Keras'.
    small.save(tmp_path / "small.keras")
    loaded = keras.saving.load_model(tmp_path / "small.keras")
    assert loaded.get_layer("fc1_read_inputs").indices == read.tolist()
    assert max_diff(model, loaded, x) <= TOLERANCE
    # strip_sparsevd takes the option along with compact=True only.
    stripped = ksvd.strip_sparsevd(model, compact=True, drop_unread_inputs=True)
    assert stripped.get_layer("fc1").kernel.shape == (15, 9)
    with pytest.raises(ValueError, match="pass compact=True"):
        ksvd.strip_sparsevd(model, drop_unread_inputs=True)
    # Off (the default), the model's inputs reach fc1 as they were.
    default = ksvd.compact_model(model)
    assert "SelectFeatures" not in [type(layer).__name__ for layer in default.layers]
    assert default.get_layer("fc1").kernel.shape == (36, 9)


def test_compact_drop_unread_inputs_conv_and_nested_functional():
    rng = np.random.default_rng(14)
    head = keras.Sequential(
        [
            keras.Input((3, 3, 4)),
            keras.layers.Flatten(),
            ksvd.DenseSVD(5, activation="relu", name="head_fc1"),
            ksvd.DenseSVD(2, name="head_fc2"),
        ],
        name="head",
    )
    inputs = keras.Input((6, 6, 3))
    x = ksvd.Conv2DSVD(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    model = keras.Model(inputs, head(x), name="rgb")
    keep = {
        layer.name: rng.random(tuple(layer.kernel.shape)) < 0.8
        for layer in svd_layers(model)
    }
    keep["conv"][..., 1, :] = False  # the green channel: unread
    keep["head_fc1"][:12] = False  # the first 3 of the 9 pooled positions
    force_masks(model, keep, rng)
    x = rng.random((4, 6, 6, 3)).astype("float32")

    small = ksvd.compact_model(model, drop_unread_inputs=True)

    assert small.name == "rgb" and not isinstance(small, keras.Sequential)
    select = small.get_layer("conv_read_inputs")
    assert (select.indices, select.axis) == ([0, 2], -1)
    assert small.get_layer("conv").kernel.shape == (3, 3, 2, 4)
    # Inside the nested model, in front of its first Dense.
    nested = small.get_layer("head")
    inner = nested.get_layer("head_fc1_read_inputs")
    assert inner.indices == list(range(12, 36))
    assert nested.get_layer("head_fc1").kernel.shape == (24, 5)
    assert max_diff(model, small, x) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_compact_drop_unread_inputs_serves_without_package(tmp_path):
    rng = np.random.default_rng(15)
    model, _ = image_mlp(rng)
    x = rng.random((5, 6, 6, 1)).astype("float32")
    small = ksvd.compact_model(model, drop_unread_inputs=True)
    serve_without_package(
        tmp_path,
        small,
        x,
        model.predict(x, verbose=0),
        keras_loads="keras_sparsevd>SelectFeatures",
    )


def test_select_features_layer():
    layer = ksvd.SelectFeatures([2, 0], axis=1, name="pick")
    x = np.arange(24, dtype="float32").reshape(2, 3, 4)
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(out, x[:, [2, 0], :])
    assert layer.compute_output_shape((None, 3, 4)) == (None, 2, 4)
    again = ksvd.SelectFeatures.from_config(layer.get_config())
    assert (again.indices, again.axis, again.name) == ([2, 0], 1, "pick")
    with pytest.raises(ValueError, match="non-negative integers"):
        ksvd.SelectFeatures([])
    with pytest.raises(ValueError, match="non-negative integers"):
        ksvd.SelectFeatures([-1])
    with pytest.raises(ValueError, match="batch axis"):
        ksvd.SelectFeatures([0], axis=0)
    with pytest.raises(ValueError, match="only 3 there"):
        ksvd.SelectFeatures([3], axis=1)(x)
