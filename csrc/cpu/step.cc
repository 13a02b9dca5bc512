// The streaming step kernel (layout and contract: step.h), compiled once per instruction set.
// The cell math is the per-unit code of include/fusedrnn/cells/*.h, as in the sequence loops.
#include "step.h"

#include <algorithm>
#include <cstring>

#include "fusedrnn/cells/gru.h"
#include "fusedrnn/cells/lstm.h"
#include "fusedrnn/cells/rnn.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA {
namespace {

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

// y[b, :N] = x[b, :K] W^T over packed panels.
template <typename T>
void product(int64_t B, const T* __restrict x, int64_t ldx, const Panels<T>& w, T* __restrict y,
             int64_t ldy) {
  constexpr int64_t W = kStepPanel<T>;
  const int64_t panels = (w.N + W - 1) / W;
  // Panels outside, rows inside: one panel (K * 256 bytes) stays in L1 for every row of x.
  for (int64_t p = 0; p < panels; ++p) {
    const T* wp = w.data + p * w.K * W;
    for (int64_t b = 0; b < B; ++b) {
      const T* xb = x + b * ldx;
      T* yb = y + b * ldy;
#if defined(__GNUC__)
      // The compiler's vectors at the instruction set's width: the accumulators stay in
      // registers across k (a plain array or wider vectors go through memory every k).
      typedef T V __attribute__((vector_size(kVectorBytes)));
      constexpr int kV = kVectorBytes / sizeof(T), kN = W / kV;
      V acc[kN] = {};
      for (int64_t k = 0; k < w.K; ++k) {
        const V xv = V{} + xb[k];  // broadcast
        const T* row = wp + k * W;
        for (int i = 0; i < kN; ++i) {
          V wv;
          std::memcpy(&wv, row + i * kV, sizeof wv);
          acc[i] += xv * wv;
        }
      }
      T out[W];
      std::memcpy(out, acc, sizeof out);
#else
      T out[W] = {};
      for (int64_t k = 0; k < w.K; ++k)
        for (int64_t l = 0; l < W; ++l) out[l] += xb[k] * wp[k * W + l];
#endif
      const int64_t n = std::min(W, w.N - p * W);
      std::memcpy(yb + p * W, out, n * sizeof(T));
    }
  }
}

// One row's units.  The __restrict pointers let the compiler vectorise the unit loops (as the
// sequence loops' rows in lstm.cc / gru.cc / rnn.cc do).
template <typename T, Act A>
void lstm_row(int64_t H, const T* __restrict xp, const T* __restrict hp, const T* __restrict bih,
              const T* __restrict bhh, const T* __restrict c, T* __restrict h_out, T* __restrict c_out) {
  for (int64_t j = 0; j < H; ++j)
    lstm::forward_unit<A, false>(j, H, xp, H, hp, H, bih, bhh, c, h_out, c_out, static_cast<T*>(nullptr));
}

template <typename T>
void gru_row(int64_t H, const T* __restrict xp, const T* __restrict hp, const T* __restrict bih,
             const T* __restrict bhh, const T* __restrict h, T* __restrict h_out) {
  for (int64_t j = 0; j < H; ++j)
    gru::forward_unit<false>(j, H, xp, H, hp, H, bih, bhh, h, h_out, static_cast<T*>(nullptr));
}

template <typename T, Act A>
void rnn_row(int64_t H, const T* __restrict xp, const T* __restrict hp, const T* __restrict bih,
             const T* __restrict bhh, T* __restrict h_out) {
  for (int64_t j = 0; j < H; ++j)
    rnn::forward_unit<A, false>(j, xp, hp, bih, bhh, h_out, static_cast<T*>(nullptr));
}

template <typename T, Act A>
void run(const StepArgs<T>& a) {
  const int64_t B = a.B, H = a.H, P = a.P, GH = a.G * a.H;
  T* xp = a.scratch;             // [B, GH]
  T* hp = xp + B * GH;           // [B, GH]
  T* core = hp + B * GH;         // [B, H]: o * act(c') before the projection
  const T* in = a.x;
  int64_t ldin = a.layers[0].ih.K;
  for (int64_t l = 0; l < a.L; ++l) {
    const StepLayer<T>& w = a.layers[l];
    const T* h = a.h + l * B * P;
    T* h_out = a.h_out + l * B * P;
    product(B, in, ldin, w.ih, xp, GH);
    product(B, h, P, w.hh, hp, GH);
    for (int64_t b = 0; b < B; ++b) {
      const T* xr = xp + b * GH;
      const T* hr = hp + b * GH;
      if (a.cell == StepCell::Lstm) {
        T* ho = w.hr.N > 0 ? core + b * H : h_out + b * P;
        lstm_row<T, A>(H, xr, hr, w.b_ih, w.b_hh, a.c + (l * B + b) * H, ho, a.c_out + (l * B + b) * H);
      } else if (a.cell == StepCell::Gru) {
        gru_row<T>(H, xr, hr, w.b_ih, w.b_hh, h + b * P, h_out + b * P);
      } else {
        rnn_row<T, A>(H, xr, hr, w.b_ih, w.b_hh, h_out + b * P);
      }
    }
    if (w.hr.N > 0) product(B, core, H, w.hr, h_out, P);
    in = h_out;
    ldin = P;
  }
}

}  // namespace

template <typename T>
void step_forward(const StepArgs<T>& a) {
  if (a.act == Act::Tanh) run<T, Act::Tanh>(a);
  else run<T, Act::Relu>(a);
}

template void step_forward<float>(const StepArgs<float>&);
template void step_forward<double>(const StepArgs<double>&);

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA
