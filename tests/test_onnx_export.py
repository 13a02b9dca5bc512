"""fusedrnn.onnx.export: the exported graph, run by onnxruntime, gives fusedrnn's forward.

onnxruntime's CPU provider runs LSTM/GRU/RNN in float32 only, so float64 exports are run by
onnx's own reference evaluator, with its LSTM, GRU and RNN replaced by the operator
definitions written out below in NumPy (onnx's own ignore sequence_lens, and the LSTM its
activations); those are checked first against onnxruntime in float32.  Every exported file
also passes onnx.checker with full_check.
"""

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fusedrnn  # noqa: E402
from fusedrnn.keras import layers as K  # noqa: E402
from fusedrnn.keras.models import Model, Sequential  # noqa: E402
from fusedrnn.testing import max_error  # noqa: E402

TOL32, TOL64 = 1e-5, 1e-12
CELLS = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _export_checked(model, path, **kw):
    proto = fusedrnn.onnx.export(model, path, **kw)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return proto


def _reference(layer, x, h0, c0, lengths):
    if isinstance(layer, fusedrnn.LSTM):
        out, (h, c) = layer(x, None if h0 is None else (h0, c0), lengths=lengths)
        return [out, h, c]
    out, h = layer(x, h0, lengths=lengths)
    return [out, h]


def _inputs(layer, T, B, rng, lengths, initial_state):
    dt = layer.dtype
    shape = (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size)
    feeds = {"input": rng.standard_normal(shape).astype(dt)}
    h0 = c0 = L = None
    if initial_state:
        LD = layer.num_layers * layer.num_directions
        h0 = feeds["h0"] = rng.standard_normal((LD, B, layer.hidden_size)).astype(dt)
        if isinstance(layer, fusedrnn.LSTM):
            c0 = feeds["c0"] = rng.standard_normal((LD, B, layer.hidden_size)).astype(dt)
    if lengths:
        L = feeds["lengths"] = np.sort(rng.integers(1, T + 1, B))[::-1].copy()
        L[0] = T
        L[-1] = 1
    return feeds, _reference(layer, feeds["input"], h0, c0, L)


def _assert_close(got, expected, tol):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert max_error(g, e) <= tol, max_error(g, e)


# --- the torch-shaped layers ----------------------------------------------------------------

