"""DLPack for device arrays: DeviceArray.from_dlpack (import), DeviceArray.__dlpack__ and
__dlpack_device__ (export), and DLPack producers as arguments of the ops on device='cuda'.

Producers here are fusedrnn's own DeviceArray, thin wrappers that expose only the DLPack
methods, and capsules written field by field with ctypes (the DLPack 1.0 C structs), which
reach what a well-behaved producer never sends: byte offsets, explicit strides, other dtypes,
devices, versions and flags.  Data are compared with NumPy; ownership is checked by counting
the producer's deleter calls and, on the emulated device, by the bytes of device memory in use.
"""

import ctypes
import gc

import numpy as np
import pytest

from conftest import assert_close
import fusedrnn
from fusedrnn import _core, _device, ops
from fusedrnn import reference as ref

pytestmark = pytest.mark.skipif(not fusedrnn.cuda_available(),
                                reason="no CUDA device: fusedrnn.cuda_available() is False in this build")
emulated_only = pytest.mark.skipif(not getattr(_core, "cuda_emulated", False),
                                   reason="counts emulated device memory (FUSEDRNN_CUDA_EMULATION=ON)")

DeviceArray = getattr(_core, "DeviceArray", None)


# --- the DLPack 1.0 C structs, for reading exported capsules and writing test producers --------

class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    pass


DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    pass


DELETER_V = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))
DLManagedTensorVersioned._fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                                     ("deleter", DELETER_V), ("flags", ctypes.c_uint64),
                                     ("dl_tensor", DLTensor)]

READ_ONLY, IS_COPIED = 1, 2

_api = ctypes.pythonapi
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

_NAME, _NAME_V = b"dltensor", b"dltensor_versioned"


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _capsule_destructor(cap):
    """What a producer's capsule destructor does: the deleter, for an unconsumed capsule only."""
    for name, struct in ((_NAME, DLManagedTensor), (_NAME_V, DLManagedTensorVersioned)):
        if _api.PyCapsule_IsValid(cap, name):
            managed = ctypes.cast(_api.PyCapsule_GetPointer(cap, name), ctypes.POINTER(struct))
            managed.contents.deleter(managed)


def managed_of(capsule):
    """The managed tensor inside an unconsumed capsule (versioned or legacy)."""
    name = _NAME_V if "dltensor_versioned" in repr(capsule) else _NAME
    struct = DLManagedTensorVersioned if name == _NAME_V else DLManagedTensor
    address = _api.PyCapsule_GetPointer(id(capsule), name)
    return ctypes.cast(address, ctypes.POINTER(struct)).contents


class Crafted:
    """A DLPack producer over `data` (an address) that writes its capsules with ctypes; every
    field can be set.  `deleted` counts the deleter's calls."""

    def __init__(self, data, shape, *, code=2, bits=32, lanes=1, strides=None, byte_offset=0,
                 device=(2, 0), tensor_device=None, version=(1, 0), flags=0, keep=None):
        self.data, self.shape, self.strides = data, tuple(shape), strides
        self.dtype = (code, bits, lanes)
        self.byte_offset, self.device = byte_offset, device
        self.tensor_device = tensor_device or device
        self.version, self.flags = version, flags
        self.keep = keep  # what owns the memory (a DeviceArray)
        self.deleted = 0
        self.calls = []
        self._live = {}  # address of a managed tensor -> the ctypes objects it points into
        self._deleter = DELETER(lambda m: self._release(ctypes.addressof(m.contents)))
        self._deleter_v = DELETER_V(lambda m: self._release(ctypes.addressof(m.contents)))

    def _release(self, address):
        del self._live[address]
        self.deleted += 1

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        self.calls.append({"stream": stream, "max_version": max_version})
        return self._capsule(versioned=max_version is not None and max_version[0] >= 1)

    def _capsule(self, versioned):
        n = len(self.shape)
        shape = (ctypes.c_int64 * max(n, 1))(*self.shape)
        strides = None if self.strides is None else (ctypes.c_int64 * max(n, 1))(*self.strides)
        managed = DLManagedTensorVersioned() if versioned else DLManagedTensor()
        t = managed.dl_tensor
        t.data = self.data
        t.device = DLDevice(*self.tensor_device)
        t.ndim = n
        t.dtype = DLDataType(*self.dtype)
        t.shape = shape
        t.strides = strides
        t.byte_offset = self.byte_offset
        if versioned:
            managed.version = DLPackVersion(*self.version)
            managed.flags = self.flags
            managed.deleter = self._deleter_v
        else:
            managed.deleter = self._deleter
        self._live[ctypes.addressof(managed)] = (managed, shape, strides)
        return _api.PyCapsule_New(ctypes.addressof(managed), _NAME_V if versioned else _NAME,
                                  ctypes.cast(_capsule_destructor, ctypes.c_void_p))


