// fusedrnn: the C++ surface shared by every cell.
//
// Shapes legend (row-major, rightmost dimension fastest; docs/conventions.md states the rest):
//   T  time steps          B  batch (sequences)      I  input features
//   H  hidden size         P  output/state size (H, or the LSTM projection size)
//   G  gates per cell (LSTM 4: i f g o;  GRU 3: r z n;  RNN 1)
//
// The kernels trust their arguments: the bindings (csrc/bindings) check every shape,
// dtype and length before calling them, and raise a Python exception otherwise.
#pragma once

#include <cstdint>

#include "fusedrnn/macros.h"

namespace fusedrnn {

enum class Act : int { Tanh = 0, Relu = 1 };

struct PackedCache;  // packed weights kept between calls (csrc/cpu/packed_cache.h); CPU only

// Geometry of one call: one layer, one direction, the whole sequence.
struct Seq {
  int64_t T = 0, B = 0, I = 0, H = 0, P = 0;
  const int64_t* lengths = nullptr;  // [B], each in 1..T (in the memory of the device that runs
                                     // the kernels); nullptr: every sequence has T steps
  bool reverse = false;

  FUSEDRNN_HD int64_t length(int64_t b) const { return lengths ? lengths[b] : T; }

  // The time index that row b processes at step s (steps count 0..T-1 in processing order),
  // or -1 once row b has finished.
  FUSEDRNN_HD int64_t time_of(int64_t s, int64_t b) const {
    const int64_t L = length(b);
    if (s >= L) return -1;
    return reverse ? L - 1 - s : s;
  }

  // Host only (reads lengths).  True when every active row processes the same time index at a given step; false only for
  // the reverse direction of a batch whose lengths differ.
  bool time_uniform() const {
    if (!reverse || !lengths) return true;
    for (int64_t b = 0; b < B; ++b)
      if (lengths[b] != T) return false;
    return true;
  }
  FUSEDRNN_HD int64_t time_at_step(int64_t s) const { return reverse ? T - 1 - s : s; }
};

// Parameters.  Biases are never null (the bindings pass zeros for bias=False).
template <typename T>
struct Weights {
  const T* w_ih;  // [G*H, I]
  const T* w_hh;  // [G*H, P]
  const T* b_ih;  // [G*H]
  const T* b_hh;  // [G*H]
  const T* w_hr;  // [P, H] LSTM projection, or nullptr
};

template <typename T>
struct ForwardArgs {
  const T* x;   // [T, B, I]
  const T* h0;  // [B, P]
  const T* c0;  // [B, H] (LSTM only, else nullptr)
  T* out;       // [T, B, P]; rows past a sequence's length are written as zero
  T* h_n;       // [B, P]
  T* c_n;       // [B, H] (LSTM only)
  T* ws;        // [T, B, ws_width] training workspace, or nullptr for inference
  PackedCache* packed = nullptr;  // the packed loop's weights from an earlier call, or nullptr
};

template <typename T>
struct BackwardArgs {
  const T* x;     // [T, B, I]
  const T* ws;    // [T, B, ws_width] from the training forward
  const T* dout;  // [T, B, P]; ignored past each sequence's length
  const T* dh_n;  // [B, P]
  const T* dc_n;  // [B, H] (LSTM only)
  T* dx;          // [T, B, I], or nullptr where dx is not wanted (the product is skipped)
  T* dh0;         // [B, P]
  T* dc0;         // [B, H] (LSTM only)
  T* dw_ih;       // [G*H, I]
  T* dw_hh;       // [G*H, P]
  T* db_ih;       // [G*H]
  T* db_hh;       // [G*H]
  T* dw_hr;       // [P, H] (LSTM projection only)
};

}  // namespace fusedrnn
