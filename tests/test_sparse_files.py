"""`load_sparse` on damaged and crafted files: a ValueError, bounded memory."""

import io
import json
import os
import resource
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_sparsevd as ksvd

DATA = Path(__file__).resolve().parent / "data"
RNG = np.random.default_rng(11)


def small_model():
    """Dense layers with a sparse kernel, so all three encodings are stored."""
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(8, activation="relu", name="fc1"),
            keras.layers.Dense(3, name="fc2"),
        ]
    )
    kernel = keras.ops.convert_to_numpy(model.get_layer("fc1").kernel)
    kernel[RNG.random(kernel.shape) < 0.9] = 0.0
    model.get_layer("fc1").kernel.assign(kernel)
    return model


def npz_bytes(members: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **members)
    return buffer.getvalue()


def header_array(header) -> np.ndarray:
    text = header if isinstance(header, str) else json.dumps(header)
    return np.frombuffer(text.encode("utf-8"), np.uint8)


def members_of(data: bytes) -> tuple:
    with np.load(io.BytesIO(data)) as archive:
        members = {name: archive[name] for name in archive.files}
    return json.loads(members["header"].tobytes()), members


def crafted_files(good: bytes) -> list:
    """(name, bytes) of files written by hand to break the loader."""
    header, members = members_of(good)
    cases = []

    def with_header(name, new_header, **replace):
        arrays = dict(members, header=header_array(new_header))
        arrays.update(replace)
        cases.append((name, npz_bytes(arrays)))

    for name, value in [
        ("list", [1, 2]),
        ("null", None),
        ("string", "keras_sparsevd.sparse"),
        ("number", 3),
        ("other format", dict(header, format="other")),
        ("version string", dict(header, version="1")),
        ("version true", dict(header, version=True)),
        ("version 0", dict(header, version=0)),
        ("version 99", dict(header, version=99)),
        ("no weights", {k: v for k, v in header.items() if k != "weights"}),
        ("weights dict", dict(header, weights={"a": 1})),
        ("weights of strings", dict(header, weights=["x"] * len(header["weights"]))),
        ("no model", {k: v for k, v in header.items() if k != "model"}),
        ("model list", dict(header, model=[1])),
        ("model empty", dict(header, model={})),
        ("model of unknown class", dict(header, model={"class_name": "Nope"})),
        ("one weight fewer", dict(header, weights=header["weights"][:-1])),
    ]:
        with_header(name, value)
    for field, bad in [
        ("shape", [-1, 8]),
        ("shape", "12x8"),
        ("shape", [12.5, 8]),
        ("shape", [True, 8]),
        ("shape", [10**6, 10**6]),
        ("shape", [2**62, 2**62]),
        ("dtype", "object"),
        ("dtype", "float128x"),
        ("dtype", ["float32"]),
        ("encoding", "pickle"),
        ("encoding", None),
    ]:
        for i in range(len(header["weights"])):
            weights = [dict(entry) for entry in header["weights"]]
            weights[i][field] = bad
            with_header(f"weight {i} {field}={bad!r}", dict(header, weights=weights))
    # The architecture and the weights both claim a 10^6 x 10^6 kernel.
    huge = json.loads(json.dumps(header))
    layers = huge["model"]["config"]["layers"]
    layers[0]["config"]["batch_shape"] = [None, 10**6]
    layers[1]["config"]["units"] = 10**6
    huge["weights"][0] = {
        "shape": [10**6, 10**6],
        "dtype": "float32",
        "encoding": "delta8",
    }
    with_header("architecture 10^6 x 10^6", huge)
    for name, text in [
        ("not JSON", "{not json"),
        ("deeply nested", "[" * 100_000 + "]" * 100_000),
    ]:
        with_header(name, text)
    cases.append(
        (
            "header not UTF-8",
            npz_bytes(dict(members, header=np.frombuffer(b"\xff\xfe{", np.uint8))),
        )
    )
    with_header("header of floats", header, header=np.zeros(4, "float32"))
    with_header("header 2-D", header, header=header_array(header).reshape(1, -1))
    # Members that disagree with the header.
    sparse_key = next(
        f"w{i}" for i, e in enumerate(header["weights"]) if e["encoding"] != "dense"
    )
    dense_key = next(
        f"w{i}" for i, e in enumerate(header["weights"]) if e["encoding"] == "dense"
    )
    with_header("values missing", header, **{sparse_key + ".values": None})
    cases[-1] = (
        "values missing",
        npz_bytes({k: v for k, v in members.items() if k != sparse_key + ".values"}),
    )
    with_header("too many values", header, **{sparse_key + ".values": np.ones(10**4)})
    with_header("index of floats", header, **{sparse_key + ".index": np.ones(4)})
    with_header(
        "index points past the end",
        header,
        **{sparse_key + ".index": np.full(50, 255, np.uint8)},
    )
    with_header("dense of wrong size", header, **{dense_key: np.zeros(5, "float32")})
    with_header("dense 2-D", header, **{dense_key: np.zeros((1, 1), "float32")})
    # An .npy member whose own header claims 10^12 values.
    raw = bytearray(npz_bytes(members))
    cases.append(("npy header claims 10^12 values", _npy_claims_huge(members)))
    # A zip entry claiming more bytes than it compresses to, and bzip2.
    cases.append(("zip bomb claim", _zip_size_claim(bytes(raw))))
    cases.append(("bzip2 member", _recompressed(bytes(raw), zipfile.ZIP_BZIP2)))
    cases.append(("not an npy member", _with_extra_member(bytes(raw))))
    return cases


