// LSTM cell on the CPU (equations and workspace layout: include/fusedrnn/cells/lstm.h).
#include "fusedrnn/cells/lstm.h"

#include "kernels.h"
#include "sequence.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA {
namespace {

template <typename T, Act A>
struct LstmCell : lstm::Layout {
  template <bool Training>
  void forward_row(int64_t n, const T* __restrict xp, int64_t xs, const T* __restrict hp, int64_t hs,
                   const T* __restrict bih, const T* __restrict bhh, const T* /*h_in*/,
                   const T* __restrict c_in, T* __restrict h_out, T* __restrict c_out,
                   T* __restrict ws) const {
    for (int64_t j = 0; j < n; ++j)
      lstm::forward_unit<A, Training>(j, H, xp, xs, hp, hs, bih, bhh, c_in, h_out, c_out, ws);
  }

  void backward_row(int64_t n, const T* __restrict ws, const T* __restrict dh,
                    const T* __restrict dc_in, T* __restrict dg, T* /*dgh, same as dg*/,
                    T* /*dh_direct*/, T* __restrict dc_out) const {
    for (int64_t j = 0; j < n; ++j) lstm::backward_unit<A>(j, H, ws, dh[j], dc_in, dg, dc_out);
  }
};

template <typename T, Act A>
LstmCell<T, A> make_cell(const Seq& q, const Weights<T>& w) {
  return {{q.H, q.P, w.w_hr != nullptr}};
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
