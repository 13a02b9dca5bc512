// The generic forward/backward binding shared by all cells (see common.h).
#include "common.h"

#include <limits>
#include <memory>

#include "cpu/packed_cache.h"

namespace fusedrnn::bind {

namespace {

bool is_main_thread() {
  static const unsigned long main_ident =
      py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  return PyThread_get_thread_ident() == main_ident;
}

// Called by the kernel's calling thread, which released the GIL: take it for a moment.
bool poll_signals(void*) {
  const PyGILState_STATE state = PyGILState_Ensure();
  const bool stop = PyErr_CheckSignals() != 0;  // the handler's exception stays set
  PyGILState_Release(state);
  return stop;
}

}  // namespace

void run_kernel(void (*kernel)(void*), void* args) {
  try {
    InterruptScope scope(is_main_thread() ? &poll_signals : nullptr, nullptr);
    py::gil_scoped_release nogil;
    kernel(args);
  } catch (const Interrupted&) {
    if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  } catch (const mem::OutOfMemory&) {
    throw;  // MemoryError with its message
  } catch (const std::bad_alloc&) {  // a small allocation of the standard library
    PyErr_SetString(PyExc_MemoryError, "fusedrnn: out of memory for the kernel's scratch memory");
    throw py::error_already_set();
  }
}

Seq geometry(const CellSpec& cell, const py::array& x, const py::array& w_ih, const py::object& w_hr,
             const py::object& lengths, bool reverse,
             std::vector<int64_t>& lengths_store) {
  if (x.ndim() != 3) throw py::value_error("x must be 3-D (T, B, I), got shape " + shape_str(x));
  if (w_ih.ndim() != 2) throw py::value_error("w_ih must be 2-D (G*H, I), got shape " + shape_str(w_ih));
  Seq q;
  q.T = x.shape(0);
  q.B = x.shape(1);
  q.I = x.shape(2);
  const int64_t GH = w_ih.shape(0);
  if (q.T < 1 || q.B < 1 || q.I < 1)
    throw py::value_error("x must have T, B, I >= 1, got shape " + shape_str(x));
  if (GH < cell.gates || GH % cell.gates != 0)
    throw py::value_error(std::string("w_ih must have a positive multiple of ") + std::to_string(cell.gates) +
                          " rows (" + cell.name + " gates), got shape " + shape_str(w_ih));
  q.H = GH / cell.gates;
  q.P = q.H;
  if (!w_hr.is_none()) {
    if (!cell.has_c)
      throw py::value_error(std::string("w_hr (a projection) exists only for the LSTM, not the ") + cell.name);
    const py::array hr = require_ndarray(w_hr, "w_hr");
    if (hr.ndim() != 2 || hr.shape(1) != q.H || hr.shape(0) < 1)
      throw py::value_error("w_hr must be (P, " + std::to_string(q.H) + "), got shape " + shape_str(hr));
    q.P = hr.shape(0);
  }
  // BLAS takes 32-bit sizes: the largest matrix dimension here is T*B rows.
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (q.T * q.B > kMax || GH > kMax || q.I > kMax || q.P > kMax)
    throw py::value_error("problem too large for 32-bit BLAS indices: x " + shape_str(x) +
                          ", w_ih " + shape_str(w_ih));
  q.reverse = reverse;
  if (!lengths.is_none()) {
    const py::array len = require_ndarray(lengths, "lengths");
    if (!has_dtype<int64_t>(len))
      throw py::type_error("lengths must have dtype int64, got " + std::string(py::str(len.dtype())));
    const int64_t* p = checked<int64_t>(len, "lengths", {q.B});
    lengths_store.assign(p, p + q.B);
    for (int64_t v : lengths_store)
      if (v < 1 || v > q.T)
        throw py::value_error("lengths must lie in 1.." + std::to_string(q.T) + ", got " + std::to_string(v));
    q.lengths = lengths_store.data();
  }
  return q;
}

template <typename T>
py::tuple forward(const CellSpec& cell, const py::array& x, const py::array& w_ih,
                  const py::array& w_hh, const py::array& b_ih, const py::array& b_hh,
                  const py::object& w_hr, const py::array& h0, const py::object& c0,
                  const py::object& lengths, bool reverse, Act act, bool training,
                  const py::object& packed) {
  std::vector<int64_t> len;
  const Seq q = geometry(cell, x, w_ih, w_hr, lengths, reverse, len);
  const int64_t GH = cell.gates * q.H;
  const bool proj = !w_hr.is_none();
  // Optional arrays are held here for the whole call (see require_ndarray).
  const py::array hr = proj ? require_ndarray(w_hr, "w_hr") : py::array();
  const py::array c0a = cell.has_c && !c0.is_none() ? require_ndarray(c0, "c0") : py::array();
  Weights<T> w{checked<T>(w_ih, "w_ih", {GH, q.I}), checked<T>(w_hh, "w_hh", {GH, q.P}),
               checked<T>(b_ih, "b_ih", {GH}), checked<T>(b_hh, "b_hh", {GH}),
               proj ? checked<T>(hr, "w_hr", {q.P, q.H}) : nullptr};
  ForwardArgs<T> a{};
  if (!packed.is_none()) a.packed = &packed.cast<PackedCache&>();
  a.x = checked<T>(x, "x", {q.T, q.B, q.I});
  a.h0 = checked<T>(h0, "h0", {q.B, q.P});
  if (cell.has_c) {
    if (c0.is_none()) throw py::value_error("c0 is required");
    a.c0 = checked<T>(c0a, "c0", {q.B, q.H});
  }
  auto out = empty<T>({q.T, q.B, q.P});
  auto h_n = empty<T>({q.B, q.P});
  py::object c_n = py::none(), ws = py::none();
  a.out = data(out);
  a.h_n = data(h_n);
  if (cell.has_c) {
    auto c = empty<T>({q.B, q.H});
    a.c_n = data(c);
    c_n = c;
  }
  if (training) {
    auto w_s = empty<T>({q.T, q.B, cell.ws_width(q.H, q.P, proj)}, "the training workspace");
    a.ws = data(w_s);
    ws = w_s;
  }
  const auto& k = cpu::kernels<T>();
  const auto fn = cell.gates == 4 ? k.lstm_forward : cell.gates == 3 ? k.gru_forward : k.rnn_forward;
  auto call = [&] { fn(q, act, w, a, training); };
  run_kernel(call);
  return py::make_tuple(out, h_n, c_n, ws);
}

template <typename T>
py::tuple backward(const CellSpec& cell, const py::array& x, const py::array& w_ih,
                   const py::array& w_hh, const py::object& w_hr, const py::object& lengths,
                   bool reverse, Act act, const py::array& ws, const py::array& dout,
                   const py::array& dh_n, const py::object& dc_n, bool need_dx) {
  std::vector<int64_t> len;
  const Seq q = geometry(cell, x, w_ih, w_hr, lengths, reverse, len);
  const int64_t GH = cell.gates * q.H;
  const bool proj = !w_hr.is_none();
  const py::array hr = proj ? require_ndarray(w_hr, "w_hr") : py::array();
  const py::array dcn = cell.has_c && !dc_n.is_none() ? require_ndarray(dc_n, "dc_n") : py::array();
  Weights<T> w{checked<T>(w_ih, "w_ih", {GH, q.I}), checked<T>(w_hh, "w_hh", {GH, q.P}), nullptr,
               nullptr, proj ? checked<T>(hr, "w_hr", {q.P, q.H}) : nullptr};
  BackwardArgs<T> a{};
  a.x = checked<T>(x, "x", {q.T, q.B, q.I});
  a.ws = checked<T>(ws, "workspace", {q.T, q.B, cell.ws_width(q.H, q.P, proj)});
  a.dout = checked<T>(dout, "dout", {q.T, q.B, q.P});
  a.dh_n = checked<T>(dh_n, "dh_n", {q.B, q.P});
  if (cell.has_c) {
    if (dc_n.is_none()) throw py::value_error("dc_n is required");
    a.dc_n = checked<T>(dcn, "dc_n", {q.B, q.H});
  }
  py::object dx = py::none();
  if (need_dx) {
    auto d = empty<T>({q.T, q.B, q.I});
    a.dx = data(d);
    dx = d;
  }
  auto dh0 = empty<T>({q.B, q.P});
  auto dw_ih = empty<T>({GH, q.I});
  auto dw_hh = empty<T>({GH, q.P});
  auto db_ih = empty<T>({GH});
  auto db_hh = empty<T>({GH});
  py::object dc0 = py::none(), dw_hr = py::none();
  a.dh0 = data(dh0);
  a.dw_ih = data(dw_ih);
  a.dw_hh = data(dw_hh);
  a.db_ih = data(db_ih);
  a.db_hh = data(db_hh);
  if (cell.has_c) {
    auto d = empty<T>({q.B, q.H});
    a.dc0 = data(d);
    dc0 = d;
  }
  if (proj) {
    auto d = empty<T>({q.P, q.H});
    a.dw_hr = data(d);
    dw_hr = d;
  }
  const auto& k = cpu::kernels<T>();
  const auto fn = cell.gates == 4 ? k.lstm_backward : cell.gates == 3 ? k.gru_backward : k.rnn_backward;
  auto call = [&] { fn(q, act, w, a); };
  run_kernel(call);
  return py::make_tuple(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr);
}

void bind_packed_weights(py::module_& m) {
  py::class_<PackedCache, std::shared_ptr<PackedCache>>(
      m, "PackedWeights",
      "Packed weights of one layer and direction, kept between forward calls (empty until the "
      "first forward that takes the packed loop fills it).  Reuse it only while the weights it "
      "was filled from stay unchanged; make a new one after any change.")
      .def(py::init<>())
      .def_property_readonly("ready", [](const PackedCache& c) { return c.ready.load(); },
                             "True once a forward has filled it.")
      .def_property_readonly("nbytes", [](const PackedCache& c) { return c.ready.load() ? c.nbytes() : size_t(0); },
                             "Bytes of packed weights held.");
}

void bind_cell(py::module_& m, const CellSpec& spec, bool with_activation) {
  const CellSpec cell = spec;  // copied into the closures
  const std::string name = cell.name;
  const char* act_arg = with_activation ? "activation" : "_unused";
  m.def(
      (name + "_forward").c_str(),
      [cell](const py::array& x, const py::array& w_ih, const py::array& w_hh, const py::array& b_ih,
             const py::array& b_hh, const py::object& w_hr, const py::array& h0, const py::object& c0,
             const py::object& lengths, bool reverse, const std::string& activation, bool training,
             const py::object& packed) {
        const Act act = parse_act(activation, "activation");
        if (!packed.is_none() && !py::isinstance<PackedCache>(packed))
          throw py::type_error("packed must be a PackedWeights or None, got " +
                               std::string(py::str(py::type::of(packed).attr("__name__"))));
        return by_dtype(
            x,
            [&] { return forward<float>(cell, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse, act, training, packed); },
            [&] { return forward<double>(cell, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse, act, training, packed); });
      },
      py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"),
      py::arg("w_hr"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("reverse"),
      py::arg(act_arg), py::arg("training"), py::arg("packed") = py::none(),
      ("Fused " + name + " forward over the whole sequence; returns (out, h_n, c_n, workspace). "
       "packed: a PackedWeights kept for these weights between calls (the packed loop reuses "
       "it while the weights stay unchanged, which the caller guarantees). "
       "Arguments are checked, not converted: use fusedrnn.ops for the friendly API.").c_str());
  m.def(
      (name + "_backward").c_str(),
      [cell](const py::array& x, const py::array& w_ih, const py::array& w_hh, const py::object& w_hr,
             const py::object& lengths, bool reverse, const std::string& activation,
             const py::array& ws, const py::array& dout, const py::array& dh_n, const py::object& dc_n,
             bool need_dx) {
        const Act act = parse_act(activation, "activation");
        return by_dtype(
            x,
            [&] { return backward<float>(cell, x, w_ih, w_hh, w_hr, lengths, reverse, act, ws, dout, dh_n, dc_n, need_dx); },
            [&] { return backward<double>(cell, x, w_ih, w_hh, w_hr, lengths, reverse, act, ws, dout, dh_n, dc_n, need_dx); });
      },
      py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("w_hr"), py::arg("lengths"),
      py::arg("reverse"), py::arg(act_arg), py::arg("workspace"), py::arg("dout"), py::arg("dh_n"),
      py::arg("dc_n"), py::kw_only(), py::arg("need_dx") = true,
      ("Fused " + name + " backward over the whole sequence; returns "
       "(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr).  need_dx=False skips the product "
       "for dx, which is then None.").c_str());
}

}  // namespace fusedrnn::bind
