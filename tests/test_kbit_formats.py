"""Version-2 sparse files (k-bit values, coded indices), Keras quantization
and the TFLite options: round trips, old files, zeros kept, bad arguments."""

import json
import os
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd
from keras_sparsevd.export import kbit

DATA = Path(__file__).resolve().parent / "data"


def sparse_model(seed=0, sparsity=0.9):
    """Normalization (a 64-value mean in its config) -> Dense -> Dense, the
    first kernel mostly zeros."""
    rng = np.random.default_rng(seed)
    mean = rng.random(64).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Normalization(mean=mean, variance=np.ones(64), name="norm"),
            keras.layers.Dense(32, activation="relu", name="fc1"),
            keras.layers.Dense(5, name="fc2"),
        ],
        name="sparse_model",
    )
    kernel = rng.normal(size=(64, 32)).astype("float32")
    kernel[rng.random(kernel.shape) < sparsity] = 0.0
    kernel[:, 7] = 0.0  # a dead unit
    model.get_layer("fc1").kernel.assign(kernel)
    model.get_layer("fc1").bias.assign(rng.normal(size=32).astype("float32"))
    return model


def svd_model(seed=0):
    model = keras.Sequential(
        [
            keras.Input((20,)),
            ksvd.DenseSVD(16, activation="relu", name="fc1"),
            ksvd.DenseSVD(4, name="fc2"),
        ]
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        theta = rng.normal(size=layer.kernel.shape).astype("float32")
        layer.kernel.assign(theta)
        # About half the weights pruned (log alpha >= 3).
        pruned = rng.random(theta.shape) < 0.5
        log_sigma2 = np.where(pruned, np.log(theta**2 + 1e-8) + 5, -6.0)
        layer.log_sigma2.assign(log_sigma2.astype("float32"))
    return model


def kernels(model):
    return {
        w.path.split("/")[-2]: keras.ops.convert_to_numpy(w)
        for w in model.weights
        if w.path.endswith("kernel")
    }


# ----------------------------------------------------------------------
# Round trips.
@pytest.mark.parametrize("bits", [32, 16])
def test_float_bits_round_trip(tmp_path, bits):
    model = sparse_model()
    path = tmp_path / "m.ksvd"
    ksvd.save_sparse(model, path, bits=bits, compact=False)
    loaded = ksvd.load_sparse(path)
    for got, want in zip(loaded.get_weights(), model.get_weights()):
        if bits == 32 or want.ndim < 2:  # biases: other_bits None, float32
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_array_equal(
                got, want.astype(np.float16).astype(want.dtype)
            )
    x = np.random.default_rng(1).random((8, 64)).astype("float32")
    # The mean image in the config came back exactly (other_bits None).
    np.testing.assert_array_equal(
        np.asarray(loaded.get_layer("norm").get_config()["mean"], "float32"),
        np.asarray(model.get_layer("norm").get_config()["mean"], "float32"),
    )
    if bits == 32:
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0),
            model.predict(x, verbose=0),
            rtol=1e-6,
            atol=1e-6,
        )


@pytest.mark.slow
@pytest.mark.parametrize("quantizer", ["linear", "kmeans"])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_k_bit_values_keep_zeros_and_stay_within_a_step(tmp_path, bits, quantizer):
    model = sparse_model()
    path = tmp_path / "m.ksvd"
    ksvd.save_sparse(model, path, bits=bits, quantizer=quantizer, compact=False)
    got = kernels(ksvd.load_sparse(path))["fc1"]
    want = kernels(model)["fc1"]
    np.testing.assert_array_equal(got == 0, want == 0)  # zeros stay, kept stay
    kept = want[want != 0]
    error = got[want != 0] - kept
    step = (kept.max() - kept.min()) / (2**bits - 1)
    if quantizer == "linear":
        assert np.abs(error).max() <= step / 2 * 1.001 + 1e-6
    else:
        # Lloyd's steps from the uniform grid never raise the squared error
        # (up to the float16 rounding of the centroids).
        uniform = np.rint((kept - kept.min()) / step) * step + kept.min() - kept
        tolerance = 2e-3 * np.abs(kept).max()
        assert np.sqrt(np.mean(error**2)) <= np.sqrt(np.mean(uniform**2)) + tolerance
    assert np.unique(got[want != 0]).size <= 2**bits


