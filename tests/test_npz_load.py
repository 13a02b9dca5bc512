"""Loading corrupt, malformed and hostile .npz files: always the documented ValueError naming
the file, quickly and without large memory."""

import io
import json
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from fusedrnn import GRU, LSTM, Dense, Recurrent, Sequential, _npz
from fusedrnn.layers import _RNNBase

HEADER = _npz.HEADER_KEY


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def _npy_header(descr, shape) -> bytes:
    """A well-formed .npy header announcing an array of this dtype and shape."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _zip(path, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _layer_file(tmp_path):
    path = tmp_path / "layer.npz"
    LSTM(3, 4, num_layers=2, seed=0).save(path)
    return path


def _model_file(tmp_path):
    path = tmp_path / "model.npz"
    m = Sequential([Recurrent(GRU(3, 5)), Dense(5, 2)], seed=0)
    m.compile("adam", "mse", ["mae"])
    m.fit(np.ones((4, 2, 3), np.float32), np.zeros((4, 2), np.float32), verbose=0)
    m.save(path)
    return path


LOADERS = {"layer": (_layer_file, _RNNBase.load), "model": (_model_file, Sequential.load)}


def _members(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rewrite_header(path, change):
    members = _members(path)
    header = json.loads(str(np.load(io.BytesIO(members[HEADER + ".npy"]))))
    header = change(header)
    members[HEADER + ".npy"] = _npy(np.array(json.dumps(header) if not isinstance(header, str) else header))
    _zip(path, members)


def _layer_config(header, i, **change):
    """The header with layer i's config changed."""
    layers = [dict(layer) for layer in header["config"]["layers"]]
    layers[i]["config"] = {**layers[i]["config"], **change}
    return {**header, "config": {**header["config"], "layers": layers}}


