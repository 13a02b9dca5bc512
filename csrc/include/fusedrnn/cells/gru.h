// GRU, gates r z n (torch.nn.GRU):
//   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      z = sigmoid(... z rows ...)
//   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   h' = (1 - z) * n + z * h
#pragma once

#include "fusedrnn/common.h"

namespace fusedrnn::gru {

// Workspace row kept per (t, b) by a training forward:
//   [ r z n : 3H | W_hn h + b_hn : H | h_prev : H ]
constexpr int64_t kGates = 3;
inline int64_t off_hn(int64_t H) { return 3 * H; }
inline int64_t off_hprev(int64_t H) { return 4 * H; }
inline int64_t ws_width(int64_t H) { return 5 * H; }

}  // namespace fusedrnn::gru
