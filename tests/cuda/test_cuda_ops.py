"""The CUDA kernels (fusedrnn.ops with device='cuda') against the NumPy oracle.

The matrix of tests/test_kernels.py (every cell and activation, float32 and float64, states,
lengths, reverse, ragged reverse, the LSTM projection with P < H and P > H) on the device, plus
what is device-specific: NumPy in/out, device arrays in (fusedrnn DeviceArray and zero-copy
__cuda_array_interface__ objects), caches that stay on the device, fresh device memory full
of NaN not leaking into results, and the errors.  On a GPU these run the real kernels; in a
FUSEDRNN_CUDA_EMULATION build the same sources on the emulated device.
"""

import numpy as np
import pytest

from conftest import CELL_CONFIGS, OPTIONS, assert_close, make_case, make_cotangents, run_backward, run_forward
import fusedrnn
from fusedrnn import _core, ops
from fusedrnn import reference as ref

pytestmark = pytest.mark.skipif(not fusedrnn.cuda_available(),
                                reason="no CUDA device: fusedrnn.cuda_available() is False in this build")

DTYPES = [np.float32, np.float64]

MATRIX = [(config, option) for config in CELL_CONFIGS for option in OPTIONS
          if not (OPTIONS[option][2] and CELL_CONFIGS[config][0] != "lstm")]


class _OnDevice:
    """fusedrnn.ops with device='cuda' (for conftest.run_forward)."""

    def __getattr__(self, name):
        fn = getattr(ops, name)
        if name.endswith("_forward"):
            return lambda *a, **k: fn(*a, device="cuda", **k)
        return fn


CUDA = _OnDevice()


def check(rng, cell, act, case, dtype, what, **opts):
    out, h_n, c_n, cache = run_forward(CUDA, cell, act, case, training=True, **opts)
    r_out, r_h, r_c, r_cache = run_forward(ref, cell, act, case, **opts)
    assert isinstance(cache.workspace, _core.DeviceArray), "the workspace stays on the device"
    for name, a, e in (("out", out, r_out), ("h_n", h_n, r_h), ("c_n", c_n, r_c)):
        if e is None:
            assert a is None
            continue
        assert isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype), f"{what}: {name}"
        assert_close(a, e, dtype, f"{what}: {name}")
    dout, dh_n, dc_n = make_cotangents(rng, r_out, r_h, r_c, dtype)
    grads = run_backward(ops, cell, cache, dout, dh_n, dc_n)
    r_grads = run_backward(ref, cell, r_cache, dout, dh_n, dc_n)
    assert set(grads) == set(r_grads), what
    for key in sorted(r_grads):
        assert isinstance(grads[key], np.ndarray) and grads[key].dtype == np.dtype(dtype)
        assert_close(grads[key], r_grads[key], dtype, f"{what}: {key}")
    return out, grads


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("config,option", MATRIX, ids=[f"{c}-{o}" for c, o in MATRIX])
def test_matches_reference(rng, config, option, dtype):
    cell, act = CELL_CONFIGS[config]
    case_opts, fwd_opts, proj = OPTIONS[option]
    T, B, I, H = 5, 3, 4, 17
    case = make_case(rng, cell, T, B, I, H, dtype, proj=proj, **case_opts)
    if case["lengths"] is not None:
        case["lengths"] = np.array([5, 2, 4])
    check(rng, cell, act, case, dtype, f"{config}/{option}", **fwd_opts)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("config", sorted(CELL_CONFIGS))
@pytest.mark.parametrize("option", ["state", "reverse_lengths", "proj_lengths"])
def test_backward_without_dx(rng, config, option, dtype):
    """need_dx=False on the device: dx None, the product skipped, every other gradient the
    same bits as the full backward's."""
    cell, act = CELL_CONFIGS[config]
    case_opts, fwd_opts, proj = OPTIONS[option]
    if proj and cell != "lstm":
        pytest.skip("the projection is the LSTM's")
    case = make_case(rng, cell, 5, 3, 4, 17, dtype, proj=proj, **case_opts)
    out, h_n, c_n, cache = run_forward(CUDA, cell, act, case, training=True, **fwd_opts)
    dout, dh_n, dc_n = make_cotangents(rng, out, h_n, c_n, dtype)
    bwd = getattr(ops, f"{cell}_backward")
    extra = (dc_n,) if cell == "lstm" else ()
    full = bwd(cache, dout, dh_n, *extra)
    part = bwd(cache, dout, dh_n, *extra, need_dx=False)
    assert full["dx"].shape == case["x"].shape and part["dx"] is None
    assert sorted(part) == sorted(full)
    for key in full:
        if key != "dx":
            np.testing.assert_array_equal(part[key], full[key], err_msg=key)


