// The whole-sequence products of the packed backward (dx and the weight gradients) on the
// packed kernel of packed_gemm.h, so that the fast path's speed does not depend on which
// kernels the BLAS picked (OPENBLAS_CORETYPE, an old OpenBLAS, a BLAS without kernels for
// this CPU).
//
//   C[M, N] = op(A) B     B row-major [K, N];  op(A) = A ([M, K]) or, with TA, A^T (A: [K, M])
//
// K goes in chunks of whole kernel slices.  Per chunk, B is packed into column panels (and A^T
// copied to row blocks where A's rows are long), then the product is cut into row blocks, each
// across all panels; a thread claims one at a time.  The cuts depend on the shape alone and every
// element of C adds its K terms in order (packed_gemm.h: panel_gemm), so results are bit-identical
// at any thread count.
#pragma once

#include "simd.h"

#if FUSEDRNN_PACKED_LOOP

#include <algorithm>
#include <cstdint>

#include "memory.h"
#include "packed_gemm.h"
#include "threading.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA::packed {

// Rows of A (with TA) up to this long are read in place by the tiles (sequence_gemm_panels).
inline constexpr int64_t kInPlaceRowBytes = 1024;

template <typename T, bool TA, int NR>
void sequence_gemm_panels(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                          int64_t ldb, T* C, int64_t ldc) {
  using S = Shape<T, NR>;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
    return;
  }
  const int64_t npan = (N + NR - 1) / NR;
  // K per chunk: 1024, whole slices of the kernel.  The packed copies then hold 1024 rows of B
  // (and of A), whatever T is.
  const int64_t KO = S::KC * std::max<int64_t>(1, 1024 / S::KC);
  // Row blocks of whole row tiles whose slice of op(A) (KC deep) is ~96 KiB: it stays in L2
  // while it passes every panel, and each block of a panel is used by all its row tiles while
  // in L1 (measured on AVX2 at K >= KC: 4 tiles for float, 2 for double; twice that was 10-20%
  // slower).  At least 8 blocks where M allows, for the threads to share.
  const int64_t kd = std::min<int64_t>(K, S::KC);
  const int64_t fit = (96 << 10) / (S::MR * kd * static_cast<int64_t>(sizeof(T)));
  const int64_t MB = S::MR * std::max<int64_t>(1, std::min(fit, M / (8 * S::MR)));
  const int64_t nrb = (M + MB - 1) / MB;
  const int64_t kmax = std::min(K, KO);
  // The last panel, where N is not a whole number of panels, is summed here and copied out,
  // computed over only the blocks of NB columns that reach below N: a product narrower than a
  // panel (dx and dW_ih of a model with few features) costs its width rounded up to NB, not NR.
  const bool ragged = N % NR != 0;
  const int full = NR / S::NB, last_blocks = ragged ? static_cast<int>((N % NR + S::NB - 1) / S::NB) : full;
  // With TA, op(A)'s rows are copied to the row blocks (below) unless A's rows are at most
  // kInPlaceRowBytes long: then the tiles read them in place, a row a k (measured at 1 KiB rows,
  // LSTM H = 64 and GRU H = 64 training, AVX-512 and AVX2, builds alternated: 2-5% faster
  // than with the copy; at 2 KiB, LSTM H = 128, float and double, 2-5% slower).
  const bool copy_a = TA && lda * static_cast<int64_t>(sizeof(T)) > kInPlaceRowBytes;
  Buffer<T> panels(kmax * npan * NR, "packed products"), rows_t(copy_a ? kmax * M : 0, "packed products"),
      last(ragged ? M * NR : 0, "packed products");

  const int nt = 2.0 * M * N * K < fusedrnn::kSplitFlops ? 1 : fusedrnn::threads_now();
  for (int64_t k0 = 0; k0 < K; k0 += KO) {
    if (k0 > 0) fusedrnn::throw_if_interrupted(/*before_long_work=*/true);
    const int64_t kc = std::min(KO, K - k0);
    T* pk = panels.data();
    // Packing: units 0..npan-1 pack a panel of B each; with copy_a, the next units copy 64
    // rows of A each (read whole, in order) into the row blocks' [kc, rows] buffers: read in
    // place, op(A)'s rows lie lda apart (a page apart for a large layer) and the tiles stall on
    // the loads.
    const int64_t a_units = copy_a ? (kc + 63) / 64 : 0;
    auto pack = [&](int64_t u) noexcept {
      if (u < npan) return pack_cols<T, NR>(B + k0 * ldb, ldb, kc, N, u * NR, pk + u * kc * NR);
      const int64_t e = std::min(kc, (u - npan + 1) * 64);
      for (int64_t k = (u - npan) * 64; k < e; ++k) {
        const T* src = A + (k0 + k) * lda;
        for (int64_t r0 = 0; r0 < M; r0 += MB) {
          const int64_t rows = std::min(MB, M - r0);
          simd::copy_short(rows_t.data() + r0 * kc + k * rows, src + r0, rows);
        }
      }
    };
    // Row block rb across every panel.
    auto block = [&](int64_t rb) noexcept {
      const int64_t r0 = rb * MB, rows = std::min(MB, M - r0);
      const T* a = copy_a ? rows_t.data() + r0 * kc : A + a_index<TA>(lda, r0, k0);
      const int64_t la = copy_a ? rows : lda;
      for (int64_t p = 0; p < npan; ++p) {
        const bool in_last = ragged && p == npan - 1;
        T* c = in_last ? last.data() + r0 * NR : C + r0 * ldc + p * NR;
        panel_gemm<T, NR, TA>(rows, kc, a, la, pk + p * kc * NR, c, in_last ? NR : ldc, k0 > 0,
                              in_last ? last_blocks : full, S::KC);
      }
    };
    using Pack = decltype(pack);
    using Block = decltype(block);
    fusedrnn::parallel_for(npan + a_units, nt, [](void* f, int64_t i) { (*static_cast<Pack*>(f))(i); }, &pack);
    fusedrnn::parallel_for(nrb, nt, [](void* f, int64_t i) { (*static_cast<Block*>(f))(i); }, &block);
  }
  if (ragged) {
    const int64_t c0 = (npan - 1) * NR;
    for (int64_t i = 0; i < M; ++i) std::copy(last.data() + i * NR, last.data() + i * NR + (N - c0), C + i * ldc + c0);
  }
}

// Panels of 64 columns, and narrower ones (16, 32 or 48: packed_gemm.h, with_width) for a
// product (or the last columns of one) that is not a whole number of them wide: a tile spans
// a panel's whole width on AVX-512 float, so dx and dW_ih of a model with 12 features would
// otherwise cost as much as with 64.  Every element adds its K terms in the same order
// whatever the panel width: the results do not change, only the work spent on padding columns.
template <typename T, bool TA>
void sequence_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                   T* C, int64_t ldc) {
  const int64_t wide = N / 64 * 64, rest = N - wide;
  if (rest == 0 || rest > 48) return sequence_gemm_panels<T, TA, 64>(M, N, K, A, lda, B, ldb, C, ldc);
  if (wide > 0) sequence_gemm_panels<T, TA, 64>(M, wide, K, A, lda, B, ldb, C, ldc);
  with_width<64>(rest, [&](auto w) {
    sequence_gemm_panels<T, TA, decltype(w)::value>(M, rest, K, A, lda, B + wide, ldb, C + wide, ldc);
  });
}

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA::packed

#endif  // FUSEDRNN_PACKED_LOOP
