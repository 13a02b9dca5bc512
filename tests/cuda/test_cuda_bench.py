"""`fusedrnn bench --device cuda`: the fusedrnn-cuda contender is validated against the float64
reference and timed (CUDA events); on the emulated device the output says the times are
emulated.  torch-cuda (torch.nn on torch's CUDA device, cuDNN) is in the default list: timed
beside it where torch has a CUDA device, else listed in every case as unavailable, with the
reason, while the rest runs.  Without a device the flag is a clear usage error."""

import json

import numpy as np
import pytest

import fusedrnn
from fusedrnn.bench.contenders import torch_cuda_unavailable
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
    assert doc["header"]["settings"]["contenders"] == ["fusedrnn", "fusedrnn-cuda", "torch-cuda"]
    reason = torch_cuda_unavailable()  # None where torch has a CUDA device
    info = doc["header"]["torch_cuda"]
    assert info["available"] is (reason is None) and info["reason"] == reason
    assert len(doc["cases"]) == 4
    for case in doc["cases"]:
        assert case["validation"]["status"] == "ok", case["validation"]
        timed = ["fusedrnn-cuda"] if reason else ["fusedrnn-cuda", "torch-cuda"]
        assert sorted(case["validation"]["contenders"]) == sorted(["fusedrnn", *timed])
        for name in timed:
            err = case["validation"]["contenders"][name]["max_error"]
            assert err <= case["validation"]["tolerance"]
            res = case["results"][name]
            assert res["status"] == "ok" and res["median_ms"] > 0 and np.isfinite(res["speedup"])
            assert res["peak_bytes"] is None  # host memory says nothing about the device
        if reason:
            assert case["results"]["torch-cuda"]["status"] == f"unavailable: {reason}"
    if reason:
        assert f"torch-cuda: unavailable: {reason}" in printed
        assert printed.count("torch-cuda  unavailable (see the header)") == 4
    else:
        assert info["cudnn_enabled"] in (True, False) and "cudnn_version" in info and info["device"]
        assert f"torch-cuda: torch {info['torch']}" in printed


@pytest.mark.skipif(not fusedrnn.cuda_available(), reason="no CUDA device: fusedrnn.cuda_available() is False")
def test_bench_device_cuda_names_only_the_asked_contenders(tmp_path):
    js = tmp_path / "out.json"
    code = main(["bench", "--device", "cuda", "--contenders", "fusedrnn,fusedrnn-cuda", "--cell", "rnn",
                 "--mode", "fwd", "-B", "2", "-T", "3", "-H", "4", "--json", str(js), *FAST])
    assert code == 0
    doc = json.loads(js.read_text())
    assert doc["header"]["settings"]["contenders"] == ["fusedrnn", "fusedrnn-cuda"]
    assert "torch_cuda" not in doc["header"] and doc["header"]["settings"]["unavailable"] == {}


@pytest.mark.skipif(not fusedrnn.cuda_available() or torch_cuda_unavailable() is None,
                    reason="needs fusedrnn's CUDA device and torch without one")
def test_asking_for_torch_cuda_without_a_torch_device_is_a_usage_error(capsys):
    code = main(["bench", "--device", "cuda", "--contenders", "fusedrnn-cuda,torch-cuda", "-B", "2", "-T", "3",
                 "-H", "4"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--contenders names torch-cuda (torch.nn on torch's CUDA device), which cannot run here: " \
           f"{torch_cuda_unavailable()}" in err


@pytest.mark.skipif(fusedrnn.cuda_available(), reason="a CUDA device is available")
def test_bench_device_cuda_without_a_device_is_a_usage_error(capsys):
    assert main(["bench", "--device", "cuda", "-B", "2", "-T", "3", "-H", "4"]) == 2
    assert "error: --device cuda: device='cuda'" in capsys.readouterr().err
