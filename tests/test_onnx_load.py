"""fusedrnn.onnx.load against torch.nn (models exported by torch.onnx.export) and against
onnxruntime (hand-built graphs: sequence_lens, layouts, activations, the plumbing operators)."""
import io
import sys
import warnings

import numpy as np
import pytest
from conftest import assert_close

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fusedrnn.onnx  # noqa: E402
from fusedrnn.onnx import load  # noqa: E402

F32, F64 = np.float32, np.float64


def rtol(dtype):
    return 1e-12 if dtype == F64 else None  # float32: the table's 1e-5


def export(module, args, names, outputs, dynamic):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(module, args, buf, dynamo=False, input_names=names, output_names=outputs,
                          dynamic_axes=dynamic)
    return buf.getvalue()


class Wrapped(torch.nn.Module):
    """A torch recurrent layer with flat inputs and outputs: (x[, h0[, c0]]) -> (y, h_n[, c_n])."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, *state):
        lstm = isinstance(self.rnn, torch.nn.LSTM)
        if state:
            y, hn = self.rnn(x, tuple(state) if lstm else state[0])
        else:
            y, hn = self.rnn(x)
        return (y, *hn) if lstm else (y, hn)


TORCH_CASES = [  # cell, constructor keywords, initial states as inputs
    ("LSTM", {}, False),
    ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True), True),
    ("GRU", dict(num_layers=2, bidirectional=True), True),
    ("GRU", dict(batch_first=True), False),
    ("RNN", dict(num_layers=2, bidirectional=True, batch_first=True), True),
    ("RNN", dict(nonlinearity="relu"), False),
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("cell, kw, with_state", TORCH_CASES)
def test_torch_export_matches_torch(cell, kw, with_state, dtype):
    torch.manual_seed(0)
    I, H = 3, 4
    rnn = getattr(torch.nn, cell)(I, H, **kw)
    module = Wrapped(rnn).eval().to(torch.float64 if dtype == F64 else torch.float32)
    bf, L = kw.get("batch_first", False), kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    n_state = (2 if cell == "LSTM" else 1) if with_state else 0
    names = ["x", "h0", "c0"][:1 + n_state]
    outputs = ["y", "h_n", "c_n"][:3 if cell == "LSTM" else 2]
    dynamic = {"x": {0: "batch", 1: "time"} if bf else {0: "time", 1: "batch"},
               "y": {0: "batch", 1: "time"} if bf else {0: "time", 1: "batch"}}
    dynamic.update({n: {1: "batch"} for n in names[1:] + outputs[1:]})

    def inputs(B, T):
        x = torch.randn((B, T, I) if bf else (T, B, I), dtype=torch.float64)
        return [x] + [torch.randn(L, B, H, dtype=torch.float64) for _ in range(n_state)]

    tdt = torch.float64 if dtype == F64 else torch.float32
    model = load(export(module, tuple(a.to(tdt) for a in inputs(2, 4)), names, outputs, dynamic))
    assert model.input_names == tuple(names) and model.output_names == tuple(outputs)
    for B, T in [(1, 1), (3, 6), (2, 9)]:
        args = [a.to(tdt) for a in inputs(B, T)]
        with torch.no_grad():
            want = module(*args)
        got = model(*[a.numpy() for a in args])
        for name, g, w in zip(outputs, got, want):
            assert g.dtype == dtype
            assert_close(g, w.numpy(), dtype, f"{cell} {kw} B={B} T={T} {name}", rtol=rtol(dtype))


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(5, 6, batch_first=True)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        return torch.log_softmax(self.head(y), dim=-1)


def test_lstm_then_linear_from_a_file_and_a_proto(tmp_path):
    torch.manual_seed(1)
    module = Tagger().eval()
    data = export(module, (torch.randn(2, 4, 5),), ["x"], ["logp"],
                  {"x": {0: "batch", 1: "time"}, "logp": {0: "batch", 1: "time"}})
    path = tmp_path / "tagger.onnx"
    path.write_bytes(data)
    for model in (load(path), load(str(path)), load(onnx.load_from_string(data))):
        for B, T in [(1, 3), (4, 7)]:
            x = torch.randn(B, T, 5)
            with torch.no_grad():
                want = module(x).numpy()
            got = model.run({"x": x.numpy()})
            assert list(got) == ["logp"]
            assert_close(got["logp"], want, F32, f"tagger B={B} T={T}")


def test_weights_are_converted_once_at_load(monkeypatch):
    from fusedrnn.onnx import _recurrent

    calls = []
    real = _recurrent.from_onnx_direction
    monkeypatch.setattr(_recurrent, "from_onnx_direction", lambda *a: calls.append(1) or real(*a))
    module = Wrapped(torch.nn.GRU(2, 3, bidirectional=True)).eval()
    model = load(export(module, (torch.randn(3, 1, 2),), ["x"], ["y", "h"], {"x": {0: "t"}}))
    assert len(calls) == 2  # one per direction
    for _ in range(3):
        model(np.ones((3, 1, 2), F32))
    assert len(calls) == 2


# ---- hand-built recurrent graphs against onnxruntime ----------------------------------------

def recurrent_graph(cell, direction="forward", *, T=5, B=4, I=3, H=4, layout=0, opset=14,
                    seed=0, P=None, **attrs):
    """One LSTM/GRU/RNN node with random weights, inputs X, sequence_lens, initial_h[, initial_c]."""
    rng = np.random.default_rng(seed)
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[cell]
    nd = 2 if direction == "bidirectional" else 1
    init = [numpy_helper.from_array(rng.uniform(-.6, .6, s).astype(F32), n)
            for n, s in (("W", (nd, G * H, I)), ("R", (nd, G * H, H)), ("B", (nd, 2 * G * H)))]
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    if cell == "LSTM":
        names.append("initial_c")
        if P is not None:
            names.append("P")
            init.append(numpy_helper.from_array(np.full((nd, 3 * H), P, F32), "P"))
    if cell == "GRU":
        attrs.setdefault("linear_before_reset", 1)
    if layout:
        attrs["layout"] = layout
    outs = ["Y", "Y_h", "Y_c"][:3 if cell == "LSTM" else 2]
    node = helper.make_node(cell, names, outs, name="rec", direction=direction, hidden_size=H, **attrs)
    xs, hs = ([T, B, I], [nd, B, H]) if layout == 0 else ([B, T, I], [B, nd, H])
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, xs),
           helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B])]
    ins += [helper.make_tensor_value_info(n, TensorProto.FLOAT, hs) for n in names[5:7]]
    ys = [T, nd, B, H] if layout == 0 else [B, T, nd, H]
    out_vi = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ys)]
    out_vi += [helper.make_tensor_value_info(n, TensorProto.FLOAT, hs) for n in outs[1:]]
    graph = helper.make_graph([node], "g", ins, out_vi, init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def feeds_for(cell, direction, rng, T=5, B=4, I=3, H=4, lengths=(5, 2, 0, 1)):
    nd = 2 if direction == "bidirectional" else 1
    f = {"X": rng.standard_normal((T, B, I)).astype(F32),
         "sequence_lens": np.array(lengths, np.int32),
         "initial_h": rng.standard_normal((nd, B, H)).astype(F32)}
    if cell == "LSTM":
        f["initial_c"] = rng.standard_normal((nd, B, H)).astype(F32)
    return f


def ort_run(proto, feeds):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell, acts", [("LSTM", None), ("LSTM", ["Sigmoid", "Relu", "Relu"]),
                                        ("GRU", None), ("RNN", None), ("RNN", ["Relu"])])
def test_sequence_lens_and_states_match_onnxruntime(cell, acts, direction, rng):
    attrs = {} if acts is None else {"activations": acts * (2 if direction == "bidirectional" else 1)}
    proto = recurrent_graph(cell, direction, **attrs)
    model = load(proto)
    for lengths in [(5, 2, 0, 1), (5, 5, 5, 5)]:
        feeds = feeds_for(cell, direction, rng, lengths=lengths)
        want = ort_run(proto, feeds)
        got = model.run(feeds)
        for name, w in zip(model.output_names, want):
            assert_close(got[name], w, F32, f"{cell} {direction} {acts} {lengths} {name}")
        if lengths[2] == 0:  # as onnxruntime: zero outputs and zero final states
            assert not got["Y"][:, :, 2].any() and not got["Y_h"][:, 2].any()


def test_layout_1_is_layout_0_transposed(rng):
    feeds = feeds_for("LSTM", "bidirectional", rng, lengths=(3, 5, 1, 4))
    want = ort_run(recurrent_graph("LSTM", "bidirectional"), feeds)  # onnxruntime has no layout=1
    model = load(recurrent_graph("LSTM", "bidirectional", layout=1))
    got = model(feeds["X"].transpose(1, 0, 2), feeds["sequence_lens"],
                feeds["initial_h"].transpose(1, 0, 2), feeds["initial_c"].transpose(1, 0, 2))
    assert_close(got[0], want[0].transpose(2, 0, 1, 3), F32, "Y")
    assert_close(got[1], want[1].transpose(1, 0, 2), F32, "Y_h")
    assert_close(got[2], want[2].transpose(1, 0, 2), F32, "Y_c")


def test_zero_peepholes_are_accepted(rng):
    proto = recurrent_graph("LSTM", "forward", P=0.0)
    feeds = feeds_for("LSTM", "forward", rng)
    assert_close(load(proto).run(feeds)["Y_h"], ort_run(proto, feeds)[1], F32, "Y_h")


# ---- the plumbing operators against onnxruntime ---------------------------------------------

def plumbing_graph(opset):
    """Every NumPy operator on x (2, 3, 4), in the forms the given opset spells them."""
    c = numpy_helper.from_array
    init = [c(np.array([6, -1], np.int64), "shape2"), c(np.array([0, -1], np.int64), "shape0"),
            c(np.array([-1, 0, 2], np.int64), "idx"), c(np.array([1, 3, -2], np.int64).reshape(1, 3, 1), "ex_small"),
            c(np.array([2, 1, 4], np.int64), "ex_shape"), c(np.array([-7, 7, 9], np.int64), "num"),
            c(np.array([2, -2, 4], np.int64), "den"), c(np.linspace(-1, 1, 20, dtype=F32).reshape(5, 4), "Wg"),
            c(np.arange(5, dtype=F32), "Cg"), c(np.array([0], np.int64), "ax0"),
            c(np.linspace(-2, 2, 8, dtype=F32).reshape(4, 2), "Wm")]
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["shp"]),
             n("ConstantOfShape", ["shp"], ["ones"], value=c(np.array([3], np.int64))),
             n("Cast", ["ones"], ["onesf"], to=TensorProto.FLOAT),
             n("Div", ["num", "den"], ["q"]), n("Cast", ["q"], ["qf"], to=TensorProto.FLOAT),
             n("Gather", ["x", "idx"], ["g"], axis=2),
             n("Expand", ["ex_small", "ex_shape"], ["ex"]), n("Cast", ["ex"], ["exf"], to=TensorProto.FLOAT),
             n("Mul", ["x", "exf"], ["m"]), n("Sub", ["m", "onesf"], ["s"]),
             n("Transpose", ["s"], ["tr"], perm=[2, 0, 1]),
             n("Reshape", ["x", "shape2"], ["r2"]), n("Reshape", ["x", "shape0"], ["r0"]),
             n("Gemm", ["r2", "Wg", "Cg"], ["gm"], transB=1, alpha=0.5, beta=2.0),
             n("MatMul", ["x", "Wm"], ["mm"]), n("Relu", ["r0"], ["rl"]),
             n("Sigmoid", ["x"], ["sg"]), n("Tanh", ["sg"], ["th"]), n("Add", ["th", "x"], ["ad"]),
             n("Softmax", ["x"], ["sm"], axis=1), n("LogSoftmax", ["x"], ["lsm"]),
             n("Dropout", ["ad"], ["dr"]), n("Identity", ["dr"], ["idn"]),
             n("Concat", ["x", "x"], ["cc"], axis=-1)]
    if opset >= 10:
        init += [c(np.array([-1, 3], np.int64), "st"), c(np.array([-100, 0], np.int64), "en"),
                 c(np.array([1, 2], np.int64), "sa"), c(np.array([-1, 2], np.int64), "ss")]
        nodes.append(n("Slice", ["cc", "st", "en", "sa", "ss"], ["sl"]))
    else:
        nodes.append(n("Slice", ["cc"], ["sl"], starts=[1, 3], ends=[3, 100], axes=[1, 2]))
    if opset >= 13:
        nodes += [n("Unsqueeze", ["g", "ax0"], ["us"]), n("Squeeze", ["us", "ax0"], ["sq"])]
    else:
        nodes += [n("Unsqueeze", ["g"], ["us"], axes=[0]), n("Squeeze", ["us"], ["sq"], axes=[0])]
    ranks = dict(shp=1, qf=1, tr=3, gm=2, mm=3, rl=2, idn=3, sm=3, lsm=3, sl=3, sq=3)
    graph = helper.make_graph(nodes, "plumbing", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.INT64 if o == "shp" else
                                                             TensorProto.FLOAT, [None] * r)
                               for o, r in ranks.items()], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [9, 11, 13, 17])
def test_plumbing_operators_match_onnxruntime(opset, rng):
    proto = plumbing_graph(opset)
    x = (rng.standard_normal((2, 3, 4)) * 4).astype(F32)
    want = ort_run(proto, {"x": x})
    got = load(proto)(x)
    for name, g, w in zip(load(proto).output_names, got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (name, g.shape, w.shape)
        assert_close(g, w, F32, f"opset {opset} {name}")


# ---- errors ---------------------------------------------------------------------------------

def test_unsupported_operators_are_all_listed_at_load():
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"]), n("MaxPool", ["c"], ["p"], kernel_shape=[2, 2]),
             n("Relu", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)],
                              [numpy_helper.from_array(np.ones((1, 1, 2, 2), F32), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ValueError, match=r"does not support: Conv, MaxPool \(supported: .*LSTM"):
        load(proto)


@pytest.mark.parametrize("cell, kw, match", [
    ("GRU", dict(linear_before_reset=0), "node 'rec'.*linear_before_reset=0"),
    ("LSTM", dict(P=0.5), "node 'rec'.*P \\(peephole"),
    ("LSTM", dict(clip=3.0), "node 'rec'.*clip=3.0"),
    ("LSTM", dict(input_forget=1), "node 'rec'.*input_forget=1"),
    ("LSTM", dict(activations=["Sigmoid", "Tanh", "HardSigmoid"]), "node 'rec'.*activations"),
    ("GRU", dict(activations=["Sigmoid", "Relu"]), "node 'rec'.*activations"),
])
def test_unsupported_recurrent_attributes_raise_at_load(cell, kw, match):
    with pytest.raises(ValueError, match=match):
        load(recurrent_graph(cell, **kw))


def test_hidden_size_mismatch_raises():
    proto = recurrent_graph("RNN")
    proto.graph.node[0].attribute[-1].i = 7  # hidden_size
    assert proto.graph.node[0].attribute[-1].name == "hidden_size"
    with pytest.raises(ValueError, match="hidden_size=7 does not match"):
        load(proto)


def test_run_time_input_checks(rng):
    model = load(recurrent_graph("LSTM", "bidirectional"))
    feeds = feeds_for("LSTM", "bidirectional", rng)
    with pytest.raises(ValueError, match=r"missing \['initial_c'\]; unknown \['c0'\]"):
        model.run({**{k: v for k, v in feeds.items() if k != "initial_c"}, "c0": feeds["initial_c"]})
    with pytest.raises(TypeError, match="input 'X' must have dtype float32, got float64"):
        model.run({**feeds, "X": feeds["X"].astype(F64)})
    with pytest.raises(ValueError, match=r"input 'X' must have rank 3, shape \(5, 4, 3\), got shape \(5, 4\)"):
        model.run({**feeds, "X": feeds["X"][..., 0]})
    with pytest.raises(ValueError, match=r"input 'initial_h' must have shape \(2, 4, 4\).*axis 1 must be 4"):
        model.run({**feeds, "initial_h": feeds["initial_h"][:, :3]})
    with pytest.raises(ValueError, match=r"LSTM node 'rec': sequence_lens must lie in 0..T = 0..5"):
        model.run({**feeds, "sequence_lens": np.array([6, 1, 1, 1], np.int32)})
    with pytest.raises(TypeError, match="given both by position and by name"):
        model(feeds["X"], X=feeds["X"])


def test_symbolic_sizes_must_agree_between_inputs():
    module = Wrapped(torch.nn.RNN(2, 3)).eval()
    model = load(export(module, (torch.randn(4, 2, 2), torch.randn(1, 2, 3)), ["x", "h0"], ["y", "h"],
                        {"x": {0: "time", 1: "batch"}, "h0": {1: "batch"}}))
    with pytest.raises(ValueError, match="input 'h0' has size 5 on axis 1, but that axis is 'batch', "
                                         "which input 'x' sets to 2"):
        model(np.zeros((4, 2, 2), F32), np.zeros((1, 5, 3), F32))


def test_bad_models_and_a_missing_onnx(monkeypatch):
    with pytest.raises(TypeError, match="model must be a path, bytes or an onnx.ModelProto, got int"):
        load(3)
    graph = helper.make_graph([helper.make_node("Relu", ["nowhere"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        load(helper.make_model(graph))
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install "fusedrnn\[onnx\]"'):
        fusedrnn.onnx.load(b"")
