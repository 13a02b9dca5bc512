// DLPack for DeviceArray (the Python array API's exchange protocol, DLPack 1.0 ABI: dlpack.h).
//
// Import (DeviceArray.from_dlpack): asks the producer for its device first, takes CUDA device
// memory (kDLCUDA) or CUDA managed memory (kDLCUDAManaged) on device 0, then calls
// __dlpack__(stream=1, max_version=(1, 0)) -- the legacy default stream is the one fusedrnn
// queues its work on -- and falls back to __dlpack__(stream=1) for producers that predate
// max_version.  Every check runs before the capsule is renamed "used_..."; a refused capsule is
// left to its own destructor.  The view calls the producer's deleter exactly once, when the
// last DeviceArray sharing it goes.
//
// Export (DeviceArray.__dlpack__): a versioned capsule for consumers that pass
// max_version >= (1, 0), the legacy one otherwise.  The capsule keeps the array's memory alive
// until the consumer's call of the deleter, or until the capsule itself goes unconsumed.
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common.h"
#include "cuda/device.h"
#include "cuda_ops.h"
#include "dlpack.h"

namespace fusedrnn::bind {
namespace {

namespace cu = fusedrnn::cuda;
namespace dl = dlpack;

std::string type_name(const py::handle& o) { return py::str(py::type::of(o).attr("__name__")); }

[[noreturn]] void buffer_error(const std::string& msg) {
  PyErr_SetString(PyExc_BufferError, msg.c_str());
  throw py::error_already_set();
}

std::string device_str(int32_t type, int32_t id) {
  std::string name;
  switch (type) {
    case dl::kCPU: name = "the CPU"; break;
    case dl::kCUDA: name = "CUDA device " + std::to_string(id); break;
    case dl::kCUDAHost: name = "CUDA pinned host memory"; break;
    case dl::kCUDAManaged: name = "CUDA managed memory of device " + std::to_string(id); break;
    default: name = "a device other than CUDA"; break;
  }
  return name + " (DLPack device (" + std::to_string(type) + ", " + std::to_string(id) + "))";
}

std::string dtype_str(const dl::DataType& t) {
  static const char* const names[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
  std::string s = t.code < 7 ? names[t.code] : "type code " + std::to_string(t.code) + " of ";
  s += std::to_string(t.bits);
  if (t.lanes != 1) s += " x" + std::to_string(t.lanes) + " lanes";
  return s;
}

// A (device_type, device_id) pair of ints, or a TypeError naming `what`.
std::pair<int32_t, int32_t> device_pair(const py::handle& v, const std::string& what) {
  if (!py::isinstance<py::tuple>(v) || py::len(v) != 2 || !py::isinstance<py::int_>(v[py::int_(0)]) ||
      !py::isinstance<py::int_>(v[py::int_(1)]))
    throw py::type_error(what + " must be a (device_type, device_id) tuple of ints, got " +
                         std::string(py::repr(v)));
  return {v[py::int_(0)].cast<int32_t>(), v[py::int_(1)].cast<int32_t>()};
}

// The devices fusedrnn's kernels can read: CUDA device memory and CUDA managed memory of
// device 0 (the device fusedrnn runs on).
void require_cuda(int32_t type, int32_t id, const std::string& what) {
  if (type != dl::kCUDA && type != dl::kCUDAManaged)
    throw py::value_error(what + " is on " + device_str(type, id) +
                          "; DeviceArray.from_dlpack takes CUDA device memory (device type 2, or 13 "
                          "for managed memory) on device 0");
  if (id != 0)
    throw py::value_error(what + " is on " + device_str(type, id) + "; fusedrnn runs on CUDA device 0");
}

// The producer's deleter, once, holding the GIL (a Python producer's deleter releases Python
// objects); at interpreter exit the memory is left to the process.
template <class M>
void release(M* m) {
  if (!m->deleter || !Py_IsInitialized()) return;
  py::gil_scoped_acquire gil;
  m->deleter(m);
}

py::object call_dlpack(const py::object& obj) {
  const py::object fn = obj.attr("__dlpack__");
  try {
    return fn(py::arg("stream") = 1, py::arg("max_version") = py::make_tuple(dl::kMajorVersion, dl::kMinorVersion));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
  }
  return fn(py::arg("stream") = 1);  // a producer from before DLPack 1.0 has no max_version
}

}  // namespace

DeviceArray from_dlpack(const py::object& obj) {
  if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__"))
    throw py::type_error("object of type " + type_name(obj) +
                         " does not support DLPack (it needs __dlpack__ and __dlpack_device__)");
  const auto [dev_type, dev_id] = device_pair(obj.attr("__dlpack_device__")(), "__dlpack_device__()");
  require_cuda(dev_type, dev_id, "the object");

  const py::object cap = call_dlpack(obj);
  if (!PyCapsule_CheckExact(cap.ptr()))
    throw py::type_error("__dlpack__() returned " + type_name(cap) + ", expected a PyCapsule");
  const char* raw_name = PyCapsule_GetName(cap.ptr());
  const std::string name = raw_name ? raw_name : "";
  bool versioned;
  if (name == dl::kCapsuleVersioned) versioned = true;
  else if (name == dl::kCapsule) versioned = false;
  else if (name == dl::kCapsuleUsed || name == dl::kCapsuleVersionedUsed)
    throw py::value_error("the capsule from __dlpack__() has been consumed already ('" + name + "')");
  else
    throw py::type_error("__dlpack__() returned a capsule named '" + name +
                         "', expected 'dltensor_versioned' or 'dltensor'");
  void* managed = PyCapsule_GetPointer(cap.ptr(), raw_name);
  if (!managed) throw py::error_already_set();

  // Every check before the capsule is taken over: a refused capsule stays the producer's.
  const dl::Tensor* t;
  uint64_t flags = 0;
  if (versioned) {
    auto* m = static_cast<dl::ManagedTensorVersioned*>(managed);
    if (m->version.major != dl::kMajorVersion)
      throw py::value_error("DLPack version " + std::to_string(m->version.major) + "." +
                            std::to_string(m->version.minor) + " is not supported (major version 1)");
    flags = m->flags;
    t = &m->dl_tensor;
  } else {
    t = &static_cast<dl::ManagedTensor*>(managed)->dl_tensor;
  }
  require_cuda(t->device.device_type, t->device.device_id, "the DLPack tensor");
  py::dtype dt;
  if (t->dtype.code == dl::kFloat && t->dtype.lanes == 1 && t->dtype.bits == 32) dt = py::dtype::of<float>();
  else if (t->dtype.code == dl::kFloat && t->dtype.lanes == 1 && t->dtype.bits == 64) dt = py::dtype::of<double>();
  else throw py::type_error("DLPack tensor has dtype " + dtype_str(t->dtype) + ", expected float32 or float64");
  if (t->ndim < 0 || (t->ndim > 0 && !t->shape))
    throw py::value_error("DLPack tensor has an invalid shape (ndim " + std::to_string(t->ndim) + ")");
  std::vector<int64_t> shape(t->shape, t->shape + t->ndim);
  const int64_t limit = std::numeric_limits<int64_t>::max() / dt.itemsize();
  int64_t count = 1;
  for (int64_t s : shape) {
    if (s < 0) throw py::value_error("DLPack tensor has a negative extent: shape " + shape_str(shape));
    if (s > 0 && count > limit / s) throw py::value_error("DLPack tensor is too large: shape " + shape_str(shape));
    count *= s;
  }
  if (t->strides && count > 0) {
    // Strides count elements; an extent of 1 may have any stride.
    const std::vector<int64_t> strides(t->strides, t->strides + t->ndim);
    int64_t expect = 1;
    for (size_t i = shape.size(); i-- > 0;) {
      if (shape[i] != 1 && strides[i] != expect)
        throw py::value_error("DLPack tensor must be C-contiguous (strides " + shape_str(strides) +
                              " elements for shape " + shape_str(shape) + ")");
      expect *= shape[i];
    }
  }
  if (flags & dl::kFlagReadOnly) throw py::value_error("read-only DLPack tensors are not supported");
  const uintptr_t first = reinterpret_cast<uintptr_t>(t->data) + t->byte_offset;
  void* ptr = reinterpret_cast<void*>(first);
  DeviceArray d;
  d.shape = std::move(shape);
  d.dtype = dt;
  if (d.nbytes() > 0) {
    if (first % dt.itemsize())
      throw py::value_error("DLPack data pointer (data + byte_offset) is not aligned to the " +
                            std::to_string(dt.itemsize()) + "-byte elements");
    // Both ends: a byte_offset or shape beyond the allocation shows here.
    for (const uintptr_t p : {first, first + d.nbytes() - 1}) {
      cudaPointerAttributes attr{};
      FUSEDRNN_CUDA_CHECK(cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(p)));
      if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        throw py::value_error("DLPack data pointer is not device memory");
    }
  }

  if (PyCapsule_SetName(cap.ptr(), versioned ? dl::kCapsuleVersionedUsed : dl::kCapsuleUsed) != 0)
    throw py::error_already_set();
  d.ptr = ptr;
  // From here on the view owns the managed tensor (the shared_ptr calls the deleter even if
  // its own allocation fails).
  if (versioned) {
    auto* m = static_cast<dl::ManagedTensorVersioned*>(managed);
    d.owner = std::shared_ptr<void>(ptr, [m](void*) { release(m); });
  } else {
    auto* m = static_cast<dl::ManagedTensor*>(managed);
    d.owner = std::shared_ptr<void>(ptr, [m](void*) { release(m); });
  }
  return d;
}

namespace {

// What an exported capsule owns: the managed tensor, its shape and strides, and a share of the
// array's owner.  The deleter deletes it.
template <class M>
struct Export {
  M managed{};
  std::shared_ptr<void> owner;
  std::vector<int64_t> shape, strides;

  static void deleter(M* m) { delete static_cast<Export*>(m->manager_ctx); }
};

// Called when the capsule goes: the deleter runs only for a capsule nobody consumed (a consumer
// renames it and calls the deleter itself).
template <class M>
void capsule_destructor(PyObject* cap) {
  constexpr bool versioned = std::is_same_v<M, dl::ManagedTensorVersioned>;
  const char* name = versioned ? dl::kCapsuleVersioned : dl::kCapsule;
  if (!PyCapsule_IsValid(cap, name)) return;
  auto* m = static_cast<M*>(PyCapsule_GetPointer(cap, name));
  if (m && m->deleter) m->deleter(m);
}

// The DLPack type of a DeviceArray's dtype: float32/float64 for fusedrnn's arrays;
// DeviceArray.empty can make others, exported as what they are.
dl::DataType dl_dtype(const py::dtype& dt) {
  uint8_t code;
  switch (dt.kind()) {
    case 'f': code = dl::kFloat; break;
    case 'i': code = dl::kInt; break;
    case 'u': code = dl::kUInt; break;
    case 'b': code = dl::kBool; break;
    case 'c': code = dl::kComplex; break;
    default: buffer_error("a DeviceArray of dtype " + std::string(py::str(dt)) + " has no DLPack type");
  }
  if (dt.itemsize() > 32) buffer_error("a DeviceArray of dtype " + std::string(py::str(dt)) + " has no DLPack type");
  return {code, static_cast<uint8_t>(8 * dt.itemsize()), 1};
}

template <class M>
py::object export_capsule(const DeviceArray& a, uint64_t flags) {
  const dl::DataType dtype = dl_dtype(a.dtype);
  auto* e = new Export<M>();
  e->owner = a.owner;
  e->shape = a.shape;
  e->strides.assign(a.shape.size(), 1);
  for (size_t i = a.shape.size(); i-- > 1;) e->strides[i - 1] = e->strides[i] * a.shape[i];
  dl::Tensor& t = e->managed.dl_tensor;
  t.data = a.ptr;
  t.device = {dl::kCUDA, 0};
  t.ndim = static_cast<int32_t>(a.shape.size());
  t.dtype = dtype;
  t.shape = e->shape.data();
  t.strides = e->strides.data();
  t.byte_offset = 0;
  e->managed.manager_ctx = e;
  e->managed.deleter = &Export<M>::deleter;
  const char* name = dl::kCapsule;
  if constexpr (std::is_same_v<M, dl::ManagedTensorVersioned>) {
    e->managed.version = {dl::kMajorVersion, dl::kMinorVersion};
    e->managed.flags = flags;
    name = dl::kCapsuleVersioned;
  }
  PyObject* cap = PyCapsule_New(&e->managed, name, &capsule_destructor<M>);
  if (!cap) {
    delete e;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(cap);
}

}  // namespace

py::object to_dlpack(const DeviceArray& a, const py::object& stream, const py::object& max_version,
                     const py::object& dl_device, const py::object& copy) {
  bool versioned = false;
  if (!max_version.is_none()) {
    if (!py::isinstance<py::tuple>(max_version) || py::len(max_version) != 2 ||
        !py::isinstance<py::int_>(max_version[py::int_(0)]) || !py::isinstance<py::int_>(max_version[py::int_(1)]))
      throw py::type_error("max_version must be None or a (major, minor) tuple of ints, got " +
                           std::string(py::repr(max_version)));
    versioned = max_version[py::int_(0)].cast<int64_t>() >= dl::kMajorVersion;
  }
  if (!dl_device.is_none()) {
    const auto [type, id] = device_pair(dl_device, "dl_device");
    if (type != dl::kCUDA || id != 0)
      buffer_error("a DeviceArray is exported on its own device, CUDA device 0 (2, 0); dl_device asks for " +
                   device_str(type, id));
  }
  if (!copy.is_none() && !py::isinstance<py::bool_>(copy))
    throw py::type_error("copy must be None, True or False, got " + std::string(py::repr(copy)));
  int64_t s = 1;  // None: the legacy default stream
  if (!stream.is_none()) {
    if (!py::isinstance<py::int_>(stream))
      throw py::type_error("stream must be None or an int, got " + type_name(stream));
    s = stream.cast<int64_t>();
    if (s == 0) throw py::value_error("stream=0 is disallowed for CUDA by the DLPack protocol (use 1 or 2)");
    if (s < -1) throw py::value_error("stream must be -1, 1, 2 or a CUDA stream handle, got " + std::to_string(s));
  }
  const bool copied = !copy.is_none() && copy.cast<bool>();
  const DeviceArray src = copied ? clone(a) : a;  // the copy is queued on the legacy default stream
  // -1: the consumer asked for no synchronization.  1 and 2 (the legacy and per-thread default
  // streams) are ordered with fusedrnn's work on the legacy default stream already.  Any other
  // stream: wait for all of fusedrnn's queued work, after which work on that stream sees the
  // data (stronger than an event wait on that stream, and never touches the consumer's
  // stream handle).
  if (s > 2) cu::synchronize();
  if (versioned) return export_capsule<dl::ManagedTensorVersioned>(src, copied ? dl::kFlagIsCopied : 0);
  return export_capsule<dl::ManagedTensor>(src, 0);
}

}  // namespace fusedrnn::bind
