// Row-major GEMM on top of the BLAS the package links (OpenBLAS from scipy-openblas32).
#pragma once

#include <cstdint>
#include <string>

namespace fusedrnn::blas {

// C[M,N] = alpha * op(A) op(B) + beta * C, all row-major; op(X) = X^T when the flag is set.
// Large products are cut into blocks that depend on the shape alone and run on fusedrnn's
// threads (threading.h: parallel_for), so results are bit-identical at any thread count.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

int num_threads();  // the library's own pool: kept at 1
std::string corename();
std::string config();

}  // namespace fusedrnn::blas