def test_more_bits_are_more_exact_and_bigger(tmp_path):
    model = sparse_model(sparsity=0.5)
    sizes, errors = [], []
    for bits in (2, 4, 8):
        path = tmp_path / f"m{bits}.ksvd"
        ksvd.save_sparse(model, path, bits=bits, quantizer="linear")
        sizes.append(os.path.getsize(path))
        errors.append(
            np.abs(
                kernels(ksvd.load_sparse(path))["fc1"].sum()
                - kernels(ksvd.compact_model(model))["fc1"].sum()
            )
        )
    assert sizes[0] < sizes[1] < sizes[2]
    assert errors[2] < errors[0]


def test_version_2_is_much_smaller_than_version_1(tmp_path):
    model = sparse_model(sparsity=0.97)
    ksvd.save_sparse(model, tmp_path / "v1.npz")
    ksvd.save_sparse(model, tmp_path / "v2.ksvd", bits=32)
    ksvd.save_sparse(model, tmp_path / "v2-4.ksvd", bits=4, other_bits=8)
    v1, v2, v2_4 = (
        os.path.getsize(tmp_path / n) for n in ("v1.npz", "v2.ksvd", "v2-4.ksvd")
    )
    assert v2 < v1 / 2
    assert v2_4 < v2


def test_compacting_stores_only_kept_units_with_the_same_predictions(tmp_path):
    model = sparse_model()
    ksvd.save_sparse(model, tmp_path / "c.ksvd", bits=32)
    loaded = ksvd.load_sparse(tmp_path / "c.ksvd")
    assert loaded.get_layer("fc1").units < 32  # unit 7 (and others) gone
    x = np.random.default_rng(2).random((16, 64)).astype("float32")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_bits_by_layer_name(tmp_path):
    model = sparse_model(sparsity=0.5)
    path = tmp_path / "m.ksvd"
    ksvd.save_sparse(model, path, bits={"fc1": 2, "*": 32}, compact=False)
    got = kernels(ksvd.load_sparse(path))
    assert np.unique(got["fc1"][got["fc1"] != 0]).size <= 4
    np.testing.assert_array_equal(got["fc2"], kernels(model)["fc2"])


def test_svd_model_saves_stripped_and_posterior_bits(tmp_path):
    model = svd_model()
    path = tmp_path / "svd.ksvd"
    ksvd.save_sparse(model, path, bits="posterior", compact=False)
    loaded = ksvd.load_sparse(path)
    assert all(not ksvd.svd_layers(loaded) for _ in [0])
    stripped = kernels(ksvd.strip_sparsevd(model))
    got = kernels(loaded)
    for name in stripped:
        np.testing.assert_array_equal(got[name] == 0, stripped[name] == 0)


def test_version_2_file_fixture_keeps_loading():
    # Written by save_sparse(bits=4, other_bits=8) of format version 2;
    # sparse_v2.json holds an input and that file's predictions.
    expected = json.loads((DATA / "sparse_v2.json").read_text())
    model = ksvd.load_sparse(DATA / "sparse_v2.ksvd")
    y = model.predict(np.array(expected["x"], "float32"), verbose=0)
    np.testing.assert_allclose(y, np.array(expected["y"]), rtol=1e-5, atol=1e-5)


def test_version_1_is_still_the_default_and_loads(tmp_path):
    model = sparse_model()
    ksvd.save_sparse(model, tmp_path / "m.npz")
    assert zipfile.is_zipfile(tmp_path / "m.npz")
    loaded = ksvd.load_sparse(tmp_path / "m.npz")
    for got, want in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert ksvd.load_sparse(DATA / "sparse_v1.npz").layers


# ----------------------------------------------------------------------
# Index coding.
@pytest.mark.slow
@pytest.mark.parametrize("coding", ["bitmask", "delta", "axes"])
@pytest.mark.parametrize("shape", [(1,), (300,), (17, 9), (5, 5, 3, 7)])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 1.0])
def test_index_codings_round_trip(coding, shape, density):
    rng = np.random.default_rng(hash((coding, shape, density)) % 2**32)
    mask = rng.random(shape) < density
    stream = kbit.encode_index(mask, coding)
    positions = kbit.decode_index(stream, coding, shape, int(mask.sum()))
    np.testing.assert_array_equal(positions, np.flatnonzero(mask.reshape(-1)))


def test_index_with_a_wrong_count_is_refused():
    mask = np.zeros((10, 10), bool)
    mask[2, 3] = mask[7, 1] = True
    for coding in ("bitmask", "delta", "axes"):
        with pytest.raises(ValueError):
            kbit.decode_index(kbit.encode_index(mask, coding), coding, (10, 10), 3)


def test_varints_round_trip():
    numbers = np.array([0, 1, 127, 128, 255, 16383, 16384, 2**40, 2**62], np.int64)
    data = kbit.encode_varints(numbers)
    assert len(kbit.encode_varints([5, 100])) == 2  # one byte below 128
    np.testing.assert_array_equal(kbit.decode_varints(data, numbers.size), numbers)
    with pytest.raises(ValueError):
        kbit.decode_varints(data[:-1] + bytes([0x80]))


