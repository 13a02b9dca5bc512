// The time loop shared by every cell: one layer, one direction, the whole sequence.
//
// Forward:  the input projection X W_ih^T + b_ih is one GEMM over a chunk of steps; each step
//           is one GEMM h W_hh^T for all gates plus one fused elementwise pass per row
//           (and one GEMM for the LSTM projection).
// Backward: each step is one fused elementwise pass per row plus one GEMM dG W_hh for dh; the
//           weight gradients are single GEMMs over all steps at the end.
//
// A Cell provides (see lstm.cc, gru.cc, rnn.cc):
//   kGates, kHasCell (LSTM's c), kSeparateDgh (GRU: the W_hh gradient rows differ from W_ih's),
//   kDirectPath (GRU: h' depends on h outside the gates; backward_row then writes dh_direct)
//   width(), off_hprev(), off_hcore()      workspace layout
//   forward_row<Training>(xp, hp, b_hh, h_in, c_in, h_out, c_out, ws_row)
//   backward_row(ws_row, dh, dc_in, dgi, dgh, dh_direct, dc_out)
#pragma once

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "blas.h"
#include "fusedrnn/common.h"
#include "kernels.h"
#include "memory.h"
#include "simd.h"
#include "threading.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA {

// Rows up to simd::kZeroBytes are copied and zeroed in vector moves where the build has them
// (simd.h), longer ones by the C library.

template <typename T>
inline void copy_row(T* dst, const T* src, int64_t n) {
#if FUSEDRNN_PACKED_LOOP
  if (n * static_cast<int64_t>(sizeof(T)) <= simd::kZeroBytes) return simd::copy_short(dst, src, n);
#endif
  std::memcpy(dst, src, sizeof(T) * n);
}
template <typename T>
inline void zero_row(T* dst, int64_t n) {
#if FUSEDRNN_PACKED_LOOP
  if (n * static_cast<int64_t>(sizeof(T)) <= simd::kZeroBytes) return simd::zero_short(dst, n);
#endif
  std::memset(dst, 0, sizeof(T) * n);
}

// Zero the rows (t, b) that sequence b never reaches (t >= lengths[b]) of a [T, B, n] array.
template <typename T>
void zero_padding(const Seq& q, T* a, int64_t n) {
  if (!q.lengths) return;
  for (int64_t b = 0; b < q.B; ++b)
    for (int64_t t = q.length(b); t < q.T; ++t) zero_row(a + (t * q.B + b) * n, n);
}

// Steps per input-projection chunk: enough rows (B * steps >= rows; 1024 for the BLAS of the
// generic loop) for the GEMM to run near peak without a [T, B, G*H] buffer; all T when rows
// read different time indices at one step (reverse direction with unequal lengths).
inline int64_t projection_chunk(const Seq& q, int64_t rows = 1024) {
  if (!q.time_uniform()) return q.T;
  return std::max<int64_t>(1, std::min<int64_t>(q.T, (rows + q.B - 1) / q.B));
}

// The input projection xp[t] = x[t] W_ih^T for the steps a chunk covers (the cells add b_ih).  When every
// step reads a single time index the chunk holds a few steps (bounded memory); otherwise
// (reverse direction with ragged lengths) it holds all T.
template <typename T>
class InputProjection {
 public:
  InputProjection(const Seq& q, const T* x, const T* w_ih, int64_t GH)
      : q_(q), x_(x), w_ih_(w_ih), GH_(GH), steps_(projection_chunk(q)),
        buf_(static_cast<size_t>(steps_ * q.B * GH), "the input projection") {}

  // Make step s's time indices available; call with s = 0, 1, 2, ... in order.
  void prepare(int64_t s) {
    if (s < next_) return;
    if (steps_ == q_.T) {
      project(0, q_.T);
      next_ = q_.T;
      return;
    }
    const int64_t n = std::min(steps_, q_.T - s);
    // forward: times s..s+n-1;  reverse: times T-s-n..T-s-1
    project(q_.reverse ? q_.T - s - n : s, n);
    next_ = s + n;
  }

  const T* row(int64_t t, int64_t b) const { return buf_.data() + ((t - t0_) * q_.B + b) * GH_; }

 private:
  void project(int64_t t0, int64_t n) {
    t0_ = t0;
    blas::gemm<T>(false, true, n * q_.B, GH_, q_.I, T(1), x_ + t0 * q_.B * q_.I, q_.I, w_ih_, q_.I,
                  T(0), buf_.data(), GH_);
  }

  const Seq& q_;
  const T* x_;
  const T* w_ih_;
  int64_t GH_, steps_, next_ = 0, t0_ = 0;
  mem::Array<T> buf_;
};