@pytest.mark.parametrize("initial_state", [False, True], ids=["zero-state", "h0"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["TBI", "BTI"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_layer_round_trip(tmp_path, cell, num_layers, bidirectional, batch_first, lengths,
                          initial_state):
    layer = CELLS[cell](4, 5, num_layers=num_layers, bidirectional=bidirectional,
                        batch_first=batch_first, seed=1).eval()
    path = tmp_path / "m.onnx"
    _export_checked(layer, path, lengths=lengths, initial_state=initial_state)
    feeds, expected = _inputs(layer, 6, 3, np.random.default_rng(2), lengths, initial_state)
    sess = _session(path)
    assert [i.name for i in sess.get_inputs()] == list(feeds)
    names = ["output", "h_n"] + (["c_n"] if cell == "lstm" else [])
    assert [o.name for o in sess.get_outputs()] == names
    _assert_close(sess.run(None, feeds), expected, TOL32)
    if lengths:  # past each length the output is zero, as fusedrnn's
        out = sess.run(["output"], feeds)[0]
        L = feeds["lengths"]
        tail = out[-1, L[-1]:] if batch_first else out[L[-1]:, -1]
        assert np.all(tail == 0)


@pytest.mark.parametrize("layer", [
    lambda: fusedrnn.RNN(4, 6, num_layers=2, nonlinearity="relu", bidirectional=True, seed=3),
    lambda: fusedrnn.LSTM(4, 6, activation="relu", bidirectional=True, seed=3),
    lambda: fusedrnn.LSTM(4, 6, bias=False, num_layers=2, seed=3),
    lambda: fusedrnn.GRU(4, 6, bias=False, bidirectional=True, batch_first=True, seed=3),
    lambda: fusedrnn.RNN(4, 6, bias=False, nonlinearity="relu", seed=3),
], ids=["rnn-relu", "lstm-relu", "lstm-nobias", "gru-nobias", "rnn-relu-nobias"])
def test_activations_and_bias_free(tmp_path, layer):
    layer = layer().eval()
    _export_checked(layer, tmp_path / "m.onnx", lengths=True, initial_state=True)
    feeds, expected = _inputs(layer, 5, 4, np.random.default_rng(4), True, True)
    _assert_close(_session(tmp_path / "m.onnx").run(None, feeds), expected, TOL32)


# --- float64: the recurrent operators as ONNX defines them ----------------------------------

_ACTIVATIONS = {"Sigmoid": lambda v: 1 / (1 + np.exp(-v)), "Tanh": np.tanh,
                "Relu": lambda v: np.maximum(v, 0)}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                        "RNN": ["Tanh"]}


def _recurrent(kind, X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None,
               P=None, activations=None, direction=None, layout=None, linear_before_reset=None,
               **unused):
    """One ONNX LSTM (gates i o f c), GRU (z r h) or RNN node, step by step in float64 from
    the operator definitions: each sequence runs over its first sequence_lens steps (backwards
    for the reverse direction), the outputs past them are zero and the final states are those
    of its last step; activations per direction (f, g, h)."""
    direction = direction.decode() if isinstance(direction, bytes) else direction or "forward"
    if layout:  # (batch, time, ...) and (batch, dirs, ...): to the layout-0 axes
        X = X.swapaxes(0, 1)
        initial_h = None if initial_h is None else initial_h.swapaxes(0, 1)
        initial_c = None if initial_c is None else initial_c.swapaxes(0, 1)
    T, N = X.shape[:2]
    D, H = W.shape[0], R.shape[-1]
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    k = len(_DEFAULT_ACTIVATIONS[kind])
    names = [a.decode() if isinstance(a, bytes) else a for a in activations or []]
    names = names or _DEFAULT_ACTIVATIONS[kind] * D
    lens = np.full(N, T) if sequence_lens is None else sequence_lens
    Y = np.zeros((T, D, N, H), X.dtype)
    Y_h = np.zeros((D, N, H), X.dtype)
    Y_c = np.zeros((D, N, H), X.dtype)
    for d in range(D):
        f = [_ACTIVATIONS[a] for a in names[d * k:(d + 1) * k]]
        Wb, Rb = (B[d][:G * H], B[d][G * H:]) if B is not None else (0, 0)
        for n in range(N):
            h = np.zeros(H) if initial_h is None else initial_h[d, n]
            c = np.zeros(H) if initial_c is None else initial_c[d, n]
            steps = range(lens[n])
            for t in (reversed(steps) if direction == "reverse" or d == 1 else steps):
                xw = X[t, n] @ W[d].T + Wb
                if kind == "LSTM":
                    i, o, fg, cc = np.split(xw + h @ R[d].T + Rb, 4)
                    c = f[0](fg) * c + f[0](i) * f[1](cc)
                    h = f[0](o) * f[2](c)
                elif kind == "GRU":
                    xz, xr, xh = np.split(xw, 3)
                    Rz, Rr, Rh = np.split(R[d], 3)
                    bz, br, bh = np.split(Rb, 3) if B is not None else (0, 0, 0)
                    z, r = f[0](xz + h @ Rz.T + bz), f[0](xr + h @ Rr.T + br)
                    hh = f[1](xh + (r * (h @ Rh.T + bh) if linear_before_reset else (r * h) @ Rh.T + bh))
                    h = (1 - z) * hh + z * h
                else:
                    h = f[0](xw + h @ R[d].T + Rb)
                Y[t, d, n] = h
            Y_h[d, n], Y_c[d, n] = h, c
    if layout:
        Y, Y_h, Y_c = Y.transpose(2, 0, 1, 3), Y_h.swapaxes(0, 1), Y_c.swapaxes(0, 1)
    return (Y, Y_h, Y_c) if kind == "LSTM" else (Y, Y_h)


def _defined_ops():
    from onnx.reference.op_run import OpRun

    def op(kind):
        return type(kind, (OpRun,), {"op_domain": "",
                                     "_run": lambda self, *a, **kw: _recurrent(kind, *a, **kw)})

    return [op("LSTM"), op("GRU"), op("RNN")]


def _evaluate(path, feeds):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(str(path), new_ops=_defined_ops()).run(None, feeds)


@pytest.mark.parametrize("layer", [
    lambda dt: fusedrnn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=dt, seed=5),
    lambda dt: fusedrnn.LSTM(3, 4, activation="relu", bidirectional=True, dtype=dt, seed=5),
    lambda dt: fusedrnn.GRU(3, 4, num_layers=2, bidirectional=True, dtype=dt, seed=5),
    lambda dt: fusedrnn.GRU(3, 4, bias=False, batch_first=True, dtype=dt, seed=5),
    lambda dt: fusedrnn.RNN(3, 4, nonlinearity="relu", num_layers=2, bidirectional=True, dtype=dt, seed=5),
    lambda dt: fusedrnn.RNN(3, 4, batch_first=True, dtype=dt, seed=5),
], ids=["lstm-2-bi", "lstm-relu-bi", "gru-2-bi", "gru-nobias", "rnn-relu-2-bi", "rnn"])
def test_float64_with_lengths_by_the_operator_definitions(tmp_path, layer):
    """The definitions above agree with onnxruntime on the float32 export, then run the float64
    export, lengths (down to 1) and initial states included, against fusedrnn's forward."""
    for dt, tol in (("float32", TOL32), ("float64", TOL64)):
        model = layer(dt).eval()
        path = tmp_path / f"m_{dt}.onnx"
        _export_checked(model, path, lengths=True, initial_state=True)
        feeds, expected = _inputs(model, 6, 4, np.random.default_rng(8), True, True)
        got = _evaluate(path, feeds)
        assert all(g.dtype == np.dtype(dt) for g in got)
        if dt == "float32":
            _assert_close(got, _session(path).run(None, feeds), TOL32)
        _assert_close(got, expected, tol)
        if dt == "float64":  # the lengths took effect: zeros past the shortest sequence
            out = got[0]
            tail = out[-1, 1:] if model.batch_first else out[1:, -1]
            assert np.all(tail == 0) and np.any(out != 0)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_float64_by_the_onnx_reference_evaluator(tmp_path, cell):
    from onnx.reference import ReferenceEvaluator

    layer = CELLS[cell](3, 4, num_layers=2, bidirectional=True, batch_first=True,
                        dtype="float64", seed=5).eval()
    proto = _export_checked(layer, tmp_path / "m.onnx", initial_state=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert all(t.data_type == onnx.TensorProto.DOUBLE for t in proto.graph.initializer
               if t.name.startswith("rnn_"))
    feeds, expected = _inputs(layer, 5, 2, np.random.default_rng(6), False, True)
    _assert_close(ReferenceEvaluator(str(tmp_path / "m.onnx")).run(None, feeds), expected, TOL64)


def test_dynamic_batch_and_time(tmp_path):
    layer = fusedrnn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, seed=7).eval()
    proto = _export_checked(layer, tmp_path / "m.onnx", lengths=True, initial_state=True)
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert dims == [["batch", "time", 3], [4, "batch", 4], [4, "batch", 4], ["batch"]]
    out_dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch", "time", 8]
    sess = _session(tmp_path / "m.onnx")
    rng = np.random.default_rng(8)
    for B, T in ((1, 2), (5, 9), (2, 9), (5, 2)):
        feeds, expected = _inputs(layer, T, B, rng, True, True)
        _assert_close(sess.run(None, feeds), expected, TOL32)


# --- Keras models ---------------------------------------------------------------------------

def _keras_cases():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    right = x.copy()  # padded at the end
    right[1, 4:] = 0.0
    right[2, 1:] = 0.0
    mixed = right.copy()  # and at the start (Keras' pad_sequences default)
    mixed[0, :2] = 0.0
    mixed[3, :5] = 0.0
    ids = rng.integers(1, 20, (4, 7))
    ids[0, 3:] = 0
    ids[2, 6:] = 0
    ids[3, :4] = 0
    return [
        ("lstm-dropout-gru-softmax", lambda: [
            K.LSTM(8, input_shape=(None, 5), return_sequences=True), K.Dropout(0.5),
            K.GRU(7, dropout=0.2), K.Dense(3, activation="softmax")], x),
        ("bidirectional-relu-rnn-timedistributed", lambda: [
            K.Bidirectional(K.SimpleRNN(6, activation="relu", return_sequences=True),
                            input_shape=(None, 5)),
            K.TimeDistributed(K.Dense(2, activation="tanh"))], x),
        ("bidirectional-gru-last-step", lambda: [
            K.Input(shape=(None, 5)), K.Bidirectional(K.GRU(4)), K.Dense(2, activation="sigmoid")], x),
        ("go-backwards", lambda: [
            K.LSTM(6, go_backwards=True, return_sequences=True, input_shape=(None, 5)),
            K.SimpleRNN(3, go_backwards=True), K.Dense(2, use_bias=False)], x),
        ("masking", lambda: [
            K.Masking(0.0, input_shape=(None, 5)), K.Bidirectional(K.LSTM(6, return_sequences=True)),
            K.GRU(4, return_sequences=True), K.Dense(2, activation="relu")], right),
        ("masking-last-step", lambda: [
            K.Masking(0.0, input_shape=(None, 5)), K.Bidirectional(K.SimpleRNN(5)), K.Dense(2)], right),
        ("masking-both-ends", lambda: [
            K.Masking(0.0, input_shape=(None, 5)), K.Bidirectional(K.LSTM(6, return_sequences=True)),
            K.Dense(2, activation="tanh")], mixed),
        ("masking-both-ends-last-step", lambda: [
            K.Masking(0.0, input_shape=(None, 5)), K.GRU(4, return_sequences=True), K.SimpleRNN(3),
            K.Dense(2)], mixed),
        ("embedding-mask-zero", lambda: [
            K.Embedding(20, 5, mask_zero=True), K.LSTM(6), K.Dense(2, activation="softmax")], ids),
        ("embedding", lambda: [
            K.Embedding(20, 5), K.GRU(6, return_sequences=True), K.Dense(3)], ids),
        ("torch-ordered-pieces", lambda: [
            fusedrnn.Recurrent(fusedrnn.LSTM(5, 6, num_layers=2, bidirectional=True)),
            fusedrnn.Dropout(0.1), fusedrnn.Dense(12, 3, activation="tanh")], x),
        ("per-step-dense-only", lambda: [
            K.TimeDistributed(K.Dense(4, activation="relu"), input_shape=(None, 5)),
            K.Dense(3, activation="softmax")], x),
        ("dense-on-vectors", lambda: [K.Dense(4, activation="sigmoid", input_shape=(5,)),
                                      K.Dropout(0.2), K.Dense(2)], x[:, 0]),
    ]


@pytest.mark.parametrize("name,layers,x", _keras_cases(), ids=[c[0] for c in _keras_cases()])
def test_keras_round_trip(tmp_path, name, layers, x):
    model = Sequential(layers(), seed=10)
    expected = model.predict(x, verbose=0)
    _export_checked(model, tmp_path / "m.onnx")
    sess = _session(tmp_path / "m.onnx")
    got = sess.run(None, {"input": x})[0]
    assert got.shape == expected.shape
    assert max_error(got, expected) <= TOL32
    # dynamic axes: fewer sequences, and (without a mask) a longer time axis
    part = x[:2]
    assert max_error(sess.run(None, {"input": part})[0], model.predict(part, verbose=0)) <= TOL32
    if x.ndim == 3 and "masking" not in name:
        longer = np.concatenate([x, x[:, :3]], axis=1)
        assert max_error(sess.run(None, {"input": longer})[0], model.predict(longer, verbose=0)) <= TOL32


# --- what cannot be exported, and bad arguments ----------------------------------------------

def test_proj_size_is_refused_and_the_old_file_is_kept(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="proj_size=2"):
        fusedrnn.onnx.export(fusedrnn.LSTM(3, 4, proj_size=2), path)
    assert path.read_bytes() == b"previous"
    model = Sequential([fusedrnn.Recurrent(fusedrnn.LSTM(3, 4, proj_size=2)), fusedrnn.Dense(2, 1)])
    model.predict(np.zeros((1, 2, 3), np.float32), verbose=0)
    with pytest.raises(ValueError, match="layer 0 .*proj_size"):
        fusedrnn.onnx.export(model, path)


def test_keras_options_that_cannot_be_exported(tmp_path):
    path = tmp_path / "m.onnx"
    stateful = Sequential([K.LSTM(3, stateful=True, input_shape=(4, 2))])
    with pytest.raises(ValueError, match="layer 0 .*stateful"):
        fusedrnn.onnx.export(stateful, path)
    backwards = Sequential([K.Masking(input_shape=(None, 2)), K.GRU(3, go_backwards=True)])
    with pytest.raises(ValueError, match="layer 1 .*go_backwards with a mask"):
        fusedrnn.onnx.export(backwards, path)
    with pytest.raises(ValueError, match="not built"):
        fusedrnn.onnx.export(Sequential([K.LSTM(3)]), path)
    with pytest.raises(ValueError, match="lengths= and initial_state="):
        fusedrnn.onnx.export(Sequential([K.LSTM(3, input_shape=(4, 2))]), path, lengths=True)

    class Scale(fusedrnn.keras.pieces.Layer):
        built = True
        dtype = None

        def forward(self, x, training=False, lengths=None):
            return 2 * x

    custom = Sequential([K.LSTM(3, input_shape=(4, 2)), Scale()])
    with pytest.raises(ValueError, match="layer 1 .*Scale layers cannot be exported"):
        fusedrnn.onnx.export(custom, path)

    class Sub(Model):
        def __init__(self):
            super().__init__()
            self.rnn = K.LSTM(3)

        def call(self, x):
            return self.rnn(x)

    with pytest.raises(TypeError, match="only a Sequential"):
        fusedrnn.onnx.export(Sub(), path)
    assert not path.exists()


@pytest.mark.parametrize("kwargs,error,match", [
    ({"model": "lstm"}, TypeError, "model must be a fusedrnn.LSTM, GRU or RNN"),
    ({"path": 3}, TypeError, "path must be a str or os.PathLike, got int"),
    ({"path": "/nonexistent-folder/m.onnx"}, ValueError, "folder .* does not exist"),
    ({"opset": 9}, ValueError, "opset must be between 14 and"),
    ({"opset": "17"}, TypeError, "opset must be an int"),
    ({"lengths": 1}, TypeError, "lengths must be True or False"),
])
def test_bad_arguments(tmp_path, kwargs, error, match):
    args = {"model": fusedrnn.GRU(2, 3), "path": tmp_path / "m.onnx", **kwargs}
    with pytest.raises(error, match=match):
        fusedrnn.onnx.export(args.pop("model"), args.pop("path"), **args)


def test_opset_is_written(tmp_path):
    proto = _export_checked(fusedrnn.RNN(2, 3), tmp_path / "m.onnx", opset=14)
    assert [o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import] == [14]
    assert proto.opset_import[0].version == 14


def test_import_fusedrnn_needs_no_onnx():
    code = ("import sys; sys.modules['onnx'] = None; import fusedrnn\n"
            "try:\n    fusedrnn.onnx.export(fusedrnn.GRU(2, 3), 'm.onnx')\n"
            "except ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'pip install "fusedrnn[onnx]"' in done.stdout