# Sizes where one grid-stride thread handles several items (B*H > blocks * 256 is not
# reachable cheaply; B*H over one block is), B = 1, H = 1, I = 1, T = 1.
SIZES = [(1, 1, 1, 1, 0, None, False), (1, 4, 5, 33, 0, [1, 1, 1, 1], True),
         (6, 1, 7, 16, 0, [4], False), (4, 7, 2, 31, 0, [4, 3, 2, 1, 4, 2, 3], True),
         (3, 20, 3, 40, 0, None, False), (3, 5, 3, 6, 9, [3, 1, 2, 3, 2], True)]


SIZE_MATRIX = [(config, size) for config in CELL_CONFIGS for size in SIZES
               if not (size[4] and CELL_CONFIGS[config][0] != "lstm")]  # projection: LSTM only


@pytest.mark.parametrize("config,size", SIZE_MATRIX,
                         ids=[f"{c}-T{s[0]}-B{s[1]}-I{s[2]}-H{s[3]}-P{s[4]}" for c, s in SIZE_MATRIX])
def test_odd_sizes(rng, config, size):
    cell, act = CELL_CONFIGS[config]
    T, B, I, H, proj, lengths, reverse = size
    case = make_case(rng, cell, T, B, I, H, np.float64, proj=proj)
    case["lengths"] = None if lengths is None else np.array(lengths)
    check(rng, cell, act, case, np.float64, f"{config}/{size}", reverse=reverse)


def test_inference_equals_training_forward(rng):
    case = make_case(rng, "lstm", 6, 4, 5, 9, np.float32, proj=4, lengths=True)
    a = run_forward(CUDA, "lstm", "tanh", case, training=False, reverse=True)
    b = run_forward(CUDA, "lstm", "tanh", case, training=True, reverse=True)
    assert a[3] is None
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)


def test_device_and_host_results_agree_bitwise_in_float64_inputs_on_device(rng):
    """DeviceArray inputs are used in place; a cache made from them differentiates the same."""
    case = make_case(rng, "gru", 5, 3, 4, 6, np.float64, lengths=True)
    dev = {k: (v if k == "lengths" or v is None else _core.DeviceArray.from_numpy(v)) for k, v in case.items()}
    a = run_forward(CUDA, "gru", None, case, training=True)
    b = run_forward(CUDA, "gru", None, dev, training=True)
    np.testing.assert_array_equal(a[0], b[0])
    assert b[3].x is dev["x"], "a DeviceArray argument is not copied"
    ga = run_backward(ops, "gru", a[3], np.ones_like(a[0]))
    gb = run_backward(ops, "gru", b[3], np.ones_like(a[0]))
    for k in ga:
        np.testing.assert_array_equal(ga[k], gb[k])


class _Foreign:
    """Another library's device array: only __cuda_array_interface__ (here over fusedrnn's
    own device memory, which is device memory on either backend)."""

    def __init__(self, dev, **override):
        self.dev = dev
        self.__cuda_array_interface__ = {**dev.__cuda_array_interface__, **override}


def test_cuda_array_interface_is_zero_copy(rng):
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    dev = _core.DeviceArray.from_numpy(x)
    cai = dev.__cuda_array_interface__
    assert cai["shape"] == (4, 2, 3) and cai["typestr"] == "<f4" and cai["version"] == 3
    assert cai["data"] == (dev.ptr, False)
    view = _core.DeviceArray.from_cuda_array_interface(_Foreign(dev))
    assert view.ptr == dev.ptr and view.shape == dev.shape
    np.testing.assert_array_equal(view.numpy(), x)
    # in the ops: the foreign array is read in place
    w = [rng.standard_normal(s).astype(np.float32) * 0.3 for s in ((4, 3), (4, 4))]
    out_dev, _, _ = ops.rnn_forward(_Foreign(dev), *w, device="cuda")
    out_host, _, _ = ops.rnn_forward(x, *w, device="cuda")
    np.testing.assert_array_equal(out_dev, out_host)
    r_out, _, _ = ref.rnn_forward(x, *w)
    assert_close(out_dev, r_out, np.float32, "out")


@pytest.mark.parametrize("override,exc,msg", [
    (dict(typestr="<i4"), TypeError, "typestr '<i4'"),
    (dict(strides=(4, 32, 8)), ValueError, "C-contiguous"),
    (dict(mask=(1, False)), ValueError, "masked"),
    (dict(version=1), ValueError, "version 1"),
    (dict(stream=0), ValueError, "stream 0"),
])
def test_cuda_array_interface_errors(override, exc, msg):
    dev = _core.DeviceArray.from_numpy(np.zeros((4, 2, 3), np.float32))
    with pytest.raises(exc, match=msg):
        _core.DeviceArray.from_cuda_array_interface(_Foreign(dev, **override))


