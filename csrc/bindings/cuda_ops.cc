// The CUDA side of fusedrnn._core (built with FUSEDRNN_CUDA or FUSEDRNN_CUDA_EMULATION):
// DeviceArray (device memory with NumPy copies in and out, __cuda_array_interface__ and DLPack,
// the latter in cuda_dlpack.cc), the per-cell forward/backward on device arrays, and device
// facts.  The geometry rules are the CPU bindings' (common.cc); python/fusedrnn/cuda_ops.py
// validates first with friendlier messages.
#include "cuda_ops.h"

#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "cuda/api.h"
#include "cuda/blas.h"
#include "cuda/device.h"
#include "fusedrnn/cells/gru.h"
#include "fusedrnn/cells/lstm.h"
#include "fusedrnn/cells/rnn.h"

namespace fusedrnn::bind {
namespace {

namespace cu = fusedrnn::cuda;

py::dtype float_dtype(const py::array& a, const char* name) {
  if (has_dtype<float>(a)) return py::dtype::of<float>();
  if (has_dtype<double>(a)) return py::dtype::of<double>();
  throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) +
                       ", expected float32 or float64 in native byte order");
}

}  // namespace

DeviceArray from_numpy(const py::array& a) {
  const py::dtype dt = float_dtype(a, "array");
  if (!(a.flags() & py::array::c_style)) throw py::value_error("array must be C-contiguous");
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  DeviceArray d = DeviceArray::empty(shape, dt);
  cu::copy(d.ptr, a.data(), d.nbytes(), cudaMemcpyHostToDevice);
  return d;
}

py::array to_numpy(const DeviceArray& d) {
  py::array out(d.dtype, std::vector<py::ssize_t>(d.shape.begin(), d.shape.end()));
  cu::synchronize();
  cu::copy(out.mutable_data(), d.ptr, d.nbytes(), cudaMemcpyDeviceToHost);
  return out;
}

DeviceArray clone(const DeviceArray& d) {
  DeviceArray c = DeviceArray::empty(d.shape, d.dtype);
  cu::copy(c.ptr, d.ptr, d.nbytes(), cudaMemcpyDeviceToDevice);
  return c;
}

