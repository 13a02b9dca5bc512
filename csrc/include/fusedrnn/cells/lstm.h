// LSTM, gates i f g o (torch.nn.LSTM):
//   i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      f = sigmoid(... f rows ...)
//   g = act(W_ig x + b_ig + W_hg h + b_hg)          o = sigmoid(... o rows ...)
//   c' = f * c + i * g                               h' = o * act(c')   [h' = W_hr h' with projection]
// act is tanh, or relu for Keras' LSTM(activation='relu').
#pragma once

#include "fusedrnn/common.h"

namespace fusedrnn::lstm {

// Workspace row kept per (t, b) by a training forward:
//   [ i f g o : 4H | c_prev : H | h_prev : P | o * act(c') : H, with a projection only ]
// c' is recomputed in backward from f, c_prev, i, g.
constexpr int64_t kGates = 4;
inline int64_t off_cprev(int64_t H) { return 4 * H; }
inline int64_t off_hprev(int64_t H) { return 5 * H; }
inline int64_t off_hcore(int64_t H, int64_t P) { return 5 * H + P; }
inline int64_t ws_width(int64_t H, int64_t P, bool proj) { return 5 * H + P + (proj ? H : 0); }

}  // namespace fusedrnn::lstm
