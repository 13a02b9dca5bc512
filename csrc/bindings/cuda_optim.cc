// Training state on the CUDA device, for layers whose weights, gradients and optimiser slots
// stay there between steps: _core.cuda_optimizer_update (the rules of optim.cc on device
// arrays), cuda_add_into (gradient accumulation), cuda_sum_squares (clipping norms) and
// cuda_zero.  Kernels: csrc/cuda/optim.cu.
#include <pybind11/stl.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common.h"
#include "cuda/api.h"
#include "cuda_ops.h"
#include "optim.h"

namespace fusedrnn::bind {
namespace {

namespace cu = fusedrnn::cuda;

const DeviceArray& device_array(const py::handle& o, const std::string& name) {
  if (!py::isinstance<DeviceArray>(o))
    throw py::type_error(name + " must be a DeviceArray, got " +
                         std::string(py::str(py::type::of(o).attr("__name__"))));
  return o.cast<const DeviceArray&>();
}

void same_layout(const DeviceArray& a, const DeviceArray& ref, const std::string& name) {
  if (!a.dtype.equal(ref.dtype))
    throw py::type_error(name + " has dtype " + std::string(py::str(a.dtype)) + ", expected " +
                         std::string(py::str(ref.dtype)));
  if (a.shape != ref.shape)
    throw py::value_error(name + " has shape " + shape_str(a.shape) + ", expected " + shape_str(ref.shape));
}

template <typename T>
void step_all(const optim::Rule& r, const std::vector<const DeviceArray*>& p, const std::vector<const DeviceArray*>& g,
              const std::vector<std::vector<const DeviceArray*>>& s, const std::vector<double>& scales) {
  for (size_t j = 0; j < p.size(); ++j) {
    optim::Rule rj = r;
    if (!scales.empty()) rj.scale = r.scale * scales[j];
    T* s0 = s.size() > 0 ? static_cast<T*>(s[0][j]->ptr) : nullptr;
    T* s1 = s.size() > 1 ? static_cast<T*>(s[1][j]->ptr) : nullptr;
    cu::optimizer_step<T>(rj, static_cast<T*>(p[j]->ptr), static_cast<const T*>(g[j]->ptr), s0, s1, p[j]->size());
  }
}

}  // namespace

void bind_cuda_optim(py::module_& m) {
  m.def(
      "cuda_optimizer_update",
      [](const std::string& rule, const py::list& params, const py::list& grads, const py::list& slots, double lr,
         double scale, const std::vector<double>& scales, double momentum, bool nesterov, double beta_1,
         double beta_2, double epsilon, double rho, double lr_c1, double c2, double decay, double clip) {
        const optim::Rule r = parse_rule(rule, lr, scale, momentum, nesterov, beta_1, beta_2, epsilon, rho, lr_c1,
                                         c2, decay, clip);
        const size_t n = params.size();
        if (grads.size() != n)
          throw py::value_error("params and grads must have the same length, got " + std::to_string(n) + " and " +
                                std::to_string(grads.size()));
        if (!scales.empty() && scales.size() != n)
          throw py::value_error("scales must be empty or hold one number per parameter, got " +
                                std::to_string(scales.size()) + " for " + std::to_string(n));
        const size_t want = static_cast<size_t>(optim::slots_of(r));
        if (slots.size() != want)
          throw py::value_error("slots: this rule keeps " + std::to_string(want) + " slot lists, got " +
                                std::to_string(slots.size()));
        if (n == 0) return;
        std::vector<const DeviceArray*> p, g;
        std::vector<std::vector<const DeviceArray*>> s(want);
        const DeviceArray& first = device_array(params[0], "params[0]");
        if (!first.dtype.equal(py::dtype::of<float>()) && !first.dtype.equal(py::dtype::of<double>()))
          throw py::type_error("params[0] has dtype " + std::string(py::str(first.dtype)) +
                               ", expected float32 or float64");
        for (size_t j = 0; j < n; ++j) {
          const std::string at = "[" + std::to_string(j) + "]";
          p.push_back(&device_array(params[j], "params" + at));
          if (!p.back()->dtype.equal(first.dtype))
            throw py::type_error("params" + at + " has dtype " + std::string(py::str(p.back()->dtype)) +
                                 " but params[0] has " + std::string(py::str(first.dtype)) + "; pass one dtype");
          g.push_back(&device_array(grads[j], "grads" + at));
          same_layout(*g.back(), *p.back(), "grads" + at);
        }
        for (size_t k = 0; k < want; ++k) {
          const py::list per = slots[k].cast<py::list>();
          if (per.size() != n)
            throw py::value_error("slots[" + std::to_string(k) + "] must hold one array per parameter, got " +
                                  std::to_string(per.size()) + " for " + std::to_string(n));
          for (size_t j = 0; j < n; ++j) {
            const std::string name = "slots[" + std::to_string(k) + "][" + std::to_string(j) + "]";
            s[k].push_back(&device_array(per[j], name));
            same_layout(*s[k].back(), *p[j], name);
          }
        }
        // Every array written must be its own memory: an overlap would make the result depend
        // on the order of the threads.
        std::vector<std::pair<const char*, const char*>> spans;
        for (const auto* a : p) spans.emplace_back(static_cast<const char*>(a->ptr), static_cast<const char*>(a->ptr) + a->nbytes());
        for (const auto& per : s)
          for (const auto* a : per)
            spans.emplace_back(static_cast<const char*>(a->ptr), static_cast<const char*>(a->ptr) + a->nbytes());
        std::sort(spans.begin(), spans.end());
        for (size_t k = 1; k < spans.size(); ++k)
          if (spans[k - 1].second > spans[k].first && spans[k].second > spans[k].first)
            throw py::value_error("parameters and slots must not share device memory");
        if (first.dtype.equal(py::dtype::of<float>())) step_all<float>(r, p, g, s, scales);
        else step_all<double>(r, p, g, s, scales);
      },
      py::arg("rule"), py::arg("params"), py::arg("grads"), py::arg("slots"), py::kw_only(), py::arg("lr"),
      py::arg("scale") = 1.0, py::arg("scales") = std::vector<double>{}, py::arg("momentum") = 0.0,
      py::arg("nesterov") = false, py::arg("beta_1") = 0.0, py::arg("beta_2") = 0.0, py::arg("epsilon") = 0.0,
      py::arg("rho") = 0.0, py::arg("lr_c1") = 0.0, py::arg("c2") = 1.0, py::arg("decay") = 1.0,
      py::arg("clip") = 0.0,
      "One optimiser step in place on device arrays (the rules of optimizer_update): params, grads\n"
      "and, per slot the rule keeps, a list of one slot array per parameter.  scales: one extra\n"
      "gradient factor per parameter (clipnorm); clip: clipvalue.");
  m.def(
      "cuda_add_into",
      [](const DeviceArray& acc, const DeviceArray& x) {
        same_layout(x, acc, "x");
        if (acc.dtype.equal(py::dtype::of<float>()))
          cu::add_into<float>(static_cast<float*>(acc.ptr), static_cast<const float*>(x.ptr), acc.size());
        else if (acc.dtype.equal(py::dtype::of<double>()))
          cu::add_into<double>(static_cast<double*>(acc.ptr), static_cast<const double*>(x.ptr), acc.size());
        else
          throw py::type_error("acc has dtype " + std::string(py::str(acc.dtype)) + ", expected float32 or float64");
      },
      py::arg("acc"), py::arg("x"), "acc += x on the device (same shape and dtype).");
  m.def(
      "cuda_sum_squares",
      [](const DeviceArray& x) {
        if (x.dtype.equal(py::dtype::of<float>())) return cu::sum_squares<float>(static_cast<const float*>(x.ptr), x.size());
        if (x.dtype.equal(py::dtype::of<double>())) return cu::sum_squares<double>(static_cast<const double*>(x.ptr), x.size());
        throw py::type_error("x has dtype " + std::string(py::str(x.dtype)) + ", expected float32 or float64");
      },
      py::arg("x"), "The sum of the squares of x's entries, accumulated in double.");
  m.def(
      "cuda_zero", [](const DeviceArray& x) { fusedrnn::cuda::zero(x.ptr, x.nbytes()); }, py::arg("x"),
      "Set every entry of a device array to 0.");
}

}  // namespace fusedrnn::bind
