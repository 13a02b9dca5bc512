#include "cuda/blas.h"

#include <limits>
#include <string>

#include "cuda/device.h"

namespace fusedrnn::cuda::blas {
namespace {

int dim(int64_t v) {
  if (v < 0 || v > std::numeric_limits<int>::max())
    throw Error("cuBLAS dimension out of its 32-bit range: " + std::to_string(v));
  return static_cast<int>(v);
}

cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

void gemm_call(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                         const float* A, int lda, const float* B, int ldb, const float* beta, float* C, int ldc) {
  FUSEDRNN_CUBLAS_CHECK(cublasSgemm(blas_handle(), ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc));
}
void gemm_call(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const double* alpha,
                         const double* A, int lda, const double* B, int ldb, const double* beta, double* C,
                         int ldc) {
  FUSEDRNN_CUBLAS_CHECK(cublasDgemm(blas_handle(), ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc));
}
void gemv_call(int m, int n, const float* alpha, const float* A, int lda, const float* x,
                         const float* beta, float* y) {
  FUSEDRNN_CUBLAS_CHECK(cublasSgemv(blas_handle(), CUBLAS_OP_N, m, n, alpha, A, lda, x, 1, beta, y, 1));
}
void gemv_call(int m, int n, const double* alpha, const double* A, int lda, const double* x,
                         const double* beta, double* y) {
  FUSEDRNN_CUBLAS_CHECK(cublasDgemv(blas_handle(), CUBLAS_OP_N, m, n, alpha, A, lda, x, 1, beta, y, 1));
}

}  // namespace

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a row-major array is
// its column-major transpose with the same leading dimension: swap the operands, keep the flags.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm_call(op(trans_b), op(trans_a), dim(N), dim(M), dim(K), &alpha, B, dim(ldb), A, dim(lda), &beta, C,
            dim(ldc));
}

// A[rows, cols] row-major is column-major cols x rows (ld cols): out = that matrix times ones.
template <typename T>
void column_sums(const T* A, int64_t rows, int64_t cols, const T* ones, T* out) {
  const T one = 1, zero = 0;
  gemv_call(dim(cols), dim(rows), &one, A, dim(cols), ones, &zero, out);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);
template void column_sums<float>(const float*, int64_t, int64_t, const float*, float*);
template void column_sums<double>(const double*, int64_t, int64_t, const double*, double*);

}  // namespace fusedrnn::cuda::blas
