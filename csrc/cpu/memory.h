// Large scratch blocks, kept between calls.
//
// A call allocates tens of MiB (workspace, gate gradients, packed weights).  Fresh memory from
// the system is zero-filled page by page on first touch, which costs about three times writing
// it; a block handed back here is reused by the next call of a similar size instead.  Blocks
// under 1 MiB go straight to the allocator; at most kCacheLimit bytes are kept idle, and
// fusedrnn.empty_cache() returns them all.
#pragma once

#include <cstddef>

namespace fusedrnn::mem {

constexpr size_t kCacheLimit = size_t(256) << 20;

void* acquire(size_t bytes);       // 64-byte aligned; throws std::bad_alloc
void release(void* p) noexcept;    // p from acquire (nullptr is ignored)
size_t cached_bytes();
void empty_cache();

}  // namespace fusedrnn::mem
