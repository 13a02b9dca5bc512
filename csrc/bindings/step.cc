// fusedrnn._core.Step32 / Step64: the streaming step (csrc/cpu/step.h) over weights packed
// once at construction.  python/fusedrnn/layers.py builds one per layer and builds it again
// when the layer's weight version changes; the object never looks at the layer's arrays after
// packing.  The GIL is released only for steps of at least kReleaseWork multiply-adds: a
// streaming step (B = 1, H = 128: 131k) takes a few microseconds, and releasing and taking
// the GIL back would add to every one; a larger batch lets other Python threads run meanwhile.
// A mutex per object guards its scratch, so concurrent calls on one object are safe either way.
#include "cpu/step.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"

namespace fusedrnn::bind {
namespace {

using cpu::Panels;
using cpu::StepCell;
using cpu::StepLayer;

constexpr int64_t kReleaseWork = int64_t(1) << 21;

template <typename T>
using StepFn = void (*)(const cpu::StepArgs<T>&);

template <typename T>
StepFn<T> step_kernel() {
  const std::string isa = cpu::isa();  // the variant set_isa() chose for every kernel
#ifdef FUSEDRNN_HAVE_AVX512
  if (isa == "avx512") return &cpu::avx512::step_forward<T>;
#endif
#ifdef FUSEDRNN_HAVE_AVX2
  if (isa == "avx2") return &cpu::avx2::step_forward<T>;
#endif
  return &cpu::baseline::step_forward<T>;
}

// 64-byte aligned storage (std::vector is only aligned to alignof(T)).
template <typename T>
struct Aligned {
  std::vector<T> raw;
  T* data = nullptr;
  explicit Aligned(int64_t n) : raw(static_cast<size_t>(n) + 64 / sizeof(T), T(0)) {
    auto p = reinterpret_cast<uintptr_t>(raw.data());
    data = reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
  }
};

template <typename T>
class StepModel {
 public:
  StepModel(const std::string& cell, const std::string& act, int64_t H, int64_t P,
            const py::list& layers)
      : H_(H), P_(P) {
    if (cell == "lstm") cell_ = StepCell::Lstm, G_ = 4;
    else if (cell == "gru") cell_ = StepCell::Gru, G_ = 3;
    else if (cell == "rnn") cell_ = StepCell::Rnn, G_ = 1;
    else throw py::value_error("cell must be 'lstm', 'gru' or 'rnn', got '" + cell + "'");
    if (act != "tanh" && act != "relu")
      throw py::value_error("act must be 'tanh' or 'relu', got '" + act + "'");
    act_ = act == "tanh" ? Act::Tanh : Act::Relu;
    if (H < 1 || P < 1 || P > H) throw py::value_error("need 1 <= P <= H");
    if (layers.size() < 1) throw py::value_error("layers must hold at least one layer");
    L_ = static_cast<int64_t>(layers.size());
    for (int64_t l = 0; l < L_; ++l) {
      const py::tuple t = layers[l].cast<py::tuple>();
      if (t.size() != 5)
        throw py::value_error("each layer is (w_ih, w_hh, b_ih, b_hh, w_hr)");
      const py::array w_ih = require_ndarray(t[0], "w_ih");
      if (w_ih.ndim() != 2) throw py::value_error("w_ih must be 2-D, got shape " + shape_str(w_ih));
      const int64_t I = w_ih.shape(1);
      if (l == 0) I_ = I;
      else if (I != P) throw py::value_error("w_ih of a layer above the first must be (G*H, P)");
      StepLayer<T> s;
      s.ih = pack(w_ih, "w_ih", G_ * H, I);
      s.hh = pack(require_ndarray(t[1], "w_hh"), "w_hh", G_ * H, P);
      s.b_ih = vector(t[2], "b_ih");
      s.b_hh = vector(t[3], "b_hh");
      if (!t[4].is_none()) {
        if (cell_ != StepCell::Lstm || P == H)
          throw py::value_error("w_hr (a projection) needs an LSTM with P < H");
        s.hr = pack(require_ndarray(t[4], "w_hr"), "w_hr", P, H);
      } else if (P != H) {
        throw py::value_error("P < H needs w_hr");
      }
      layers_.push_back(s);
      work_per_row_ += G_ * H * (I + P) + (s.hr.N ? P * H : 0);
    }
  }

  int64_t input_size() const { return I_; }

