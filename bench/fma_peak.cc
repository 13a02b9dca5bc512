// The float32 FMA ceiling of one core: independent chains of FMAs (enough to cover the FMA
// latency), nothing else: 20 chains of AVX-512, or 10 of AVX2 (16 ymm registers) on CPUs
// without AVX-512.  Run one copy per core at the same time for the machine's ceiling; the
// GFLOP/s figures in bench/ are read against it.  Check the binary: the loop must hold 20
// (AVX-512) or 10 (AVX2) vfmadd instructions (objdump -d /tmp/fma_peak | grep -c 'vfmadd').
//
//   g++ -O2 -mavx512f -mfma bench/fma_peak.cc -o /tmp/fma_peak     # AVX-512 CPUs
//   g++ -O2 -mavx2 -mfma bench/fma_peak.cc -o /tmp/fma_peak        # AVX2 CPUs
//   for i in $(seq $(nproc)); do /tmp/fma_peak & done; wait
#include <immintrin.h>

#include <chrono>
#include <cstdio>

#if defined(__AVX512F__)
#define FUSEDRNN_CHAINS(X) \
  X(a0) X(a1) X(a2) X(a3) X(a4) X(a5) X(a6) X(a7) X(a8) X(a9) \
  X(a10) X(a11) X(a12) X(a13) X(a14) X(a15) X(a16) X(a17) X(a18) X(a19)
constexpr int kChains = 20, kLanes = 16;
using Vec = __m512;
inline Vec set1(float v) { return _mm512_set1_ps(v); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline float total(Vec a) { return _mm512_reduce_add_ps(a); }
#else
#define FUSEDRNN_CHAINS(X) X(a0) X(a1) X(a2) X(a3) X(a4) X(a5) X(a6) X(a7) X(a8) X(a9)
constexpr int kChains = 10, kLanes = 8;
using Vec = __m256;
inline Vec set1(float v) { return _mm256_set1_ps(v); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline float total(Vec a) {
  float l[8];
  _mm256_storeu_ps(l, a);
  return l[0] + l[1] + l[2] + l[3] + l[4] + l[5] + l[6] + l[7];
}
#endif

int main() {
  // Twenty named accumulators (an array would be kept in memory and measure loads instead).
#define DECLARE(a) Vec a = set1(0.1f);
  FUSEDRNN_CHAINS(DECLARE)
  const Vec b = set1(0.999f), c = set1(1e-4f);
  const long iters = 100000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long k = 0; k < iters; ++k) {
#define STEP(a) a = fmadd(a, b, c);
    FUSEDRNN_CHAINS(STEP)
    // Every chain must be live in a register each iteration, or the compiler folds chains away
    // and the count of FMAs executed is no longer kChains per iteration.
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6),
                     "+v"(a7), "+v"(a8), "+v"(a9));
#if defined(__AVX512F__)
    __asm__ volatile("" : "+v"(a10), "+v"(a11), "+v"(a12), "+v"(a13), "+v"(a14), "+v"(a15),
                     "+v"(a16), "+v"(a17), "+v"(a18), "+v"(a19));
#endif
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Vec sum = set1(0.0f);
#define ADD(a) sum = add(sum, a);
  FUSEDRNN_CHAINS(ADD)
  // One FMA is 2 flops per lane.
  std::printf("%.1f GFLOP/s per core (checksum %g)\n", iters * kChains * 2.0 * kLanes / s / 1e9,
              total(sum));
}
