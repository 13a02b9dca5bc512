// Row-major GEMM and column sums on cuBLAS (column-major underneath).
#pragma once

#include <cstdint>

namespace fusedrnn::cuda::blas {

// C[M,N] = alpha op(A) op(B) + beta C, all row-major device arrays; op(X) = X^T when set.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// out[cols] = sum over rows of A[rows, cols] (row-major, leading dimension cols); ones: rows 1s.
template <typename T>
void column_sums(const T* A, int64_t rows, int64_t cols, const T* ones, T* out);

}  // namespace fusedrnn::cuda::blas
