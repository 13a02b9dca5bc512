// Register-blocked GEMM over weights packed once per call (the builds with a packed loop:
// AVX-512, AVX2+FMA, ARM64 NEON; see simd.h), float and double.
//
// The recurrent GEMM of every step multiplies a small matrix (B rows) by the same weights. A
// general BLAS re-packs those weights on every call, which costs as much as the product when B
// is small.  Here the weights are packed once per sequence into column panels and every step
// streams through them.
//
// Panel layout.  A panel holds NR columns for all K.  The register tile covers NB = NV * lanes
// of them (NV vectors wide, MR rows: MR * NV accumulators + NV weight vectors + 1 broadcast
// fit the register file), so a panel is cut into NR / NB column blocks, each stored k-major
// and contiguous:  panel[(c / NB) * K * NB + k * NB + c % NB].  A tile then reads its weights
// as one forward stream.  Where the tile is as wide as the panel (AVX-512 float32: NB = NR)
// this is the plain k-major panel[k * NR + c].
#pragma once

#include "simd.h"

#if FUSEDRNN_PACKED_LOOP

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "memory.h"
#include "threading.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA::packed {

// 64-byte aligned scratch memory, uninitialised, from the block cache (memory.h).
template <typename T>
using Buffer = mem::Array<T>;

// The tile shape for panels of NR columns of T.  Accumulators take three quarters of the
// registers (24 of 32, 12 of 16); NV is the widest of 4, 3, 2, 1 vectors that divides the
// panel and leaves room for the weights and the broadcast.
template <typename T, int NR>
struct Shape {
  static constexpr int L = simd::Vec<T>::lanes;
  static_assert(NR % L == 0, "a panel is a whole number of vectors wide");
  static constexpr int NVP = NR / L;  // vectors per panel row
  static constexpr int ACC = simd::kRegisters * 3 / 4;
  static constexpr bool fits(int v) { return NVP % v == 0 && (ACC / v) * v + v + 1 <= simd::kRegisters; }
  static constexpr int NV = fits(4) ? 4 : fits(3) ? 3 : fits(2) ? 2 : 1;
  static constexpr int MR = ACC / NV;
  static constexpr int NB = NV * L;  // columns per block
  // K per slice of the whole-sequence products (packed_products.h): a slice of one block
  // (64 KiB) stays near the core while every row tile passes.
  static constexpr int64_t KC = 65536 / (NB * static_cast<int64_t>(sizeof(T)));
};

// Bytes of a block's K slice in the time loops' products (panel_gemm): a quarter of the core's
// L2, from 64 to 256 KiB (64 KiB where the system does not say), so the slice stays in L2 while
// every row tile passes.  Measured on AVX-512 with a 1 MiB L2 (forward at 1 thread, builds
// alternated): 256 KiB slices against 64 KiB ran LSTM (16, 50, 1024, 1024) 7-10% and GRU 9%
// faster; 32 KiB ones ran LSTM (32, 100, 256, 256) 4% slower.  Results do not change.
inline int64_t slice_bytes() {
  static const int64_t bytes =
      std::min<int64_t>(262144, std::max<int64_t>(65536, fusedrnn::l2_cache_bytes() / 4));
  return bytes;
}

// Offset of element (k, c) in a panel of K rows (the layout above).
template <typename T, int NR>
constexpr int64_t panel_index(int64_t K, int64_t k, int64_t c) {
  constexpr int NB = Shape<T, NR>::NB;
  return (c / NB) * K * NB + k * NB + c % NB;
}

// Where op(A)[m, k] lies: A is row-major [M, K] with leading dimension lda, or, with TA, the
// row-major [K, M] matrix whose transpose op(A) is (the gate gradients of all steps, read as
// dG^T for the weight gradients).  Either way a row tile reads one scalar per row and k.
template <bool TA>
constexpr int64_t a_index(int64_t lda, int64_t m, int64_t k) {
  return TA ? k * lda + m : m * lda + k;
}

