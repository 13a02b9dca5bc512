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
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "memory.h"
#include "packed_gemm.h"
#include "threading.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA::packed {

// Rows of A (with TA) up to this long are read in place by the tiles (sequence_products).
inline constexpr int64_t kInPlaceRowBytes = 1024;

// One product of a call to sequence_products: C[M, N] = op(A) B.
template <typename T>
struct Operand {
  const T* B;
  int64_t ldb, N;
  T* C;
  int64_t ldc;
};

// A run of panels of nr columns (16, 32, 48 or 64; with_width<64>(nr, f) hands f the constant):
// the products' columns are cut into such runs, each an operand or the columns of one it covers.
template <typename T>
struct PanelRun : Operand<T> {
  int nr;
  int64_t npan = 0, first_unit = 0;  // its panels, and its first packing unit in a chunk
  T* pk = nullptr;                   // its packed panels (the chunk's)
  T* last = nullptr;                 // sums of its last panel, where N is not whole panels
};

// Products only a few columns wide (N <= kThinColumns: dW_ih and dx of a model on one or a
// few features) are not packed into panels: a panel is at least 16 columns wide, so with one
// feature fifteen sixteenths of the work went to padding columns.  Up to 15 columns, as many
// as a thin tile's sums fit in three quarters of the registers (12 with AVX2's 16).
inline constexpr int kThinColumns = std::min(15, simd::kRegisters * 3 / 4);

// The other side of a thin tile of N sums per vector: its vectors of m (thin_at) or its rows
// (thin_dot), the most of 4, 3, 2, 1 whose N * that many sums stay within three quarters of the
// registers and leave room for that many loaded vectors and one more (a broadcast, a vector of B).
template <int N>
constexpr int thin_tile() {
  for (int v : {4, 3, 2, 1})
    if (N * v <= simd::kRegisters * 3 / 4 && N * v + v + 1 <= simd::kRegisters) return v;
  return 1;
}

// A thin operand's product, cut into `items` independent pieces (thin_at, thin_dot below):
// sequence_products runs them among its own row blocks, so that they share the threads.
template <typename T>
struct ThinJob {
  int64_t M = 0, K = 0;
  const T* A = nullptr;
  int64_t lda = 0;
  Operand<T> op{};
  Buffer<T> bt;  // thin_dot: B's columns
  int64_t kp = 0, items = 0;
  void (*piece)(const ThinJob&, int64_t) = nullptr;
};

// C[m, 0:N] = sum_k A[k, m] B[k, 0:N] for the NV * lanes consecutive m from m0 (A: [K, M]):
// one pass down A's columns, the N values of B's row k broadcast.  Each element adds its K
// terms in order, each a fused multiply-add, as panel_gemm<T, NR, true> does with the operands'
// roles swapped (the product of two numbers is the same either way): the results are the
// panels' to the bit.  Lanes below `skip` are left to the piece that stored them (thin_at).
template <typename T, int N, int NV>
void thin_at_block(const ThinJob<T>& j, int64_t m0, int skip) {
  using V = simd::Vec<T>;
  using R = typename V::R;
  constexpr int L = V::lanes;
  const T* __restrict B = j.op.B;
  R acc[N][NV];
  for (int c = 0; c < N; ++c)
    for (int v = 0; v < NV; ++v) acc[c][v] = V::zero();
  const T* a = j.A + m0;
  for (int64_t k = 0; k < j.K; ++k, a += j.lda) {
    R w[NV];
    for (int v = 0; v < NV; ++v) w[v] = V::loadu(a + L * v);
    for (int c = 0; c < N; ++c) {
      const R x = V::set1(B[k * j.op.ldb + c]);
      for (int v = 0; v < NV; ++v) acc[c][v] = V::fmadd(x, w[v], acc[c][v]);
    }
  }
  alignas(64) T out[L];
  for (int c = 0; c < N; ++c)
    for (int v = 0; v < NV; ++v) {
      V::store(out, acc[c][v]);
      for (int i = v * L < skip ? skip - v * L : 0; i < L; ++i) j.op.C[(m0 + v * L + i) * j.op.ldc + c] = out[i];
    }
}

