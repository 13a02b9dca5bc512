"""The torch-cuda contender of `fusedrnn bench` (torch.nn on torch's CUDA device, cuDNN).

Runs in every build.  Without a CUDA build of torch (CI) the contender's own code (weights,
inputs and states moved to the device, the timed call, the results copied back) runs on torch
device 'cpu' with a host timer, through the two class attributes ``_TorchCuda.device`` and
``_TorchCuda.timer`` that exist for this; its outputs and gradients must match the float64
reference, and run_case must time it through ``timed_run``.  The unavailable path (no torch, or
``torch.cuda.is_available()`` False) is checked too; tests/cuda/test_cuda_bench.py runs
``--device cuda`` itself.
"""

import sys
import time

import numpy as np
import pytest

from fusedrnn.bench import contenders, report, timing
from fusedrnn.bench.cases import Case, make_inputs
from fusedrnn.bench.validation import TOLERANCE, max_error, validate
from fusedrnn.cli import main

torch = pytest.importorskip("torch")


class HostTimer:
    """begin()/end() -> ms like the CUDA event timer, on the host clock; counts its calls."""

    ends = 0

    def __init__(self, torch_module):
        assert torch_module is torch
        self._start = None

    def begin(self):
        self._start = time.perf_counter()

    def end(self) -> float:
        assert self._start is not None, "end() without begin()"
        HostTimer.ends += 1
        elapsed = (time.perf_counter() - self._start) * 1e3
        self._start = None
        return elapsed


@pytest.fixture
def torch_cuda_on_cpu(monkeypatch):
    """torch-cuda's code on torch device 'cpu', timed by HostTimer."""
    monkeypatch.setattr(contenders._TorchCuda, "device", "cpu")
    monkeypatch.setattr(contenders._TorchCuda, "timer", HostTimer)
    monkeypatch.setattr(HostTimer, "ends", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CASES = [Case(cell, 3, 5, 6, 8, mode=mode) for cell in ("lstm", "gru", "rnn") for mode in ("fwd", "fwdbwd")]
CASES += [Case("lstm", 3, 5, 6, 8, layers=2, bidirectional=True, mode="fwdbwd"),
          Case("gru", 2, 4, 5, 7, layers=2, bidirectional=True, dtype="float64", mode="fwdbwd"),
          Case("rnn", 2, 4, 5, 7, layers=3, mode="fwd")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label.replace(" ", "-"))
def test_torch_cuda_code_matches_the_reference(torch_cuda_on_cpu, case):
    inputs = make_inputs(case, seed=3)
    oracle = contenders.make("numpy", case, inputs.astype(np.float64))
    expected = oracle.results(oracle.run())
    contender = contenders.make("torch-cuda", case, inputs)
    assert isinstance(contender, contenders._TorchCuda) and contender.x.device.type == "cpu"
    seconds, ret = contender.timed_run()
    assert seconds >= 0 and HostTimer.ends == 1
    got = contender.results(ret)
    assert set(got) == set(expected)  # out, h_n (c_n), and with fwdbwd every gradient
    if case.mode == "fwdbwd":
        assert {"dx", "dh0", "dw_ih_l0", "db_hh_l0"} <= set(got)
    for name in expected:
        assert got[name].dtype == np.dtype(case.dtype), name
        err = max_error(got[name], expected[name])
        assert err <= TOLERANCE[case.dtype], f"{name}: max error {err:.2e}"
    report_ = validate(case, ("torch-cuda",), seed=3)
    assert report_["status"] == "ok", report_
    assert report_["contenders"]["torch-cuda"]["max_error"] <= TOLERANCE[case.dtype]


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_run_case_times_torch_cuda_through_its_timer(torch_cuda_on_cpu, mode):
    case = Case("lstm", 2, 4, 5, 6, layers=2, bidirectional=True, mode=mode)
    settings = timing.Settings(contenders=("fusedrnn", "torch-cuda"), warmup=1, repeats=3, min_time=0,
                               settle=0, seed=1)
    result = timing.run_case(case, settings)
    assert result["validation"]["status"] == "ok", result["validation"]
    res = result["results"]["torch-cuda"]
    assert res["status"] == "ok" and res["calls"] >= 3 and res["median_ms"] > 0
    assert np.isfinite(res["speedup"]) and res["peak_bytes"] is None  # device memory: not measured
    # every warm-up and timed call went through timed_run, i.e. the contender's own timer
    assert HostTimer.ends >= res["calls"] + settings.warmup


def test_unavailable_contender_is_listed_not_run():
    case = Case("gru", 2, 3, 4, 4, mode="fwdbwd")
    settings = timing.Settings(contenders=("fusedrnn", "torch-cuda"), warmup=1, repeats=1, min_time=0,
                               settle=0, unavailable={"torch-cuda": "no GPU here"})
    result = timing.run_case(case, settings)
    assert result["results"]["torch-cuda"] == {"status": "unavailable: no GPU here", "speedup": None}
    assert set(result["validation"]["contenders"]) == {"fusedrnn"}
    assert result["results"]["fusedrnn"]["status"] == "ok"


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch has a CUDA device here")
def test_reason_without_a_cuda_device():
    reason = contenders.torch_cuda_unavailable()
    assert reason.startswith("torch.cuda.is_available() is False") and torch.__version__ in reason
    info = contenders.torch_cuda_info()
    assert info["available"] is False and info["reason"] == reason
    assert info["torch"] == torch.__version__ and isinstance(info["cudnn_enabled"], bool)
    assert "cudnn_version" in info
    assert report.torch_cuda_line(info) == f"torch-cuda: unavailable: {reason}"


def test_reason_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    reason = contenders.torch_cuda_unavailable()
    assert reason.startswith("torch is not installed")
    assert contenders.torch_cuda_info() == {"available": False, "reason": reason}


def test_header_line_of_an_available_torch_cuda():
    info = {"available": True, "reason": None, "torch": "2.13.0", "cuda": "12.8", "cudnn_available": True,
            "cudnn_enabled": True, "cudnn_version": 91000, "device": "NVIDIA H100",
            "float32": "cudnn.rnn.fp32_precision=ieee"}
    line = report.torch_cuda_line(info)
    assert "torch 2.13.0 (CUDA 12.8) on NVIDIA H100" in line and "cuDNN 91000 enabled" in line
    assert "cuDNN 91000 DISABLED" in report.torch_cuda_line(dict(info, cudnn_enabled=False))


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch has a CUDA device here")
def test_asking_for_torch_cuda_without_a_device_is_a_usage_error(capsys):
    assert main(["bench", "--contenders", "fusedrnn,torch-cuda", "-B", "2", "-T", "3", "-H", "4"]) == 2
    err = capsys.readouterr().err
    assert "--contenders names torch-cuda" in err and "torch.cuda.is_available() is False" in err