def test_axis_orders_round_trip_through_encode_array():
    rng = np.random.default_rng(3)
    array = rng.normal(size=(5, 5, 4, 6)).astype("float32")
    array[:, :, 1, :] = 0  # a dead input channel
    array[..., 2] = 0  # a dead filter
    array[rng.random(array.shape) < 0.7] = 0
    entry, streams, decoded = kbit.encode_array(array, None, "linear")
    np.testing.assert_array_equal(decoded, array)
    np.testing.assert_array_equal(kbit.decode_entry(entry, streams), array)


# ----------------------------------------------------------------------
# Bit widths from the posterior.
def test_posterior_bits_follow_the_posterior_variance():
    model = svd_model()
    wide = ksvd.posterior_bits(model, scale=4.0)
    narrow = ksvd.posterior_bits(model, scale=0.05)
    assert set(wide) == {"fc1", "fc2"}
    for name in wide:
        assert 2 <= wide[name] <= narrow[name] <= 8
    assert any(narrow[n] > wide[n] for n in wide)
    # Smaller posterior variance of the kept weights: more bits.
    layer = model.get_layer("fc1")
    mask = keras.ops.convert_to_numpy(layer.kernel_mask)
    log_sigma2 = keras.ops.convert_to_numpy(layer.log_sigma2)
    layer.log_sigma2.assign(np.where(mask > 0, log_sigma2 - 6, log_sigma2))
    assert ksvd.posterior_bits(model)["fc1"] > ksvd.posterior_bits(svd_model())["fc1"]
    assert ksvd.posterior_bits(model, min_bits=3, max_bits=3) == {"fc1": 3, "fc2": 3}


# ----------------------------------------------------------------------
# Keras quantization keeps the zeros.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_zeros_survive_keras_quantization(mode):
    model = svd_model()
    quantized = ksvd.quantize_model(model, mode)
    stripped = ksvd.strip_sparsevd(model)
    for name in ("fc1", "fc2"):
        layer = quantized.get_layer(name)
        assert layer.quantization_mode == mode
        codes = keras.ops.convert_to_numpy(layer.kernel).astype(np.int32)
        if mode == "int4":
            zero = keras.ops.convert_to_numpy(layer.kernel_zero).astype(np.int32)
            codes = codes - zero
        pruned = keras.ops.convert_to_numpy(stripped.get_layer(name).kernel) == 0
        assert pruned.any() and (~pruned).any()
        assert np.all(codes[pruned] == 0)
        assert np.count_nonzero(codes[~pruned]) > 0.8 * (~pruned).sum()
    x = np.random.default_rng(4).random((32, 20)).astype("float32")
    y = stripped.predict(x, verbose=0)
    got = quantized.predict(x, verbose=0)
    assert np.max(np.abs(got - y)) < (0.05 if mode == "int8" else 0.3) * np.abs(y).max()
    # The caller's model is untouched.
    assert ksvd.svd_layers(model)


def test_quantize_model_leaves_a_plain_model_float(tmp_path):
    plain = sparse_model()
    quantized = ksvd.quantize_model(plain, "int8")
    assert quantized.get_layer("fc1").quantization_mode == "int8"
    assert getattr(plain.get_layer("fc1"), "quantization_mode", None) is None
    quantized.save(tmp_path / "q.keras")
    again = keras.models.load_model(tmp_path / "q.keras")
    x = np.random.default_rng(5).random((4, 64)).astype("float32")
    np.testing.assert_allclose(
        again.predict(x, verbose=0),
        quantized.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_tflite_full_integer_int8_with_sparsity(tmp_path):
    import tensorflow as tf

    model = sparse_model(sparsity=0.95)
    x = np.random.default_rng(6).random((64, 64)).astype("float32")
    path = tmp_path / "m.tflite"
    ksvd.export_tflite(
        model, path, quantize="int8", representative_data=x, sparsity=True
    )
    ksvd.export_tflite(model, tmp_path / "f.tflite")
    assert os.path.getsize(path) < os.path.getsize(tmp_path / "f.tflite")
    interpreter = tf.lite.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=(
            tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ),
    )
    ops = {op["op_name"] for op in interpreter._get_ops_details()}  # noqa: SLF001
    assert "QUANTIZE" in ops and "FULLY_CONNECTED" in ops
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    want = model.predict(x, verbose=0)
    assert np.max(np.abs(got - want)) < 0.1 * np.abs(want).max()


