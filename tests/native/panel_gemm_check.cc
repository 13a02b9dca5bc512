// Standalone check of the packed GEMM (csrc/cpu/packed_gemm.h) for the ISA it is compiled for:
// pack random weights both ways (pack_rows: panels of W^T; pack_cols: panels of W), multiply
// with panel_gemm over odd shapes, compare with a naive double-precision loop.  Built by
// scripts/neon_check.sh for aarch64 and run under qemu; compiles for x86 too.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/packed_gemm.h"

#if !FUSEDRNN_PACKED_LOOP
#error "this ISA has no packed loop"
#endif

namespace packed = fusedrnn::cpu::FUSEDRNN_ISA::packed;

namespace {

std::mt19937_64 rng(42);

template <typename T>
std::vector<T> random(int64_t n) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(u(rng));
  return v;
}

// C (+)= A * op(W): A [M, K] with leading dimension lda; rows==true: W is [N, K] (op = ^T),
// else W is [K, N].  Checks every column of one panel at column offset c0.
template <typename T, int NR>
int check(int64_t M, int64_t K, int64_t N, int64_t c0, bool rows, bool accumulate) {
  const int64_t lda = K + 3, ldc = NR + 5;
  std::vector<T> A = random<T>(M * lda), W = random<T>(N * K), C0 = random<T>(M * ldc);
  T* panel = static_cast<T*>(::operator new(sizeof(T) * K * NR, std::align_val_t(64)));
  if (rows) {
    packed::pack_rows<T, NR>(W.data(), K, K, [&](int c) -> int64_t {
      return c0 + c < N ? c0 + c : -1;
    }, panel);
  } else {
    packed::pack_cols<T, NR>(W.data(), N, K, N, c0, panel);
  }
  std::vector<T> C = C0;
  packed::panel_gemm<T, NR>(M, K, A.data(), lda, panel, C.data(), ldc, accumulate);
  ::operator delete(panel, std::align_val_t(64));
  const double tol = sizeof(T) == 4 ? 1e-4 : 1e-12;
  int bad = 0;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < NR; ++c) {
      double want = accumulate ? C0[m * ldc + c] : 0.0;
      if (c0 + c < N)
        for (int64_t k = 0; k < K; ++k)
          want += double(A[m * lda + k]) * (rows ? W[(c0 + c) * K + k] : W[k * N + c0 + c]);
      const double got = C[m * ldc + c];
      if (!(std::fabs(got - want) <= tol * (1.0 + std::sqrt(double(K))))) ++bad;
    }
    for (int64_t c = NR; c < ldc; ++c)  // past the panel: untouched
      if (C[m * ldc + c] != C0[m * ldc + c]) ++bad;
  }
  if (bad)
    std::printf("FAIL %s NR=%d M=%lld K=%lld N=%lld c0=%lld rows=%d acc=%d: %d wrong\n",
                sizeof(T) == 4 ? "float" : "double", NR, (long long)M, (long long)K,
                (long long)N, (long long)c0, int(rows), int(accumulate), bad);
  return bad ? 1 : 0;
}

template <typename T, int NR>
int sweep() {
  using S = packed::Shape<T, NR>;
  int fails = 0, runs = 0;
  const int64_t Ms[] = {1, 2, S::MR - 1, S::MR, S::MR + 1, 2 * S::MR + 3, 32};
  const int64_t Ks[] = {1, 7, 37, S::KC + 5};  // the last one crosses a K slice
  for (int64_t M : Ms)
    for (int64_t K : Ks)
      for (int variant = 0; variant < 4; ++variant) {
        const bool rows = variant & 1, acc = variant & 2;
        const int64_t N = NR + NR / 2 + 3;  // the second panel is partial
        fails += check<T, NR>(M, K, N, 0, rows, acc);
        fails += check<T, NR>(M, K, N, NR, rows, acc);
        runs += 2;
      }
  std::printf("%-6s NR=%-3d lanes=%d tile %dx%d vectors, KC=%lld: %d/%d cases ok\n",
              sizeof(T) == 4 ? "float" : "double", NR, S::L, S::MR, S::NV, (long long)S::KC,
              runs - fails, runs);
  return fails;
}

}  // namespace

int main() {
  // The panel widths the fused loop uses: 64 (LSTM 4 x 16 units, RNN 64 units, backward
  // 64 units) and 48 (GRU 3 x 16 units).
  int fails = sweep<float, 64>() + sweep<float, 48>() + sweep<double, 64>() + sweep<double, 48>();
  std::printf(fails ? "panel_gemm: %d FAILED\n" : "panel_gemm: all ok\n", fails);
  return fails ? 1 : 0;
}
