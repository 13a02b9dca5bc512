"""The device API in every build: cuda_device_count(), cuda_available(), build_info(), and
the clear error for device='cuda' in a build without CUDA (this file runs in the CPU build
too, unlike the rest of tests/cuda)."""

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _core


def test_device_facts_agree():
    info = fusedrnn.build_info()
    n = fusedrnn.cuda_device_count()
    assert isinstance(n, int) and n >= 0
    assert info["cuda_device_count"] == n
    assert info["cuda_available"] == fusedrnn.cuda_available() == (info["cuda_compiled"] and n > 0)
    if not info["cuda_compiled"]:
        assert n == 0 and info["cuda_emulated"] is False
    if info["cuda_emulated"]:
        assert n == 1


@pytest.mark.skipif(_core.cuda_compiled, reason="this build has CUDA kernels")
def test_cpu_build_refuses_cuda_clearly(rng):
    x = rng.standard_normal((3, 2, 4))
    with pytest.raises(RuntimeError, match="device='cuda' needs fusedrnn built with CUDA"):
        fusedrnn.ops.gru_forward(x, np.zeros((6, 4)), np.zeros((6, 2)), device="cuda")
    with pytest.raises(RuntimeError, match="FUSEDRNN_CUDA=ON"):
        fusedrnn.LSTM(4, 2, device="cuda")
    assert fusedrnn.LSTM(4, 2, device="cpu").device == "cpu"


def test_bad_device_names():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'cuda:1'"):
        fusedrnn.GRU(2, 2, device="cuda:1")
    with pytest.raises(TypeError, match="device must be 'cpu' or 'cuda', got NoneType"):
        fusedrnn.RNN(2, 2, device=None)
