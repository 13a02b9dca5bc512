"""fusedrnn.onnx.load on graphs that tf2onnx wrote from Keras models (tests/data/tf2onnx, made by
make_fixtures.py there), against the outputs Keras itself computed for the stored inputs.
tf2onnx writes Keras' LSTM, GRU (reset_after) and Bidirectional layers as ONNX recurrent nodes
with its own plumbing around them (Shape, Slice, Concat and Expand for the zero initial states,
Cast, Squeeze, Transpose); SimpleRNN it writes as a Loop, which load refuses."""

import os

import numpy as np
import pytest
from conftest import assert_close

pytest.importorskip("onnx")
from fusedrnn.onnx import load  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tf2onnx")
MODELS = ["lstm_last", "gru_sequences", "bidirectional_lstm", "stacked_classifier"]


@pytest.mark.parametrize("name", MODELS)
def test_tf2onnx_graph_matches_keras(name):
    model = load(os.path.join(DATA, name + ".onnx"))
    (inp,) = model.input_names
    cases = np.load(os.path.join(DATA, name + ".npz"))
    n = len(cases.files) // 2
    assert n >= 2  # batch 3 and 1; the two with a free time axis also T = 11 and T = 1
    for i in range(n):
        x, want = cases[f"x{i}"], cases[f"y{i}"]
        (got,) = model(x)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert_close(got, want, np.float32, f"{name} case {i} (x {x.shape})", rtol=1e-5)
        np.testing.assert_array_equal(model.run({inp: x})[model.output_names[0]], got)


def test_tf2onnx_simplernn_loop_is_refused():
    with pytest.raises(ValueError, match=r"does not support: .*Loop"):
        load(os.path.join(DATA, "simplernn.onnx"))
