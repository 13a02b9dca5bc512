// GRU cell on the CPU (equations and workspace layout: include/fusedrnn/cells/gru.h).
#include "fusedrnn/cells/gru.h"

#include "kernels.h"
#include "sequence.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA {
namespace {

template <typename T>
struct GruCell : gru::Layout {
  template <bool Training>
  void forward_row(int64_t cnt, const T* __restrict xp, int64_t xs, const T* __restrict hp,
                   int64_t hs, const T* __restrict bih, const T* __restrict bhh,
                   const T* __restrict h_in, const T* /*c_in*/, T* __restrict h_out,
                   T* /*c_out*/, T* __restrict ws) const {
    for (int64_t j = 0; j < cnt; ++j)
      gru::forward_unit<Training>(j, H, xp, xs, hp, hs, bih, bhh, h_in, h_out, ws);
  }

  void backward_row(int64_t cnt, const T* __restrict ws, const T* __restrict dh,
                    const T* /*dc_in*/, T* __restrict dgi, T* __restrict dgh,
                    T* __restrict dh_direct, T* /*dc_out*/) const {
    for (int64_t j = 0; j < cnt; ++j) gru::backward_unit(j, H, ws, dh[j], dgi, dgh, dh_direct);
  }
};

}  // namespace

template <typename T>
void gru_forward(const Seq& q, Act, const Weights<T>& w, const ForwardArgs<T>& args, bool training) {
  forward_entry(q, GruCell<T>{{q.H}}, w, args, training);
}

template <typename T>
void gru_backward(const Seq& q, Act, const Weights<T>& w, const BackwardArgs<T>& args) {
  backward_entry(q, GruCell<T>{{q.H}}, w, args);
}

template void gru_forward<float>(const Seq&, Act, const Weights<float>&, const ForwardArgs<float>&, bool);
template void gru_forward<double>(const Seq&, Act, const Weights<double>&, const ForwardArgs<double>&, bool);
template void gru_backward<float>(const Seq&, Act, const Weights<float>&, const BackwardArgs<float>&);
template void gru_backward<double>(const Seq&, Act, const Weights<double>&, const BackwardArgs<double>&);

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA
