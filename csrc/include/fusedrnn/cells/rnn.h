// Elman RNN (torch.nn.RNN):  h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh or relu.
//
// The per-unit math below is the only copy: the CPU row loops (csrc/cpu/rnn.cc) and the CUDA
// kernels (csrc/cuda/rnn.cu) both call it.
#pragma once

#include "fusedrnn/activations.h"
#include "fusedrnn/common.h"
#include "fusedrnn/macros.h"

namespace fusedrnn::rnn {

// Workspace row kept per (t, b) by a training forward:  [ h' : H | h_prev : H ]
constexpr int64_t kGates = 1;
FUSEDRNN_HD int64_t off_hprev(int64_t H) { return H; }
FUSEDRNN_HD int64_t ws_width(int64_t H) { return 2 * H; }

// What the time loops (CPU and CUDA) read of the cell besides its math: gate count, which
// states and gradient paths it has, and the workspace layout.
struct Layout {
  static constexpr int64_t kGates = rnn::kGates;
  static constexpr bool kHasCell = false;
  static constexpr bool kSeparateDgh = false;
  static constexpr bool kDirectPath = false;  // h reaches h' only through the gates
  static constexpr int64_t kBackwardReads = 1;  // workspace segments of H the backward reads: h'
  int64_t H;
  FUSEDRNN_HD int64_t width() const { return ws_width(H); }
  FUSEDRNN_HD int64_t off_hprev() const { return rnn::off_hprev(H); }
  FUSEDRNN_HD int64_t off_hcore() const { return 0; }  // no projection
};

template <Act A, bool Training, typename T>
FUSEDRNN_HD void forward_unit(int64_t j, const T* xp, const T* hp, const T* bih, const T* bhh,
                              T* h_out, T* ws) {
  const T h = act::apply<A>(xp[j] + bih[j] + hp[j] + bhh[j]);
  h_out[j] = h;
  if constexpr (Training) ws[j] = h;
}

// dg: the pre-activation gradient, from dh reaching h' and h' itself (kept in ws).
template <Act A, typename T>
FUSEDRNN_HD void backward_unit(int64_t j, const T* ws, T dh, T* dg) {
  dg[j] = dh * act::grad_from_output<A>(ws[j]);
}

}  // namespace fusedrnn::rnn