def _refused(load, path, limit_mb=20, seconds=5.0):
    """load(path) raises ValueError naming the file, within the time and memory limits."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError) as info:
            load(path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert time.perf_counter() - start < seconds
    assert peak < limit_mb * 2**20, f"peak {peak / 2**20:.1f} MiB"
    return str(info.value)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_truncated_files(tmp_path, kind):
    make, load = LOADERS[kind]
    data = make(tmp_path).read_bytes()
    cut = tmp_path / "cut.npz"
    for n in sorted(set(np.linspace(0, len(data) - 1, 60).astype(int))):
        cut.write_bytes(data[:n])
        _refused(load, cut)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_random_byte_changes(tmp_path, kind):
    make, load = LOADERS[kind]
    data = make(tmp_path).read_bytes()
    rng = np.random.default_rng(7)
    bad = tmp_path / "changed.npz"
    refused = 0
    for _ in range(1000):
        b = bytearray(data)
        for pos in rng.integers(0, len(b), rng.integers(1, 6)):
            b[pos] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(b))
        try:
            load(bad)  # a change in unchecked bytes (zip padding, a timestamp) may leave it valid
        except ValueError as exc:
            assert str(bad) in str(exc)
            refused += 1
    assert refused > 900  # the CRCs and the checks catch nearly every change


@pytest.mark.parametrize("change", [
    lambda h: [h],                                                   # not an object
    lambda h: "a string",
    lambda h: {**h, "config": [1, 2]},
    lambda h: {**h, "class": 7},
    lambda h: {**h, "format": "1"},
    lambda h: {**h, "config": {**h["config"], "hidden_size": "big"}},
    lambda h: {**h, "config": {**h["config"], "hidden_size": -3}},
    lambda h: {**h, "config": {**h["config"], "hidden_size": 1e300}},
    lambda h: {**h, "config": {**h["config"], "num_layers": 10**30}},
    lambda h: {**h, "config": {**h["config"], "bias": "yes"}},
    lambda h: {**h, "config": {**h["config"], "dtype": "complex128"}},
    lambda h: {**h, "config": {**h["config"], "surprise": 1}},
    lambda h: "[" * 100_000 + "]" * 100_000,                         # nested too deep
    lambda h: "{not json",
])
def test_layer_header_of_the_wrong_type(tmp_path, change):
    path = _layer_file(tmp_path)
    _rewrite_header(path, change)
    _refused(_RNNBase.load, path)


@pytest.mark.parametrize("change", [
    lambda h: {**h, "config": {**h["config"], "layers": "none"}},
    lambda h: {**h, "config": {**h["config"], "layers": [{"class": "Conv2D", "config": {}}]}},
    lambda h: {**h, "config": {**h["config"], "layers": h["config"]["layers"][:1]}},
    lambda h: {**h, "rng": [1, 2]},
    lambda h: {**h, "rng": h["rng"][:1]},
    lambda h: {**h, "epoch": "one"},
    lambda h: {**h, "compile": {**h["compile"], "iterations": -1}},
    lambda h: {**h, "compile": {**h["compile"], "optimizer": {"class": "Nope", "config": {}}}},
    lambda h: {**h, "compile": {**h["compile"], "optimizer": {"class": "SGD", "config": {}}}},
    lambda h: {**h, "compile": {**h["compile"], "loss": None}},
    lambda h: {**h, "metadata": [1]},
    lambda h: _layer_config(h, 0, return_sequences="x"),
    lambda h: _layer_config(h, 0, stateful="no"),
    lambda h: _layer_config(h, 1, bias="no"),
])
def test_model_header_of_the_wrong_type(tmp_path, change):
    path = _model_file(tmp_path)
    _rewrite_header(path, change)
    _refused(Sequential.load, path)


def test_header_lying_about_sizes_allocates_nothing(tmp_path):
    path = _layer_file(tmp_path)
    _rewrite_header(path, lambda h: {**h, "config": {**h["config"], "hidden_size": 20000}})
    assert path.stat().st_size < 20_000
    message = _refused(_RNNBase.load, path, limit_mb=2)
    assert "weight_ih_l0" in message and "(80000, 3)" in message

    mpath = _model_file(tmp_path)
    _rewrite_header(mpath, lambda h: {**h, "config": {**h["config"], "layers": [
        h["config"]["layers"][0], {"class": "Dense", "config": {"in_features": 5, "out_features": 10**9}}]}})
    _refused(Sequential.load, mpath, limit_mb=2)


def test_arrays_lying_about_their_size(tmp_path):
    path = _layer_file(tmp_path)
    members = _members(path)
    # a header that claims 6 GB of data in front of the few bytes really there
    members["weight_hh_l0.npy"] = _npy_header("<f4", (16, 10**8)) + b"\0" * 256
    _zip(path, members)
    assert "needs" in _refused(_RNNBase.load, path, limit_mb=2)


def test_zip_bomb_is_refused_unread(tmp_path):
    path = _layer_file(tmp_path)
    members = _members(path)
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        # 256 MiB of zeros behind a valid .npy header, a few hundred KiB compressed
        with zf.open("extra.npy", "w", force_zip64=True) as f:
            f.write(_npy_header("<f4", (2**26,)))
            for _ in range(16):
                f.write(bytes(2**24))
    assert bomb.stat().st_size < 2 * 2**20
    assert "zip bomb" in _refused(_RNNBase.load, bomb, limit_mb=20)


def test_compressed_file_of_ours_still_loads(tmp_path):
    path = _layer_file(tmp_path)
    members = _members(path)
    packed = tmp_path / "packed.npz"
    _zip(packed, members, zipfile.ZIP_DEFLATED)
    a, b = _RNNBase.load(path), _RNNBase.load(packed)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("members", [
    {"a.txt": b"hello"},
    {HEADER + ".npy": _npy(np.array([1, 2]))},
    {HEADER + ".npy": _npy(np.array("x" * 10)) + b"trailing"},
    {HEADER + ".npy": b"\x93NUMPY\x03\x00" + b"\x00" * 40},
    {HEADER + ".npy": b"\x93NUMPY"},
    {HEADER + ".npy": _npy_header("|O", ()) + b"\0" * 8},
    {HEADER + ".npy": _npy(np.array("{}")), "w.npy": _npy_header("|O", (2,)) + b"\0" * 16},
])
def test_malformed_members(tmp_path, members):
    path = tmp_path / "odd.npz"
    _zip(path, members)
    _refused(_RNNBase.load, path)


def test_huge_json_header_is_refused_before_reading(tmp_path):
    path = _layer_file(tmp_path)
    members = _members(path)
    # a header of 8 million characters (32 MB as a numpy string), stored
    members[HEADER + ".npy"] = _npy_header("<U8388608", ()) + bytes(4 * 2**23)
    _zip(path, members)
    assert "characters" in _refused(_RNNBase.load, path, limit_mb=20)


def test_big_endian_file_loads_with_native_arrays(tmp_path):
    path = _model_file(tmp_path)
    m = Sequential.load(path)
    members = {n: d for n, d in _members(path).items()}
    for name, data in list(members.items()):
        if name != HEADER + ".npy":
            arr = np.load(io.BytesIO(data))
            members[name] = _npy(arr.astype(arr.dtype.newbyteorder(">")))
    swapped = tmp_path / "big.npz"
    _zip(swapped, members)
    back = Sequential.load(swapped)
    for a, b in zip(back.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.ones((2, 2, 3), np.float32)
    y = np.zeros((2, 2), np.float32)
    m.fit(x, y, verbose=0, shuffle=False)
    back.fit(x, y, verbose=0, shuffle=False)
    for a, b in zip(back.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
