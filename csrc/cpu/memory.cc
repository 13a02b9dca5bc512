#include "memory.h"

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

namespace fusedrnn::mem {
namespace {

constexpr size_t kSmall = size_t(64) << 10;
constexpr size_t kGrain = size_t(64) << 10;

struct Pool {
  std::mutex lock;
  std::multimap<size_t, void*> idle;       // size -> block, kept for reuse
  std::unordered_map<void*, size_t> size;  // every large block handed out or idle
  size_t idle_bytes = 0;
};

// Never destroyed: arrays holding blocks may be freed during interpreter shutdown, after static
// destructors would have run.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

// 64-byte alignment by hand: malloc 64 bytes more, hand out the first 64-byte boundary past
// the start and keep the pointer malloc gave just below it.  std::aligned_alloc is missing
// with MSVC and before macOS 10.15, aligned operator new before macOS 10.14; this runs
// everywhere, costs 64 bytes per block (blocks here are >= 64 bytes, mostly MiB).
constexpr size_t kAlign = 64;

void* aligned_malloc(size_t bytes) {
  if (bytes > static_cast<size_t>(-1) - kAlign) return nullptr;
  void* raw = std::malloc(bytes + kAlign);
  if (!raw) return nullptr;
  // At least sizeof(void*) bytes lie between raw and the boundary: malloc aligns to 8 or 16.
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw) + sizeof(void*);
  void* p = reinterpret_cast<void*>((start + kAlign - 1) & ~static_cast<uintptr_t>(kAlign - 1));
  static_cast<void**>(p)[-1] = raw;
  return p;
}

void aligned_free(void* p) {
  if (p) std::free(static_cast<void**>(p)[-1]);
}

// `asked`: the size the caller asked for, before rounding (the error names it).
void* system_alloc(size_t bytes, size_t asked, const char* purpose) {
  void* p = aligned_malloc(bytes);
  if (!p) {
    // Idle blocks may be what stands in the way: give them back and try once more.
    empty_cache();
    p = aligned_malloc(bytes);
  }
  if (!p) throw OutOfMemory(asked, purpose);
  return p;
}

}  // namespace

OutOfMemory::OutOfMemory(size_t bytes, const char* purpose) : bytes_(bytes) {
  msg_ = "fusedrnn: cannot allocate " + std::to_string(bytes) + " bytes (" +
         std::to_string(bytes >> 20) + " MiB) for " + purpose;
}

void* acquire(size_t bytes, const char* purpose) {
  constexpr size_t kLargest = static_cast<size_t>(1) << 62;
  if (bytes > kLargest) throw OutOfMemory(bytes, purpose);
  const size_t asked = bytes;
  bytes = bytes ? ((bytes + 63) / 64) * 64 : 64;
  if (bytes < kSmall) return system_alloc(bytes, asked, purpose);
  bytes = ((bytes + kGrain - 1) / kGrain) * kGrain;
  Pool& P = pool();
  {
    std::lock_guard<std::mutex> hold(P.lock);
    // The smallest idle block that fits, unless it would waste more than half of itself.
    auto it = P.idle.lower_bound(bytes);
    if (it != P.idle.end() && it->first <= 2 * bytes) {
      void* p = it->second;
      P.idle_bytes -= it->first;
      P.idle.erase(it);
      return p;
    }
  }
  void* p = system_alloc(bytes, asked, purpose);
  try {
    std::lock_guard<std::mutex> hold(P.lock);
    P.size[p] = bytes;
  } catch (...) {
    aligned_free(p);
    throw OutOfMemory(asked, purpose);
  }
  return p;
}

void release(void* p) noexcept {
  if (!p) return;
  Pool& P = pool();
  std::unique_lock<std::mutex> hold(P.lock);
  auto it = P.size.find(p);
  if (it == P.size.end()) {  // a small block
    hold.unlock();
    aligned_free(p);
    return;
  }
  const size_t bytes = it->second;
  if (bytes > kCacheLimit) {
    P.size.erase(it);
    hold.unlock();
    aligned_free(p);
    return;
  }
  // Make room by dropping the largest idle blocks first.
  while (P.idle_bytes + bytes > kCacheLimit && !P.idle.empty()) {
    auto last = std::prev(P.idle.end());
    P.idle_bytes -= last->first;
    P.size.erase(last->second);
    aligned_free(last->second);
    P.idle.erase(last);
  }
  try {
    P.idle.emplace(bytes, p);
    P.idle_bytes += bytes;
  } catch (...) {  // no memory for the bookkeeping: give the block back instead
    P.size.erase(p);
    aligned_free(p);
  }
}

size_t cached_bytes() {
  Pool& P = pool();
  std::lock_guard<std::mutex> hold(P.lock);
  return P.idle_bytes;
}

void empty_cache() {
  Pool& P = pool();
  std::lock_guard<std::mutex> hold(P.lock);
  for (auto& [bytes, p] : P.idle) {
    P.size.erase(p);
    aligned_free(p);
  }
  P.idle.clear();
  P.idle_bytes = 0;
}

}  // namespace fusedrnn::mem