template <typename T, class Cell, bool Training>
void run_forward(const Seq& q, const Cell& cell, const Weights<T>& w, const ForwardArgs<T>& a) {
  const int64_t B = q.B, H = q.H, P = q.P, GH = Cell::kGates * H;
  const int64_t W = cell.width();
  const bool proj = w.w_hr != nullptr;

  InputProjection<T> xp(q, a.x, w.w_ih, GH);
  std::vector<T> hp(B * GH);          // h W_hh^T of one step
  std::vector<T> hcore(B * H);        // the cell's h' before the projection
  std::vector<T> h(B * P), h_next(B * P);
  std::vector<T> c, c_next;
  std::vector<int64_t> t_of(B);
  copy_row(h.data(), a.h0, B * P);
  if constexpr (Cell::kHasCell) {
    c.assign(a.c0, a.c0 + B * H);
    c_next.resize(B * H);
  }
  zero_padding(q, a.out, P);
  if constexpr (Training) zero_padding(q, a.ws, W);

  for (int64_t s = 0; s < q.T; ++s) {
    throw_if_interrupted();  // between steps, on the calling thread: nothing is left running
    xp.prepare(s);
    blas::gemm<T>(false, true, B, GH, P, T(1), h.data(), P, w.w_hh, P, T(0), hp.data(), GH);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t t = t_of[b] = q.time_of(s, b);
      T* c_out = Cell::kHasCell ? c_next.data() + b * H : nullptr;
      if (t < 0) {
        if constexpr (Cell::kHasCell) copy_row(c_out, c.data() + b * H, H);
        continue;
      }
      T* wrow = Training ? a.ws + (t * B + b) * W : nullptr;
      if constexpr (Training) copy_row(wrow + cell.off_hprev(), h.data() + b * P, P);
      cell.template forward_row<Training>(H, xp.row(t, b), H, hp.data() + b * GH, H, w.b_ih, w.b_hh,
                                          h.data() + b * P,
                                          Cell::kHasCell ? c.data() + b * H : nullptr,
                                          hcore.data() + b * H, c_out, wrow);
    }
    if (proj) {
      blas::gemm<T>(false, true, B, P, H, T(1), hcore.data(), H, w.w_hr, H, T(0), h_next.data(), P);
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t t = t_of[b];
      T* hn = h_next.data() + b * P;
      if (t < 0) {
        copy_row(hn, h.data() + b * P, P);
        continue;
      }
      if (!proj) copy_row(hn, hcore.data() + b * H, H);
      else if (Training) copy_row(a.ws + (t * B + b) * W + cell.off_hcore(), hcore.data() + b * H, H);
      copy_row(a.out + (t * B + b) * P, hn, P);
    }
    h.swap(h_next);
    if constexpr (Cell::kHasCell) c.swap(c_next);
  }
  copy_row(a.h_n, h.data(), B * P);
  if constexpr (Cell::kHasCell) copy_row(a.c_n, c.data(), B * H);
}

template <typename T>
void column_sums(const T* a, int64_t rows, int64_t cols, T* out) {
  zero_row(out, cols);
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = a + r * cols;
    for (int64_t j = 0; j < cols; ++j) out[j] += row[j];
  }
}

// The whole-sequence products C[M, N] = op(A) B (B row-major [K, N]; op(A) = A, or A^T for
// A stored [K, M]) through the BLAS.  The packed loop brings its own (packed_products.h).
struct BlasProducts {
  template <typename T, bool TA>
  static void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                   T* C, int64_t ldc) {
    blas::gemm<T>(TA, false, M, N, K, T(1), A, lda, B, ldb, T(0), C, ldc);
  }
  // C1 = A^T B1 and C2 = A^T B2 (dW_ih and dW_hh of a cell whose two gate-gradient arrays are one).
  template <typename T>
  static void gemm_pair_at(int64_t M, int64_t K, const T* A, int64_t lda, const T* B1, int64_t ldb1,
                           int64_t N1, T* C1, int64_t ldc1, const T* B2, int64_t ldb2, int64_t N2, T* C2,
                           int64_t ldc2) {
    gemm<T, true>(M, N1, K, A, lda, B1, ldb1, C1, ldc1);
    throw_if_interrupted(/*before_long_work=*/true);
    gemm<T, true>(M, N2, K, A, lda, B2, ldb2, C2, ldc2);
  }
};