def test_cuda_array_interface_refuses_host_memory():
    host = np.zeros(8, np.float32)
    fake = _Foreign(_core.DeviceArray.from_numpy(host), data=(host.ctypes.data, False))
    with pytest.raises(ValueError, match="not device memory"):
        _core.DeviceArray.from_cuda_array_interface(fake)


def test_fresh_device_memory_full_of_nan_is_not_read(rng):
    """Outputs and workspaces of earlier calls are overwritten with NaN and freed; later calls
    get that memory back (the emulated device reuses it at once) and must still be right."""
    for config in ("lstm-tanh", "gru", "rnn-relu"):
        cell, act = CELL_CONFIGS[config]
        case = make_case(rng, cell, 12, 8, 6, 24, np.float32, lengths=True)
        for _ in range(2):
            out, h, c, cache = run_forward(CUDA, cell, act, case, training=True, reverse=True)
            ws = cache.workspace
            ws.copy_from(np.full(ws.shape, np.nan, np.float32))
            del cache, ws
        check(rng, cell, act, case, np.float32, config, reverse=True)


def test_errors_name_the_argument(rng):
    x = rng.standard_normal((3, 2, 4))
    w_ih, w_hh = rng.standard_normal((8, 4)), rng.standard_normal((8, 2))
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'gpu'"):
        ops.lstm_forward(x, w_ih, w_hh, device="gpu")
    with pytest.raises(TypeError, match="device must be 'cpu' or 'cuda', got int"):
        ops.lstm_forward(x, w_ih, w_hh, device=0)
    dev32 = _core.DeviceArray.from_numpy(w_hh.astype(np.float32))
    with pytest.raises(TypeError, match="w_hh has dtype float32 but x has dtype float64"):
        ops.lstm_forward(x, w_ih, dev32, device="cuda")
    with pytest.raises(ValueError, match=r"w_hh must have shape \(G\*H, P\) = \(8, 2\), got \(2, 8\)"):
        ops.lstm_forward(x, w_ih, _core.DeviceArray.from_numpy(w_hh.T.copy()), device="cuda")
    with pytest.raises(ValueError, match="lengths must lie in 1..T = 1..3"):
        ops.lstm_forward(x, w_ih, w_hh, lengths=[4, 1], device="cuda")
    out, h, c, cache = ops.lstm_forward(x, w_ih, w_hh, training=True, device="cuda")
    with pytest.raises(ValueError, match=r"dout must have shape \(T, B, P\)"):
        ops.lstm_backward(cache, np.zeros((3, 2, 3)))


def test_compiled_entry_points_check_device_arguments():
    D = _core.DeviceArray.from_numpy
    x, w_ih, w_hh = D(np.zeros((3, 2, 4))), D(np.zeros((8, 4))), D(np.zeros((8, 2)))
    b, h0 = D(np.zeros(8)), D(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"w_hh has shape \(8, 2\), expected \(8, 3\)"):
        _core.cuda_forward("lstm", x, w_ih, w_hh, b, b, D(np.zeros((3, 2))), h0, h0, None, False, "tanh", False)
    with pytest.raises(TypeError, match="w_hr must be a DeviceArray or None, got ndarray"):
        _core.cuda_forward("lstm", x, w_ih, w_hh, b, b, np.zeros((2, 2)), h0, h0, None, False, "tanh", False)
    with pytest.raises(ValueError, match="cell must be 'lstm', 'gru' or 'rnn', got 'lstn'"):
        _core.cuda_forward("lstn", x, w_ih, w_hh, b, b, None, h0, h0, None, False, "tanh", False)
    with pytest.raises(ValueError, match="c0 is required"):
        _core.cuda_forward("lstm", x, w_ih, w_hh, b, b, None, h0, None, None, False, "tanh", False)


def test_calls_from_several_threads_agree_with_one_thread(rng):
    """The device calls release the GIL: concurrent calls from Python threads give the
    results of sequential ones."""
    from concurrent.futures import ThreadPoolExecutor

    cases = [make_case(rng, "lstm", 8, 4, 5, 12, np.float64, lengths=True) for _ in range(6)]

    def one(case):
        out, h, c, cache = run_forward(CUDA, "lstm", "tanh", case, training=True, reverse=True)
        return out, run_backward(ops, "lstm", cache, np.ones_like(out))["dw_hh"]

    serial = [one(c) for c in cases]
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(one, cases))
    for (a, ga), (b, gb) in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ga, gb)
