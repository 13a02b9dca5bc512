"""Malformed model files (truncated, bytes flipped, a zip bomb, absurd sizes in the headers)
loaded in the crash-isolating worker: each must give a ValueError quickly, with the loading
process's peak resident memory under MAX_RSS; a file that still loads must be usable."""

import io
import json
import time
import zipfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fusedrnn

from .counting import counted, examples, known_defects

MAX_RSS = 500 << 20
MAX_SECONDS = 10.0


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real files: two layers and a compiled, trained Sequential."""
    d = tmp_path_factory.mktemp("models")
    fusedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, seed=0).save(d / "lstm.npz")
    fusedrnn.GRU(3, 4, dtype="float64", seed=1).save(d / "gru.npz")
    model = fusedrnn.Sequential([fusedrnn.Recurrent(fusedrnn.LSTM(3, 6)),
                                 fusedrnn.Dense(6, 2, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((8, 4, 3)).astype(np.float32), np.eye(2)[rng.integers(0, 2, 8)],
              epochs=1, batch_size=4, verbose=0)
    model.save(d / "seq.npz")
    return _Files(lstm=(d / "lstm.npz").read_bytes(), gru=(d / "gru.npz").read_bytes(),
                  sequential=(d / "seq.npz").read_bytes())


class _Files(dict):
    """The saved files' bytes; a short repr for failure reports."""

    def __repr__(self):
        return "<" + ", ".join(f"{k}: {len(v)} bytes" for k, v in self.items()) + ">"


def load_in_worker(worker, tmp_path, kind, data, label):
    path = tmp_path / "mutated.npz"
    path.write_bytes(data)
    start = time.perf_counter()
    outcome, peak = worker.run("load_file", kind, str(path), timeout=60)
    seconds = time.perf_counter() - start
    assert peak < MAX_RSS, f"{label}: loading peaked at {peak >> 20} MiB resident"
    assert seconds < MAX_SECONDS, f"{label}: loading took {seconds:.1f} s"
    if outcome[0] == "raise":
        assert outcome[1] == "ValueError", f"{label}: {outcome[1]}: {outcome[2]}"
    return outcome


def _kind(name):
    return "sequential" if name == "sequential" else "layer"


@examples(40)
@given(name=st.sampled_from(["lstm", "gru", "sequential"]), data=st.data())
@counted
def test_truncated_files(worker, files, tmp_path_factory, name, data):
    blob = files[name]
    cut = data.draw(st.integers(0, len(blob) - 1), label="keep bytes")
    out = load_in_worker(worker, tmp_path_factory.mktemp("t"), _kind(name), blob[:cut],
                         f"{name} cut to {cut} of {len(blob)} bytes")
    assert out[0] == "raise", f"{name} cut to {cut} bytes loaded"


@examples(80)
@given(name=st.sampled_from(["lstm", "gru", "sequential"]), data=st.data())
@counted
def test_flipped_bytes(worker, files, tmp_path_factory, name, data):
    blob = bytearray(files[name])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)),
                               min_size=1, max_size=8), label="flips (offset, xor)")
    for pos, xor in flips:
        blob[pos] ^= xor
    load_in_worker(worker, tmp_path_factory.mktemp("f"), _kind(name), bytes(blob), f"{name} {flips}")


def _replace_member(blob, member, payload, compress=zipfile.ZIP_STORED):
    """The npz `blob` with one member's bytes replaced (a chunk iterator for big ones)."""
    src = zipfile.ZipFile(io.BytesIO(blob))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compresslevel=1) as dst:
        for info in src.infolist():
            if info.filename != member:
                dst.writestr(info, src.read(info.filename))
                continue
            zi = zipfile.ZipInfo(member, date_time=info.date_time)
            zi.compress_type = compress
            with dst.open(zi, "w", force_zip64=True) as f:
                for chunk in ([payload] if isinstance(payload, bytes) else payload):
                    f.write(chunk)
    return buf.getvalue()


