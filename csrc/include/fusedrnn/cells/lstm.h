// LSTM, gates i f g o (torch.nn.LSTM):
//   i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      f = sigmoid(... f rows ...)
//   g = act(W_ig x + b_ig + W_hg h + b_hg)          o = sigmoid(... o rows ...)
//   c' = f * c + i * g                               h' = o * act(c')   [h' = W_hr h' with projection]
// act is tanh, or relu for Keras' LSTM(activation='relu').
//
// The per-unit math below is the only copy: the CPU row loops (csrc/cpu/lstm.cc) and the CUDA
// kernels (csrc/cuda/lstm.cu) both call it.
#pragma once

#include "fusedrnn/activations.h"
#include "fusedrnn/common.h"
#include "fusedrnn/macros.h"

namespace fusedrnn::lstm {

// Workspace row kept per (t, b) by a training forward:
//   [ i f g o : 4H | c_prev : H | h_prev : P | o * act(c') : H, with a projection only ]
// c' is recomputed in backward from f, c_prev, i, g.
constexpr int64_t kGates = 4;
FUSEDRNN_HD int64_t off_cprev(int64_t H) { return 4 * H; }
FUSEDRNN_HD int64_t off_hprev(int64_t H) { return 5 * H; }
FUSEDRNN_HD int64_t off_hcore(int64_t H, int64_t P) { return 5 * H + P; }
FUSEDRNN_HD int64_t ws_width(int64_t H, int64_t P, bool proj) { return 5 * H + P + (proj ? H : 0); }

// What the time loops (CPU and CUDA) read of the cell besides its math: gate count, which
// states and gradient paths it has, and the workspace layout.
struct Layout {
  static constexpr int64_t kGates = lstm::kGates;
  static constexpr bool kHasCell = true;       // the cell state c
  static constexpr bool kSeparateDgh = false;  // W_hh's gate-gradient rows are W_ih's
  static constexpr bool kDirectPath = false;   // h reaches h' only through the gates
  static constexpr int64_t kBackwardReads = 5;  // workspace segments of H the backward reads: i f g o c_prev
  int64_t H, P;
  bool proj;
  FUSEDRNN_HD int64_t width() const { return ws_width(H, P, proj); }
  FUSEDRNN_HD int64_t off_hprev() const { return lstm::off_hprev(H); }
  FUSEDRNN_HD int64_t off_hcore() const { return lstm::off_hcore(H, P); }
};

// Unit j of one row.  xp / hp: the row's x W_ih^T and h W_hh^T, gate k of unit j at k*xs + j
// and k*hs + j (the strides differ from H in the CPU's packed loop); biases [4H]; ws: the row's
// workspace (Training only).  h_out gets o * act(c') (before any projection).
template <Act A, bool Training, typename T>
FUSEDRNN_HD void forward_unit(int64_t j, int64_t H, const T* xp, int64_t xs, const T* hp, int64_t hs,
                              const T* bih, const T* bhh, const T* c_in, T* h_out, T* c_out, T* ws) {
  const T i = act::sigmoid(xp[j] + bih[j] + hp[j] + bhh[j]);
  const T f = act::sigmoid(xp[xs + j] + bih[H + j] + hp[hs + j] + bhh[H + j]);
  const T g = act::apply<A>(xp[2 * xs + j] + bih[2 * H + j] + hp[2 * hs + j] + bhh[2 * H + j]);
  const T o = act::sigmoid(xp[3 * xs + j] + bih[3 * H + j] + hp[3 * hs + j] + bhh[3 * H + j]);
  const T c = f * c_in[j] + i * g;
  c_out[j] = c;
  h_out[j] = o * act::apply<A>(c);
  if constexpr (Training) {
    ws[j] = i;
    ws[H + j] = f;
    ws[2 * H + j] = g;
    ws[3 * H + j] = o;
    ws[4 * H + j] = c_in[j];
  }
}

// Unit j of one row: dh is the gradient reaching o * act(c') (after the projection's
// transpose), dc_in the one reaching c'.  Writes the gate gradients dg[k*H + j] (pre-activation)
// and dc_out = dL/dc.
template <Act A, typename T>
FUSEDRNN_HD void backward_unit(int64_t j, int64_t H, const T* ws, T dh, const T* dc_in, T* dg,
                               T* dc_out) {
  const T i = ws[j], f = ws[H + j], g = ws[2 * H + j], o = ws[3 * H + j];
  const T c_prev = ws[4 * H + j];
  const T c = f * c_prev + i * g;
  const T ac = act::apply<A>(c);
  const T dct = dc_in[j] + dh * o * act::grad_from_input<A>(c, ac);  // h' = o act(c')
  const T d_o = dh * ac;
  dc_out[j] = dct * f;                                    // c' = f c + i g
  dg[j] = dct * g * i * (T(1) - i);                       // d sigmoid = s (1 - s)
  dg[H + j] = dct * c_prev * f * (T(1) - f);
  dg[2 * H + j] = dct * i * act::grad_from_output<A>(g);
  dg[3 * H + j] = d_o * o * (T(1) - o);
}

}  // namespace fusedrnn::lstm