def _npy_claims_huge(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in members.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, array)
            data = npy.getvalue()
            if name == "header":
                shape = repr(tuple(array.shape))
                data = data.replace(shape.encode(), b"(10**12,)"[: len(shape)], 1)
                head = np.lib.format.header_data_from_array_1_0(array)
                head["shape"] = (10**12,)
                out = io.BytesIO()
                np.lib.format.write_array_header_1_0(out, head)
                data = out.getvalue() + array.tobytes()
            archive.writestr(name + ".npy", data)
    return buffer.getvalue()


def _zip_size_claim(data: bytes) -> bytes:
    # Patch the uncompressed size of the first central directory entry.
    at = data.rfind(b"PK\x01\x02")
    at = data.find(b"PK\x01\x02")
    patched = bytearray(data)
    patched[at + 24 : at + 28] = (2**31).to_bytes(4, "little")
    return bytes(patched)


def _recompressed(data: bytes, method: int) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info))
    return buffer.getvalue()


def _with_extra_member(data: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info))
        archive.writestr("payload.pkl", b"\x80\x04K\x01.")
    return buffer.getvalue()


def damaged_files(good: bytes, rng: np.random.Generator) -> list:
    """(name, bytes): truncations and single bit flips of a good file."""
    cases = [("empty", b"")]
    for cut in sorted(set(rng.integers(1, len(good), 60).tolist())):
        cases.append((f"truncated at {cut}", good[:cut]))
    for at in rng.integers(0, len(good), 240).tolist():
        flipped = bytearray(good)
        flipped[at] ^= 1 << int(rng.integers(0, 8))
        cases.append((f"bit flipped at {at}", bytes(flipped)))
    return cases


def _load_each(cases: list, tmp_path, expected=None) -> dict:
    """Loads each case: a ValueError, or (with `expected`) the same predictions."""
    outcomes = {"ValueError": 0, "loaded": 0}
    x = np.linspace(-1, 1, 24, dtype="float32").reshape(2, 12)
    for name, data in cases:
        path = tmp_path / "case.npz"
        path.write_bytes(data)
        try:
            model = ksvd.load_sparse(path)
        except ValueError:
            outcomes["ValueError"] += 1
            continue
        except Exception as error:  # noqa: BLE001 - the failure under test
            pytest.fail(f"{name}: {type(error).__name__}: {error}")
        assert isinstance(model, keras.Model), name
        if expected is not None:
            got = keras.ops.convert_to_numpy(model(x, training=False))
            np.testing.assert_array_equal(got, expected, name)
        outcomes["loaded"] += 1
    return outcomes


