// One time step of a stacked (unidirectional) LSTM / GRU / RNN for streaming inference, over
// weights packed once (csrc/bindings/step.cc keeps them between calls).
//
// Packing: a weight matrix W [N, K] (torch's layout, y = W x) is stored as ceil(N / Panel)
// panels; panel p is the K x Panel block W^T[:, p*Panel : (p+1)*Panel], rows contiguous and
// zero-padded past N.  A panel's product keeps its Panel outputs in registers while the K
// inputs stream past, so the B x K times K x N product reads each weight once per row of x
// with no horizontal sums, and the same plain loop vectorises on every instruction set.
#pragma once

#include <cstdint>

#include "fusedrnn/common.h"

namespace fusedrnn::cpu {

enum class StepCell : int { Lstm = 0, Gru = 1, Rnn = 2 };

// Panel width in elements: 256 bytes, i.e. 8 AVX2 / 4 AVX-512 / 16 SSE registers of outputs.
template <typename T>
constexpr int64_t kStepPanel = 256 / static_cast<int64_t>(sizeof(T));

template <typename T>
struct Panels {
  const T* data = nullptr;  // ceil(N / kStepPanel) * K * kStepPanel elements, 64-byte aligned
  int64_t N = 0, K = 0;
};

template <typename T>
struct StepLayer {
  Panels<T> ih, hh, hr;  // hr: the LSTM projection, N = 0 without one
  const T* b_ih;         // [G*H], zeros without biases
  const T* b_hh;         // [G*H]
};

template <typename T>
struct StepArgs {
  StepCell cell;
  Act act;
  int64_t L, B, H, P, G;
  const StepLayer<T>* layers;  // [L]
  const T* x;                  // [B, I]
  const T* h;                  // [L, B, P]
  const T* c;                  // [L, B, H] (LSTM), else nullptr
  T* h_out;                    // [L, B, P]
  T* c_out;                    // [L, B, H] (LSTM), else nullptr
  T* scratch;                  // [B, 2*G*H + H]
};

#define FUSEDRNN_DECLARE_STEP(isa) \
  namespace isa {                  \
  template <typename T>            \
  void step_forward(const StepArgs<T>& a); \
  }
FUSEDRNN_DECLARE_STEP(baseline)
FUSEDRNN_DECLARE_STEP(avx2)
FUSEDRNN_DECLARE_STEP(avx512)
#undef FUSEDRNN_DECLARE_STEP

}  // namespace fusedrnn::cpu
