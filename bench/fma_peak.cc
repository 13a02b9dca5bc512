// The float32 FMA ceiling of one core: 20 independent chains of AVX-512 FMAs (enough to cover
// the FMA latency), nothing else.  Run one copy per core at the same time for the machine's
// ceiling; the GFLOP/s figures in bench/ are read against it.
//
//   g++ -O2 -mavx512f -mfma bench/fma_peak.cc -o /tmp/fma_peak
//   for i in $(seq $(nproc)); do /tmp/fma_peak & done; wait
#include <immintrin.h>

#include <chrono>
#include <cstdio>

int main() {
  __m512 acc[20];
  for (auto& a : acc) a = _mm512_set1_ps(0.1f);
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
  const long iters = 100000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long k = 0; k < iters; ++k) {
    for (auto& a : acc) a = _mm512_fmadd_ps(a, b, c);
    // Keep the accumulators in registers and the loop from being folded away.
    __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]),
                     "+v"(acc[5]), "+v"(acc[6]), "+v"(acc[7]), "+v"(acc[8]), "+v"(acc[9]));
    __asm__ volatile("" : "+v"(acc[10]), "+v"(acc[11]), "+v"(acc[12]), "+v"(acc[13]), "+v"(acc[14]),
                     "+v"(acc[15]), "+v"(acc[16]), "+v"(acc[17]), "+v"(acc[18]), "+v"(acc[19]));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  __m512 sum = acc[0];
  for (int i = 1; i < 20; ++i) sum = _mm512_add_ps(sum, acc[i]);
  std::printf("%.1f GFLOP/s per core (checksum %g)\n", iters * 20.0 * 32 / s / 1e9,
              _mm512_reduce_add_ps(sum));
}