namespace {

void copy_from(DeviceArray& d, const py::array& a) {
  if (!a.dtype().equal(d.dtype) || !(a.flags() & py::array::c_style))
    throw py::type_error("copy_from needs a C-contiguous " + std::string(py::str(d.dtype)) + " array, got " +
                         std::string(py::str(a.dtype())));
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  if (shape != d.shape)
    throw py::value_error("copy_from: shape " + shape_str(shape) + " differs from " + shape_str(d.shape));
  cu::copy(d.ptr, a.data(), d.nbytes(), cudaMemcpyHostToDevice);
}

py::dict interface(const DeviceArray& d) {
  py::dict r;
  py::tuple shape(d.shape.size());
  for (size_t i = 0; i < d.shape.size(); ++i) shape[i] = d.shape[i];
  r["shape"] = shape;
  r["typestr"] = std::string(d.is_f32() ? "<f4" : "<f8");
  r["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(d.ptr), false);
  r["strides"] = py::none();
  r["version"] = 3;
  r["stream"] = 1;  // the legacy default stream, on which fusedrnn queues its work
  return r;
}

// Zero-copy view of an object exporting __cuda_array_interface__ (version 2 or 3): a
// C-contiguous float32/float64 array in device memory, kept alive by the view.
DeviceArray from_interface(const py::object& obj) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw py::type_error("object of type " + std::string(py::str(py::type::of(obj).attr("__name__"))) +
                         " has no __cuda_array_interface__");
  const py::dict cai = obj.attr("__cuda_array_interface__");
  for (const char* key : {"shape", "typestr", "data", "version"})
    if (!cai.contains(key)) throw py::value_error(std::string("__cuda_array_interface__ lacks '") + key + "'");
  const int version = cai["version"].cast<int>();
  if (version < 2 || version > 3)
    throw py::value_error("__cuda_array_interface__ version " + std::to_string(version) + " is not supported (2 or 3)");
  const std::string typestr = cai["typestr"].cast<std::string>();
  py::dtype dt;
  if (typestr == "<f4") dt = py::dtype::of<float>();
  else if (typestr == "<f8") dt = py::dtype::of<double>();
  else throw py::type_error("device array has typestr '" + typestr + "', expected '<f4' or '<f8'");
  std::vector<int64_t> shape;
  for (auto s : cai["shape"].cast<py::tuple>()) shape.push_back(s.cast<int64_t>());
  if (cai.contains("mask") && !cai["mask"].is_none())
    throw py::value_error("masked device arrays are not supported");
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    auto strides = cai["strides"].cast<std::vector<int64_t>>();
    int64_t expect = dt.itemsize();
    bool contiguous = strides.size() == shape.size();
    for (size_t i = shape.size(); contiguous && i-- > 0;) {
      if (shape[i] != 1 && strides[i] != expect) contiguous = false;
      expect *= shape[i];
    }
    if (!contiguous) throw py::value_error("device array must be C-contiguous (strides " +
                                           shape_str(strides) + " for shape " + shape_str(shape) + ")");
  }
  const auto data = cai["data"].cast<py::tuple>();
  void* ptr = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  if (data[1].cast<bool>()) throw py::value_error("read-only device arrays are not supported");
  DeviceArray d;
  d.shape = shape;
  d.dtype = dt;
  if (d.nbytes() > 0) {
    cudaPointerAttributes attr{};
    FUSEDRNN_CUDA_CHECK(cudaPointerGetAttributes(&attr, ptr));
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
      throw py::value_error("__cuda_array_interface__ data pointer is not device memory");
  }
  if (version >= 3 && cai.contains("stream") && !cai["stream"].is_none()) {
    const auto stream = cai["stream"].cast<uintptr_t>();
    if (stream == 0) throw py::value_error("__cuda_array_interface__ stream 0 is disallowed by the protocol");
    // 1 and 2 are the default streams, ordered with fusedrnn's work already.
    if (stream > 2) FUSEDRNN_CUDA_CHECK(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)));
  }
  d.ptr = ptr;
  auto* keep = new py::object(obj);
  d.owner = std::shared_ptr<void>(ptr, [keep](void*) {
    py::gil_scoped_acquire gil;
    delete keep;
  });
  return d;
}

// --- the cells -----------------------------------------------------------------------------

struct Cell {
  const char* name;
  int64_t gates;
  bool has_c;
  int64_t (*ws_width)(int64_t H, int64_t P, bool proj);
};

const Cell& cell_of(const std::string& name) {
  static const Cell cells[] = {
      {"lstm", lstm::kGates, true, [](int64_t H, int64_t P, bool proj) { return lstm::ws_width(H, P, proj); }},
      {"gru", gru::kGates, false, [](int64_t H, int64_t, bool) { return gru::ws_width(H); }},
      {"rnn", rnn::kGates, false, [](int64_t H, int64_t, bool) { return rnn::ws_width(H); }},
  };
  for (const Cell& c : cells)
    if (name == c.name) return c;
  throw py::value_error("cell must be 'lstm', 'gru' or 'rnn', got '" + name + "'");
}

const DeviceArray* opt(const py::object& o, const char* name) {
  if (o.is_none()) return nullptr;
  if (!py::isinstance<DeviceArray>(o))
    throw py::type_error(std::string(name) + " must be a DeviceArray or None, got " +
                         std::string(py::str(py::type::of(o).attr("__name__"))));
  return &o.cast<const DeviceArray&>();
}

template <typename T>
T* checked(const DeviceArray& a, const char* name, const std::vector<int64_t>& shape) {
  if (!a.dtype.equal(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype)) + ", expected " +
                         std::string(py::str(py::dtype::of<T>())));
  if (a.shape != shape)
    throw py::value_error(std::string(name) + " has shape " + shape_str(a.shape) + ", expected " + shape_str(shape));
  return static_cast<T*>(a.ptr);
}