  // layer.step's whole call: (out, state') from x and the layer's state argument (None, h, or
  // for the LSTM (h, c)); out is a view of the top layer of h'.
  py::tuple step_state(const py::object& x, const py::object& state) {
    py::object h = py::none(), c = py::none();
    if (cell_ == StepCell::Lstm) {
      if (!state.is_none()) {
        if (!(py::isinstance<py::tuple>(state) || py::isinstance<py::list>(state)) || py::len(state) != 2)
          throw py::type_error("state must be None or a tuple (h, c), got " +
                               std::string(py::str(py::type::of(state).attr("__name__"))));
        h = state[py::int_(0)];
        c = state[py::int_(1)];
      }
    } else {
      h = state;
    }
    const py::tuple hc = step(x, h, c);
    const py::array h_out = hc[0];
    // out: the top layer of h', a view sharing h' memory (as forward's out and h_n do not).
    const py::ssize_t L = h_out.shape(0);
    std::vector<py::ssize_t> shape(h_out.shape() + 1, h_out.shape() + h_out.ndim());
    std::vector<py::ssize_t> strides(h_out.strides() + 1, h_out.strides() + h_out.ndim());
    const py::array out(h_out.dtype(), shape, strides,
                        static_cast<const char*>(h_out.data()) + (L - 1) * h_out.strides(0), h_out);
    if (cell_ == StepCell::Lstm) return py::make_tuple(out, hc);
    return py::make_tuple(out, h_out);
  }

  // (h', c') for one step; x [B, I] or [I], h [L, B, P] or [L, P] (None: zeros), c alike.
  py::tuple step(const py::object& x_obj, const py::object& h_obj, const py::object& c_obj) {
    const py::array x = require_ndarray(x_obj, "x");
    check_dtype(x, "x");
    const bool batched = x.ndim() == 2;
    if ((x.ndim() != 1 && x.ndim() != 2) || x.shape(x.ndim() - 1) != I_ ||
        (batched && x.shape(0) < 1))
      throw py::value_error("x must have shape (B, " + std::to_string(I_) + ") or (" +
                            std::to_string(I_) + ",) for one step (input_size = " +
                            std::to_string(I_) + "), got " + shape_str(x));
    const int64_t B = batched ? x.shape(0) : 1;
    const bool lstm = cell_ == StepCell::Lstm;
    // The object's buffers (zeros for absent states, scratch) are used under its mutex, taken
    // without waiting while holding the GIL (its holder may need the GIL back).
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock()) {
      py::gil_scoped_release nogil;
      lock.lock();
    }
    const T* h = state(h_obj, "h", batched, B, P_, h_zero_);
    const T* c = lstm ? state(c_obj, "c", batched, B, H_, c_zero_) : nullptr;
    if (!lstm && !c_obj.is_none()) throw py::value_error("c: only an LSTM has a cell state");

    std::vector<py::ssize_t> hs{L_, B, P_}, cs{L_, B, H_};
    if (!batched) hs = {L_, P_}, cs = {L_, H_};
    py::array_t<T> h_out(hs);
    py::array_t<T> c_out = lstm ? py::array_t<T>(cs) : py::array_t<T>();
    const py::array xc = contiguous(x);
    const int64_t need = B * (2 * G_ * H_ + H_);
    if (static_cast<int64_t>(scratch_.size()) < need) scratch_.resize(need);
    cpu::StepArgs<T> a{cell_, act_, L_, B, H_, P_, G_, layers_.data(),
                       static_cast<const T*>(xc.data()), h, c, h_out.mutable_data(),
                       lstm ? c_out.mutable_data() : nullptr, scratch_.data()};
    const StepFn<T> kernel = step_kernel<T>();
    if (B * work_per_row_ >= kReleaseWork) {
      py::gil_scoped_release nogil;
      kernel(a);
    } else {
      kernel(a);
    }
    if (lstm) return py::make_tuple(h_out, c_out);
    return py::make_tuple(h_out, py::none());
  }

 private:
  Panels<T> pack(const py::array& w_any, const char* name, int64_t N, int64_t K) {
    const py::array_t<T, py::array::c_style | py::array::forcecast> w(w_any);
    if (w.ndim() != 2 || w.shape(0) != N || w.shape(1) != K)
      throw py::value_error(std::string(name) + " must have shape " + shape_str({N, K}) +
                            ", got " + shape_str(w));
    constexpr int64_t W = cpu::kStepPanel<T>;
    const int64_t panels = (N + W - 1) / W;
    store_.push_back(std::make_unique<Aligned<T>>(panels * K * W));
    T* d = store_.back()->data;
    const T* src = w.data();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) d[((n / W) * K + k) * W + n % W] = src[n * K + k];
    return {d, N, K};
  }

