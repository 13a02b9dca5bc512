// The one compiled module, fusedrnn._core.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common.h"
#ifdef FUSEDRNN_WITH_CUDA
#include "cuda_ops.h"
#endif
#include "cpu/blas.h"
#include "cpu/kernels.h"
#include "cpu/memory.h"
#include "cpu/threading.h"

namespace fusedrnn::bind {
void bind_lstm(py::module_& m);
void bind_gru(py::module_& m);
void bind_rnn(py::module_& m);
void bind_step(py::module_& m);
void bind_optim(py::module_& m);
}  // namespace fusedrnn::bind

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using namespace fusedrnn;
  m.doc() = "fusedrnn compiled kernels (use fusedrnn.ops for the checked Python API)";
  bind::bind_packed_weights(m);
  bind::bind_lstm(m);
  bind::bind_gru(m);
  bind::bind_rnn(m);
  bind::bind_step(m);
  bind::bind_optim(m);

  m.def("num_threads", &num_threads, "Threads the kernels use.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("n must be >= 1, got " + std::to_string(n));
    set_num_threads(n);
  }, py::arg("n"), "Threads for the kernels (time loop and split BLAS products).");
  m.def("thread_default", [] {
    const ThreadDefault& d = thread_default();
    py::dict r;
    r["threads"] = d.threads;
    r["cpus"] = d.cpus;
    r["source"] = d.source;
    r["problem"] = d.problem;
    return r;
  }, "How the default thread count was chosen (see fusedrnn.build_info()).");
  m.def("cgroup_cpu_limit", &cgroup_cpu_limit, py::arg("root"),
        "ceil(quota / period) of the cgroup CPU files under root, 0 when unlimited (for tests).");
  m.def("l2_cache_bytes", &l2_cache_bytes,
        "Bytes of one core's L2 as the system reports it, 0 where it does not say (the packed "
        "loops' products size their K slices from it).");
  m.def("parse_cache_size", &parse_cache_size, py::arg("text"),
        "'1024K', '2M' or a byte count as bytes, 0 if not a size (for tests).");
  m.def("contention_stats", [] {
    const ContentionStats s = contention_stats();
    py::dict r;
    r["regions"] = s.regions;
    r["stalls"] = s.stalls;
    r["fallbacks"] = s.fallbacks;
    r["contended"] = s.contended;
    return r;
  }, "Parallel regions run, stalls seen, fallbacks to one thread, and whether one is on now.");
  m.def("set_contention_guard", &set_contention_guard, py::arg("on"),
        "Off: always use the threads asked for, even on contended cores (for tests).");
  m.def("threads_disabled_by_fork", &threads_disabled_by_fork,
        "True in a process forked after the kernels' thread pool started: it runs on one thread.");
  m.def("blas_num_threads", &blas::num_threads, "Threads of the BLAS's own pool (kept at 1).");
  m.def("blas_corename", &blas::corename, "The BLAS kernel family chosen for this CPU.");
  m.def("blas_config", &blas::config);
  m.def("cached_bytes", &mem::cached_bytes, "Bytes of scratch memory kept for the next calls.");
  m.def("empty_cache", &mem::empty_cache, "Return the kept scratch memory to the system.");
  m.def("isa", &cpu::isa, "Instruction set of the elementwise kernels in use.");
  m.def("best_isa", &cpu::best_isa, "The best instruction set this CPU and build support.");
  m.def("packed_loop_calls", [] { return cpu::packed_loop_calls().load(); },
        "Kernel calls so far that took the packed time loop (for tests).");
#if defined(_OPENMP)
  m.attr("openmp") = true;  // the packed time loops run on an OpenMP team
#else
  m.attr("openmp") = false;
#endif
  m.def("panels_taken_over", [] { return cpu::panels_taken_over().load(); },
        "Forward-loop panels run by a thread other than the one whose share they were in (for tests).");
  m.def("set_isa", &cpu::set_isa, py::arg("name"),
        "Use another compiled kernel variant: 'baseline', 'avx2' or 'avx512'.");
#ifdef FUSEDRNN_WITH_CUDA
  m.attr("cuda_compiled") = true;
  bind::bind_cuda(m);        // csrc/bindings/cuda_ops.cc
  bind::bind_cuda_optim(m);  // csrc/bindings/cuda_optim.cc
#else
  m.attr("cuda_compiled") = false;
  m.attr("cuda_emulated") = false;
  m.def("cuda_device_count", [] { return 0; }, "CUDA devices visible: this build has no CUDA.");
#endif
}