struct Geometry {
  Seq q;
  std::vector<int64_t> lengths;
  DeviceArray d_lengths;
};

Geometry geometry(const Cell& cell, const DeviceArray& x, const DeviceArray& w_ih, const DeviceArray* w_hr,
                  const py::object& lengths, bool reverse) {
  if (x.shape.size() != 3) throw py::value_error("x must be 3-D (T, B, I), got shape " + shape_str(x.shape));
  if (w_ih.shape.size() != 2) throw py::value_error("w_ih must be 2-D (G*H, I), got shape " + shape_str(w_ih.shape));
  Geometry g;
  Seq& q = g.q;
  q.T = x.shape[0], q.B = x.shape[1], q.I = x.shape[2];
  const int64_t GH = w_ih.shape[0];
  if (q.T < 1 || q.B < 1 || q.I < 1) throw py::value_error("x must have T, B, I >= 1, got shape " + shape_str(x.shape));
  if (GH < cell.gates || GH % cell.gates)
    throw py::value_error("w_ih must have a positive multiple of " + std::to_string(cell.gates) + " rows (" +
                          cell.name + " gates), got shape " + shape_str(w_ih.shape));
  q.H = q.P = GH / cell.gates;
  if (w_hr) {
    if (!cell.has_c) throw py::value_error(std::string("w_hr exists only for the LSTM, not the ") + cell.name);
    if (w_hr->shape.size() != 2 || w_hr->shape[1] != q.H || w_hr->shape[0] < 1)
      throw py::value_error("w_hr must be (P, " + std::to_string(q.H) + "), got shape " + shape_str(w_hr->shape));
    q.P = w_hr->shape[0];
  }
  constexpr int64_t kMax = 0x7fffffff;
  if (q.T * q.B > kMax || GH > kMax || q.I > kMax || q.P > kMax)
    throw py::value_error("problem too large for 32-bit cuBLAS indices: x " + shape_str(x.shape));
  q.reverse = reverse;
  if (!lengths.is_none()) {
    const py::array len = require_ndarray(lengths, "lengths");
    if (!has_dtype<int64_t>(len))
      throw py::type_error("lengths must have dtype int64, got " + std::string(py::str(len.dtype())));
    const int64_t* p = bind::checked<int64_t>(len, "lengths", {q.B});
    g.lengths.assign(p, p + q.B);
    for (int64_t v : g.lengths)
      if (v < 1 || v > q.T) throw py::value_error("lengths must lie in 1.." + std::to_string(q.T) + ", got " + std::to_string(v));
    q.lengths = g.lengths.data();
    g.d_lengths = DeviceArray::empty({q.B}, py::dtype::of<int64_t>());
    cu::copy(g.d_lengths.ptr, p, sizeof(int64_t) * q.B, cudaMemcpyHostToDevice);
  }
  return g;
}

