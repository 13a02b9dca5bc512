// Entry points of the CPU kernels. Each is compiled once per instruction set (namespaces
// baseline, avx2, avx512); dispatch.h picks one set at run time.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "fusedrnn/common.h"

namespace fusedrnn::cpu {

template <typename T>
using ForwardFn = void (*)(const Seq&, Act, const Weights<T>&, const ForwardArgs<T>&, bool training);
template <typename T>
using BackwardFn = void (*)(const Seq&, Act, const Weights<T>&, const BackwardArgs<T>&);

#define FUSEDRNN_DECLARE_ISA(isa)                                                               \
  namespace isa {                                                                               \
  template <typename T>                                                                         \
  void lstm_forward(const Seq&, Act, const Weights<T>&, const ForwardArgs<T>&, bool training); \
  template <typename T>                                                                         \
  void lstm_backward(const Seq&, Act, const Weights<T>&, const BackwardArgs<T>&);              \
  template <typename T>                                                                         \
  void gru_forward(const Seq&, Act, const Weights<T>&, const ForwardArgs<T>&, bool training);  \
  template <typename T>                                                                         \
  void gru_backward(const Seq&, Act, const Weights<T>&, const BackwardArgs<T>&);               \
  template <typename T>                                                                         \
  void rnn_forward(const Seq&, Act, const Weights<T>&, const ForwardArgs<T>&, bool training);  \
  template <typename T>                                                                         \
  void rnn_backward(const Seq&, Act, const Weights<T>&, const BackwardArgs<T>&);               \
  }

FUSEDRNN_DECLARE_ISA(baseline)
FUSEDRNN_DECLARE_ISA(avx2)
FUSEDRNN_DECLARE_ISA(avx512)
#undef FUSEDRNN_DECLARE_ISA

template <typename T>
struct Kernels {
  ForwardFn<T> lstm_forward, gru_forward, rnn_forward;
  BackwardFn<T> lstm_backward, gru_backward, rnn_backward;
};

// Calls that took the packed time loop (fused_loop.h) rather than the generic one, counted so
// tests can tell which loop ran.
inline std::atomic<int64_t>& packed_loop_calls() {
  static std::atomic<int64_t> n{0};
  return n;
}
inline void note_packed_loop() { packed_loop_calls().fetch_add(1, std::memory_order_relaxed); }
// Panels of the forward loop run by a thread other than the one whose share they were in
// (fused_loop.h: PanelClaims), counted so tests can tell that taking over happened.
inline std::atomic<int64_t>& panels_taken_over() {
  static std::atomic<int64_t> n{0};
  return n;
}

// The kernels for the instruction set in use.
template <typename T>
const Kernels<T>& kernels();

// Instruction sets: "baseline" (any x86-64), "avx2", "avx512". The best one the CPU and the
// build support is chosen at import; set_isa() picks another (tests run every variant).
std::string isa();
std::string best_isa();
void set_isa(const std::string& name);  // throws std::invalid_argument if unsupported here

}  // namespace fusedrnn::cpu