@pytest.mark.slow
def test_load_sparse_answers_every_damaged_or_crafted_file_with_value_error(
    tmp_path,
):
    model = small_model()
    ksvd.save_sparse(model, tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    assert ksvd.load_sparse(tmp_path / "good.npz").count_params() == 131
    crafted = crafted_files(good)
    damaged = damaged_files(good, np.random.default_rng(0))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    crafted_outcomes = _load_each(crafted, tmp_path)
    x = np.linspace(-1, 1, 24, dtype="float32").reshape(2, 12)
    damaged_outcomes = _load_each(damaged, tmp_path, model.predict(x, verbose=0))
    seconds = time.perf_counter() - started
    grown_mib = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    ) / 1024
    print(
        f"{len(crafted)} crafted files: {crafted_outcomes}; {len(damaged)} damaged "
        f"files: {damaged_outcomes}; {seconds:.1f} s; peak memory grew "
        f"{grown_mib:.0f} MiB"
    )
    # Every crafted file is refused. A damaged one loads only where the
    # flipped bit is one that zip does not check (a time stamp, a version
    # field), and then as the very model that was saved.
    assert crafted_outcomes == {"ValueError": len(crafted), "loaded": 0}
    assert damaged_outcomes["ValueError"] > damaged_outcomes["loaded"]
    assert len(crafted) + len(damaged) >= 300
    # 10^6 x 10^6 float32 would be 3.6 TiB: refused before any allocation.
    assert grown_mib < 200


def test_huge_claims_are_refused_quickly_with_the_reason(tmp_path):
    good = npz_bytes_of(small_model(), tmp_path)
    header, members = members_of(good)
    weights = [dict(entry) for entry in header["weights"]]
    weights[0] = {"shape": [10**6, 10**6], "dtype": "float32", "encoding": "delta8"}
    members["header"] = header_array(dict(header, weights=weights))
    (tmp_path / "huge.npz").write_bytes(npz_bytes(members))
    started = time.perf_counter()
    with pytest.raises(ValueError, match="damaged or crafted.*max_expansion"):
        ksvd.load_sparse(tmp_path / "huge.npz")
    assert time.perf_counter() - started < 5
    with pytest.raises(ValueError, match="`max_expansion`"):
        ksvd.load_sparse(tmp_path / "huge.npz", max_expansion=-1)


def npz_bytes_of(model, tmp_path) -> bytes:
    ksvd.save_sparse(model, tmp_path / "model.npz")
    return (tmp_path / "model.npz").read_bytes()


def test_version_1_files_keep_loading():
    # Written by save_sparse of format version 1 (tests/data/sparse_v1.json
    # holds an input and the saved model's predictions).
    expected = json.loads((DATA / "sparse_v1.json").read_text())
    model = ksvd.load_sparse(DATA / "sparse_v1.npz")
    assert [type(layer).__name__ for layer in model.layers] == [
        "Dense",
        "BatchNormalization",
        "Dense",
    ]
    y = model.predict(np.array(expected["x"], "float32"), verbose=0)
    np.testing.assert_allclose(y, np.array(expected["y"]), rtol=1e-6, atol=1e-6)


def test_save_sparse_is_atomic_and_names_the_file_as_numpy_does(tmp_path, monkeypatch):
    model = small_model()
    ksvd.save_sparse(model, tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    before = (tmp_path / "model.npz").read_bytes()

    def fail_half_way(file, **arrays):
        if isinstance(file, (str, os.PathLike)):
            file = open(file, "wb")  # noqa: SIM115 - left open, as a crash would
        file.write(b"PK\x03\x04 the first bytes")
        file.flush()
        raise OSError("disk full")

    # A write that fails half way leaves the old file whole and no temporary.
    monkeypatch.setattr(np, "savez_compressed", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        ksvd.save_sparse(model, tmp_path / "model.npz")
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    assert (tmp_path / "model.npz").read_bytes() == before