class LegacyCrafted(Crafted):
    """A producer from before DLPack 1.0: __dlpack__ has no max_version."""

    def __dlpack__(self, stream=None):
        self.calls.append({"stream": stream})
        return self._capsule(versioned=False)


class DLPackOnly:
    """Another library's CUDA array as DLPack alone sees it: __dlpack__ and __dlpack_device__
    passed through to a DeviceArray, with the calls recorded."""

    def __init__(self, dev):
        self._dev = dev
        self.calls = []

    def __dlpack_device__(self):
        return self._dev.__dlpack_device__()

    def __dlpack__(self, **kwargs):
        self.calls.append(kwargs)
        return self._dev.__dlpack__(**kwargs)


class LegacyOnly(DLPackOnly):
    def __dlpack__(self, stream=None):
        self.calls.append({"stream": stream})
        return self._dev.__dlpack__(stream=stream)


class Returns:
    """A producer whose __dlpack__ returns a given object."""

    def __init__(self, value, device=(2, 0)):
        self.value, self.device = value, device

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, **kwargs):
        return self.value


def crafted_over(values, shape=None, **kw):
    """A Crafted producer over a device copy of `values` (float32)."""
    base = DeviceArray.from_numpy(np.ascontiguousarray(values, np.float32))
    return Crafted(base.ptr, shape if shape is not None else base.shape, keep=base, **kw)


def collect():
    gc.collect()


# --- export --------------------------------------------------------------------------------

def test_dlpack_device_is_cuda_device_0():
    dev = DeviceArray.from_numpy(np.zeros(3, np.float32))
    assert dev.__dlpack_device__() == (2, 0)


@pytest.mark.parametrize("dtype,bits", [(np.float32, 32), (np.float64, 64)], ids=["f32", "f64"])
def test_exported_capsules_describe_the_array(dtype, bits):
    x = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    dev = DeviceArray.from_numpy(x)
    legacy = dev.__dlpack__()
    versioned = dev.__dlpack__(max_version=(1, 2))
    assert "capsule object \"dltensor\"" in repr(legacy)
    assert "capsule object \"dltensor_versioned\"" in repr(versioned)
    assert "dltensor\"" in repr(dev.__dlpack__(max_version=(0, 8)))  # a consumer before 1.0
    m = managed_of(versioned)
    assert (m.version.major, m.version.minor) == (1, 0) and m.flags == 0
    for t in (managed_of(legacy).dl_tensor, m.dl_tensor):
        assert t.data == dev.ptr and t.byte_offset == 0
        assert (t.device.device_type, t.device.device_id) == (2, 0)
        assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (2, bits, 1)
        assert t.ndim == 3 and t.shape[:3] == [2, 3, 4]
        assert t.strides[:3] == [12, 4, 1]  # elements, row-major


def test_other_dtypes_export_as_what_they_are():
    """DeviceArray.empty makes arrays of any dtype: exported with their own DLPack type, which
    from_dlpack then refuses."""
    ints = DeviceArray.empty([3], np.dtype(np.int64))
    t = managed_of(ints.__dlpack__()).dl_tensor
    assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (0, 64, 1)
    with pytest.raises(TypeError, match="DLPack tensor has dtype int64, expected float32 or float64"):
        DeviceArray.from_dlpack(ints)
    with pytest.raises(BufferError, match="dtype object has no DLPack type"):
        DeviceArray.empty([0], np.dtype(object)).__dlpack__()


