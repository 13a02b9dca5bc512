// GRU cell on the CPU (equations and workspace layout: include/fusedrnn/cells/gru.h).
#include "fusedrnn/cells/gru.h"

#include "fusedrnn/activations.h"
#include "kernels.h"
#include "sequence.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA {
namespace {

template <typename T>
struct GruCell {
  static constexpr int64_t kGates = gru::kGates;
  static constexpr bool kHasCell = false;
  static constexpr bool kSeparateDgh = true;  // n's W_hh rows see r * dn, its W_ih rows dn
  static constexpr bool kDirectPath = true;   // h' = ... + z * h
  int64_t H;

  int64_t width() const { return gru::ws_width(H); }
  int64_t off_hprev() const { return gru::off_hprev(H); }
  int64_t off_hcore() const { return 0; }  // no projection

  template <bool Training>
  void forward_row(int64_t cnt, const T* __restrict xp, int64_t xs, const T* __restrict hp,
                   int64_t hs, const T* __restrict bih, const T* __restrict bhh,
                   const T* __restrict h_in, const T* /*c_in*/, T* __restrict h_out,
                   T* /*c_out*/, T* __restrict ws) const {
    for (int64_t j = 0; j < cnt; ++j) {
      const T r = act::sigmoid(xp[j] + bih[j] + hp[j] + bhh[j]);
      const T z = act::sigmoid(xp[xs + j] + bih[H + j] + hp[hs + j] + bhh[H + j]);
      const T hn = hp[2 * hs + j] + bhh[2 * H + j];
      const T n = act::tanh_(xp[2 * xs + j] + bih[2 * H + j] + r * hn);
      h_out[j] = (T(1) - z) * n + z * h_in[j];
      if constexpr (Training) {
        ws[j] = r;
        ws[H + j] = z;
        ws[2 * H + j] = n;
        ws[3 * H + j] = hn;
      }
    }
  }

  void backward_row(int64_t cnt, const T* __restrict ws, const T* __restrict dh,
                    const T* /*dc_in*/, T* __restrict dgi, T* __restrict dgh,
                    T* __restrict dh_direct, T* /*dc_out*/) const {
    const T* h_prev = ws + gru::off_hprev(H);
    for (int64_t j = 0; j < cnt; ++j) {
      const T r = ws[j], z = ws[H + j], n = ws[2 * H + j], hn = ws[3 * H + j];
      // h' = (1 - z) n + z h
      dh_direct[j] = dh[j] * z;
      const T dn = dh[j] * (T(1) - z) * (T(1) - n * n);  // d tanh = 1 - tanh^2
      const T dz = dh[j] * (h_prev[j] - n) * z * (T(1) - z);
      const T dr = dn * hn * r * (T(1) - r);              // n = tanh(xn + r * hn)
      dgi[j] = dgh[j] = dr;
      dgi[H + j] = dgh[H + j] = dz;
      dgi[2 * H + j] = dn;
      dgh[2 * H + j] = dn * r;
    }
  }
};

}  // namespace

template <typename T>
void gru_forward(const Seq& q, Act, const Weights<T>& w, const ForwardArgs<T>& args, bool training) {
  forward_entry(q, GruCell<T>{q.H}, w, args, training);
}

template <typename T>
void gru_backward(const Seq& q, Act, const Weights<T>& w, const BackwardArgs<T>& args) {
  backward_entry(q, GruCell<T>{q.H}, w, args);
}

template void gru_forward<float>(const Seq&, Act, const Weights<float>&, const ForwardArgs<float>&, bool);
template void gru_forward<double>(const Seq&, Act, const Weights<double>&, const ForwardArgs<double>&, bool);
template void gru_backward<float>(const Seq&, Act, const Weights<float>&, const BackwardArgs<float>&);
template void gru_backward<double>(const Seq&, Act, const Weights<double>&, const BackwardArgs<double>&);

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA
