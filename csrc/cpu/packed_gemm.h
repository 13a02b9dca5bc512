// Register-blocked float32 GEMM over weights packed once per call (AVX-512 builds only).
//
// The recurrent GEMM of every step multiplies a small matrix (B rows) by the same weights. A
// general BLAS re-packs those weights on every call, which costs as much as the product when B
// is small.  Here the weights are packed once per sequence into column panels and every step
// streams through them.
//
// Panel layout: NR = 16 * NV columns for all K, k-major:  panel[k * NR + c].
#pragma once

#if defined(__AVX512F__)

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "memory.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA::packed {

// 64-byte aligned scratch memory, uninitialised, from the block cache (memory.h).
using Buffer = mem::Array<float>;

// C[m, 0:NR] (+)= sum_k A[m, k] * panel[k, 0:NR] for MR rows: MR * NV accumulators.
template <int MR, int NV>
inline void tile(int64_t K, const float* __restrict A, int64_t lda, const float* __restrict panel,
                 float* __restrict C, int64_t ldc, bool accumulate) {
  constexpr int NR = 16 * NV;
  __m512 acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v)
      acc[m][v] = accumulate ? _mm512_loadu_ps(C + m * ldc + 16 * v) : _mm512_setzero_ps();
  const float* a[MR];
  for (int m = 0; m < MR; ++m) a[m] = A + m * lda;
  for (int64_t k = 0; k < K; ++k) {
    __m512 w[NV];
    for (int v = 0; v < NV; ++v) w[v] = _mm512_load_ps(panel + k * NR + 16 * v);
    for (int m = 0; m < MR; ++m) {
      const __m512 x = _mm512_set1_ps(a[m][k]);
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_fmadd_ps(x, w[v], acc[m][v]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + m * ldc + 16 * v, acc[m][v]);
}

template <int NV, int R>
inline void tail(int64_t rows, int64_t K, const float* A, int64_t lda, const float* panel, float* C,
                 int64_t ldc, bool accumulate) {
  if constexpr (R > 0) {
    if (rows == R) return tile<R, NV>(K, A, lda, panel, C, ldc, accumulate);
    tail<NV, R - 1>(rows, K, A, lda, panel, C, ldc, accumulate);
  }
}

// C[0:M, 0:NR] (+)= A[0:M, 0:K] panel; MR rows at a time.  K is cut into slices of KC so a
// slice of the panel (KC * NR floats, 64 KiB) stays near the core while every row tile passes
// over it.
template <int NV>
void panel_gemm(int64_t M, int64_t K, const float* A, int64_t lda, const float* panel, float* C,
                int64_t ldc, bool accumulate) {
  constexpr int MR = 24 / NV;
  constexpr int64_t KC = 16384 / (16 * NV);
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = K - k0 < KC ? K - k0 : KC;
    const bool acc = accumulate || k0 > 0;
    const float* a = A + k0;
    const float* pk = panel + k0 * 16 * NV;
    // Row tiles as even as possible (32 rows: 6 6 5 5 5 5, not 6 6 6 6 6 2): a short tile has
    // too few accumulators to keep the FMA units busy.
    const int64_t tiles = (M + MR - 1) / MR, base = M / tiles, longer = M % tiles;
    int64_t m = 0;
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t rows = base + (i < longer ? 1 : 0);
      if (rows == MR) tile<MR, NV>(kc, a + m * lda, lda, pk, C + m * ldc, ldc, acc);
      else tail<NV, MR - 1>(rows, kc, a + m * lda, lda, pk, C + m * ldc, ldc, acc);
      m += rows;
    }
  }
}

// Pack the NR columns of op(W) that panel p holds. col_row(c) names the row of W (an [N, K]
// row-major matrix with leading dimension ldw) that becomes column c, or -1 for zero padding.
template <int NV, class ColRow>
void pack_rows(const float* W, int64_t ldw, int64_t K, ColRow col_row, float* panel) {
  constexpr int NR = 16 * NV;
  for (int c = 0; c < NR; ++c) {
    const int64_t r = col_row(c);
    if (r < 0) {
      for (int64_t k = 0; k < K; ++k) panel[k * NR + c] = 0.0f;
    } else {
      const float* src = W + r * ldw;
      for (int64_t k = 0; k < K; ++k) panel[k * NR + c] = src[k];
    }
  }
}

// Pack columns [c0, c0 + NR) of W itself (an [K, N] row-major matrix): the panel for a product
// with W rather than W^T.  Columns at or past N are zero.
template <int NV>
void pack_cols(const float* W, int64_t ldw, int64_t K, int64_t N, int64_t c0, float* panel) {
  constexpr int NR = 16 * NV;
  const int64_t n = N - c0 < NR ? N - c0 : NR;
  for (int64_t k = 0; k < K; ++k) {
    float* dst = panel + k * NR;
    std::memcpy(dst, W + k * ldw + c0, sizeof(float) * n);
    for (int64_t c = n; c < NR; ++c) dst[c] = 0.0f;
  }
}

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA::packed

#endif  // __AVX512F__
