// GEMM through OpenBLAS (scipy-openblas32: 32-bit integers, symbols prefixed scipy_).
//
// fusedrnn runs a single pool of threads (OpenMP): this OpenBLAS instance (private to fusedrnn,
// NumPy loads its own) is kept single-threaded, and a large product is split into row or column
// blocks across the pool.  Two pools would take turns busy-waiting on the same cores, and the
// per-step barriers of the time loop would stall behind the other pool's spinning threads.
#include "blas.h"

#include <cblas.h>
#include <omp.h>

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

// Below this many flops a product runs on the calling thread.
constexpr double kParallelFlops = 4e6;

// Keep the library itself single-threaded from the first use on.
const bool g_single = [] {
  scipy_openblas_set_num_threads(1);
  return true;
}();

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
  const int want = fusedrnn::num_threads();
  if (want <= 1 || 2.0 * M * N * K < kParallelFlops || omp_in_parallel()) {
    call(ta, tb, m, n, k, alpha, A, la, B, lb, beta, C, lc);
    return;
  }
  const bool split_rows = M >= N;
  const int64_t extent = split_rows ? M : N;
  const int nt = static_cast<int>(std::min<int64_t>(want, (extent + 15) / 16));
  if (nt > 1) fusedrnn::note_pool_started();
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), cnt = omp_get_num_threads();
    // Blocks in multiples of 16 rows/columns keep the pieces aligned with the BLAS kernels.
    const int64_t units = (extent + 15) / 16;
    const int64_t b0 = std::min(extent, units * tid / cnt * 16);
    const int64_t b1 = std::min(extent, units * (tid + 1) / cnt * 16);
    if (b1 > b0) {
      const blasint len = static_cast<blasint>(b1 - b0);
      if (split_rows) {
        const T* a = ta ? A + b0 : A + b0 * lda;  // rows b0.. of op(A)
        call(ta, tb, len, n, k, alpha, a, la, B, lb, beta, C + b0 * ldc, lc);
      } else {
        const T* b = tb ? B + b0 * ldb : B + b0;  // columns b0.. of op(B)
        call(ta, tb, m, len, k, alpha, A, la, b, lb, beta, C + b0, lc);
      }
    }
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

int num_threads() { return scipy_openblas_get_num_threads(); }
std::string corename() { return scipy_openblas_get_corename(); }
std::string config() { return scipy_openblas_get_config(); }

}  // namespace fusedrnn::blas
