// fusedrnn._core.optimizer_update: the update rules of fusedrnn.keras.optimizers (SGD, Adam,
// AdamW, RMSprop) in one pass over each parameter, in place.  The NumPy formulation in
// optimizers.py stays the definition: the rules (include/fusedrnn/optim.h, shared with the
// CUDA kernel) make the same IEEE operations in the same order and dtype (products and sums
// rounded one by one; this file is compiled without contraction into fused multiply-adds), so
// the two give bit-identical parameters and slots, which tests/test_trainer_fast_paths.py
// checks.  What it saves is the NumPy calls: a
// dozen temporaries and round trips per step, which cost more than the arithmetic for the
// parameter counts of small recurrent models.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "optim.h"

#include "common.h"

namespace fusedrnn::bind {
namespace {

namespace opt = fusedrnn::optim;

template <typename T>
struct Span {
  T* p;
  const T* g;
  int64_t n;
};

// One parameter: p, g over n values; s0, s1 the slots' values at the same offsets.  The rule
// is picked once per parameter so that each loop is the rule's alone.
template <typename T>
void update(const opt::Rule& r, T* __restrict p, const T* __restrict g, T* __restrict s0, T* __restrict s1,
            int64_t n) {
  const opt::Consts<T> c(r);
  switch (r.kind) {
    case opt::Kind::Sgd:  // with momentum the velocity slot exists, without it not
      if (c.momentum)
        for (int64_t i = 0; i < n; ++i) opt::sgd(c, p[i], opt::grad_in(c, g[i]), s0 + i);
      else
        for (int64_t i = 0; i < n; ++i) opt::sgd(c, p[i], opt::grad_in(c, g[i]), static_cast<T*>(nullptr));
      return;
    case opt::Kind::Adam:
      for (int64_t i = 0; i < n; ++i) opt::adam(c, p[i], opt::grad_in(c, g[i]), s0 + i, s1 + i);
      return;
    case opt::Kind::RmsProp:
      for (int64_t i = 0; i < n; ++i) opt::rmsprop(c, p[i], opt::grad_in(c, g[i]), s0 + i, s1 ? s1 + i : nullptr);
      return;
  }
}

template <typename T>
T* flat_slot(const py::list& slots, size_t k, int64_t total) {
  if (k >= slots.size()) return nullptr;
  const py::array a = require_ndarray(slots[k], "slot");
  const std::string name = "slots[" + std::to_string(k) + "]";
  const T* d = checked<T>(a, name.c_str(), {total});
  if (!a.writeable()) throw py::value_error(name + " must be writeable");
  return const_cast<T*>(d);
}

// An array the pass can take as it is: an ndarray of T, C-contiguous, aligned (and writeable
// for a parameter).
template <typename T>
bool usable(const py::handle& o, bool write) {
  if (!py::isinstance<py::array>(o)) return false;
  const auto a = py::reinterpret_borrow<py::array>(o);
  return has_dtype<T>(a) && (a.flags() & py::array::c_style) && (!write || a.writeable()) &&
         reinterpret_cast<uintptr_t>(a.data()) % alignof(T) == 0;
}

// False, with nothing changed, when an array is not usable as it is or two parameters share
// memory: the caller then runs the NumPy formulation.
template <typename T>
bool run(const opt::Rule& r, const py::list& params, const py::list& grads, const py::list& slots,
         size_t want_slots) {
  std::vector<Span<T>> spans;
  int64_t total = 0;
  for (size_t k = 0; k < params.size(); ++k) {
    if (!usable<T>(params[k], true) || !usable<T>(grads[k], false)) return false;
    auto p = py::reinterpret_borrow<py::array>(params[k]);
    const auto g = py::reinterpret_borrow<py::array>(grads[k]);
    if (p.ndim() != g.ndim()) return false;
    for (py::ssize_t d = 0; d < p.ndim(); ++d)
      if (p.shape(d) != g.shape(d)) return false;
    spans.push_back({static_cast<T*>(p.mutable_data()), static_cast<const T*>(g.data()),
                     static_cast<int64_t>(p.size())});
    total += static_cast<int64_t>(p.size());
  }
  std::vector<Span<T>> sorted = spans;
  std::sort(sorted.begin(), sorted.end(), [](const Span<T>& a, const Span<T>& b) { return a.p < b.p; });
  for (size_t k = 1; k < sorted.size(); ++k)
    if (sorted[k - 1].p + sorted[k - 1].n > sorted[k].p) return false;
  if (slots.size() != want_slots)
    throw py::value_error("slots: this rule keeps " + std::to_string(want_slots) + " slot arrays, got " +
                          std::to_string(slots.size()));
  T* s0 = flat_slot<T>(slots, 0, total);
  T* s1 = flat_slot<T>(slots, 1, total);
  py::gil_scoped_release unlocked;
  int64_t offset = 0;
  for (const Span<T>& s : spans) {
    update<T>(r, s.p, s.g, s0 ? s0 + offset : nullptr, s1 ? s1 + offset : nullptr, s.n);
    offset += s.n;
  }
  return true;
}

}  // namespace

fusedrnn::optim::Rule parse_rule(const std::string& rule, double lr, double scale, double momentum, bool nesterov,
                                 double beta_1, double beta_2, double epsilon, double rho, double lr_c1, double c2,
                                 double decay, double clip) {
  opt::Rule r;
  if (rule == "sgd") r.kind = opt::Kind::Sgd;
  else if (rule == "adam") r.kind = opt::Kind::Adam;
  else if (rule == "rmsprop") r.kind = opt::Kind::RmsProp;
  else throw py::value_error("rule must be 'sgd', 'adam' or 'rmsprop', got '" + rule + "'");
  r.lr = lr, r.scale = scale, r.momentum = momentum, r.nesterov = nesterov;
  r.beta_1 = beta_1, r.beta_2 = beta_2, r.epsilon = epsilon, r.rho = rho;
  r.lr_c1 = lr_c1, r.c2 = c2, r.decay = decay, r.clip = clip;
  return r;
}

void bind_optim(py::module_& m) {
  m.def(
      "optimizer_update",
      [](const std::string& rule, const py::list& params, const py::list& grads, const py::list& slots,
         double lr, double scale, double momentum, bool nesterov, double beta_1, double beta_2,
         double epsilon, double rho, double lr_c1, double c2, double decay) {
        const opt::Rule r = parse_rule(rule, lr, scale, momentum, nesterov, beta_1, beta_2, epsilon, rho, lr_c1,
                                       c2, decay, 0.0);
        const size_t want = static_cast<size_t>(opt::slots_of(r));
        if (params.size() != grads.size())
          throw py::value_error("params and grads must have the same length, got " +
                                std::to_string(params.size()) + " and " + std::to_string(grads.size()));
        if (params.size() == 0) return true;
        if (usable<float>(params[0], true)) return run<float>(r, params, grads, slots, want);
        if (usable<double>(params[0], true)) return run<double>(r, params, grads, slots, want);
        return false;
      },
      py::arg("rule"), py::arg("params"), py::arg("grads"), py::arg("slots"), py::kw_only(),
      py::arg("lr"), py::arg("scale") = 1.0, py::arg("momentum") = 0.0, py::arg("nesterov") = false,
      py::arg("beta_1") = 0.0, py::arg("beta_2") = 0.0, py::arg("epsilon") = 0.0, py::arg("rho") = 0.0,
      py::arg("lr_c1") = 0.0, py::arg("c2") = 1.0, py::arg("decay") = 1.0,
      "One optimiser step in place (fusedrnn.keras.optimizers' rules; see optim.cc).  False, with\n"
      "nothing changed, when the arrays are not all C-contiguous, aligned float32 or all float64,\n"
      "with writeable parameters that share no memory: run the NumPy formulation then.");
}

}  // namespace fusedrnn::bind