# ----------------------------------------------------------------------
# Damaged files and bad arguments.
def test_damaged_version_2_files_are_value_errors(tmp_path):
    model = sparse_model()
    path = tmp_path / "m.ksvd"
    ksvd.save_sparse(model, path, bits=4, other_bits=8)
    good = path.read_bytes()
    rng = np.random.default_rng(7)
    cases = [good[:n] for n in (4, 6, 7, len(good) // 2, len(good) - 1)]
    cases.append(good[:5] + bytes([99]) + good[6:])  # unknown codec
    cases.append(good[:4] + bytes([3]) + good[5:])  # newer version
    for _ in range(40):
        data = bytearray(good)
        data[rng.integers(6, len(data))] ^= 1 << int(rng.integers(8))
        cases.append(bytes(data))
    for i, data in enumerate(cases):
        bad = tmp_path / f"bad{i}.ksvd"
        bad.write_bytes(data)
        try:
            ksvd.load_sparse(bad)
        except ValueError:
            continue
        # A flipped bit in a value code may still decode; never anything else.
    payload = kbit.write_payload({"class_name": "Sequential"}, [], [])
    crafted = tmp_path / "huge.ksvd"
    crafted.write_bytes(
        kbit.MAGIC + bytes([2, 0]) + kbit.encode_varints([2**40]) + payload
    )
    with pytest.raises(ValueError, match="claims"):
        ksvd.load_sparse(crafted)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bits": 9}, "bits"),
        ({"bits": 0}, "bits"),
        ({"bits": True}, "bits"),
        ({"bits": "many"}, "bits"),
        ({"bits": {"fc1": 12}}, "bits"),
        ({"bits": 4, "other_bits": 0}, "other_bits"),
        ({"bits": 4, "quantizer": "huffman"}, "quantizer"),
        ({"bits": 4, "values_dtype": "float16"}, "values_dtype"),
        ({"other_bits": 8}, "other_bits"),
        ({"quantizer": "linear"}, "quantizer"),
    ],
)
@pytest.mark.slow
def test_bad_save_arguments_name_the_argument(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        ksvd.save_sparse(sparse_model(), tmp_path / "m.ksvd", **kwargs)
    assert not os.listdir(tmp_path)


def test_bad_arguments_elsewhere_name_the_argument(tmp_path):
    with pytest.raises(TypeError, match="`compact`"):
        ksvd.save_sparse(sparse_model(), tmp_path / "m.ksvd", bits=4, compact="yes")
    with pytest.raises(ValueError, match="`scale`"):
        ksvd.posterior_bits(svd_model(), scale=0)
    with pytest.raises(ValueError, match="`max_bits`"):
        ksvd.posterior_bits(svd_model(), max_bits=9)
    with pytest.raises(ValueError, match="`min_bits`"):
        ksvd.posterior_bits(svd_model(), min_bits=5, max_bits=3)
    with pytest.raises(ValueError, match="Sparse VD"):
        ksvd.posterior_bits(sparse_model())
    with pytest.raises(ValueError, match="`mode`"):
        ksvd.quantize_model(svd_model(), "int2")
    with pytest.raises(TypeError, match="`compact`"):
        ksvd.quantize_model(svd_model(), "int8", compact=1)
    with pytest.raises(ValueError, match="`representative_data`"):
        ksvd.export_tflite(sparse_model(), tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match="`quantize`"):
        ksvd.export_tflite(sparse_model(), tmp_path / "m.tflite", quantize="int16")
    with pytest.raises(TypeError, match="`sparsity`"):
        ksvd.export_tflite(sparse_model(), tmp_path / "m.tflite", sparsity="yes")


def test_sparsified_layers_refuse_and_stripped_layers_accept_quantize():
    # Keras keeps a wrapper of the creating class's `quantize` on each layer;
    # the class swaps of sparsify and strip must re-wrap it.
    plain = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="fc")])
    svd = ksvd.sparsify(plain)
    with pytest.raises(NotImplementedError, match="strip"):
        svd.get_layer("fc").quantize("int8")
    stripped = ksvd.strip_sparsevd(svd)
    stripped.get_layer("fc").quantize("int8")
    assert stripped.get_layer("fc").quantization_mode == "int8"


def test_bfloat16_weights_round_trip(tmp_path):
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, dtype="bfloat16", name="d")]
    )
    ksvd.save_sparse(model, tmp_path / "bf.ksvd", bits=32, compact=False)
    loaded = ksvd.load_sparse(tmp_path / "bf.ksvd")
    assert loaded.get_layer("d").kernel.dtype == "bfloat16"
    for got, want in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(
            np.asarray(got, np.float32), np.asarray(want, np.float32)
        )
