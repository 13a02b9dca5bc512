// GRU, gates r z n (torch.nn.GRU):
//   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      z = sigmoid(... z rows ...)
//   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   h' = (1 - z) * n + z * h
//
// The per-unit math below is the only copy: the CPU row loops (csrc/cpu/gru.cc) and the CUDA
// kernels (csrc/cuda/gru.cu) both call it.
#pragma once

#include "fusedrnn/activations.h"
#include "fusedrnn/common.h"
#include "fusedrnn/macros.h"

namespace fusedrnn::gru {

// Workspace row kept per (t, b) by a training forward:
//   [ r z n : 3H | W_hn h + b_hn : H | h_prev : H ]
constexpr int64_t kGates = 3;
FUSEDRNN_HD int64_t off_hn(int64_t H) { return 3 * H; }
FUSEDRNN_HD int64_t off_hprev(int64_t H) { return 4 * H; }
FUSEDRNN_HD int64_t ws_width(int64_t H) { return 5 * H; }

// What the time loops (CPU and CUDA) read of the cell besides its math: gate count, which
// states and gradient paths it has, and the workspace layout.
struct Layout {
  static constexpr int64_t kGates = gru::kGates;
  static constexpr bool kHasCell = false;
  static constexpr bool kSeparateDgh = true;  // n's W_hh rows see r * dn, its W_ih rows dn
  static constexpr bool kDirectPath = true;   // h' = ... + z * h
  static constexpr int64_t kBackwardReads = 5;  // workspace segments of H the backward reads: r z n hn h_prev
  int64_t H;
  FUSEDRNN_HD int64_t width() const { return ws_width(H); }
  FUSEDRNN_HD int64_t off_hprev() const { return gru::off_hprev(H); }
  FUSEDRNN_HD int64_t off_hcore() const { return 0; }  // no projection
};

// Unit j of one row (strides as lstm::forward_unit).  h_in: the row's h.
template <bool Training, typename T>
FUSEDRNN_HD void forward_unit(int64_t j, int64_t H, const T* xp, int64_t xs, const T* hp, int64_t hs,
                              const T* bih, const T* bhh, const T* h_in, T* h_out, T* ws) {
  const T r = act::sigmoid(xp[j] + bih[j] + hp[j] + bhh[j]);
  const T z = act::sigmoid(xp[xs + j] + bih[H + j] + hp[hs + j] + bhh[H + j]);
  const T hn = hp[2 * hs + j] + bhh[2 * H + j];
  const T n = act::tanh_(xp[2 * xs + j] + bih[2 * H + j] + r * hn);
  h_out[j] = (T(1) - z) * n + z * h_in[j];
  if constexpr (Training) {
    ws[j] = r;
    ws[H + j] = z;
    ws[2 * H + j] = n;
    ws[3 * H + j] = hn;
  }
}

// Unit j of one row: dh reaches h'.  dgi: the W_ih rows' gate gradients, dgh: the W_hh rows'
// (they differ for n: r * dn); dh_direct: the part of dL/dh that bypasses the gates (z * dh).
template <typename T>
FUSEDRNN_HD void backward_unit(int64_t j, int64_t H, const T* ws, T dh, T* dgi, T* dgh,
                               T* dh_direct) {
  const T* h_prev = ws + off_hprev(H);
  const T r = ws[j], z = ws[H + j], n = ws[2 * H + j], hn = ws[3 * H + j];
  // h' = (1 - z) n + z h
  dh_direct[j] = dh * z;
  const T dn = dh * (T(1) - z) * (T(1) - n * n);  // d tanh = 1 - tanh^2
  const T dz = dh * (h_prev[j] - n) * z * (T(1) - z);
  const T dr = dn * hn * r * (T(1) - r);           // n = tanh(xn + r * hn)
  dgi[j] = dgh[j] = dr;
  dgi[H + j] = dgh[H + j] = dz;
  dgi[2 * H + j] = dn;
  dgh[2 * H + j] = dn * r;
}

}  // namespace fusedrnn::gru