// C[M, N] = A^T B, A: [K, M], B: [K, N], N <= kThinColumns, in pieces of NV vectors of m, then
// single vectors, the last one ending at M (overlapping the one before: its first lanes are
// not stored again).  M below one vector: one piece, the same sums one element at a time.
template <typename T, int N>
void thin_at_piece(const ThinJob<T>& j, int64_t i) {
  constexpr int L = simd::Vec<T>::lanes, NV = thin_tile<N>(), NB = NV * L;
  const int64_t M = j.M, full = M / NB;
  if (M < L) {
    for (int64_t m = 0; m < M; ++m)
      for (int c = 0; c < N; ++c) {
        T s = T(0);
        for (int64_t k = 0; k < j.K; ++k) s = std::fma(j.op.B[k * j.op.ldb + c], j.A[k * j.lda + m], s);
        j.op.C[m * j.op.ldc + c] = s;
      }
    return;
  }
  if (i < full) return thin_at_block<T, N, NV>(j, i * NB, 0);
  const int64_t want = full * NB + (i - full) * L, m0 = std::min(want, M - L);
  thin_at_block<T, N, 1>(j, m0, static_cast<int>(want - m0));
}
template <typename T, int N>
void thin_at(ThinJob<T>& j) {
  constexpr int L = simd::Vec<T>::lanes, NB = thin_tile<N>() * L;
  const int64_t full = j.M / NB, rest = j.M - full * NB;
  j.items = j.M < L ? 1 : full + (rest + L - 1) / L;
  j.piece = thin_at_piece<T, N>;
}

// C[M, N] = A B, A: [M, K], B: [K, N], N <= kThinColumns: per row of A, N dot products along
// its row, a vector of k at a time, against B's columns (copied to bt: N rows of kp, zeros past
// K); each sum is its lanes' partial sums added in lane order.  R rows at a time, kThinTiles
// such tiles a piece.
inline constexpr int64_t kThinTiles = 8;
template <typename T, int N>
void thin_dot_tile(const ThinJob<T>& j, int64_t m0) {
  using V = simd::Vec<T>;
  using Reg = typename V::R;
  constexpr int L = V::lanes, R = thin_tile<N>();
  const int64_t M = j.M, K = j.K, kp = j.kp, kv = K / L * L;
  const T* b = j.bt.data();
  const T* a[R];
  for (int r = 0; r < R; ++r) a[r] = j.A + std::min(m0 + r, M - 1) * j.lda;  // past M: read, not stored
  Reg acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < N; ++c) acc[r][c] = V::zero();
  auto step = [&](const Reg* x, int64_t k) {
    for (int c = 0; c < N; ++c) {
      const Reg w = V::load(b + c * kp + k);
      for (int r = 0; r < R; ++r) acc[r][c] = V::fmadd(x[r], w, acc[r][c]);
    }
  };
  for (int64_t k = 0; k < kv; k += L) {
    Reg x[R];
    for (int r = 0; r < R; ++r) x[r] = V::loadu(a[r] + k);
    step(x, k);
  }
  if (kv < K) {  // the last k, less than a vector: zeros after it
    alignas(64) T part[L];
    Reg x[R];
    for (int r = 0; r < R; ++r) {
      for (int e = 0; e < L; ++e) part[e] = T(0);
      simd::copy_short(part, a[r] + kv, K - kv);
      x[r] = V::load(part);
    }
    step(x, kv);
  }
  alignas(64) T out[L];
  for (int r = 0; r < R && m0 + r < M; ++r)
    for (int c = 0; c < N; ++c) {
      V::store(out, acc[r][c]);
      T s = out[0];
      for (int e = 1; e < L; ++e) s += out[e];
      j.op.C[(m0 + r) * j.op.ldc + c] = s;
    }
}
template <typename T, int N>
void thin_dot_piece(const ThinJob<T>& j, int64_t i) {
  constexpr int64_t R = thin_tile<N>();
  for (int64_t m = i * R * kThinTiles; m < std::min(j.M, (i + 1) * R * kThinTiles); m += R) thin_dot_tile<T, N>(j, m);
}
template <typename T, int N>
void thin_dot(ThinJob<T>& j) {
  constexpr int L = simd::Vec<T>::lanes;
  j.kp = (j.K + L - 1) / L * L;
  j.bt = Buffer<T>(N * j.kp, "thin products");
  T* bt = j.bt.data();
  for (int c = 0; c < N; ++c) {
    for (int64_t k = 0; k < j.K; ++k) bt[c * j.kp + k] = j.op.B[k * j.op.ldb + c];
    for (int64_t k = j.K; k < j.kp; ++k) bt[c * j.kp + k] = T(0);
  }
  const int64_t rows = thin_tile<N>() * kThinTiles;  // of a piece
  j.items = (j.M + rows - 1) / rows;
  j.piece = thin_dot_piece<T, N>;
}

