// Large scratch blocks, kept between calls.
//
// A call allocates tens of MiB (workspace, gate gradients, packed weights).  Fresh memory from
// the system is zero-filled page by page on first touch, which costs about three times writing
// it; a block handed back here is reused by the next call of a similar size instead.  Blocks
// under 64 KiB go straight to the allocator (larger ones, freed, go back to the system and
// fault in again at the next call); at most kCacheLimit bytes are kept idle, and
// fusedrnn.empty_cache() returns them all.
#pragma once

#include <cstddef>
#include <cstring>
#include <new>
#include <string>

namespace fusedrnn::mem {

constexpr size_t kCacheLimit = size_t(256) << 20;

// An allocation that failed: what() names the bytes asked for and what they were for (the
// bindings turn it into MemoryError with that message).
class OutOfMemory : public std::bad_alloc {
 public:
  OutOfMemory(size_t bytes, const char* purpose);
  const char* what() const noexcept override { return msg_.c_str(); }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_;
  std::string msg_;
};

// 64-byte aligned.  Throws OutOfMemory naming `purpose`; call it outside parallel regions
// (an exception must never leave one).
void* acquire(size_t bytes, const char* purpose = "scratch memory");
void release(void* p) noexcept;    // p from acquire (nullptr is ignored)
size_t cached_bytes();
void empty_cache();

// n elements of T from acquire(), uninitialised unless zeroed; freed when it goes out of scope
// (also when an interrupt or an error unwinds the call).
template <typename T>
class Array {
 public:
  Array() = default;
  Array(size_t n, const char* purpose) : n_(n) {
    if (n > static_cast<size_t>(-1) / sizeof(T)) throw OutOfMemory(static_cast<size_t>(-1), purpose);
    if (n) p_ = static_cast<T*>(acquire(n * sizeof(T), purpose));
  }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  Array(Array&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  Array& operator=(Array&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~Array() { release(p_); }
  T* data() const { return p_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) const { return p_[i]; }
  void zero() {
    if (n_) std::memset(p_, 0, n_ * sizeof(T));
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace fusedrnn::mem
