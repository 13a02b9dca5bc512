// Elman RNN (torch.nn.RNN):  h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh or relu.
#pragma once

#include "fusedrnn/common.h"

namespace fusedrnn::rnn {

// Workspace row kept per (t, b) by a training forward:  [ h' : H | h_prev : H ]
constexpr int64_t kGates = 1;
inline int64_t off_hprev(int64_t H) { return H; }
inline int64_t ws_width(int64_t H) { return 2 * H; }

}  // namespace fusedrnn::rnn
