// The float32 FMA ceiling of one core: 20 independent chains of AVX-512 FMAs (enough to cover
// the FMA latency), nothing else.  Run one copy per core at the same time for the machine's
// ceiling; the GFLOP/s figures in bench/ are read against it.  Check the binary: the loop must
// hold 20 vfmadd instructions (objdump -d /tmp/fma_peak | grep -c 'vfmadd.*zmm').
//
//   g++ -O2 -mavx512f -mfma bench/fma_peak.cc -o /tmp/fma_peak
//   for i in $(seq $(nproc)); do /tmp/fma_peak & done; wait
#include <immintrin.h>

#include <chrono>
#include <cstdio>

#define FUSEDRNN_CHAINS(X) \
  X(a0) X(a1) X(a2) X(a3) X(a4) X(a5) X(a6) X(a7) X(a8) X(a9) \
  X(a10) X(a11) X(a12) X(a13) X(a14) X(a15) X(a16) X(a17) X(a18) X(a19)

int main() {
  // Twenty named accumulators (an array would be kept in memory and measure loads instead).
#define DECLARE(a) __m512 a = _mm512_set1_ps(0.1f);
  FUSEDRNN_CHAINS(DECLARE)
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
  const long iters = 100000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long k = 0; k < iters; ++k) {
#define STEP(a) a = _mm512_fmadd_ps(a, b, c);
    FUSEDRNN_CHAINS(STEP)
    // Every chain must be live in a register each iteration, or the compiler folds chains away
    // and the count of FMAs executed is no longer 20 per iteration.
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6),
                     "+v"(a7), "+v"(a8), "+v"(a9));
    __asm__ volatile("" : "+v"(a10), "+v"(a11), "+v"(a12), "+v"(a13), "+v"(a14), "+v"(a15),
                     "+v"(a16), "+v"(a17), "+v"(a18), "+v"(a19));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  __m512 sum = _mm512_setzero_ps();
#define ADD(a) sum = _mm512_add_ps(sum, a);
  FUSEDRNN_CHAINS(ADD)
  std::printf("%.1f GFLOP/s per core (checksum %g)\n", iters * 20.0 * 32 / s / 1e9,
              _mm512_reduce_add_ps(sum));
}