def test_export_arguments():
    dev = DeviceArray.from_numpy(np.arange(6, dtype=np.float32))
    for stream in (None, -1, 1, 2, 12345):  # 12345: a stream handle, waited for by a full sync
        assert "dltensor" in repr(dev.__dlpack__(stream=stream))
    assert "dltensor" in repr(dev.__dlpack__(dl_device=(2, 0), copy=False))
    with pytest.raises(ValueError, match="stream=0 is disallowed"):
        dev.__dlpack__(stream=0)
    with pytest.raises(ValueError, match="stream must be -1, 1, 2"):
        dev.__dlpack__(stream=-3)
    with pytest.raises(TypeError, match="stream must be None or an int, got str"):
        dev.__dlpack__(stream="1")
    with pytest.raises(TypeError, match=r"max_version must be None or a \(major, minor\) tuple"):
        dev.__dlpack__(max_version="1.0")
    with pytest.raises(TypeError, match="dl_device must be a"):
        dev.__dlpack__(dl_device=2)
    with pytest.raises(BufferError, match=r"dl_device asks for the CPU \(DLPack device \(1, 0\)\)"):
        dev.__dlpack__(dl_device=(1, 0))
    with pytest.raises(TypeError, match="copy must be None, True or False"):
        dev.__dlpack__(copy="yes")
    with pytest.raises(TypeError):
        dev.__dlpack__(None)  # keyword-only, as the array API has it


def test_copy_true_exports_a_copy():
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    dev = DeviceArray.from_numpy(x)
    cap = dev.__dlpack__(max_version=(1, 0), copy=True)
    m = managed_of(cap)
    assert m.flags == IS_COPIED and m.dl_tensor.data != dev.ptr
    view = DeviceArray.from_dlpack(Returns(cap))
    dev.copy_from(np.zeros_like(x))  # the copy does not see later writes
    np.testing.assert_array_equal(view.numpy(), x)


# --- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", [lambda d: d, DLPackOnly, LegacyOnly], ids=["DeviceArray", "versioned", "legacy"])
def test_round_trip_shares_memory(rng, wrap):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    dev = DeviceArray.from_numpy(x)
    producer = wrap(dev)
    view = DeviceArray.from_dlpack(producer)
    assert view.ptr == dev.ptr and view.shape == (4, 3, 5) and view.dtype == np.float32
    np.testing.assert_array_equal(view.numpy(), x)
    y = rng.standard_normal(x.shape).astype(np.float32)
    view.copy_from(y)  # write through the view, read through the original
    np.testing.assert_array_equal(dev.numpy(), y)
    z = rng.standard_normal(x.shape).astype(np.float32)
    dev.copy_from(z)
    np.testing.assert_array_equal(view.numpy(), z)
    if isinstance(producer, LegacyOnly):
        assert producer.calls == [{"stream": 1}]
    elif isinstance(producer, DLPackOnly):
        assert producer.calls == [{"stream": 1, "max_version": (1, 0)}]


def test_consumer_asks_for_versioned_and_falls_back_to_legacy():
    p = crafted_over(np.arange(6), (2, 3))
    v = DeviceArray.from_dlpack(p)
    assert p.calls == [{"stream": 1, "max_version": (1, 0)}]
    q = LegacyCrafted(p.data, (3, 2), keep=p.keep)
    w = DeviceArray.from_dlpack(q)
    assert q.calls == [{"stream": 1}]
    np.testing.assert_array_equal(v.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(w.numpy(), np.arange(6, dtype=np.float32).reshape(3, 2))


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "legacy"])
def test_capsule_is_renamed_when_consumed(versioned):
    dev = DeviceArray.from_numpy(np.ones(4, np.float32))
    cap = dev.__dlpack__(max_version=(1, 0) if versioned else None)
    view = DeviceArray.from_dlpack(Returns(cap))
    name = "used_dltensor_versioned" if versioned else "used_dltensor"
    assert f"\"{name}\"" in repr(cap)
    with pytest.raises(ValueError, match="consumed already"):
        DeviceArray.from_dlpack(Returns(cap))
    np.testing.assert_array_equal(view.numpy(), np.ones(4, np.float32))


def test_float64_and_zero_dimensional_and_empty():
    x = np.full((), 2.5)
    v = DeviceArray.from_dlpack(DLPackOnly(DeviceArray.from_numpy(x)))
    assert v.shape == () and v.dtype == np.float64
    np.testing.assert_array_equal(v.numpy(), x)
    e = DeviceArray.from_dlpack(DLPackOnly(DeviceArray.from_numpy(np.zeros((0, 3), np.float32))))
    assert e.shape == (0, 3) and e.numpy().shape == (0, 3)