// After the time loop: dx (unless a.dx is null) and the weight and bias gradients as single
// GEMMs over all steps.
// dgi / dgh: gate gradients [T, B, G*H] (the W_ih and W_hh rows; the same array except for the
// GRU), zero at padded rows.
// bias_done: the caller has already written db_ih and db_hh.
template <typename T, class Cell, class Products = BlasProducts>
void whole_sequence_gradients(const Seq& q, const Cell& cell, const Weights<T>& w,
                              const BackwardArgs<T>& a, const T* dgi, const T* dgh,
                              bool bias_done = false) {
  const int64_t TB = q.T * q.B, GH = Cell::kGates * q.H, I = q.I, W = cell.width();
  throw_if_interrupted(/*before_long_work=*/true);
  if (a.dx) {  // null where the caller has no use for dx (the first layer of a model)
    Products::template gemm<T, false>(TB, I, GH, dgi, GH, w.w_ih, I, a.dx, I);
    zero_padding(q, a.dx, I);  // exact zeros past each length (0 * inf in W_ih would be NaN)
  }
  // Padded steps of x are never read: a NaN there must not reach dW_ih through 0 * NaN.
  const T* x = a.x;
  mem::Array<T> x_clean;
  bool padded = false;
  for (int64_t b = 0; b < q.B && !padded; ++b) padded = q.length(b) < q.T;
  if (padded) {
    x_clean = mem::Array<T>(static_cast<size_t>(TB * I), "a copy of x without its padding");
    copy_row(x_clean.data(), a.x, TB * I);
    zero_padding(q, x_clean.data(), I);
    x = x_clean.data();
  }
  throw_if_interrupted(/*before_long_work=*/true);
  if (dgi == dgh) {  // one pass over the gate gradients for both
    Products::template gemm_pair_at<T>(GH, TB, dgi, GH, x, I, I, a.dw_ih, I, a.ws + cell.off_hprev(), W, q.P,
                                       a.dw_hh, q.P);
  } else {
    Products::template gemm<T, true>(GH, I, TB, dgi, GH, x, I, a.dw_ih, I);
    throw_if_interrupted(/*before_long_work=*/true);
    Products::template gemm<T, true>(GH, q.P, TB, dgh, GH, a.ws + cell.off_hprev(), W, a.dw_hh, q.P);
  }
  if (!bias_done) {
    column_sums(dgi, TB, GH, a.db_ih);
    column_sums(dgh, TB, GH, a.db_hh);
  }
}