  const T* vector(const py::object& o, const char* name) {
    const int64_t n = G_ * H_;
    store_.push_back(std::make_unique<Aligned<T>>(n));
    T* d = store_.back()->data;
    if (o.is_none()) return d;  // no biases: zeros
    const py::array_t<T, py::array::c_style | py::array::forcecast> v(o);
    if (v.ndim() != 1 || v.shape(0) != n)
      throw py::value_error(std::string(name) + " must have shape " + shape_str({n}) + ", got " +
                            shape_str(v));
    std::copy(v.data(), v.data() + n, d);
    return d;
  }

  static void check_dtype(const py::array& a, const char* name) {
    if (!has_dtype<T>(a))
      throw py::type_error(std::string(name) + " must have dtype " +
                           std::string(py::str(py::dtype::of<T>())) +
                           " (the layer's dtype), got " + std::string(py::str(a.dtype())));
  }

  static py::array contiguous(const py::array& a) {
    if ((a.flags() & py::array::c_style) && reinterpret_cast<uintptr_t>(a.data()) % alignof(T) == 0)
      return a;
    return py::array_t<T, py::array::c_style | py::array::forcecast>(a);
  }

  // A state argument's data (kept alive in `keep`), or zeros for None.
  const T* state(const py::object& o, const char* name, bool batched, int64_t B, int64_t width,
                 std::vector<T>& zeros) {
    if (o.is_none()) {
      zeros.assign(L_ * B * width, T(0));
      return zeros.data();
    }
    const py::array a = require_ndarray(o, name);
    check_dtype(a, name);
    const bool ok = batched ? (a.ndim() == 3 && a.shape(0) == L_ && a.shape(1) == B && a.shape(2) == width)
                            : (a.ndim() == 2 && a.shape(0) == L_ && a.shape(1) == width);
    if (!ok) {
      const std::vector<int64_t> want = batched ? std::vector<int64_t>{L_, B, width}
                                                : std::vector<int64_t>{L_, width};
      throw py::value_error(std::string(name) + " must have shape (num_layers, " +
                            (batched ? "B, " : "") + (width == H_ ? "H" : "P") + ") = " +
                            shape_str(want) + (batched ? "" : " (x is one unbatched step)") +
                            ", got " + shape_str(a));
    }
    if (!(a.flags() & py::array::c_style) || reinterpret_cast<uintptr_t>(a.data()) % alignof(T)) {
      const py::array_t<T, py::array::c_style | py::array::forcecast> c(a);
      zeros.assign(c.data(), c.data() + c.size());
      return zeros.data();
    }
    return static_cast<const T*>(a.data());
  }

  StepCell cell_;
  Act act_;
  int64_t L_ = 0, H_, P_, G_ = 1, I_ = 0;
  std::vector<StepLayer<T>> layers_;
  std::vector<std::unique_ptr<Aligned<T>>> store_;
  std::vector<T> scratch_, h_zero_, c_zero_;
  int64_t work_per_row_ = 0;  // multiply-adds of one row's step
  std::mutex mutex_;
};

template <typename T>
void bind_one(py::module_& m, const char* name) {
  py::class_<StepModel<T>>(m, name, "Packed weights of a stacked one-direction RNN for one-step calls.")
      .def(py::init<const std::string&, const std::string&, int64_t, int64_t, const py::list&>(),
           py::arg("cell"), py::arg("act"), py::arg("hidden_size"), py::arg("proj_size"),
           py::arg("layers"))
      .def_property_readonly("input_size", &StepModel<T>::input_size)
      .def("step", &StepModel<T>::step, py::arg("x"), py::arg("h"), py::arg("c"),
           "(h', c') after one step from x and (h, c); c and c' are None except for the LSTM.")
      .def("step_state", &StepModel<T>::step_state, py::arg("x"), py::arg("state"),
           "(out, state') as layer.step returns them.");
}

}  // namespace

void bind_step(py::module_& m) {
  bind_one<float>(m, "Step32");
  bind_one<double>(m, "Step64");
}

}  // namespace fusedrnn::bind