# --- byte_offset and strides ---------------------------------------------------------------

def test_byte_offset_is_honoured():
    values = np.arange(12, dtype=np.float32)
    p = crafted_over(values, (2, 3), byte_offset=4 * 5)
    np.testing.assert_array_equal(DeviceArray.from_dlpack(p).numpy(), values[5:11].reshape(2, 3))
    # the same start through the data pointer instead, and through both
    q = Crafted(p.data + 4 * 2, (2, 3), byte_offset=4 * 3, keep=p.keep)
    view = DeviceArray.from_dlpack(q)
    assert view.ptr == p.data + 4 * 5
    np.testing.assert_array_equal(view.numpy(), values[5:11].reshape(2, 3))


def test_byte_offset_must_keep_elements_aligned():
    p = crafted_over(np.arange(12), (2, 3), byte_offset=2)
    with pytest.raises(ValueError, match="not aligned to the 4-byte elements"):
        DeviceArray.from_dlpack(p)


@emulated_only
def test_byte_offset_past_the_allocation_is_refused():
    """The emulated device knows every allocation's extent: a view reaching past its end is
    not device memory."""
    p = crafted_over(np.arange(12), (2, 3), byte_offset=4 * 7)
    with pytest.raises(ValueError, match="not device memory"):
        DeviceArray.from_dlpack(p)


@pytest.mark.parametrize("shape,strides", [
    ((2, 3), (3, 1)),        # explicit row-major
    ((2, 1, 3), (3, 99, 1)),  # an extent of 1 may have any stride
    ((1, 6), (0, 1)),
    ((6,), (1,)),
])
def test_row_major_strides_are_accepted(shape, strides):
    values = np.arange(6, dtype=np.float32)
    p = crafted_over(values, shape, strides=strides)
    np.testing.assert_array_equal(DeviceArray.from_dlpack(p).numpy(), values.reshape(shape))


@pytest.mark.parametrize("shape,strides", [
    ((2, 3), (1, 2)),    # column-major
    ((2, 3), (12, 4)),   # byte strides (DLPack counts elements)
    ((3, 2), (4, 1)),    # padded rows
])
def test_other_strides_are_refused(shape, strides):
    p = crafted_over(np.arange(12), shape, strides=strides)
    with pytest.raises(ValueError, match="must be C-contiguous"):
        DeviceArray.from_dlpack(p)
    collect()
    assert p.deleted == 1, "a refused capsule stays the producer's, freed by its destructor"


# --- refusals ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,exc,msg", [
    (dict(code=0, bits=32), TypeError, "dtype int32, expected float32 or float64"),
    (dict(code=2, bits=16), TypeError, "dtype float16"),
    (dict(code=4, bits=16), TypeError, "dtype bfloat16"),
    (dict(code=2, bits=32, lanes=4), TypeError, "4 lanes"),
    (dict(flags=READ_ONLY), ValueError, "read-only DLPack tensors are not supported"),
    (dict(version=(2, 0)), ValueError, "DLPack version 2.0 is not supported"),
    (dict(device=(2, 1)), ValueError, "fusedrnn runs on CUDA device 0"),
    (dict(device=(3, 0)), ValueError, "CUDA pinned host memory"),
    (dict(tensor_device=(1, 0)), ValueError, "the DLPack tensor is on the CPU"),
])
def test_refused_tensors(kw, exc, msg):
    p = crafted_over(np.arange(6), (2, 3), **kw)
    with pytest.raises(exc, match=msg):
        DeviceArray.from_dlpack(p)
    collect()
    assert p.deleted == len(p.calls), "every capsule made was freed by its own destructor"
    assert not p._live


def test_managed_memory_is_accepted():
    p = crafted_over(np.arange(6), (2, 3), device=(13, 0))
    np.testing.assert_array_equal(DeviceArray.from_dlpack(p).numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_host_memory_is_refused():
    host = np.arange(6, dtype=np.float32)
    p = Crafted(host.ctypes.data, (2, 3), keep=host)  # claims CUDA, points at host memory
    with pytest.raises(ValueError, match="DLPack data pointer is not device memory"):
        DeviceArray.from_dlpack(p)


def test_torch_cpu_tensor_is_refused_by_from_dlpack():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"the object is on the CPU \(DLPack device \(1, 0\)\)"):
        DeviceArray.from_dlpack(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="on the CPU"):
        DeviceArray.from_dlpack(np.zeros(3, np.float32))


