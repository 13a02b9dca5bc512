"""Where the kernels run ('cpu' or 'cuda') and moving arrays to and from the CUDA device.

A build without CUDA has the same API: ``cuda_device_count()`` is 0 and asking for
``device='cuda'`` raises a RuntimeError saying how to get a CUDA build.  A build with the
emulated device (``FUSEDRNN_CUDA_EMULATION``) reports one device and runs the CUDA kernel
sources on the host.
"""

from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["check_device", "cuda_device_count", "is_device_array", "to_device", "DeviceState"]

_NO_CUDA = ("device='cuda' needs fusedrnn built with CUDA (pip install . "
            "-Ccmake.define.FUSEDRNN_CUDA=ON, with nvcc and the nvidia-cublas wheel); this build "
            "has no CUDA kernels")


def cuda_device_count() -> int:
    """CUDA devices this build can use: 0 without CUDA, without a driver or without a GPU
    (1 on the emulated device)."""
    return int(_core.cuda_device_count())


def check_device(device) -> str:
    """'cpu' or 'cuda' ('cuda:0' is accepted as 'cuda'); errors name what is wrong."""
    if not isinstance(device, str):
        raise TypeError(f"device must be 'cpu' or 'cuda', got {type(device).__name__}")
    if device == "cpu":
        return "cpu"
    if device not in ("cuda", "cuda:0"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if not _core.cuda_compiled:
        raise RuntimeError(_NO_CUDA)
    if cuda_device_count() < 1:
        raise RuntimeError("device='cuda': this build has the CUDA kernels but no CUDA device is "
                           "visible (no GPU, or no driver)")
    return "cuda"


# DLPack device types (the array API's __dlpack_device__): the host, CUDA device memory and
# CUDA managed memory.  fusedrnn takes the two CUDA kinds on device 0 in place.
_DLPACK_CPU = 1
_DLPACK_CUDA = (2, 13)


def _dlpack_device(value):
    """(device_type, device_id) from value.__dlpack_device__(), or None for an object that does
    not speak DLPack (both __dlpack__ and __dlpack_device__ are needed)."""
    if not (hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__")):
        return None
    device = value.__dlpack_device__()
    if not (isinstance(device, tuple) and len(device) == 2 and all(isinstance(v, int) for v in device)):
        raise TypeError(f"__dlpack_device__() of {type(value).__name__} must return a "
                        f"(device_type, device_id) tuple of ints, got {device!r}")
    return int(device[0]), int(device[1])


def is_device_array(value) -> bool:
    """True for fusedrnn's DeviceArray, objects exporting __cuda_array_interface__, and DLPack
    producers (``__dlpack__`` and ``__dlpack_device__``) whose data is CUDA memory (DLPack
    device type 2, or 13 for managed memory).  A DLPack producer on the host (a torch CPU
    tensor, whose class declares __cuda_array_interface__ but which does not export it, or a
    NumPy array) is host data, not a device array."""
    if isinstance(value, np.ndarray):
        return False
    if _core.cuda_compiled and isinstance(value, _core.DeviceArray):
        return True
    if hasattr(value, "__cuda_array_interface__"):
        return True
    device = _dlpack_device(value)
    if device is not None:
        return device[0] in _DLPACK_CUDA
    # A class declaring the interface whose instance does not export it now.
    return hasattr(type(value), "__cuda_array_interface__")


def to_device(value):
    """A DeviceArray for value: itself; a zero-copy view of a __cuda_array_interface__ object
    (taken first when an object offers both protocols); a zero-copy view of a DLPack producer
    of CUDA memory on device 0 (DeviceArray.from_dlpack); or a device copy of host data -- a
    (C-contiguous float32/float64) NumPy array or anything np.asarray takes, and a DLPack
    producer on the CPU (device type 1, e.g. a torch CPU tensor), read through
    np.from_dlpack.  A DLPack producer on any other device is a ValueError."""
    if isinstance(value, _core.DeviceArray):
        return value
    if hasattr(value, "__cuda_array_interface__"):
        return _core.DeviceArray.from_cuda_array_interface(value)
    device = None if isinstance(value, np.ndarray) else _dlpack_device(value)
    if device is not None:
        if device[0] in _DLPACK_CUDA:
            return _core.DeviceArray.from_dlpack(value)
        if device[0] != _DLPACK_CPU:
            raise ValueError(f"{type(value).__name__} is on DLPack device {device}; fusedrnn takes "
                             "CUDA memory (device type 2 or 13) on device 0, or host data (type 1)")
        value = np.from_dlpack(value)
    return _core.DeviceArray.from_numpy(np.ascontiguousarray(value))


class DeviceState:
    """A layer's weights and gradients on the CUDA device, and which side holds their current
    values.

    Weights.  The device copies are made from the host arrays and uploaded again when those
    change: the layer's weight version (``params.version``) moved on, or, with the version
    unchanged, the host array differs from the copy last uploaded (an in-place edit made
    outside every API).  After an optimiser step on the device (``for_update``) the device
    copies are the newer ones: forwards use them without looking at the host, and the host
    arrays are refreshed (``pull_params``) when the layer's ``params`` are next read.

    Gradients.  Backward adds into device arrays (``grads``); the host arrays are refreshed
    (``pull_grads``) when the layer's ``grads`` are read.  Arrays handed out may be edited, so
    from then on the host arrays count, and the next device use uploads them first."""

    def __init__(self):
        self._weights = {}  # name -> (version, host shadow copy, DeviceArray)
        self.params_newer = False
        self._grads = {}  # name -> DeviceArray
        self.grads_on = "host"  # where the current gradient values are: 'host' or 'device'

    # --- weights ----------------------------------------------------------------------------

    def weights(self, host, names) -> dict:
        """name -> current DeviceArray for the given names of ``host`` (the layer's params)."""
        if self.params_newer:
            return {k: self._weights[k][2] for k in names}
        version = host.version
        return {k: self.get(k, host[k], version) for k in names}

    def get(self, name: str, host: np.ndarray, version: int):
        """One weight's device copy, uploaded when ``host`` changed since the last upload."""
        entry = self._weights.get(name)
        if entry is not None:
            seen, shadow, dev = entry
            if (seen == version and shadow.shape == host.shape and shadow.dtype == host.dtype
                    and np.array_equal(shadow, host)):
                return dev
        host = np.ascontiguousarray(host)
        if entry is not None and entry[1].shape == host.shape and entry[1].dtype == host.dtype:
            dev = entry[2]
            dev.copy_from(host)
            shadow = entry[1]
            np.copyto(shadow, host)
        else:
            dev = _core.DeviceArray.from_numpy(host)
            shadow = host.copy()
        self._weights[name] = (version, shadow, dev)
        return dev

    def for_update(self, host) -> dict:
        """The device weights, current, for an optimiser step that will change them: from now
        on the device copies are the newer ones."""
        out = self.weights(host, list(host))
        self.params_newer = True
        return out

    def pull_params(self, host) -> None:
        """Refresh the host arrays (in place) from newer device copies."""
        if not self.params_newer:
            return
        self.params_newer = False
        version = host.version
        for k, (_, shadow, dev) in self._weights.items():
            np.copyto(shadow, dev.numpy())
            np.copyto(host[k], shadow)
            self._weights[k] = (version, shadow, dev)

    # --- gradients --------------------------------------------------------------------------

    def grads(self, host) -> dict:
        """name -> DeviceArray holding the current gradients (uploaded from ``host`` first when
        the host arrays are the ones that count)."""
        if self.grads_on == "host":
            for k, g in host.items():
                dev = self._grads.get(k)
                if dev is None or dev.shape != g.shape or dev.dtype != g.dtype:
                    self._grads[k] = _core.DeviceArray.from_numpy(np.ascontiguousarray(g))
                else:
                    dev.copy_from(np.ascontiguousarray(g))
            self.grads_on = "device"
        return self._grads

    def pull_grads(self, host) -> None:
        """Refresh the host gradient arrays (in place) from the device; the host counts after."""
        if self.grads_on == "device":
            for k, dev in self._grads.items():
                np.copyto(host[k], dev.numpy())
        self.grads_on = "host"

    def zero_grads(self, host) -> None:
        """Zero the gradients: on the device where they are kept there, else on the host."""
        if self._grads and self._grads.keys() == host.keys():
            for dev in self._grads.values():
                _core.cuda_zero(dev)
            self.grads_on = "device"
        else:
            for g in host.values():
                g.fill(0)
            self.grads_on = "host"

    # A pickled layer carries its host arrays (pulled first); device copies are made on use.
    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()
