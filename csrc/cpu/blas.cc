// GEMM through OpenBLAS (scipy-openblas32: 32-bit integers, symbols prefixed scipy_).
#include "fusedrnn/blas.h"

#include <cblas.h>

#include <stdexcept>

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

}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (trivial(M, N, K, beta, C, ldc)) return;
  scipy_cblas_sgemm(CblasRowMajor, op(ta), op(tb), dim(M), dim(N), dim(K), alpha, A, dim(lda), B,
                    dim(ldb), beta, C, dim(ldc));
}

template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (trivial(M, N, K, beta, C, ldc)) return;
  scipy_cblas_dgemm(CblasRowMajor, op(ta), op(tb), dim(M), dim(N), dim(K), alpha, A, dim(lda), B,
                    dim(ldb), beta, C, dim(ldc));
}

int num_threads() { return scipy_openblas_get_num_threads(); }
void set_num_threads(int n) { scipy_openblas_set_num_threads(n); }
std::string corename() { return scipy_openblas_get_corename(); }
std::string config() { return scipy_openblas_get_config(); }

}  // namespace fusedrnn::blas