def test_malformed_producers():
    dev = DeviceArray.from_numpy(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="object of type list does not support DLPack"):
        DeviceArray.from_dlpack([1.0, 2.0])
    with pytest.raises(TypeError, match="__dlpack__\\(\\) returned bytes, expected a PyCapsule"):
        DeviceArray.from_dlpack(Returns(b"xyz"))
    with pytest.raises(TypeError, match="__dlpack_device__\\(\\) must be a \\(device_type, device_id\\) tuple"):
        DeviceArray.from_dlpack(Returns(dev.__dlpack__(), device="cuda"))
    with pytest.raises(TypeError, match="__dlpack_device__\\(\\) of Returns must return"):
        _device.is_device_array(Returns(None, device=[2, 0]))


# --- ownership -----------------------------------------------------------------------------

def test_deleter_runs_once_when_the_last_sharer_goes():
    p = crafted_over(np.arange(6), (6,))
    view = DeviceArray.from_dlpack(p)
    again = DeviceArray.from_dlpack(view)  # re-exported: shares the producer's tensor
    third = DeviceArray.from_dlpack(DLPackOnly(again))
    np.testing.assert_array_equal(third.numpy(), np.arange(6, dtype=np.float32))
    del view, again
    collect()
    assert p.deleted == 0
    del third
    collect()
    assert p.deleted == 1 and not p._live


def test_deleter_runs_once_for_the_legacy_capsule():
    q = crafted_over(np.arange(3), (3,))
    p = LegacyCrafted(q.data, (3,), keep=q.keep)
    view = DeviceArray.from_dlpack(p)
    assert p.deleted == 0
    del view
    collect()
    assert p.deleted == 1


def test_unconsumed_crafted_capsule_is_freed_by_its_destructor():
    p = crafted_over(np.arange(3), (3,))
    cap = p.__dlpack__(max_version=(1, 0))
    del cap
    collect()
    assert p.deleted == 1


@emulated_only
@pytest.mark.parametrize("max_version", [None, (1, 0)], ids=["legacy", "versioned"])
def test_device_memory_lives_until_the_last_view_goes(max_version):
    collect()
    before = _core._emu_bytes_in_use()
    dev = DeviceArray.from_numpy(np.arange(1000, dtype=np.float64))
    view = DeviceArray.from_dlpack(Returns(dev.__dlpack__(max_version=max_version)))
    del dev
    collect()
    assert _core._emu_bytes_in_use() == before + 8000
    np.testing.assert_array_equal(view.numpy(), np.arange(1000, dtype=np.float64))
    del view
    collect()
    assert _core._emu_bytes_in_use() == before


@emulated_only
@pytest.mark.parametrize("copy", [None, True], ids=["shared", "copy"])
@pytest.mark.parametrize("max_version", [None, (1, 0)], ids=["legacy", "versioned"])
def test_unconsumed_capsule_does_not_leak(max_version, copy):
    collect()
    before = _core._emu_bytes_in_use()
    dev = DeviceArray.from_numpy(np.arange(1000, dtype=np.float32))
    cap = dev.__dlpack__(max_version=max_version, copy=copy)
    assert _core._emu_bytes_in_use() == before + 4000 * (2 if copy else 1)
    del dev
    collect()
    assert _core._emu_bytes_in_use() == before + 4000  # what the capsule holds
    del cap
    collect()
    assert _core._emu_bytes_in_use() == before


@emulated_only
def test_refused_import_of_own_capsule_does_not_leak():
    collect()
    before = _core._emu_bytes_in_use()
    dev = DeviceArray.from_numpy(np.arange(6, dtype=np.float32))
    cap = dev.__dlpack__()
    with pytest.raises(ValueError, match="fusedrnn runs on CUDA device 0"):
        DeviceArray.from_dlpack(Returns(cap, device=(2, 1)))
    assert "\"dltensor\"" in repr(cap), "a refused capsule is not taken over"
    del dev, cap
    collect()
    assert _core._emu_bytes_in_use() == before


