// Elman RNN cell on the CPU (equations and workspace layout: include/fusedrnn/cells/rnn.h).
#include "fusedrnn/cells/rnn.h"

#include "kernels.h"
#include "sequence.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA {
namespace {

template <typename T, Act A>
struct RnnCell : rnn::Layout {
  template <bool Training>
  void forward_row(int64_t n, const T* __restrict xp, int64_t /*xs*/, const T* __restrict hp,
                   int64_t /*hs*/, const T* __restrict bih, const T* __restrict bhh,
                   const T* /*h_in*/, const T* /*c_in*/, T* __restrict h_out, T* /*c_out*/,
                   T* __restrict ws) const {
    for (int64_t j = 0; j < n; ++j) rnn::forward_unit<A, Training>(j, xp, hp, bih, bhh, h_out, ws);
  }

  void backward_row(int64_t n, const T* __restrict ws, const T* __restrict dh,
                    const T* /*dc_in*/, T* __restrict dg, T* /*dgh, same as dg*/,
                    T* /*dh_direct*/, T* /*dc_out*/) const {
    for (int64_t j = 0; j < n; ++j) rnn::backward_unit<A>(j, ws, dh[j], dg);
  }
};

}  // namespace

template <typename T>
void rnn_forward(const Seq& q, Act a, const Weights<T>& w, const ForwardArgs<T>& args, bool training) {
  if (a == Act::Tanh) forward_entry(q, RnnCell<T, Act::Tanh>{{q.H}}, w, args, training);
  else forward_entry(q, RnnCell<T, Act::Relu>{{q.H}}, w, args, training);
}

template <typename T>
void rnn_backward(const Seq& q, Act a, const Weights<T>& w, const BackwardArgs<T>& args) {
  if (a == Act::Tanh) backward_entry(q, RnnCell<T, Act::Tanh>{{q.H}}, w, args);
  else backward_entry(q, RnnCell<T, Act::Relu>{{q.H}}, w, args);
}

template void rnn_forward<float>(const Seq&, Act, const Weights<float>&, const ForwardArgs<float>&, bool);
template void rnn_forward<double>(const Seq&, Act, const Weights<double>&, const ForwardArgs<double>&, bool);
template void rnn_backward<float>(const Seq&, Act, const Weights<float>&, const BackwardArgs<float>&);
template void rnn_backward<double>(const Seq&, Act, const Weights<double>&, const BackwardArgs<double>&);

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA
