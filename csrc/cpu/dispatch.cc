// Run-time choice of the kernel build that matches the CPU.
#include <atomic>
#include <stdexcept>
#include <string>

#include "kernels.h"

namespace fusedrnn::cpu {
namespace {

enum Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };
const char* const kNames[] = {"baseline", "avx2", "avx512"};

bool cpu_has(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  switch (isa) {
    case kBaseline: return true;
    case kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case kAvx512:
      return cpu_has(kAvx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return isa == kBaseline;
#endif
}

bool built_with(Isa isa) {
  switch (isa) {
    case kBaseline: return true;
#ifdef FUSEDRNN_HAVE_AVX2
    case kAvx2: return true;
#endif
#ifdef FUSEDRNN_HAVE_AVX512
    case kAvx512: return true;
#endif
    default: return false;
  }
}

Isa detect() {
  for (Isa isa : {kAvx512, kAvx2})
    if (built_with(isa) && cpu_has(isa)) return isa;
  return kBaseline;
}

std::atomic<int> g_isa{detect()};

#define FUSEDRNN_TABLE(ns, T)                                                              \
  Kernels<T> {                                                                             \
    &ns::lstm_forward<T>, &ns::gru_forward<T>, &ns::rnn_forward<T>, &ns::lstm_backward<T>, \
        &ns::gru_backward<T>, &ns::rnn_backward<T>                                         \
  }

template <typename T>
const Kernels<T>& table(int isa) {
  static const Kernels<T> base = FUSEDRNN_TABLE(baseline, T);
#ifdef FUSEDRNN_HAVE_AVX2
  static const Kernels<T> avx2_k = FUSEDRNN_TABLE(avx2, T);
  if (isa == kAvx2) return avx2_k;
#endif
#ifdef FUSEDRNN_HAVE_AVX512
  static const Kernels<T> avx512_k = FUSEDRNN_TABLE(avx512, T);
  if (isa == kAvx512) return avx512_k;
#endif
  (void)isa;
  return base;
}

}  // namespace

template <typename T>
const Kernels<T>& kernels() {
  return table<T>(g_isa.load(std::memory_order_relaxed));
}
template const Kernels<float>& kernels<float>();
template const Kernels<double>& kernels<double>();

std::string isa() { return kNames[g_isa.load()]; }
std::string best_isa() { return kNames[detect()]; }

void set_isa(const std::string& name) {
  for (int i = 0; i < 3; ++i) {
    if (name != kNames[i]) continue;
    const Isa want = static_cast<Isa>(i);
    if (!built_with(want)) throw std::invalid_argument("isa '" + name + "' is not compiled into this build");
    if (!cpu_has(want)) throw std::invalid_argument("isa '" + name + "' is not supported by this CPU");
    g_isa.store(i);
    return;
  }
  throw std::invalid_argument("unknown isa '" + name + "' (expected baseline, avx2 or avx512)");
}

}  // namespace fusedrnn::cpu
