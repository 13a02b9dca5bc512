// The time loop on the GPU, shared by every cell; mirrors csrc/cpu/sequence.h.
//
// Forward:  the input projection X W_ih^T is one cuBLAS GEMM over all steps; each step is one
//           GEMM h W_hh^T for all gates plus one fused elementwise kernel (the cells' per-unit
//           math from include/fusedrnn/cells), and for the LSTM projection one more GEMM and a
//           small kernel that places its result.
// Backward: each step is one fused elementwise kernel plus one GEMM dG W_hh for dh (with a
//           projection, a kernel and a GEMM before it for d hcore); the weight gradients and
//           dx are single GEMMs over all steps at the end, the bias gradients column sums.
//
// Kernels are grid-stride loops over (row b, unit j) with no shared memory and no
// __syncthreads; one launch per step orders the steps.
//
// A device Cell provides kGates, kHasCell, kSeparateDgh, kDirectPath (as the CPU cells),
// width(), off_hprev(), off_hcore(), and the per-unit calls
//   forward<Training>(j, xp_row, hp_row, b_ih, b_hh, h_row, c_row, h_out_row, c_out_row, ws_row)
//   backward(j, ws_row, dh_j, dc_row, dgi_row, dgh_row, dh_direct_row, dc_out_row)
#pragma once

#include <algorithm>
#include <utility>

#include "cuda/blas.h"
#include "cuda/device.h"
#include "cuda/launch.h"
#include "fusedrnn/common.h"