def _npy_header(shape, dtype="<f4"):
    head = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    head += b" " * (63 - (len(head) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head


def _header_json(blob):
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return json.loads(str(np.load(io.BytesIO(z.read("__fusedrnn__.npy")))))


def _with_header(blob, header):
    member = io.BytesIO()
    np.save(member, np.array(json.dumps(header)))
    return _replace_member(blob, "__fusedrnn__.npy", member.getvalue())


def _bomb(blob, member, nbytes):
    """`member` replaced by a deflated array of nbytes zeros (about 1000:1)."""
    def chunks():
        yield _npy_header((nbytes // 4,))
        zero = bytes(8 << 20)
        for _ in range(nbytes // len(zero)):
            yield zero
    return _replace_member(blob, member, chunks(), zipfile.ZIP_DEFLATED)


def _hostile_files(files):
    lstm, seq = files["lstm"], files["sequential"]
    h = _header_json(lstm)
    big = dict(h, config=dict(h["config"], hidden_size=2**13))      # 1 GiB of weights
    huge = dict(h, config=dict(h["config"], hidden_size=2**40))
    wrong = dict(h, config=dict(h["config"], hidden_size="5"))
    s = _header_json(seq)
    s_big = json.loads(json.dumps(s))
    s_big["config"]["layers"][0]["config"]["layer"]["config"]["hidden_size"] = 2**13
    s_rng = dict(s, rng="not a list")
    return {
        "lstm: zip bomb in a weight (520 MiB of zeros)": ("layer", _bomb(lstm, "weight_ih_l0.npy", 520 << 20)),
        "lstm: .npy header claims 2**40 floats": ("layer", _replace_member(
            lstm, "weight_ih_l0.npy", _npy_header((2**40,)) + bytes(64))),
        "lstm: .npy header claims (2**31, 2**31)": ("layer", _replace_member(
            lstm, "weight_hh_l0.npy", _npy_header((2**31, 2**31), "<f8") + bytes(64))),
        "lstm: .npy header holds objects": ("layer", _replace_member(
            lstm, "weight_ih_l0.npy", _npy_header((2,), "|O") + bytes(64))),
        "lstm: config hidden_size 2**13 (1 GiB of weights)": ("layer", _with_header(lstm, big)),
        "lstm: config hidden_size 2**40": ("layer", _with_header(lstm, huge)),
        "lstm: config hidden_size '5'": ("layer", _with_header(lstm, wrong)),
        "lstm: header is a JSON list": ("layer", _with_header(lstm, [1, 2])),
        "lstm: header without config": ("layer", _with_header(lstm, {"format": 1, "class": "LSTM"})),
        "sequential: recurrent hidden_size 2**13": ("sequential", _with_header(seq, s_big)),
        "sequential: rng is a string": ("sequential", _with_header(seq, s_rng)),
        "sequential: header is a number": ("sequential", _with_header(seq, 3)),
        "not a zip: 1 MiB of 0xff": ("layer", b"\xff" * (1 << 20)),
        "empty file": ("sequential", b""),
    }


HOSTILE = ["lstm: zip bomb in a weight (520 MiB of zeros)", "lstm: .npy header claims 2**40 floats",
           "lstm: .npy header claims (2**31, 2**31)", "lstm: .npy header holds objects",
           "lstm: config hidden_size 2**13 (1 GiB of weights)", "lstm: config hidden_size 2**40",
           "lstm: config hidden_size '5'",
           "lstm: header is a JSON list", "lstm: header without config",
"sequential: recurrent hidden_size 2**13",
           "sequential: rng is a string", "sequential: header is a number",
           "not a zip: 1 MiB of 0xff", "empty file"]
HOSTILE_DEFECTS: dict = {}  # name -> a known defect (one line); none today


@pytest.fixture(scope="module")
def hostile(files):
    return _hostile_files(files)


@pytest.mark.parametrize("label", known_defects(HOSTILE_DEFECTS, HOSTILE))
def test_hostile_files(worker, hostile, tmp_path, label):
    kind, data = hostile[label]
    out = load_in_worker(worker, tmp_path, kind, data, label)
    assert out[0] == "raise", f"{label} loaded: {out}"
