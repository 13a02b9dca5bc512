// LSTM on the GPU: the per-unit math of include/fusedrnn/cells/lstm.h in the shared time loop.
#include "cuda/api.h"
#include "cuda/sequence.cuh"
#include "fusedrnn/cells/lstm.h"

namespace fusedrnn::cuda {
namespace {

template <typename T, Act A>
struct LstmCell : lstm::Layout {
  template <bool Training>
  FUSEDRNN_HD void forward(int64_t j, const T* xp, const T* hp, const T* bih, const T* bhh, const T*,
                           const T* c_in, T* h_out, T* c_out, T* ws) const {
    lstm::forward_unit<A, Training>(j, H, xp, H, hp, H, bih, bhh, c_in, h_out, c_out, ws);
  }
  FUSEDRNN_HD void backward(int64_t j, const T* ws, T dh, const T* dc_in, T* dg, T*, T*, T* dc_out) const {
    lstm::backward_unit<A>(j, H, ws, dh, dc_in, dg, dc_out);
  }
};

}  // namespace

template <typename T>
void lstm_forward(const Seq& q, const int64_t* d_len, Act a, const Weights<T>& w, const ForwardArgs<T>& args,
                  bool training) {
  const bool proj = w.w_hr != nullptr;
  if (a == Act::Tanh) run_forward(q, d_len, LstmCell<T, Act::Tanh>{{q.H, q.P, proj}}, w, args, training);
  else run_forward(q, d_len, LstmCell<T, Act::Relu>{{q.H, q.P, proj}}, w, args, training);
}

template <typename T>
void lstm_backward(const Seq& q, const int64_t* d_len, Act a, const Weights<T>& w, const BackwardArgs<T>& args) {
  const bool proj = w.w_hr != nullptr;
  if (a == Act::Tanh) run_backward(q, d_len, LstmCell<T, Act::Tanh>{{q.H, q.P, proj}}, w, args);
  else run_backward(q, d_len, LstmCell<T, Act::Relu>{{q.H, q.P, proj}}, w, args);
}

template void lstm_forward<float>(const Seq&, const int64_t*, Act, const Weights<float>&, const ForwardArgs<float>&, bool);
template void lstm_forward<double>(const Seq&, const int64_t*, Act, const Weights<double>&, const ForwardArgs<double>&, bool);
template void lstm_backward<float>(const Seq&, const int64_t*, Act, const Weights<float>&, const BackwardArgs<float>&);
template void lstm_backward<double>(const Seq&, const int64_t*, Act, const Weights<double>&, const BackwardArgs<double>&);

}  // namespace fusedrnn::cuda
