// Packed weights of one layer and direction, kept between whole-sequence forward calls.
//
// The packed loop (fused_loop.h) lays every weight matrix out in column panels before the
// first step.  For a short call (streaming chunks, B = 1, a few steps) packing costs more than
// the steps themselves: it reads the weights in transposed order.  A PackedCache handed to the
// forward is filled by the first call and reused by the next ones.  Whoever holds it promises
// that the weights it was filled from have not changed (python/fusedrnn/layers.py keeps one per
// weight version); the cache never looks at the weight arrays again.
//
// Filling: the first call whose layout matches takes `fill` (try_lock: a concurrent call packs
// into its own scratch instead of waiting), packs, then publishes `key` with `ready`.  After
// that the buffers are only read, so any number of calls may share them.  A call whose layout
// differs (another instruction set, dtype or shape) leaves the cache alone.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>

#include "memory.h"

namespace fusedrnn {

struct PackedCache {
  // sizeof(T), gates, units and columns per panel, the two block widths, H, I, P, projection.
  using Key = std::array<int64_t, 10>;

  std::mutex fill;
  std::atomic<bool> ready{false};
  Key key{};
  mem::Array<unsigned char> wih, whh, whr;

  bool holds(const Key& k) const { return ready.load(std::memory_order_acquire) && key == k; }
  // Units per panel of the layout it holds; 0 while empty.
  int64_t units() const { return ready.load(std::memory_order_acquire) ? key[2] : 0; }
  size_t nbytes() const { return wih.size() + whh.size() + whr.size(); }
};

}  // namespace fusedrnn