namespace fusedrnn::cuda {

// --- kernels -----------------------------------------------------------------------------------

template <typename T>
__global__ void fill_kernel(T* a, int64_t n, T value) {
  for (int64_t i = first_index(); i < n; i += index_stride()) a[i] = value;
}

// Zero the rows (t, b) of a [T, B, n] array that sequence b never reaches.
template <typename T>
__global__ void zero_padding_kernel(Seq q, T* a, int64_t n) {
  const int64_t total = q.T * q.B * n;
  for (int64_t i = first_index(); i < total; i += index_stride()) {
    const int64_t t = i / (q.B * n), b = (i / n) % q.B;
    if (t >= q.length(b)) a[i] = T(0);
  }
}

// One step for every (b, j), j < U = max(H, P).  Without a projection (P == H) the cell's h'
// goes straight to h_next and out; with one it goes to hcore (the projection GEMM follows).
template <typename T, class Cell, bool Training>
__global__ void forward_step_kernel(Seq q, Cell cell, int64_t s, const T* xp, const T* hp,
                                    const T* b_ih, const T* b_hh, const T* h, const T* c,
                                    T* hcore, T* h_next, T* c_next, T* out, T* ws, bool proj) {
  const int64_t B = q.B, H = q.H, P = q.P, U = H > P ? H : P, GH = Cell::kGates * H;
  const int64_t W = cell.width();
  for (int64_t i = first_index(); i < B * U; i += index_stride()) {
    const int64_t b = i / U, j = i % U;
    const int64_t t = q.time_of(s, b);
    if (t < 0) {  // finished: the state is carried (with a projection, by place_projection)
      if (j < P && !proj) h_next[b * P + j] = h[b * P + j];
      if (j < H) {
        if constexpr (Cell::kHasCell) c_next[b * H + j] = c[b * H + j];
        if (proj) hcore[b * H + j] = T(0);
      }
      continue;
    }
    const int64_t r = t * B + b;
    T* wrow = Training ? ws + r * W : nullptr;
    if constexpr (Training) {
      if (j < P) wrow[cell.off_hprev() + j] = h[b * P + j];
    }
    if (j < H) {
      T* h_out = proj ? hcore + b * H : h_next + b * P;
      cell.template forward<Training>(j, xp + r * GH, hp + b * GH, b_ih, b_hh, h + b * P,
                                      Cell::kHasCell ? c + b * H : nullptr, h_out,
                                      Cell::kHasCell ? c_next + b * H : nullptr, wrow);
      if (!proj) out[r * P + j] = h_out[j];
      else if (Training) wrow[cell.off_hcore() + j] = h_out[j];
    }
  }
}

// After the projection GEMM (h_next = hcore W_hr^T): write out, carry finished rows.
template <typename T>
__global__ void place_projection_kernel(Seq q, int64_t s, const T* h, T* h_next, T* out) {
  const int64_t B = q.B, P = q.P;
  for (int64_t i = first_index(); i < B * P; i += index_stride()) {
    const int64_t b = i / P, j = i % P;
    const int64_t t = q.time_of(s, b);
    if (t < 0) h_next[i] = h[i];
    else out[(t * B + b) * P + j] = h_next[i];
  }
}

// With a projection: the total dh reaching h' of this step (zero for finished rows), kept per
// (t, b) for dW_hr.
template <typename T>
__global__ void projected_dh_kernel(Seq q, int64_t s, const T* dh, const T* dout, T* dtot, T* dht) {
  const int64_t B = q.B, P = q.P;
  for (int64_t i = first_index(); i < B * P; i += index_stride()) {
    const int64_t b = i / P, j = i % P;
    const int64_t t = q.time_of(s, b);
    if (t < 0) {
      dtot[i] = T(0);
      continue;
    }
    const int64_t r = t * B + b;
    const T d = dh[i] + dout[r * P + j];
    dtot[i] = d;
    dht[r * P + j] = d;
  }
}

// One backward step for every (b, j), j < U = max(H, P).  dcore: d hcore from the projection
// (nullptr without one: then dh + dout reaches the cell directly).  dstep: this step's W_hh
// gate gradients by row b (nullptr when dgh's rows of one time index serve, see run_backward).
template <typename T, class Cell>
__global__ void backward_step_kernel(Seq q, Cell cell, int64_t s, const T* ws, const T* dout,
                                     const T* dh, const T* dcore, const T* dc, T* dgi, T* dgh,
                                     T* dh_next, T* dc_next, T* dstep) {
  const int64_t B = q.B, H = q.H, P = q.P, U = H > P ? H : P, GH = Cell::kGates * H;
  const int64_t W = cell.width();
  for (int64_t i = first_index(); i < B * U; i += index_stride()) {
    const int64_t b = i / U, j = i % U;
    const int64_t t = q.time_of(s, b);
    if (t < 0) {  // finished rows pass their state gradient through untouched
      if (j < P) dh_next[b * P + j] = dh[b * P + j];
      if (j < H) {
        if constexpr (Cell::kHasCell) dc_next[b * H + j] = dc[b * H + j];
        if (dstep)
          for (int64_t g = 0; g < Cell::kGates; ++g) dstep[b * GH + g * H + j] = T(0);
      }
      continue;
    }
    const int64_t r = t * B + b;
    if constexpr (!Cell::kDirectPath) {
      if (j < P) dh_next[b * P + j] = T(0);
    }
    if (j < H) {
      const T d = dcore ? dcore[b * H + j] : dh[b * P + j] + dout[r * P + j];
      cell.backward(j, ws + r * W, d, Cell::kHasCell ? dc + b * H : nullptr, dgi + r * GH, dgh + r * GH,
                    dh_next + b * P, Cell::kHasCell ? dc_next + b * H : nullptr);
      if (dstep)
        for (int64_t g = 0; g < Cell::kGates; ++g) dstep[b * GH + g * H + j] = dgh[r * GH + g * H + j];
    }
  }
}

// After the dh GEMM: finished rows keep the gradient they carry.  Their gate-gradient rows are
// zero, but 0 * W_hh is NaN where W_hh holds an infinity, which must not reach dh.
template <typename T>
__global__ void carry_finished_kernel(Seq q, int64_t s, const T* dh, T* dh_next) {
  const int64_t P = q.P;
  for (int64_t i = first_index(); i < q.B * P; i += index_stride())
    if (q.time_of(s, i / P) < 0) dh_next[i] = dh[i];
}

// --- host loops --------------------------------------------------------------------------------

template <typename T>
void fill(T* a, int64_t n, T value) {
  launch("fill_kernel", fill_kernel<T>, grid_for(n), dim3(kBlock), nullptr, a, n, value);
}

template <typename T>
void zero_padding(const Seq& qd, T* a, int64_t n) {
  launch("zero_padding_kernel", zero_padding_kernel<T>, grid_for(qd.T * qd.B * n), dim3(kBlock), nullptr,
         qd, a, n);
}

inline bool padded(const Seq& q) {
  if (!q.lengths) return false;
  for (int64_t b = 0; b < q.B; ++b)
    if (q.lengths[b] < q.T) return true;
  return false;
}

template <typename T, class Cell>
void run_forward(const Seq& q, const int64_t* d_lengths, const Cell& cell, const Weights<T>& w,
                 const ForwardArgs<T>& a, bool training) {
  const int64_t T_ = q.T, B = q.B, H = q.H, P = q.P, GH = Cell::kGates * H, I = q.I;
  const int64_t U = std::max(H, P), W = cell.width();
  const bool proj = w.w_hr != nullptr;
  Seq qd = q;
  qd.lengths = d_lengths;

  Buffer xp = buffer<T>(T_ * B * GH), hp = buffer<T>(B * GH);
  Buffer h0 = buffer<T>(B * P), h1 = buffer<T>(B * P);
  Buffer c0 = buffer<T>(Cell::kHasCell ? B * H : 0), c1 = buffer<T>(Cell::kHasCell ? B * H : 0);
  Buffer hcore = buffer<T>(proj ? B * H : 0);
  T *h = h0.as<T>(), *h_next = h1.as<T>(), *c = c0.as<T>(), *c_next = c1.as<T>();

  blas::gemm<T>(false, true, T_ * B, GH, I, T(1), a.x, I, w.w_ih, I, T(0), xp.as<T>(), GH);
  copy(h, a.h0, sizeof(T) * B * P, cudaMemcpyDeviceToDevice);
  if constexpr (Cell::kHasCell) copy(c, a.c0, sizeof(T) * B * H, cudaMemcpyDeviceToDevice);
  // Rows past a sequence's length stay zero in out (and in the workspace, which backward's
  // whole-sequence GEMMs read).
  zero(a.out, sizeof(T) * T_ * B * P);
  if (training) zero(a.ws, sizeof(T) * T_ * B * W);

  const dim3 grid = grid_for(B * U), block(kBlock);
  for (int64_t s = 0; s < T_; ++s) {
    blas::gemm<T>(false, true, B, GH, P, T(1), h, P, w.w_hh, P, T(0), hp.as<T>(), GH);
    if (training)
      launch("forward_step_kernel", forward_step_kernel<T, Cell, true>, grid, block, nullptr, qd, cell, s,
             xp.as<T>(), hp.as<T>(), w.b_ih, w.b_hh, h, c, hcore.as<T>(), h_next, c_next, a.out, a.ws, proj);
    else
      launch("forward_step_kernel", forward_step_kernel<T, Cell, false>, grid, block, nullptr, qd, cell, s,
             xp.as<T>(), hp.as<T>(), w.b_ih, w.b_hh, h, c, hcore.as<T>(), h_next, c_next, a.out,
             static_cast<T*>(nullptr), proj);
    if (proj) {
      blas::gemm<T>(false, true, B, P, H, T(1), hcore.as<T>(), H, w.w_hr, H, T(0), h_next, P);
      launch("place_projection_kernel", place_projection_kernel<T>, grid_for(B * P), block, nullptr, qd, s, h,
             h_next, a.out);
    }
    std::swap(h, h_next);
    if constexpr (Cell::kHasCell) std::swap(c, c_next);
  }
  copy(a.h_n, h, sizeof(T) * B * P, cudaMemcpyDeviceToDevice);
  if constexpr (Cell::kHasCell) copy(a.c_n, c, sizeof(T) * B * H, cudaMemcpyDeviceToDevice);
}

template <typename T, class Cell>
void run_backward(const Seq& q, const int64_t* d_lengths, const Cell& cell, const Weights<T>& w,
                  const BackwardArgs<T>& a) {
  const int64_t T_ = q.T, B = q.B, H = q.H, P = q.P, GH = Cell::kGates * H, I = q.I;
  const int64_t U = std::max(H, P), W = cell.width(), TB = T_ * B;
  const bool proj = w.w_hr != nullptr;
  const bool uniform = q.time_uniform();
  Seq qd = q;
  qd.lengths = d_lengths;

  // Gate gradients in time order [T, B, G*H]; rows a sequence never reaches stay zero, so the
  // whole-sequence GEMMs need no masking.
  Buffer dgi_b = buffer<T>(TB * GH), dgh_b = buffer<T>(Cell::kSeparateDgh ? TB * GH : 0);
  T* dgi = dgi_b.as<T>();
  T* dgh = Cell::kSeparateDgh ? dgh_b.as<T>() : dgi;
  zero(dgi, sizeof(T) * TB * GH);
  if constexpr (Cell::kSeparateDgh) zero(dgh, sizeof(T) * TB * GH);
  Buffer dht = buffer<T>(proj ? TB * P : 0), dtot = buffer<T>(proj ? B * P : 0), dcore = buffer<T>(proj ? B * H : 0);
  if (proj) zero(dht.get(), dht.bytes());
  Buffer dh0 = buffer<T>(B * P), dh1 = buffer<T>(B * P);
  Buffer dc0 = buffer<T>(Cell::kHasCell ? B * H : 0), dc1 = buffer<T>(Cell::kHasCell ? B * H : 0);
  Buffer dstep = buffer<T>(uniform ? 0 : B * GH);
  T *dh = dh0.as<T>(), *dh_next = dh1.as<T>(), *dc = dc0.as<T>(), *dc_next = dc1.as<T>();
  copy(dh, a.dh_n, sizeof(T) * B * P, cudaMemcpyDeviceToDevice);
  if constexpr (Cell::kHasCell) copy(dc, a.dc_n, sizeof(T) * B * H, cudaMemcpyDeviceToDevice);

  const dim3 grid = grid_for(B * U), block(kBlock);
  for (int64_t s = T_ - 1; s >= 0; --s) {
    if (proj) {  // h' = W_hr hcore  =>  d hcore = W_hr^T dh'
      launch("projected_dh_kernel", projected_dh_kernel<T>, grid_for(B * P), block, nullptr, qd, s, dh, a.dout,
             dtot.as<T>(), dht.as<T>());
      blas::gemm<T>(false, false, B, H, P, T(1), dtot.as<T>(), P, w.w_hr, H, T(0), dcore.as<T>(), H);
    }
    launch("backward_step_kernel", backward_step_kernel<T, Cell>, grid, block, nullptr, qd, cell, s, a.ws,
           a.dout, dh, proj ? dcore.as<T>() : static_cast<const T*>(nullptr), dc, dgi, dgh, dh_next, dc_next,
           uniform ? static_cast<T*>(nullptr) : dstep.as<T>());
    // h' depends on h through the gates:  dh += dG_hh W_hh.  When every row reads one time
    // index at this step, dgh's rows of that index are this step's (zero for finished rows).
    const T* dg_rows = uniform ? dgh + q.time_at_step(s) * B * GH : dstep.as<T>();
    blas::gemm<T>(false, false, B, P, GH, T(1), dg_rows, GH, w.w_hh, P, T(1), dh_next, P);
    if (q.lengths)
      launch("carry_finished_kernel", carry_finished_kernel<T>, grid_for(B * P), block, nullptr, qd, s, dh,
             dh_next);
    std::swap(dh, dh_next);
    if constexpr (Cell::kHasCell) std::swap(dc, dc_next);
  }
  copy(a.dh0, dh, sizeof(T) * B * P, cudaMemcpyDeviceToDevice);
  if constexpr (Cell::kHasCell) copy(a.dc0, dc, sizeof(T) * B * H, cudaMemcpyDeviceToDevice);

  if (a.dx) {  // null where the caller has no use for dx (the first layer of a model)
    blas::gemm<T>(false, false, TB, I, GH, T(1), dgi, GH, w.w_ih, I, T(0), a.dx, I);
    if (q.lengths) zero_padding(qd, a.dx, I);  // exact zeros past each length (0 * inf would be NaN)
  }
  // Padded steps of x are never read: a NaN there must not reach dW_ih through 0 * NaN.
  const T* x = a.x;
  Buffer x_clean;
  if (padded(q)) {
    x_clean = buffer<T>(TB * I);
    copy(x_clean.get(), a.x, sizeof(T) * TB * I, cudaMemcpyDeviceToDevice);
    zero_padding(qd, x_clean.as<T>(), I);
    x = x_clean.as<T>();
  }
  blas::gemm<T>(true, false, GH, I, TB, T(1), dgi, GH, x, I, T(0), a.dw_ih, I);
  blas::gemm<T>(true, false, GH, P, TB, T(1), dgh, GH, a.ws + cell.off_hprev(), W, T(0), a.dw_hh, P);
  Buffer ones = buffer<T>(TB);
  fill(ones.as<T>(), TB, T(1));
  blas::column_sums(dgi, TB, GH, ones.as<T>(), a.db_ih);
  blas::column_sums(dgh, TB, GH, ones.as<T>(), a.db_hh);
  if (proj)
    blas::gemm<T>(true, false, P, H, TB, T(1), dht.as<T>(), P, a.ws + cell.off_hcore(), W, T(0), a.dw_hr, H);
}

}  // namespace fusedrnn::cuda
