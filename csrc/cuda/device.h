// Device-side plumbing for the CUDA kernels: device count, the cuBLAS handle, owned device
// memory.  Host code; compiled by the host compiler in both builds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "cuda/runtime.h"

namespace fusedrnn::cuda {

// Devices visible to this process; 0 (never an exception) when there is no driver or no GPU.
int device_count();
bool emulated();

// The cuBLAS handle of this process (created on first use, on the default stream).
cublasHandle_t blas_handle();

// Wait for all queued work; raises what an asynchronous failure left behind.
void synchronize();

// An owned block of device memory.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes);
  ~Buffer();
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* get() const { return p_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

template <typename T>
Buffer buffer(int64_t count) {
  return Buffer(sizeof(T) * static_cast<size_t>(count));
}

void copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
void zero(void* dst, size_t bytes);

}  // namespace fusedrnn::cuda