template <typename T>
py::tuple forward(const Cell& cell, const DeviceArray& x, const DeviceArray& w_ih, const DeviceArray& w_hh,
                  const DeviceArray& b_ih, const DeviceArray& b_hh, const DeviceArray* w_hr,
                  const DeviceArray& h0, const DeviceArray* c0, const py::object& lengths, bool reverse,
                  Act act, bool training) {
  Geometry g = geometry(cell, x, w_ih, w_hr, lengths, reverse);
  const Seq& q = g.q;
  const int64_t GH = cell.gates * q.H;
  const py::dtype dt = py::dtype::of<T>();
  Weights<T> w{checked<T>(w_ih, "w_ih", {GH, q.I}), checked<T>(w_hh, "w_hh", {GH, q.P}),
               checked<T>(b_ih, "b_ih", {GH}), checked<T>(b_hh, "b_hh", {GH}),
               w_hr ? checked<T>(*w_hr, "w_hr", {q.P, q.H}) : nullptr};
  ForwardArgs<T> a{};
  a.x = checked<T>(x, "x", {q.T, q.B, q.I});
  a.h0 = checked<T>(h0, "h0", {q.B, q.P});
  if (cell.has_c) {
    if (!c0) throw py::value_error("c0 is required");
    a.c0 = checked<T>(*c0, "c0", {q.B, q.H});
  }
  DeviceArray out = DeviceArray::empty({q.T, q.B, q.P}, dt), h_n = DeviceArray::empty({q.B, q.P}, dt);
  a.out = static_cast<T*>(out.ptr);
  a.h_n = static_cast<T*>(h_n.ptr);
  py::object c_n = py::none(), ws = py::none();
  if (cell.has_c) {
    DeviceArray c = DeviceArray::empty({q.B, q.H}, dt);
    a.c_n = static_cast<T*>(c.ptr);
    c_n = py::cast(std::move(c));
  }
  if (training) {
    DeviceArray w_s = DeviceArray::empty({q.T, q.B, cell.ws_width(q.H, q.P, w_hr != nullptr)}, dt);
    a.ws = static_cast<T*>(w_s.ptr);
    ws = py::cast(std::move(w_s));
  }
  const auto* dl = static_cast<const int64_t*>(g.d_lengths.ptr);
  {
    py::gil_scoped_release nogil;  // the kernels touch no Python object
    if (cell.gates == 4) cu::lstm_forward<T>(q, dl, act, w, a, training);
    else if (cell.gates == 3) cu::gru_forward<T>(q, dl, act, w, a, training);
    else cu::rnn_forward<T>(q, dl, act, w, a, training);
  }
  return py::make_tuple(std::move(out), std::move(h_n), c_n, ws);
}

template <typename T>
py::tuple backward(const Cell& cell, const DeviceArray& x, const DeviceArray& w_ih, const DeviceArray& w_hh,
                   const DeviceArray* w_hr, const py::object& lengths, bool reverse, Act act,
                   const DeviceArray& ws, const DeviceArray& dout, const DeviceArray& dh_n, const DeviceArray* dc_n,
                   bool need_dx) {
  Geometry g = geometry(cell, x, w_ih, w_hr, lengths, reverse);
  const Seq& q = g.q;
  const int64_t GH = cell.gates * q.H;
  const py::dtype dt = py::dtype::of<T>();
  Weights<T> w{checked<T>(w_ih, "w_ih", {GH, q.I}), checked<T>(w_hh, "w_hh", {GH, q.P}), nullptr, nullptr,
               w_hr ? checked<T>(*w_hr, "w_hr", {q.P, q.H}) : nullptr};
  BackwardArgs<T> a{};
  a.x = checked<T>(x, "x", {q.T, q.B, q.I});
  a.ws = checked<T>(ws, "workspace", {q.T, q.B, cell.ws_width(q.H, q.P, w_hr != nullptr)});
  a.dout = checked<T>(dout, "dout", {q.T, q.B, q.P});
  a.dh_n = checked<T>(dh_n, "dh_n", {q.B, q.P});
  if (cell.has_c) {
    if (!dc_n) throw py::value_error("dc_n is required");
    a.dc_n = checked<T>(*dc_n, "dc_n", {q.B, q.H});
  }
  auto make = [&](std::vector<int64_t> shape, T*& dst) {
    DeviceArray d = DeviceArray::empty(shape, dt);
    dst = static_cast<T*>(d.ptr);
    return d;
  };
  DeviceArray dh0 = make({q.B, q.P}, a.dh0);
  DeviceArray dw_ih = make({GH, q.I}, a.dw_ih), dw_hh = make({GH, q.P}, a.dw_hh);
  DeviceArray db_ih = make({GH}, a.db_ih), db_hh = make({GH}, a.db_hh);
  py::object dx = py::none(), dc0 = py::none(), dw_hr = py::none();
  if (need_dx) dx = py::cast(make({q.T, q.B, q.I}, a.dx));
  if (cell.has_c) dc0 = py::cast(make({q.B, q.H}, a.dc0));
  if (w_hr) dw_hr = py::cast(make({q.P, q.H}, a.dw_hr));
  const auto* dl = static_cast<const int64_t*>(g.d_lengths.ptr);
  {
    py::gil_scoped_release nogil;
    if (cell.gates == 4) cu::lstm_backward<T>(q, dl, act, w, a);
    else if (cell.gates == 3) cu::gru_backward<T>(q, dl, act, w, a);
    else cu::rnn_backward<T>(q, dl, act, w, a);
  }
  return py::make_tuple(dx, std::move(dh0), dc0, std::move(dw_ih), std::move(dw_hh), std::move(db_ih),
                        std::move(db_hh), dw_hr);
}