# --- as arguments of the ops ---------------------------------------------------------------

def test_is_device_array_and_to_device():
    dev = DeviceArray.from_numpy(np.arange(6, dtype=np.float32))
    assert _device.is_device_array(DLPackOnly(dev))
    assert _device.is_device_array(crafted_over(np.arange(2), (2,), device=(13, 0)))
    assert not _device.is_device_array(np.zeros(3))
    assert _device.to_device(DLPackOnly(dev)).ptr == dev.ptr
    with pytest.raises(ValueError, match=r"Returns is on DLPack device \(14, 0\)"):
        _device.to_device(Returns(None, device=(14, 0)))


def test_cpu_dlpack_producers_are_host_data():
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    assert not _device.is_device_array(t)
    got = _device.to_device(t.T)  # not C-contiguous: copied in row-major order
    assert isinstance(got, DeviceArray) and got.shape == (3, 2)
    np.testing.assert_array_equal(got.numpy(), np.arange(6, dtype=np.float64).reshape(2, 3).T)


def _lstm_case(rng, dtype=np.float32):
    T, B, I, H = 5, 3, 4, 6
    k = 1 / np.sqrt(H)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    w = [rng.uniform(-k, k, s).astype(dtype) for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    return x, w


def test_lstm_forward_takes_a_dlpack_only_input(rng):
    x, (w_ih, w_hh, b_ih, b_hh) = _lstm_case(rng)
    dev_x = DeviceArray.from_numpy(x)
    producer = DLPackOnly(dev_x)
    out, h_n, c_n, cache = ops.lstm_forward(producer, w_ih, w_hh, b_ih, b_hh, device="cuda", training=True)
    assert producer.calls == [{"stream": 1, "max_version": (1, 0)}]
    assert cache.x.ptr == dev_x.ptr, "the DLPack input is read in place"
    r_out, r_h, r_c, _ = ref.lstm_forward(x.astype(np.float64), *(a.astype(np.float64) for a in (w_ih, w_hh, b_ih, b_hh)))
    for name, a, e in (("out", out, r_out), ("h_n", h_n, r_h), ("c_n", c_n, r_c)):
        assert isinstance(a, np.ndarray) and a.dtype == np.float32
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5, err_msg=name)
    # the same numbers as the NumPy input on the device and on the CPU
    d_out, d_h, d_c, _ = ops.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, device="cuda")
    c_out, c_h, c_c, _ = ops.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, device="cpu")
    np.testing.assert_array_equal(out, d_out)
    np.testing.assert_allclose(out, c_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c_n, c_c, rtol=1e-5, atol=1e-5)


def test_every_argument_may_be_a_dlpack_producer(rng):
    x, w = _lstm_case(rng, np.float64)
    wrapped = [LegacyOnly(DeviceArray.from_numpy(a)) for a in (x, *w)]
    out, h_n, c_n, _ = ops.lstm_forward(*wrapped, device="cuda")
    r_out, r_h, r_c, _ = ref.lstm_forward(x, *w)
    assert_close(out, r_out, np.float64, "out")
    assert_close(h_n, r_h, np.float64, "h_n")
    assert_close(c_n, r_c, np.float64, "c_n")


def test_torch_cpu_tensor_is_host_input_on_the_device(rng):
    torch = pytest.importorskip("torch")
    x, w = _lstm_case(rng)
    out, _, _, _ = ops.lstm_forward(torch.from_numpy(x), *w, device="cuda")
    ref_out, _, _, _ = ops.lstm_forward(x, *w, device="cuda")
    np.testing.assert_array_equal(out, ref_out)


def test_dlpack_errors_name_the_argument(rng):
    x, (w_ih, w_hh, b_ih, b_hh) = _lstm_case(rng)
    bad = crafted_over(np.zeros(4 * 6 * 6), (24, 6), code=0)
    with pytest.raises(TypeError, match="w_hh: DLPack tensor has dtype int32"):
        ops.lstm_forward(x, w_ih, bad, b_ih, b_hh, device="cuda")
    wrong = crafted_over(np.zeros(x.size), x.shape, flags=READ_ONLY)
    with pytest.raises(ValueError, match="x: read-only DLPack tensors are not supported"):
        ops.lstm_forward(wrong, w_ih, w_hh, b_ih, b_hh, device="cuda")