// Sets up a thin operand's job, its N (1..kThinColumns) found as a constant.
template <typename T, bool TA, int N = kThinColumns>
void thin_job(ThinJob<T>& j) {
  if constexpr (N > 1) {
    if (j.op.N < N) return thin_job<T, TA, N - 1>(j);
  }
  if constexpr (TA) thin_at<T, N>(j);
  else thin_dot<T, N>(j);
}

// C = op(A) B for every operand, one A: K goes in chunks of 1024 rows of B, and per chunk A is
// copied once (with TA, rows longer than kInPlaceRowBytes) for all the operands, their panels
// packed, then every row block is taken across every panel of every operand.  Each operand's
// columns are panels of 64, and narrower ones (16, 32 or 48: packed_gemm.h, with_width) for a
// product (or the last columns of one) that is not a whole number of them wide: a tile spans a
// panel's whole width on AVX-512 float, so dx and dW_ih of a model with 20 features would otherwise
// cost as much as with 64 (and operands of at most kThinColumns columns take no panels at all:
// ThinJob).  Every element adds its K terms in the same order whatever the panel
// width and the row blocks: the results are those of separate products, only the work spent on
// padding columns and on reading A changes.  Measured (AVX-512, training, builds alternated): dW_ih
// and dW_hh in one call made LSTM (16, 251, 64, 64) 3.5% faster at one thread (A, read in place,
// passes the caches once instead of twice) and changed nothing measurable at H = 256 and 512.
template <typename T, bool TA>
void sequence_products(int64_t M, int64_t K, const T* A, int64_t lda, const Operand<T>* ops, int nops) {
  if (M <= 0) return;
  std::vector<PanelRun<T>> runs;
  std::vector<ThinJob<T>> thins;  // the thin operands, run among the first chunk's row blocks
  int64_t thin_items = 0;
  double flops = 0;  // of all the products
  for (int o = 0; o < nops; ++o) {
    const Operand<T>& op = ops[o];
    if (op.N <= 0) continue;
    flops += 2.0 * M * op.N * K;
    if (K <= 0) {
      for (int64_t i = 0; i < M; ++i) std::fill(op.C + i * op.ldc, op.C + i * op.ldc + op.N, T(0));
      continue;
    }
    if (op.N <= kThinColumns) {
      thins.emplace_back();
      ThinJob<T>& j = thins.back();
      j.M = M;
      j.K = K;
      j.A = A;
      j.lda = lda;
      j.op = op;
      thin_job<T, TA>(j);
      thin_items += j.items;
      continue;
    }
    const int64_t wide = op.N / 64 * 64, rest = op.N - wide;
    if (rest == 0 || rest > 48) {
      runs.push_back({op, 64});
      continue;
    }
    if (wide > 0) runs.push_back({{op.B, op.ldb, wide, op.C, op.ldc}, 64});
    with_width<64>(rest, [&](auto w) {
      runs.push_back({{op.B + wide, op.ldb, rest, op.C + wide, op.ldc}, decltype(w)::value});
    });
  }
  const int nt = flops < fusedrnn::kSplitFlops ? 1 : fusedrnn::threads_now();
  // Piece i of the thin operands' pieces, in order.
  auto thin_piece = [&](int64_t i) noexcept {
    for (const ThinJob<T>& j : thins) {
      if (i < j.items) return j.piece(j, i);
      i -= j.items;
    }
  };
  if (runs.empty()) {
    using Thin = decltype(thin_piece);
    fusedrnn::parallel_for(thin_items, nt, [](void* f, int64_t i) { (*static_cast<Thin*>(f))(i); }, &thin_piece);
    return;
  }
  // K per chunk: 1024 (whole kernel slices of 64-column panels).  The packed copies then hold
  // 1024 rows of B (and of A), whatever T is.
  constexpr int64_t KO = 1024;
  // Row blocks of whole row tiles (of the first run's panels) whose slice of op(A) (KC deep) is
  // ~96 KiB: it stays in L2 while it passes every panel, and each block of a panel is used by
  // all its row tiles while in L1 (measured on AVX2 at K >= KC: 4 tiles for float, 2 for
  // double; twice that was 10-20% slower).  At least 8 blocks where M allows, for the threads
  // to share.
  int64_t MR = 0, KC = 0;
  with_width<64>(runs[0].nr, [&](auto w) {
    MR = Shape<T, decltype(w)::value>::MR;
    KC = Shape<T, decltype(w)::value>::KC;
  });
  const int64_t kd = std::min<int64_t>(K, KC);
  const int64_t fit = (96 << 10) / (MR * kd * static_cast<int64_t>(sizeof(T)));
  const int64_t tiles = (M + MR - 1) / MR;  // row tiles of C
  const int64_t per_block = std::max<int64_t>(1, std::min(fit, M / (8 * MR)));  // row tiles
  // Row blocks: as many as whole blocks of per_block tiles need, rounded up to a multiple of the
  // threads, the tiles dealt out evenly (block rb: tiles [rb * tiles / nrb, (rb + 1) * tiles /
  // nrb)), so that every thread gets the same rows.  Blocks of per_block tiles with a short last
  // one left a thread idle at the end of every chunk of K (dW of an LSTM (32, 100, 256, 256):
  // 11 blocks, the last of 64 rows, on 2 threads; its training step ran 2% faster with even
  // blocks, the two ways switched in one build and alternated, and the same at one thread).
  // The blocks group rows, they do not change any element's sum.
  const int64_t nrb = std::min(tiles, ((tiles + per_block - 1) / per_block + nt - 1) / nt * nt);
  auto block_first = [&](int64_t rb) { return std::min(M, MR * (rb * tiles / nrb)); };
  // With copy_a (below), block rb's copy of op(A) is [kc, ld] at rb * kmax * slot: ld, its row
  // length, is its rows rounded up to whole cache lines, so that every k starts a line (the
  // tiles read a few values of a row per k), as the old blocks of 96 rows did.
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
  auto line_up = [&](int64_t n) { return (n + kLine - 1) / kLine * kLine; };
  const int64_t slot = line_up(MR * ((tiles + nrb - 1) / nrb));
  const int64_t kmax = std::min(K, KO);
  // With TA, op(A)'s rows are copied to the row blocks (below) unless A's rows are at most
  // kInPlaceRowBytes long: then the tiles read them in place, a row a k (measured at 1 KiB rows,
  // LSTM H = 64 and GRU H = 64 training, AVX-512 and AVX2, builds alternated: 2-5% faster
  // than with the copy; at 2 KiB, LSTM H = 128, float and double, 2-5% slower).
  const bool copy_a = TA && lda * static_cast<int64_t>(sizeof(T)) > kInPlaceRowBytes;
  // A run's last panel, where its N is not a whole number of panels, is summed in `last` and
  // copied out, computed over only the blocks of NB columns that reach below N.
  int64_t units = 0, panel_elems = 0, last_elems = 0;
  for (PanelRun<T>& r : runs) {
    r.npan = (r.N + r.nr - 1) / r.nr;
    r.first_unit = units;
    units += r.npan;
    panel_elems += kmax * r.npan * r.nr;
    if (r.N % r.nr != 0) last_elems += M * r.nr;
  }
  Buffer<T> panels(panel_elems, "packed products"), rows_t(copy_a ? kmax * nrb * slot : 0, "packed products"),
      lasts(last_elems, "packed products");
  {
    T* pk = panels.data();
    T* last = lasts.data();
    for (PanelRun<T>& r : runs) {
      r.pk = pk;
      pk += kmax * r.npan * r.nr;
      if (r.N % r.nr != 0) {
        r.last = last;
        last += M * r.nr;
      }
    }
  }

  for (int64_t k0 = 0; k0 < K; k0 += KO) {
    if (k0 > 0) fusedrnn::throw_if_interrupted(/*before_long_work=*/true);
    const int64_t kc = std::min(KO, K - k0);
    // Packing: units 0..units-1 pack a panel of B each (run by run); with copy_a, the next
    // units copy 64 rows of A each (read whole, in order) into the row blocks' [kc, rows]
    // buffers: read in place, op(A)'s rows lie lda apart (a page apart for a large layer) and
    // the tiles stall on the loads.
    const int64_t a_units = copy_a ? (kc + 63) / 64 : 0;
    auto pack = [&](int64_t u) noexcept {
      if (u < units) {
        const PanelRun<T>* r = &runs.back();
        while (u < r->first_unit) --r;
        const int64_t p = u - r->first_unit;
        with_width<64>(r->nr, [&](auto w) {
          constexpr int NR = decltype(w)::value;
          pack_cols<T, NR>(r->B + k0 * r->ldb, r->ldb, kc, r->N, p * NR, r->pk + p * kc * NR);
        });
        return;
      }
      const int64_t e = std::min(kc, (u - units + 1) * 64);
      for (int64_t k = (u - units) * 64; k < e; ++k) {
        const T* src = A + (k0 + k) * lda;
        for (int64_t rb = 0; rb < nrb; ++rb) {
          const int64_t r0 = block_first(rb), rows = block_first(rb + 1) - r0;
          simd::copy_short(rows_t.data() + rb * kmax * slot + k * line_up(rows), src + r0, rows);
        }
      }
    };
    // Row block rb across every panel of every run.
    auto block = [&](int64_t rb) noexcept {
      const int64_t r0 = block_first(rb), rows = block_first(rb + 1) - r0;
      const T* a = copy_a ? rows_t.data() + rb * kmax * slot : A + a_index<TA>(lda, r0, k0);
      const int64_t la = copy_a ? line_up(rows) : lda;
      for (const PanelRun<T>& r : runs)
        with_width<64>(r.nr, [&](auto w) {
          constexpr int NR = decltype(w)::value;
          using S = Shape<T, NR>;
          const bool ragged = r.last != nullptr;
          const int full = NR / S::NB;
          const int last_blocks = ragged ? static_cast<int>((r.N % NR + S::NB - 1) / S::NB) : full;
          for (int64_t p = 0; p < r.npan; ++p) {
            const bool in_last = ragged && p == r.npan - 1;
            T* c = in_last ? r.last + r0 * NR : r.C + r0 * r.ldc + p * NR;
            panel_gemm<T, NR, TA>(rows, kc, a, la, r.pk + p * kc * NR, c, in_last ? NR : r.ldc, k0 > 0,
                                  in_last ? last_blocks : full, S::KC);
          }
        });
    };
    using Pack = decltype(pack);
    fusedrnn::parallel_for(units + a_units, nt, [](void* f, int64_t i) { (*static_cast<Pack*>(f))(i); }, &pack);
    // The first chunk's row blocks come after the thin operands' pieces (each a whole pass
    // over K), which the threads take first.
    const int64_t thin_now = k0 == 0 ? thin_items : 0;
    auto piece = [&](int64_t i) noexcept {
      if (i < thin_now) thin_piece(i);
      else block(i - thin_now);
    };
    using Piece = decltype(piece);
    fusedrnn::parallel_for(thin_now + nrb, nt, [](void* f, int64_t i) { (*static_cast<Piece*>(f))(i); }, &piece);
  }
  for (const PanelRun<T>& r : runs)
    if (r.last) {
      const int64_t c0 = (r.npan - 1) * r.nr;
      for (int64_t i = 0; i < M; ++i)
        std::copy(r.last + i * r.nr, r.last + i * r.nr + (r.N - c0), r.C + i * r.ldc + c0);
    }
}

// C[M, N] = op(A) B on the packed kernel.
template <typename T, bool TA>
void sequence_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                   T* C, int64_t ldc) {
  const Operand<T> op{B, ldb, N, C, ldc};
  sequence_products<T, TA>(M, K, A, lda, &op, 1);
}

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA::packed

#endif  // FUSEDRNN_PACKED_LOOP