template <typename T, class Cell>
void run_backward(const Seq& q, const Cell& cell, const Weights<T>& w, const BackwardArgs<T>& a) {
  const int64_t B = q.B, H = q.H, P = q.P, GH = Cell::kGates * H;
  const int64_t W = cell.width(), TB = q.T * B;
  const bool proj = w.w_hr != nullptr;
  const bool uniform = q.time_uniform();

  // Gate gradients in time order [T, B, G*H]; rows a sequence never reaches are zero, so the
  // whole-sequence GEMMs below need no masking.  Every reached row is written in the loop, so
  // only the padding is zeroed here (no pass over hundreds of MiB before the first step, where
  // Ctrl-C would not be seen).
  mem::Array<T> dgi(static_cast<size_t>(TB * GH), "gate gradients");
  mem::Array<T> dgh_own(Cell::kSeparateDgh ? static_cast<size_t>(TB * GH) : 0, "gate gradients");
  mem::Array<T> dht(proj ? static_cast<size_t>(TB * P) : 0, "projection gradients");  // total dh per step
  zero_padding(q, dgi.data(), GH);
  if constexpr (Cell::kSeparateDgh) zero_padding(q, dgh_own.data(), GH);
  if (proj) zero_padding(q, dht.data(), P);
  T* dgh = Cell::kSeparateDgh ? dgh_own.data() : dgi.data();

  std::vector<T> dh(a.dh_n, a.dh_n + B * P), dh_next(B * P), dtot(B * P), dcore(proj ? B * H : 0);
  std::vector<T> dc, dc_next;
  if constexpr (Cell::kHasCell) {
    dc.assign(a.dc_n, a.dc_n + B * H);
    dc_next.resize(B * H);
  }
  std::vector<T> dstep(uniform ? 0 : B * GH);
  std::vector<int64_t> t_of(B);

  for (int64_t s = q.T - 1; s >= 0; --s) {
    throw_if_interrupted();
    // dh arriving at this step's output: from the next step and from dout.
    for (int64_t b = 0; b < B; ++b) {
      const int64_t t = t_of[b] = q.time_of(s, b);
      T* d = dtot.data() + b * P;
      if (t < 0) {
        zero_row(d, P);
        continue;
      }
      const T* x = dh.data() + b * P;
      const T* y = a.dout + (t * B + b) * P;
      for (int64_t j = 0; j < P; ++j) d[j] = x[j] + y[j];
      if (proj) copy_row(dht.data() + (t * B + b) * P, d, P);
    }
    // h' = W_hr hcore  =>  d hcore = W_hr^T dh'
    if (proj) blas::gemm<T>(false, false, B, H, P, T(1), dtot.data(), P, w.w_hr, H, T(0), dcore.data(), H);
    const T* dcell = proj ? dcore.data() : dtot.data();

    for (int64_t b = 0; b < B; ++b) {
      const int64_t t = t_of[b];
      T* dc_out = Cell::kHasCell ? dc_next.data() + b * H : nullptr;
      if (t < 0) {  // finished rows pass their state gradient through untouched
        copy_row(dh_next.data() + b * P, dh.data() + b * P, P);
        if constexpr (Cell::kHasCell) copy_row(dc_out, dc.data() + b * H, H);
        if (!uniform) zero_row(dstep.data() + b * GH, GH);
        continue;
      }
      const int64_t r = t * B + b;
      if constexpr (!Cell::kDirectPath) zero_row(dh_next.data() + b * P, P);
      cell.backward_row(H, a.ws + r * W, dcell + b * H, Cell::kHasCell ? dc.data() + b * H : nullptr,
                        dgi.data() + r * GH, dgh + r * GH, dh_next.data() + b * P, dc_out);
      if (!uniform) copy_row(dstep.data() + b * GH, dgh + r * GH, GH);
    }
    // h' depends on h through the gates:  dh += dG_hh W_hh
    const T* dg_rows = uniform ? dgh + q.time_at_step(s) * B * GH : dstep.data();
    blas::gemm<T>(false, false, B, P, GH, T(1), dg_rows, GH, w.w_hh, P, T(1), dh_next.data(), P);
    // Finished rows keep the gradient they carry: their gate-gradient rows are zero, but
    // 0 * W_hh is NaN where W_hh holds an infinity.
    if (q.lengths)
      for (int64_t b = 0; b < B; ++b)
        if (t_of[b] < 0) copy_row(dh_next.data() + b * P, dh.data() + b * P, P);
    dh.swap(dh_next);
    if constexpr (Cell::kHasCell) dc.swap(dc_next);
  }
  copy_row(a.dh0, dh.data(), B * P);
  if constexpr (Cell::kHasCell) copy_row(a.dc0, dc.data(), B * H);

  whole_sequence_gradients(q, cell, w, a, dgi.data(), dgh);
  if (proj) {
    blas::gemm<T>(true, false, P, H, TB, T(1), dht.data(), P, a.ws + cell.off_hcore(), W, T(0),
                  a.dw_hr, H);
  }
}

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA

#include "fused_loop.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA {

// Entry points: pick the loop and turn the runtime flags into template arguments.  The packed,
// threaded loop runs wherever the build has one (simd.h), the generic loop elsewhere.
template <typename T, class Cell>
void forward_entry(const Seq& q, const Cell& cell, const Weights<T>& w, const ForwardArgs<T>& a,
                   bool training) {
#if FUSEDRNN_PACKED_LOOP
  note_packed_loop();
  constexpr int64_t U = kForwardUnits<Cell>;
  if constexpr (Cell::kGates == 1) {
    // A filled cache keeps its width (the width only balances the threads; a call at another
    // width would pack into scratch, as while the contention guard runs one thread).
    const int64_t held = a.packed ? a.packed->units() : 0;
    auto halve = [&] {  // panels of 64 split H unevenly over the step's threads, 32 do not
      const int threads = step_threads(forward_step_flops(q, Cell::kGates, w.w_hr != nullptr));
      return !panels_balanced(q.H, 64, threads) && panels_balanced(q.H, 32, threads);
    };
    if (held > 0 ? held == U / 2 : halve()) {
      if (training) fused_forward<T, Cell, true, U / 2>(q, cell, w, a);
      else fused_forward<T, Cell, false, U / 2>(q, cell, w, a);
      return;
    }
  }
  if (training) fused_forward<T, Cell, true, U>(q, cell, w, a);
  else fused_forward<T, Cell, false, U>(q, cell, w, a);
#else
  if (training) run_forward<T, Cell, true>(q, cell, w, a);
  else run_forward<T, Cell, false>(q, cell, w, a);
#endif
}

template <typename T, class Cell>
void backward_entry(const Seq& q, const Cell& cell, const Weights<T>& w, const BackwardArgs<T>& a) {
#if FUSEDRNN_PACKED_LOOP
  note_packed_loop();
  fused_backward<T, Cell>(q, cell, w, a);
#else
  run_backward(q, cell, w, a);
#endif
}

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA
