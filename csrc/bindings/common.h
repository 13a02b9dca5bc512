// Checks and plumbing shared by the per-cell bindings.  Every array is checked for dtype,
// contiguity and shape before a kernel sees it; failures raise TypeError or ValueError naming
// the argument and what it got.  python/fusedrnn/ops.py validates first with friendlier
// messages; these checks make the compiled module safe to call directly as well.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "fusedrnn/common.h"
#include "cpu/kernels.h"
#include "cpu/memory.h"
#include "cpu/threading.h"

namespace fusedrnn::bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << (shape.size() == 1 ? ",)" : ")");
  return s.str();
}

// True when `a` holds T: dtypes compared by equivalence, not identity (an array that went
// through pickle carries its own dtype object; one with metadata is still plain float32).
// A byte-swapped dtype is not equivalent and is refused.
template <typename T>
bool has_dtype(const py::array& a) {
  return py::array_t<T>::check_(a);
}

// An optional array argument: the object itself when it is an ndarray, never a converted
// temporary (whose memory would be freed while the kernel still reads it).
inline py::array require_ndarray(const py::object& o, const char* name) {
  if (!py::isinstance<py::array>(o))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(o).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(o);
}

// The checked data pointer of `a`, which must be a C-contiguous, aligned array of T with this
// shape.
template <typename T>
const T* checked(const py::array& a, const char* name, const std::vector<int64_t>& shape) {
  if (!has_dtype<T>(a))
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) +
                         ", expected " + std::string(py::str(py::dtype::of<T>())) +
                         " in native byte order");
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
  if (!ok)
    throw py::value_error(std::string(name) + " has shape " + shape_str(a) + ", expected " +
                          shape_str(shape));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  if (reinterpret_cast<uintptr_t>(a.data()) % alignof(T) != 0)
    throw py::value_error(std::string(name) + " must be aligned to " + std::to_string(alignof(T)) +
                          " bytes (copy it with numpy.require(a, requirements='CA'))");
  return static_cast<const T*>(a.data());
}

// An uninitialised array whose memory comes from the block cache and goes back to it when
// the array is freed (large outputs and workspaces are then not page-faulted in every call).
// `purpose` names it in the MemoryError raised when it cannot be allocated.
template <typename T>
py::array_t<T> empty(const std::vector<int64_t>& shape, const char* purpose = "an output array") {
  size_t bytes = sizeof(T);
  constexpr size_t kMax = static_cast<size_t>(-1);
  for (int64_t d : shape) {  // on overflow: kMax, which acquire() refuses with a MemoryError
    const size_t n = static_cast<size_t>(d);
    bytes = n != 0 && bytes > kMax / n ? kMax : bytes * n;
  }
  void* p = nullptr;
  try {
    p = mem::acquire(bytes, purpose);
  } catch (const mem::OutOfMemory&) {  // the message names the shape and dtype (built only now:
                                       // formatting the dtype costs microseconds per call)
    const std::string what = std::string(purpose) + " " + shape_str(shape) + " of " +
                             std::string(py::str(py::dtype::of<T>()));
    throw mem::OutOfMemory(bytes, what.c_str());
  }
  py::capsule owner(p, [](void* q) { mem::release(q); });
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()), static_cast<T*>(p), owner);
}

template <typename T>
T* data(py::array_t<T>& a) {
  return a.mutable_data();
}

inline Act parse_act(const std::string& name, const char* what) {
  if (name == "tanh") return Act::Tanh;
  if (name == "relu") return Act::Relu;
  throw py::value_error(std::string(what) + " must be 'tanh' or 'relu', got '" + name + "'");
}

// What one cell needs from the generic binding below.
struct CellSpec {
  const char* name;
  int64_t gates;
  bool has_c;                                         // LSTM cell state
  int64_t (*ws_width)(int64_t H, int64_t P, bool proj);
};

// Geometry read off x and w_ih (and w_hr), with every size checked.
Seq geometry(const CellSpec& cell, const py::array& x, const py::array& w_ih, const py::object& w_hr,
             const py::object& lengths, bool reverse,
             std::vector<int64_t>& lengths_store);

template <typename T>
py::tuple forward(const CellSpec& cell, const py::array& x, const py::array& w_ih,
                  const py::array& w_hh, const py::array& b_ih, const py::array& b_hh,
                  const py::object& w_hr, const py::array& h0, const py::object& c0,
                  const py::object& lengths, bool reverse, Act act, bool training);

template <typename T>
py::tuple backward(const CellSpec& cell, const py::array& x, const py::array& w_ih,
                   const py::array& w_hh, const py::object& w_hr, const py::object& lengths,
                   bool reverse, Act act, const py::array& ws, const py::array& dout,
                   const py::array& dh_n, const py::object& dc_n, bool need_dx);

// Dtype dispatch on x: float32 or float64, anything else is a TypeError.
template <class F32, class F64>
py::tuple by_dtype(const py::array& x, F32&& f32, F64&& f64) {
  if (has_dtype<float>(x)) return f32();
  if (has_dtype<double>(x)) return f64();
  throw py::type_error("x has dtype " + std::string(py::str(x.dtype())) +
                       ", expected float32 or float64 in native byte order");
}

void bind_cell(py::module_& m, const CellSpec& cell, bool with_activation);
// fusedrnn._core.PackedWeights: the forward's packed-weight cache (cpu/packed_cache.h).
void bind_packed_weights(py::module_& m);

// Runs a kernel call without the GIL.  A call made from the main thread polls for signals
// every ~25 ms of work (taking the GIL for a moment); a pending Ctrl-C stops the kernel, which
// frees what it holds, and its KeyboardInterrupt (or whatever the signal handler raised) is
// raised here.  Calls from other threads cannot receive signals and never take the GIL.
void run_kernel(void (*kernel)(void*), void* args);
template <class F>
void run_kernel(F& f) {
  run_kernel([](void* p) { (*static_cast<F*>(p))(); }, &f);
}

}  // namespace fusedrnn::bind
