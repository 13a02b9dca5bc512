// LSTM cell on the CPU (equations and workspace layout: include/fusedrnn/cells/lstm.h).
#include "fusedrnn/cells/lstm.h"

#include "fusedrnn/activations.h"
#include "kernels.h"
#include "sequence.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA {
namespace {

template <typename T, Act A>
struct LstmCell {
  static constexpr int64_t kGates = lstm::kGates;
  static constexpr bool kHasCell = true;
  static constexpr bool kSeparateDgh = false;
  static constexpr bool kDirectPath = false;  // h reaches h' only through the gates
  int64_t H, P;
  bool proj;

  int64_t width() const { return lstm::ws_width(H, P, proj); }
  int64_t off_hprev() const { return lstm::off_hprev(H); }
  int64_t off_hcore() const { return lstm::off_hcore(H, P); }

  template <bool Training>
  void forward_row(int64_t n, const T* __restrict xp, int64_t xs, const T* __restrict hp, int64_t hs,
                   const T* __restrict bih, const T* __restrict bhh, const T* /*h_in*/,
                   const T* __restrict c_in, T* __restrict h_out, T* __restrict c_out,
                   T* __restrict ws) const {
    for (int64_t j = 0; j < n; ++j) {
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
  }

  void backward_row(int64_t n, const T* __restrict ws, const T* __restrict dh,
                    const T* __restrict dc_in, T* __restrict dg, T* /*dgh, same as dg*/,
                    T* /*dh_direct*/, T* __restrict dc_out) const {
    for (int64_t j = 0; j < n; ++j) {
      const T i = ws[j], f = ws[H + j], g = ws[2 * H + j], o = ws[3 * H + j];
      const T c_prev = ws[4 * H + j];
      const T c = f * c_prev + i * g;
      const T ac = act::apply<A>(c);
      const T dct = dc_in[j] + dh[j] * o * act::grad_from_input<A>(c, ac);  // h' = o act(c')
      const T d_o = dh[j] * ac;
      dc_out[j] = dct * f;                                    // c' = f c + i g
      dg[j] = dct * g * i * (T(1) - i);                       // d sigmoid = s (1 - s)
      dg[H + j] = dct * c_prev * f * (T(1) - f);
      dg[2 * H + j] = dct * i * act::grad_from_output<A>(g);
      dg[3 * H + j] = d_o * o * (T(1) - o);
    }
  }
};

template <typename T, Act A>
LstmCell<T, A> make_cell(const Seq& q, const Weights<T>& w) {
  return {q.H, q.P, w.w_hr != nullptr};
}

}  // namespace

template <typename T>
void lstm_forward(const Seq& q, Act a, const Weights<T>& w, const ForwardArgs<T>& args, bool training) {
  if (a == Act::Tanh) forward_entry(q, make_cell<T, Act::Tanh>(q, w), w, args, training);
  else forward_entry(q, make_cell<T, Act::Relu>(q, w), w, args, training);
}

template <typename T>
void lstm_backward(const Seq& q, Act a, const Weights<T>& w, const BackwardArgs<T>& args) {
  if (a == Act::Tanh) backward_entry(q, make_cell<T, Act::Tanh>(q, w), w, args);
  else backward_entry(q, make_cell<T, Act::Relu>(q, w), w, args);
}

template void lstm_forward<float>(const Seq&, Act, const Weights<float>&, const ForwardArgs<float>&, bool);
template void lstm_forward<double>(const Seq&, Act, const Weights<double>&, const ForwardArgs<double>&, bool);
template void lstm_backward<float>(const Seq&, Act, const Weights<float>&, const BackwardArgs<float>&);
template void lstm_backward<double>(const Seq&, Act, const Weights<double>&, const BackwardArgs<double>&);

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA
