"""`fusedrnn bench --contenders ...,onnxruntime`: the exported case run by onnxruntime is
validated against the float64 reference like every contender, timed in fwd mode, and left out
(with a note) of fwdbwd and float64 cases."""

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import fusedrnn  # noqa: E402
from fusedrnn.bench import contenders  # noqa: E402
from fusedrnn.bench.cases import Case, make_inputs  # noqa: E402
from fusedrnn.cli import main  # noqa: E402

FAST = ["--warmup", "1", "--repeats", "3", "--min-time", "0.005", "--settle", "0.02", "--threads", "1"]


@pytest.fixture(autouse=True)
def restore_threads():
    before = fusedrnn.get_num_threads()
    yield
    fusedrnn.set_num_threads(before)
    contenders.set_onnxruntime_threads(before)


def test_onnxruntime_contender_through_the_cli(tmp_path, capsys):
    js = tmp_path / "out.json"
    code = main(["bench", "--cell", "lstm,gru", "-B", "3", "-T", "5", "-I", "6", "-H", "8", "--layers", "2",
                 "--bidirectional", "--contenders", "fusedrnn,onnxruntime", "--json", str(js), *FAST])
    assert code == 0
    printed = capsys.readouterr().out
    assert "excluded: onnxruntime runs inference only (fwd mode)" in printed
    data = json.loads(js.read_text())
    assert data["header"]["threads"]["onnxruntime"] == 1
    assert data["header"]["onnxruntime"]["version"]
    by_mode = {}
    for case in data["cases"]:
        by_mode.setdefault(case["case"]["mode"], []).append(case)
    for case in by_mode["fwd"]:
        ort = case["results"]["onnxruntime"]
        assert ort["status"] == "ok" and ort["median_ms"] > 0 and ort["speedup"] > 0
        checked = case["validation"]["contenders"]["onnxruntime"]
        assert checked["max_error"] <= case["validation"]["tolerance"]
    for case in by_mode["fwdbwd"]:
        assert case["results"]["onnxruntime"]["status"].startswith("excluded")
        assert "onnxruntime" not in case["validation"]["contenders"]
        assert case["results"]["fusedrnn"]["status"] == "ok"


def test_float64_case_leaves_onnxruntime_out(tmp_path):
    js = tmp_path / "out.json"
    code = main(["bench", "--cell", "rnn", "-B", "2", "-T", "3", "-H", "4", "--mode", "fwd", "--dtype",
                 "float64", "--contenders", "fusedrnn,onnxruntime", "--json", str(js), *FAST])
    assert code == 0
    results = json.loads(js.read_text())["cases"][0]["results"]
    assert "float32 only" in results["onnxruntime"]["status"]
    assert results["fusedrnn"]["status"] == "ok"


def test_wrong_onnxruntime_results_fail_validation(tmp_path, monkeypatch):
    real = contenders._OnnxRuntime.run

    def wrong(self):
        out, *states = real(self)
        return [out * 1.01, *states]

    monkeypatch.setattr(contenders._OnnxRuntime, "run", wrong)
    js = tmp_path / "out.json"
    code = main(["bench", "--cell", "gru", "-B", "2", "-T", "3", "-H", "4", "--mode", "fwd",
                 "--contenders", "fusedrnn,onnxruntime", "--json", str(js), *FAST])
    assert code == 1
    case = json.loads(js.read_text())["cases"][0]
    assert case["validation"]["contenders"]["onnxruntime"]["worst"] == "out"
    assert case["results"]["onnxruntime"] == {"status": "not timed (validation failed)"}


def test_session_settings_and_results():
    contenders.set_onnxruntime_threads(2)
    case = Case("lstm", 3, 4, 5, 6, layers=2, bidirectional=True)
    inputs = make_inputs(case, 0)
    ort = contenders.make("onnxruntime", case, inputs)
    opts = ort.session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)
    ours = contenders.make("fusedrnn", case, inputs)
    got, expected = ort.results(ort.run()), ours.results(ours.run())
    assert sorted(got) == sorted(expected) == ["c_n", "h_n", "out"]
    for key in got:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="inference only"):
        contenders.make("onnxruntime", Case("gru", 2, 3, 4, 4, mode="fwdbwd"), inputs)
