"""pytest plugin: run the CPU test suite again with the CUDA kernels.

    python -m pytest -p device_plugin tests/test_kernels.py tests/test_layers.py ...
    (with tests/cuda on PYTHONPATH; scripts/cuda_checks.sh does this)

It makes ``device='cuda'`` the default of ``fusedrnn.ops.*_forward`` and of the LSTM, GRU and
RNN constructors, so every op, layer and trainer test of those files runs the CUDA kernels
(on the emulated device in a FUSEDRNN_CUDA_EMULATION build) against the same oracles.  Tests
that name a device themselves keep it.  Without a CUDA device every test is skipped, with the
reason shown.
"""

import functools

import pytest

# Tests of the CPU build's own machinery, with no device counterpart in these files (the
# device's are in tests/cuda): the host block cache that NaN-poisoned outputs return to.
CPU_ONLY = {
    "test_reused_scratch_is_not_read": "poisons the CPU block cache (device: tests/cuda/test_cuda_ops.py)",
    "test_empty_cache_returns_blocks": "the CPU block cache",
}

_calls = {"forward": 0, "backward": 0}


def _counted(fn, key):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _calls[key] += 1
        return fn(*args, **kwargs)

    return wrapper


def _default_cuda(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        kwargs.setdefault("device", "cuda")
        return fn(*args, **kwargs)

    return wrapper


def pytest_configure(config):
    import fusedrnn
    from fusedrnn import _core, layers, ops

    config.addinivalue_line("markers", "cpu_only: exercises the CPU kernels themselves")
    if not fusedrnn.cuda_available():
        config._fusedrnn_no_cuda = True  # noqa: SLF001 - read back in collection below
        return
    for name in ("lstm_forward", "gru_forward", "rnn_forward"):
        setattr(ops, name, _default_cuda(getattr(ops, name)))
    for cls in (layers.LSTM, layers.GRU, layers.RNN):
        cls.__init__ = _default_cuda(cls.__init__)
    _core.cuda_forward = _counted(_core.cuda_forward, "forward")
    _core.cuda_backward = _counted(_core.cuda_backward, "backward")


def pytest_report_header(config):
    import fusedrnn

    info = fusedrnn.build_info()
    return (f"fusedrnn device plugin: default device 'cuda' (cuda_available={info['cuda_available']}, "
            f"emulated={info['cuda_emulated']})")


def pytest_collection_modifyitems(config, items):
    if getattr(config, "_fusedrnn_no_cuda", False):
        skip = pytest.mark.skip(reason="no CUDA device: fusedrnn.cuda_available() is False in this build")
        for item in items:
            item.add_marker(skip)
        return
    for item in items:
        reason = CPU_ONLY.get(item.originalname)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"CPU only: {reason}"))


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"fusedrnn device plugin: {_calls['forward']} CUDA forward and "
                                f"{_calls['backward']} CUDA backward kernel calls")