// C[m, 0:NB] (+)= sum_k op(A)[m, k] * block[k, 0:NB] for MR rows: MR * NV accumulators.
// With PF, its first npf steps of k also ask one cache line each of pf[] into L2 (see
// panel_gemm); without, it is the plain loop.
template <typename T, int MR, int NV, bool TA = false, bool PF = false>
inline void tile(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict block,
                 T* __restrict C, int64_t ldc, bool accumulate, std::uintptr_t pf = 0,
                 int64_t npf = 0) {
  using V = simd::Vec<T>;
  using R = typename V::R;
  constexpr int L = V::lanes, NB = L * NV;
  R acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = accumulate ? V::loadu(C + m * ldc + L * v) : V::zero();
  const T* a[MR];
  for (int m = 0; m < MR; ++m) a[m] = A + a_index<TA>(lda, m, 0);
  const int64_t ks = TA ? lda : 1;  // k stride of op(A)
  auto step = [&](int64_t k) {
    R w[NV];
    for (int v = 0; v < NV; ++v) w[v] = V::load(block + k * NB + L * v);
    for (int m = 0; m < MR; ++m) {
      const R x = V::set1(a[m][k * ks]);
      for (int v = 0; v < NV; ++v) acc[m][v] = V::fmadd(x, w[v], acc[m][v]);
    }
  };
  int64_t k = 0;
  if constexpr (PF) {
    for (const int64_t kp = npf < K ? npf : K; k < kp; ++k) {
      simd::prefetch_l2(reinterpret_cast<const void*>(pf + 64 * k));
      step(k);
    }
  }
  for (; k < K; ++k) step(k);
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) V::storeu(C + m * ldc + L * v, acc[m][v]);
}

template <typename T, int NV, int R, bool TA, bool PF = false>
inline void tail(int64_t rows, int64_t K, const T* A, int64_t lda, const T* block, T* C, int64_t ldc,
                 bool accumulate, std::uintptr_t pf = 0, int64_t npf = 0) {
  if constexpr (R > 0) {
    if (rows == R) return tile<T, R, NV, TA, PF>(K, A, lda, block, C, ldc, accumulate, pf, npf);
    tail<T, NV, R - 1, TA, PF>(rows, K, A, lda, block, C, ldc, accumulate, pf, npf);
  }
}

// R rows (R < 4) across NCB consecutive column blocks of a panel at once: the same sums as
// NCB calls of tile<T, R, NV> (every element adds its k terms in the same order), with
// R * NCB * NV independent accumulators instead of R * NV.  A row tile of one or two rows (a
// batch of one) has too few accumulators to cover the FMA latency on its own.  It is a separate
// kernel, not tile<> with NCB = 1, because its loop order (the R broadcasts first, then one
// weight vector at a time) holds R + 1 registers besides the accumulators: right for few rows,
// a spill for tile<>'s MR rows, which holds NV weight vectors and one broadcast instead.
template <typename T, int R, int NV, int NCB, bool TA>
inline void tile_wide(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict block,
                      int64_t block_stride, T* __restrict C, int64_t ldc, bool accumulate) {
  using V = simd::Vec<T>;
  using Reg = typename V::R;
  constexpr int L = V::lanes, NB = L * NV, W = NCB * NV;
  Reg acc[R][W];
  for (int m = 0; m < R; ++m)
    for (int c = 0; c < NCB; ++c)
      for (int v = 0; v < NV; ++v)
        acc[m][c * NV + v] = accumulate ? V::loadu(C + m * ldc + c * NB + L * v) : V::zero();
  for (int64_t k = 0; k < K; ++k) {
    Reg x[R];
    for (int m = 0; m < R; ++m) x[m] = V::set1(A[a_index<TA>(lda, m, k)]);
    for (int c = 0; c < NCB; ++c)
      for (int v = 0; v < NV; ++v) {
        const Reg w = V::load(block + c * block_stride + k * NB + L * v);
        for (int m = 0; m < R; ++m) acc[m][c * NV + v] = V::fmadd(x[m], w, acc[m][c * NV + v]);
      }
  }
  for (int m = 0; m < R; ++m)
    for (int c = 0; c < NCB; ++c)
      for (int v = 0; v < NV; ++v) V::storeu(C + m * ldc + c * NB + L * v, acc[m][c * NV + v]);
}

// Column blocks a wide tile of R rows spans: as many as the accumulators allow (at most the
// ACC registers of a full tile), a divisor of the panel's blocks.
template <typename T, int NR, int R>
constexpr int wide_blocks() {
  using S = Shape<T, NR>;
  int n = NR / S::NB;
  while (n > 1 && (R * n * S::NV > S::ACC || (NR / S::NB) % n != 0)) --n;
  return n;
}

