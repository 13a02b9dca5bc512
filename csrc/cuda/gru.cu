// GRU on the GPU: the per-unit math of include/fusedrnn/cells/gru.h in the shared time loop.
#include "cuda/api.h"
#include "cuda/sequence.cuh"
#include "fusedrnn/cells/gru.h"

namespace fusedrnn::cuda {
namespace {

template <typename T>
struct GruCell : gru::Layout {
  template <bool Training>
  FUSEDRNN_HD void forward(int64_t j, const T* xp, const T* hp, const T* bih, const T* bhh, const T* h_in,
                           const T*, T* h_out, T*, T* ws) const {
    gru::forward_unit<Training>(j, H, xp, H, hp, H, bih, bhh, h_in, h_out, ws);
  }
  FUSEDRNN_HD void backward(int64_t j, const T* ws, T dh, const T*, T* dgi, T* dgh, T* dh_direct, T*) const {
    gru::backward_unit(j, H, ws, dh, dgi, dgh, dh_direct);
  }
};

}  // namespace

template <typename T>
void gru_forward(const Seq& q, const int64_t* d_len, Act, const Weights<T>& w, const ForwardArgs<T>& args,
                 bool training) {
  run_forward(q, d_len, GruCell<T>{{q.H}}, w, args, training);
}

template <typename T>
void gru_backward(const Seq& q, const int64_t* d_len, Act, const Weights<T>& w, const BackwardArgs<T>& args) {
  run_backward(q, d_len, GruCell<T>{{q.H}}, w, args);
}

template void gru_forward<float>(const Seq&, const int64_t*, Act, const Weights<float>&, const ForwardArgs<float>&, bool);
template void gru_forward<double>(const Seq&, const int64_t*, Act, const Weights<double>&, const ForwardArgs<double>&, bool);
template void gru_backward<float>(const Seq&, const int64_t*, Act, const Weights<float>&, const BackwardArgs<float>&);
template void gru_backward<double>(const Seq&, const int64_t*, Act, const Weights<double>&, const BackwardArgs<double>&);

}  // namespace fusedrnn::cuda
