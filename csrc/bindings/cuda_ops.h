// The CUDA bindings (cuda_ops.cc), registered by module.cc in builds with CUDA or its emulation.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/device.h"

namespace fusedrnn::bind {

namespace py = pybind11;

// Device memory holding a C-contiguous float32 or float64 array.
struct DeviceArray {
  std::shared_ptr<void> owner;  // frees the memory (or keeps a foreign owner alive)
  void* ptr = nullptr;
  std::vector<int64_t> shape;
  py::dtype dtype;

  int64_t size() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(size()) * dtype.itemsize(); }
  bool is_f32() const { return dtype.is(py::dtype::of<float>()) || dtype.equal(py::dtype::of<float>()); }

  static DeviceArray empty(const std::vector<int64_t>& shape, const py::dtype& dt) {
    DeviceArray a;
    a.shape = shape;
    a.dtype = dt;
    const size_t bytes = a.nbytes();
    void* p = nullptr;
    if (bytes) FUSEDRNN_CUDA_CHECK(cudaMalloc(&p, bytes));
    a.ptr = p;
    a.owner = std::shared_ptr<void>(p, [](void* q) {
      if (q) (void)cudaFree(q);
    });
    return a;
  }
};

// A device copy of a C-contiguous float32/float64 NumPy array, and a NumPy copy of a device array.
DeviceArray from_numpy(const py::array& a);
py::array to_numpy(const DeviceArray& d);
// A new device array with the same contents.
DeviceArray clone(const DeviceArray& d);

// DLPack (cuda_dlpack.cc): a zero-copy view of a producer's CUDA tensor, and the
// DeviceArray.__dlpack__ export (a "dltensor_versioned" or "dltensor" capsule).
DeviceArray from_dlpack(const py::object& obj);
py::object to_dlpack(const DeviceArray& a, const py::object& stream, const py::object& max_version,
                     const py::object& dl_device, const py::object& copy);

void bind_cuda(py::module_& m);
void bind_cuda_optim(py::module_& m);  // cuda_optim.cc

}  // namespace fusedrnn::bind