template <typename T, int NR, int R, bool TA>
void panel_gemm_few(int64_t K, const T* A, int64_t lda, const T* panel, T* C, int64_t ldc,
                    bool accumulate, int64_t KC) {
  using S = Shape<T, NR>;
  constexpr int NB = S::NB, NCB = wide_blocks<T, NR, R>();
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = K - k0 < KC ? K - k0 : KC;
    for (int cb = 0; cb < NR / NB; cb += NCB)
      tile_wide<T, R, S::NV, NCB, TA>(kc, A + a_index<TA>(lda, 0, k0), lda, panel + (cb * K + k0) * NB,
                                      K * NB, C + cb * NB, ldc, accumulate || k0 > 0);
  }
}

// Panels of more bytes than this prefetch the next slice of weights (panel_gemm).
inline constexpr int64_t kPrefetchPanelBytes = 32768;

// C[0:M, 0:NR] (+)= op(A)[0:M, 0:K] panel, for a panel of K rows; MR rows at a time, K in
// slices of KC rows (kc_max, else slice_bytes() of weights), then block by block.  Fewer than
// 4 rows take the wide tiles above.  Every element of C adds its K terms in order, slice after
// slice, whatever M, KC and the row tiles: a product cut into row blocks, or into calls over
// consecutive whole slices of K (accumulate set after the first), sums exactly as one call
// does.  blocks < NR / NB: only the first blocks of NB columns are wanted (a product narrower
// than a panel); calls of four or more rows compute just those and leave the rest of C
// untouched, fewer rows compute all.
template <typename T, int NR, bool TA = false>
void panel_gemm(int64_t M, int64_t K, const T* A, int64_t lda, const T* panel, T* C, int64_t ldc,
                bool accumulate, int blocks = NR / Shape<T, NR>::NB, int64_t kc_max = 0) {
  using S = Shape<T, NR>;
  constexpr int MR = S::MR, NV = S::NV, NB = S::NB;
  if (M <= 0) return;
  // (K within one 64 KiB slice, the small products of short steps, need not ask.)
  const int64_t KC = kc_max > 0 ? kc_max
                     : K <= S::KC ? S::KC
                                  : slice_bytes() / (NB * static_cast<int64_t>(sizeof(T)));
  if constexpr (NR / NB > 1) {
    if (M == 1) return panel_gemm_few<T, NR, 1, TA>(K, A, lda, panel, C, ldc, accumulate, KC);
    if (M == 2) return panel_gemm_few<T, NR, 2, TA>(K, A, lda, panel, C, ldc, accumulate, KC);
    if (M == 3) return panel_gemm_few<T, NR, 3, TA>(K, A, lda, panel, C, ldc, accumulate, KC);
  }
  // Row tiles as even as possible (32 rows: 6 6 5 5 5 5, not 6 6 6 6 6 2): a short tile has
  // too few accumulators to keep the FMA units busy.
  const int64_t tiles = (M + MR - 1) / MR, base = M / tiles, longer = M % tiles;
  const bool prefetch = K * NR * static_cast<int64_t>(sizeof(T)) > kPrefetchPanelBytes;
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = K - k0 < KC ? K - k0 : KC;
    const bool acc = accumulate || k0 > 0;
    for (int cb = 0; cb < blocks; ++cb) {
      const T* pk = panel + (cb * K + k0) * NB;
      T* c = C + cb * NB;
      // The weights the next slice will read (the next block, the next K slice, or past the
      // panel's end: the next panel of a time loop), asked into L2 a share per row tile, so
      // that its first row tile does not wait on L3 for them.  Only for panels above
      // kPrefetchPanelBytes: smaller ones belong to weights that stay in L2 anyway.
      std::uintptr_t next = 0;
      int64_t lines = 0;  // cache lines of it to ask for
      if (prefetch) {
        const bool last_block = cb + 1 == blocks, last_slice = k0 + KC >= K;
        const int64_t next_at = !last_block ? ((cb + 1) * K + k0) * NB  // elements past `panel`
                                : !last_slice ? (k0 + KC) * NB
                                              : int64_t(NR) * K;
        const int64_t next_k = !last_block ? kc : std::min(KC, last_slice ? K : K - k0 - KC);
        next = reinterpret_cast<std::uintptr_t>(panel) + next_at * sizeof(T);
        lines = next_k * NB * static_cast<int64_t>(sizeof(T)) / 64;
      }
      auto row_tiles = [&](auto pf) {
        constexpr bool PF = decltype(pf)::value;
        int64_t m = 0;
        for (int64_t i = 0; i < tiles; ++i) {
          const int64_t rows = base + (i < longer ? 1 : 0);
          const T* a = A + a_index<TA>(lda, m, k0);
          const int64_t l0 = lines * i / tiles, nl = lines * (i + 1) / tiles - l0;
          const std::uintptr_t pf = next + 64 * l0;
          if (rows == MR) tile<T, MR, NV, TA, PF>(kc, a, lda, pk, c + m * ldc, ldc, acc, pf, nl);
          else tail<T, NV, MR - 1, TA, PF>(rows, kc, a, lda, pk, c + m * ldc, ldc, acc, pf, nl);
          m += rows;
        }
      };
      if (lines > 0) row_tiles(std::true_type());
      else row_tiles(std::false_type());
    }
  }
}

