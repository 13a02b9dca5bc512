"""`fusedrnn bench --device cuda`: the fusedrnn-cuda contender is validated against the float64
reference and timed (CUDA events); on the emulated device the output says the times are
emulated.  Without a device the flag is a clear usage error."""

import json

import numpy as np
import pytest

import fusedrnn
from fusedrnn.cli import main

FAST = ["--warmup", "1", "--repeats", "2", "--min-time", "0", "--settle", "0", "--threads", "1"]


@pytest.mark.skipif(not fusedrnn.cuda_available(), reason="no CUDA device: fusedrnn.cuda_available() is False")
def test_bench_device_cuda_validates_and_times(tmp_path, capsys):
    js = tmp_path / "out.json"
    code = main(["bench", "--device", "cuda", "--cell", "lstm,gru", "-B", "3", "-T", "5", "-I", "6", "-H", "8",
                 "--layers", "2", "--bidirectional", "--json", str(js), *FAST])
    assert code == 0
    printed = capsys.readouterr().out
    emulated = fusedrnn.build_info()["cuda_emulated"]
    assert ("EMULATED CUDA" in printed) == emulated
    doc = json.loads(js.read_text())
    assert doc["header"]["fusedrnn"]["cuda_emulated"] == emulated
    assert doc["header"]["settings"]["contenders"] == ["fusedrnn", "fusedrnn-cuda"]
    for case in doc["cases"]:
        assert case["validation"]["status"] == "ok", case["validation"]
        err = case["validation"]["contenders"]["fusedrnn-cuda"]["max_error"]
        assert err <= case["validation"]["tolerance"]
        res = case["results"]["fusedrnn-cuda"]
        assert res["status"] == "ok" and res["median_ms"] > 0 and np.isfinite(res["speedup"])
        assert res["peak_bytes"] is None  # host memory says nothing about the device


@pytest.mark.skipif(fusedrnn.cuda_available(), reason="a CUDA device is available")
def test_bench_device_cuda_without_a_device_is_a_usage_error(capsys):
    assert main(["bench", "--device", "cuda", "-B", "2", "-T", "3", "-H", "4"]) == 2
    assert "error: --device cuda: device='cuda'" in capsys.readouterr().err
