#include "cuda/device.h"

#include <mutex>
#include <string>

namespace fusedrnn::cuda {

void fail(const char* call, cudaError_t e) {
  (void)cudaGetLastError();  // reported here: not again by the next launch check
  throw Error(std::string("CUDA error in ") + call + ": " + cudaGetErrorName(e) + ": " +
              cudaGetErrorString(e));
}

void fail(const char* call, cublasStatus_t s) {
  throw Error(std::string("cuBLAS error in ") + call + ": status " + std::to_string(static_cast<int>(s)) +
              ": " + cublasGetStatusString(s));
}

int device_count() {
  int n = 0;
  // No driver, no device, a driver older than the runtime: all mean "no GPU here".
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error so later calls report their own
    return 0;
  }
  return n;
}

bool emulated() {
#if defined(FUSEDRNN_CUDA_EMULATION)
  return true;
#else
  return false;
#endif
}

cublasHandle_t blas_handle() {
  // Created once and kept for the life of the process: destroying it at exit would run after
  // the CUDA runtime has shut down.
  static std::mutex mu;
  static cublasHandle_t handle = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (!handle) FUSEDRNN_CUBLAS_CHECK(cublasCreate(&handle));
  return handle;
}

void synchronize() { FUSEDRNN_CUDA_CHECK(cudaDeviceSynchronize()); }

Buffer::Buffer(size_t bytes) : bytes_(bytes) {
  if (bytes) FUSEDRNN_CUDA_CHECK(cudaMalloc(&p_, bytes));
}

Buffer::~Buffer() {
  if (p_) (void)cudaFree(p_);  // a destructor must not throw; a failed free leaks the block
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    if (p_) (void)cudaFree(p_);
    p_ = std::exchange(o.p_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes) FUSEDRNN_CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
}

void zero(void* dst, size_t bytes) {
  if (bytes) FUSEDRNN_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, nullptr));
}

}  // namespace fusedrnn::cuda