// Pack the NR columns of op(W) that a panel holds. col_row(c) names the row of W (an [N, K]
// row-major matrix with leading dimension ldw) that becomes column c, or -1 for zero padding.
template <typename T, int NR, class ColRow>
void pack_rows(const T* W, int64_t ldw, int64_t K, ColRow col_row, T* panel) {
  for (int c = 0; c < NR; ++c) {
    const int64_t r = col_row(c);
    T* dst = panel + panel_index<T, NR>(K, 0, c);
    constexpr int NB = Shape<T, NR>::NB;
    if (r < 0) {
      for (int64_t k = 0; k < K; ++k) dst[k * NB] = T(0);
    } else {
      const T* src = W + r * ldw;
      for (int64_t k = 0; k < K; ++k) dst[k * NB] = src[k];
    }
  }
}

// Pack columns [c0, c0 + NR) of W itself (an [K, N] row-major matrix): the panel for a product
// with W rather than W^T.  Columns at or past N are zero.
template <typename T, int NR>
void pack_cols(const T* W, int64_t ldw, int64_t K, int64_t N, int64_t c0, T* panel) {
  constexpr int NB = Shape<T, NR>::NB;
  for (int cb = 0; cb < NR / NB; ++cb) {
    const int64_t first = c0 + cb * NB;
    const int64_t n = N - first < 0 ? 0 : (N - first < NB ? N - first : NB);
    for (int64_t k = 0; k < K; ++k) {
      T* dst = panel + (cb * K + k) * NB;
      simd::copy_short(dst, W + k * ldw + first, n);
      for (int64_t c = n; c < NB; ++c) dst[c] = T(0);
    }
  }
}

// A panel of NR columns of which only `cols` exist (the last panel of a product whose width is
// not a whole number of panels) can be packed and multiplied as a narrower panel: the same sums,
// in the same order, over fewer padding columns, in a layout that fits in the NR-column panel's
// space.  with_width calls f(std::integral_constant<int, W>()) with W the narrowest of 16, 32,
// 48 and NR columns that holds cols; packing and products must use the same W.
template <int NR, class F>
void with_width(int64_t cols, F&& f) {
  if constexpr (NR > 16)
    if (cols <= 16) return f(std::integral_constant<int, 16>());
  if constexpr (NR > 32)
    if (cols <= 32) return f(std::integral_constant<int, 32>());
  if constexpr (NR > 48)
    if (cols <= 48) return f(std::integral_constant<int, 48>());
  f(std::integral_constant<int, NR>());
}

// The product of the time loops' last panel (with_width), kept out of line.  The loops' usual
// panels call panel_gemm<T, NR> directly and hand the cell a constant stride, so their code
// stays as it was: a first version that sent every panel through a run-time width made them
// 3-5% slower (GCC 12, AVX-512).
template <typename T, int NR>
#if defined(_MSC_VER)
__declspec(noinline)
#else
__attribute__((noinline))
#endif
void panel_gemm_narrow(int64_t cols, int64_t M, int64_t K, const T* A, int64_t lda, const T* panel,
                       T* C, int64_t ldc, bool accumulate) {
  with_width<NR>(cols, [&](auto w) {
    panel_gemm<T, decltype(w)::value>(M, K, A, lda, panel, C, ldc, accumulate);
  });
}

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA::packed

#endif  // FUSEDRNN_PACKED_LOOP