// Timing with CUDA events on the default stream (on the emulated device: host wall time).
struct Timer {
  cudaEvent_t start = nullptr, stop = nullptr;
  Timer() {
    FUSEDRNN_CUDA_CHECK(cudaEventCreate(&start));
    FUSEDRNN_CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~Timer() {
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
  }
  void begin() { FUSEDRNN_CUDA_CHECK(cudaEventRecord(start, nullptr)); }
  float end() {
    FUSEDRNN_CUDA_CHECK(cudaEventRecord(stop, nullptr));
    FUSEDRNN_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    FUSEDRNN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return ms;
  }
};

#if defined(FUSEDRNN_CUDA_EMULATION)
// Test hooks: one cuBLAS call on copies of NumPy buffers in emulated device memory (the
// buffers are the flat column-major storage); returns C, or raises with the cuBLAS status.
DeviceArray device_copy(const py::array& a) { return from_numpy(a); }
#endif

}  // namespace

void bind_cuda(py::module_& m) {
  py::class_<DeviceArray>(m, "DeviceArray",
                          "A C-contiguous float32/float64 array in device memory (fusedrnn's own, or a "
                          "zero-copy view of another library's).")
      .def_static("from_numpy", [](const py::array& a) { return from_numpy(a); }, py::arg("array"),
                  "Copy a C-contiguous float32/float64 NumPy array to the device.")
      .def_static("from_cuda_array_interface", &from_interface, py::arg("obj"),
                  "Zero-copy view of an object exporting __cuda_array_interface__.")
      .def_static("from_dlpack", &from_dlpack, py::arg("obj"),
                  "Zero-copy view of an object exporting __dlpack__ and __dlpack_device__ whose data is "
                  "C-contiguous float32/float64 CUDA memory (device type 2, or 13 for managed memory) on "
                  "device 0.  Taken on the legacy default stream (stream=1), as a DLPack 1.0 versioned "
                  "capsule when the producer offers one; read-only tensors are refused.")
      .def_static("empty", [](std::vector<int64_t> shape, py::dtype dt) { return DeviceArray::empty(shape, dt); })
      .def("numpy", &to_numpy, "Copy to a new NumPy array.")
      .def("copy_from", &copy_from, py::arg("array"), "Overwrite from a NumPy array of the same shape and dtype.")
      .def("copy", &clone, "A new device array with the same contents.")
      .def_property_readonly("shape", [](const DeviceArray& d) {
        py::tuple t(d.shape.size());
        for (size_t i = 0; i < d.shape.size(); ++i) t[i] = d.shape[i];
        return t;
      })
      .def_property_readonly("dtype", [](const DeviceArray& d) { return d.dtype; })
      .def_property_readonly("ndim", [](const DeviceArray& d) { return d.shape.size(); })
      .def_property_readonly("size", &DeviceArray::size)
      .def_property_readonly("nbytes", &DeviceArray::nbytes)
      .def_property_readonly("ptr", [](const DeviceArray& d) { return reinterpret_cast<uintptr_t>(d.ptr); })
      .def_property_readonly("__cuda_array_interface__", &interface)
      .def("__dlpack__", &to_dlpack, py::kw_only(), py::arg("stream") = py::none(),
           py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(), py::arg("copy") = py::none(),
           "A DLPack capsule sharing this array's memory (copy=True: a copy's); versioned when "
           "max_version >= (1, 0), else the legacy 'dltensor'.  stream: the consumer's CUDA stream "
           "(None or 1: the legacy default stream fusedrnn queues its work on; 2: the per-thread "
           "default stream; -1: no synchronization; another stream handle: all queued work is "
           "waited for first).")
      .def("__dlpack_device__", [](const DeviceArray&) { return py::make_tuple(2, 0); },
           "(2, 0): DLPack's kDLCUDA, device 0.")
      // Pickled through a host copy (a layer kept for later, multiprocessing).
      .def(py::pickle([](const DeviceArray& d) { return py::make_tuple(to_numpy(d)); },
                      [](const py::tuple& t) {
                        if (t.size() != 1) throw std::runtime_error("invalid DeviceArray state");
                        return from_numpy(t[0].cast<py::array>());
                      }))
      .def("__repr__", [](const DeviceArray& d) {
        return "DeviceArray(shape=" + shape_str(d.shape) + ", dtype=" + std::string(py::str(d.dtype)) + ")";
      });

  m.def("cuda_device_count", &cu::device_count, "CUDA devices visible (0 when there is no driver or GPU).");
  m.def("cuda_synchronize", &cu::synchronize, "Wait for all queued device work.");

  m.def(
      "cuda_forward",
      [](const std::string& cell_name, const DeviceArray& x, const DeviceArray& w_ih, const DeviceArray& w_hh,
         const DeviceArray& b_ih, const DeviceArray& b_hh, const py::object& w_hr, const DeviceArray& h0,
         const py::object& c0, const py::object& lengths, bool reverse, const std::string& activation,
         bool training) {
        const Cell& cell = cell_of(cell_name);
        const Act act = parse_act(activation, "activation");
        const DeviceArray* hr = opt(w_hr, "w_hr");
        const DeviceArray* c = opt(c0, "c0");
        if (x.dtype.equal(py::dtype::of<float>()))
          return forward<float>(cell, x, w_ih, w_hh, b_ih, b_hh, hr, h0, c, lengths, reverse, act, training);
        if (x.dtype.equal(py::dtype::of<double>()))
          return forward<double>(cell, x, w_ih, w_hh, b_ih, b_hh, hr, h0, c, lengths, reverse, act, training);
        throw py::type_error("x has dtype " + std::string(py::str(x.dtype)) + ", expected float32 or float64");
      },
      py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"),
      py::arg("w_hr"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("reverse"),
      py::arg("activation"), py::arg("training"),
      "Fused forward on device arrays; returns (out, h_n, c_n, workspace) as DeviceArrays.");
  m.def(
      "cuda_backward",
      [](const std::string& cell_name, const DeviceArray& x, const DeviceArray& w_ih, const DeviceArray& w_hh,
         const py::object& w_hr, const py::object& lengths, bool reverse, const std::string& activation,
         const DeviceArray& ws, const DeviceArray& dout, const DeviceArray& dh_n, const py::object& dc_n,
         bool need_dx) {
        const Cell& cell = cell_of(cell_name);
        const Act act = parse_act(activation, "activation");
        const DeviceArray* hr = opt(w_hr, "w_hr");
        const DeviceArray* dc = opt(dc_n, "dc_n");
        if (x.dtype.equal(py::dtype::of<float>()))
          return backward<float>(cell, x, w_ih, w_hh, hr, lengths, reverse, act, ws, dout, dh_n, dc, need_dx);
        if (x.dtype.equal(py::dtype::of<double>()))
          return backward<double>(cell, x, w_ih, w_hh, hr, lengths, reverse, act, ws, dout, dh_n, dc, need_dx);
        throw py::type_error("x has dtype " + std::string(py::str(x.dtype)) + ", expected float32 or float64");
      },
      py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("w_hr"), py::arg("lengths"),
      py::arg("reverse"), py::arg("activation"), py::arg("workspace"), py::arg("dout"), py::arg("dh_n"),
      py::arg("dc_n"), py::kw_only(), py::arg("need_dx") = true,
      "Fused backward on device arrays; returns (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr); "
      "need_dx=False skips dx, which is then None.");

  py::class_<Timer>(m, "CudaTimer", "Elapsed device time between begin() and end(), in ms (CUDA events).")
      .def(py::init<>())
      .def("begin", &Timer::begin)
      .def("end", &Timer::end);

  m.attr("cuda_emulated") = cu::emulated();

#if defined(FUSEDRNN_CUDA_EMULATION)
  m.def(
      "_emu_gemm",
      [](bool ta, bool tb, int mm, int n, int k, double alpha, const py::array& A, int lda, const py::array& B,
         int ldb, double beta, const py::array& C, int ldc) {
        const bool f32 = has_dtype<float>(A);
        auto run = [&](auto tag) {
          using T = decltype(tag);
          DeviceArray dA = device_copy(A), dB = device_copy(B), dC = device_copy(C);
          const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
          cublasStatus_t s;
          if constexpr (std::is_same_v<T, float>)
            s = cublasSgemm(cu::blas_handle(), ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, mm, n,
                            k, &al, static_cast<T*>(dA.ptr), lda, static_cast<T*>(dB.ptr), ldb, &be,
                            static_cast<T*>(dC.ptr), ldc);
          else
            s = cublasDgemm(cu::blas_handle(), ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, mm, n,
                            k, &al, static_cast<T*>(dA.ptr), lda, static_cast<T*>(dB.ptr), ldb, &be,
                            static_cast<T*>(dC.ptr), ldc);
          if (s != CUBLAS_STATUS_SUCCESS) cu::fail("cublas gemm", s);
          return to_numpy(dC);
        };
        return f32 ? run(float{}) : run(double{});
      },
      "Test hook: one emulated cublas{S,D}gemm on flat column-major buffers; returns C.");
  m.def(
      "_emu_gemv",
      [](bool trans, int mm, int n, double alpha, const py::array& A, int lda, const py::array& x, double beta,
         const py::array& y) {
        const bool f32 = has_dtype<float>(A);
        auto run = [&](auto tag) {
          using T = decltype(tag);
          DeviceArray dA = device_copy(A), dx = device_copy(x), dy = device_copy(y);
          const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
          cublasStatus_t s;
          if constexpr (std::is_same_v<T, float>)
            s = cublasSgemv(cu::blas_handle(), trans ? CUBLAS_OP_T : CUBLAS_OP_N, mm, n, &al, static_cast<T*>(dA.ptr),
                            lda, static_cast<T*>(dx.ptr), 1, &be, static_cast<T*>(dy.ptr), 1);
          else
            s = cublasDgemv(cu::blas_handle(), trans ? CUBLAS_OP_T : CUBLAS_OP_N, mm, n, &al, static_cast<T*>(dA.ptr),
                            lda, static_cast<T*>(dx.ptr), 1, &be, static_cast<T*>(dy.ptr), 1);
          if (s != CUBLAS_STATUS_SUCCESS) cu::fail("cublas gemv", s);
          return to_numpy(dy);
        };
        return f32 ? run(float{}) : run(double{});
      },
      "Test hook: one emulated cublas{S,D}gemv; returns y.");
  m.def("_emu_bytes_in_use", &cu::emu::bytes_in_use, "Emulated device memory currently allocated.");
  m.def(
      "_emu_traffic",
      [] {
        const cu::emu::Traffic t = cu::emu::traffic();
        return py::make_tuple(t.to_device, t.to_host);
      },
      "Bytes copied (host to device, device to host) since the start, on the emulated device.");
  m.def(
      "_emu_memcpy_check",
      [](const std::string& kind) {
        // A host-to-device copy whose destination is host memory must fail as on a GPU.
        std::vector<float> host(4, 1.0f), other(4);
        const cudaMemcpyKind k = kind == "h2d" ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
        FUSEDRNN_CUDA_CHECK(cudaMemcpy(other.data(), host.data(), sizeof(float) * 4, k));
      },
      "Test hook: a copy with the wrong direction (raises RuntimeError).");
#endif
}

}  // namespace fusedrnn::bind
