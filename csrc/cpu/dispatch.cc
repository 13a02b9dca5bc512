// Run-time choice of the kernel build that matches the CPU.
#include <atomic>
#include <stdexcept>
#include <string>

#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#define FUSEDRNN_X86_64 1
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace fusedrnn::cpu {
namespace {

enum Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };
// "baseline" is the variant compiled without extra flags: SSE2 on x86-64, NEON (part of the
// base instruction set) on aarch64, whatever the compiler's default is elsewhere.
const char* const kNames[] = {"baseline", "avx2", "avx512"};

#if defined(FUSEDRNN_X86_64)
// The two primitives differ by compiler; everything above them is shared, so the decoding
// that MSVC builds rely on is the one every GCC/Clang build runs too.
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub) {
  Regs r;
#if defined(_MSC_VER)
  int v[4];
  __cpuidex(v, static_cast<int>(leaf), static_cast<int>(sub));
  r = {static_cast<unsigned>(v[0]), static_cast<unsigned>(v[1]), static_cast<unsigned>(v[2]),
       static_cast<unsigned>(v[3])};
#else
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
#endif
  return r;
}

// XCR0: which register states the operating system saves on a context switch.
unsigned long long xcr0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned lo, hi;
  __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
#endif
}

bool bit(unsigned reg, int n) { return (reg >> n) & 1u; }

// What the CPU has and the OS lets programs use, read once.
struct Features {
  bool avx2 = false, avx512 = false;
  Features() {
    const unsigned max_leaf = cpuid(0, 0).a;
    if (max_leaf < 7) return;
    const Regs l1 = cpuid(1, 0), l7 = cpuid(7, 0);
    // OSXSAVE (XGETBV usable), then XMM|YMM state (bits 1, 2) saved by the OS.
    if (!bit(l1.c, 27)) return;
    const unsigned long long xcr = xcr0();
    const bool os_ymm = (xcr & 0x6) == 0x6;
#if defined(__APPLE__)
    // macOS turns the AVX-512 state on for a thread at its first AVX-512 instruction: XCR0
    // lacks the opmask/ZMM bits until then, though the kernel supports them.
    const bool os_zmm = os_ymm;
#else
    const bool os_zmm = (xcr & 0xE6) == 0xE6;  // plus opmask, ZMM0-15 upper, ZMM16-31
#endif
    // AVX (l1.c 28), FMA (l1.c 12), F16C (l1.c 29), AVX2 (l7.b 5): what the avx2 build uses.
    avx2 = os_ymm && bit(l1.c, 28) && bit(l1.c, 12) && bit(l1.c, 29) && bit(l7.b, 5);
    // AVX512 F (16), DQ (17), BW (30), VL (31).
    avx512 = avx2 && os_zmm && bit(l7.b, 16) && bit(l7.b, 17) && bit(l7.b, 30) && bit(l7.b, 31);
  }
};

bool cpu_has(Isa isa) {
  static const Features f;
  switch (isa) {
    case kBaseline: return true;
    case kAvx2: return f.avx2;
    case kAvx512: return f.avx512;
  }
  return false;
}
#else
bool cpu_has(Isa isa) { return isa == kBaseline; }
#endif

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
