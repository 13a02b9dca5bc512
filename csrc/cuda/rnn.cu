// Elman RNN on the GPU: the per-unit math of include/fusedrnn/cells/rnn.h in the shared time loop.
#include "cuda/api.h"
#include "cuda/sequence.cuh"
#include "fusedrnn/cells/rnn.h"

namespace fusedrnn::cuda {
namespace {

template <typename T, Act A>
struct RnnCell : rnn::Layout {
  template <bool Training>
  FUSEDRNN_HD void forward(int64_t j, const T* xp, const T* hp, const T* bih, const T* bhh, const T*, const T*,
                           T* h_out, T*, T* ws) const {
    rnn::forward_unit<A, Training>(j, xp, hp, bih, bhh, h_out, ws);
  }
  FUSEDRNN_HD void backward(int64_t j, const T* ws, T dh, const T*, T* dg, T*, T*, T*) const {
    rnn::backward_unit<A>(j, ws, dh, dg);
  }
};

}  // namespace

template <typename T>
void rnn_forward(const Seq& q, const int64_t* d_len, Act a, const Weights<T>& w, const ForwardArgs<T>& args,
                 bool training) {
  if (a == Act::Tanh) run_forward(q, d_len, RnnCell<T, Act::Tanh>{{q.H}}, w, args, training);
  else run_forward(q, d_len, RnnCell<T, Act::Relu>{{q.H}}, w, args, training);
}

template <typename T>
void rnn_backward(const Seq& q, const int64_t* d_len, Act a, const Weights<T>& w, const BackwardArgs<T>& args) {
  if (a == Act::Tanh) run_backward(q, d_len, RnnCell<T, Act::Tanh>{{q.H}}, w, args);
  else run_backward(q, d_len, RnnCell<T, Act::Relu>{{q.H}}, w, args);
}

template void rnn_forward<float>(const Seq&, const int64_t*, Act, const Weights<float>&, const ForwardArgs<float>&, bool);
template void rnn_forward<double>(const Seq&, const int64_t*, Act, const Weights<double>&, const ForwardArgs<double>&, bool);
template void rnn_backward<float>(const Seq&, const int64_t*, Act, const Weights<float>&, const BackwardArgs<float>&);
template void rnn_backward<double>(const Seq&, const int64_t*, Act, const Weights<double>&, const BackwardArgs<double>&);

}  // namespace fusedrnn::cuda
