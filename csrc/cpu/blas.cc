// GEMM through OpenBLAS (scipy-openblas32: 32-bit integers, symbols prefixed scipy_).
//
// This OpenBLAS instance (private to fusedrnn, NumPy loads its own) is kept single-threaded, and
// a large product is split into row or column blocks that fusedrnn's own threads claim one at a
// time (threading.h: parallel_for).  OpenBLAS's pool would busy-wait on the same cores, and
// the per-step products of the time loop would stall behind its spinning threads.
#include "blas.h"

#include <cblas.h>
#include "omp_compat.h"

#include <algorithm>
#include <stdexcept>

#include "threading.h"

namespace fusedrnn::blas {
namespace {

// Every dimension handed to BLAS must fit its 32-bit integers; the bindings refuse larger
// problems, this is the last line of defence.
blasint dim(int64_t v) {
  if (v < 0 || v > 0x7fffffff) throw std::length_error("fusedrnn: matrix dimension exceeds BLAS's 32-bit range");
  return static_cast<blasint>(v);
}

CBLAS_TRANSPOSE op(bool t) { return t ? CblasTrans : CblasNoTrans; }

template <typename T>
bool trivial(int64_t M, int64_t N, int64_t K, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return true;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return true;
  }
  return false;
}

void call(bool ta, bool tb, blasint M, blasint N, blasint K, float alpha, const float* A, blasint lda,
          const float* B, blasint ldb, float beta, float* C, blasint ldc) {
  scipy_cblas_sgemm(CblasRowMajor, op(ta), op(tb), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void call(bool ta, bool tb, blasint M, blasint N, blasint K, double alpha, const double* A, blasint lda,
          const double* B, blasint ldb, double beta, double* C, blasint ldc) {
  scipy_cblas_dgemm(CblasRowMajor, op(ta), op(tb), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Below this many flops a product is one BLAS call.
constexpr double kSplitFlops = 4e6;
// Larger products are cut into blocks of at least this many flops and at least kMinBlockUnits
// * 16 rows or columns (multiples of 16 keep the pieces aligned with the BLAS kernels), at most
// kMaxBlocks.  Every block re-packs the operand the blocks share: below ~256 rows or columns
// that costs more than one thread gains from the split.
constexpr double kBlockFlops = 4e6;
constexpr int64_t kMinBlockUnits = 16;
constexpr int64_t kMaxBlocks = 32;

// Keep the library itself single-threaded from the first use on.
const bool g_single = [] {
  scipy_openblas_set_num_threads(1);
  return true;
}();

// The blocks of a product depend on its shape alone, never on the thread count: every thread
// count makes the same BLAS calls, so every element of C is summed in the same order and the
// results are bit-identical whatever the threads (threads only choose who runs which block).
struct Split {
  bool rows;        // blocks of rows of C (else of columns)
  int64_t extent;   // rows or columns being split
  int64_t blocks;   // 1: a single call
  int64_t begin(int64_t i) const {
    const int64_t units = (extent + 15) / 16;
    return std::min(extent, units * i / blocks * 16);
  }
};

Split split_of(int64_t M, int64_t N, int64_t K) {
  Split s{M >= N, M >= N ? M : N, 1};
  const double flops = 2.0 * M * N * K;
  if (flops < kSplitFlops) return s;
  const int64_t units = (s.extent + 15) / 16;
  s.blocks = std::max<int64_t>(
      1, std::min({units / kMinBlockUnits, kMaxBlocks, static_cast<int64_t>(flops / kBlockFlops)}));
  return s;
}

}  // namespace

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (trivial(M, N, K, beta, C, ldc)) return;
  // Another library may have raised this pool (threadpoolctl limits every OpenBLAS it finds):
  // set it back, or two pools would fight over the cores again.
  if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
  // Checked before any thread starts: nothing below may throw.
  const blasint m = dim(M), n = dim(N), k = dim(K), la = dim(lda), lb = dim(ldb), lc = dim(ldc);
  const Split sp = split_of(M, N, K);
  // Block i of the split, on whichever thread runs it.
  auto block = [&](int64_t i) noexcept {
    const int64_t b0 = sp.begin(i), b1 = sp.begin(i + 1);
    if (b1 <= b0) return;
    const blasint len = static_cast<blasint>(b1 - b0);
    if (sp.rows) {
      const T* a = ta ? A + b0 : A + b0 * lda;  // rows b0.. of op(A)
      call(ta, tb, len, n, k, alpha, a, la, B, lb, beta, C + b0 * ldc, lc);
    } else {
      const T* b = tb ? B + b0 * ldb : B + b0;  // columns b0.. of op(B)
      call(ta, tb, m, len, k, alpha, A, la, b, lb, beta, C + b0, lc);
    }
  };
  // Called from inside a parallel loop (the AVX-512 time loop's threads), stay on this thread.
  const bool nested = omp_in_parallel();
  const int want = nested ? 1 : fusedrnn::threads_now();
  const int nt = static_cast<int>(std::min<int64_t>(want, sp.blocks));
  if (nt <= 1) {
    for (int64_t i = 0; i < sp.blocks; ++i) {
      // A whole-sequence product can take a second: Ctrl-C is honoured between its blocks
      // (never inside a parallel region, where nothing may throw).
      if (i > 0 && !nested) fusedrnn::throw_if_interrupted();
      block(i);
    }
    return;
  }
  using Block = decltype(block);
  fusedrnn::parallel_for(sp.blocks, nt, [](void* b, int64_t i) { (*static_cast<Block*>(b))(i); }, &block);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

int num_threads() { return scipy_openblas_get_num_threads(); }
std::string corename() { return scipy_openblas_get_corename(); }
std::string config() { return scipy_openblas_get_config(); }

}  // namespace fusedrnn::blas
