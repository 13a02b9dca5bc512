// The CUDA runtime and cuBLAS as fusedrnn sees them: the real headers, or the host emulation
// (FUSEDRNN_CUDA_EMULATION; emulation/cuda_emu.h).  Every call goes through one of the two
// CHECK macros, which turn a failure into a C++ exception naming the call and the error (a
// Python RuntimeError at the bindings); nothing here exits the process.
#pragma once

#if defined(FUSEDRNN_CUDA_EMULATION)
#include "cuda/emulation/cuda_emu.h"
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

#include <stdexcept>
#include <string>

namespace fusedrnn::cuda {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const char* call, cudaError_t e);
[[noreturn]] void fail(const char* call, cublasStatus_t s);

}  // namespace fusedrnn::cuda

#define FUSEDRNN_CUDA_CHECK(call)                                 \
  do {                                                            \
    const cudaError_t fusedrnn_e_ = (call);                       \
    if (fusedrnn_e_ != cudaSuccess) ::fusedrnn::cuda::fail(#call, fusedrnn_e_); \
  } while (0)

#define FUSEDRNN_CUBLAS_CHECK(call)                               \
  do {                                                            \
    const cublasStatus_t fusedrnn_s_ = (call);                    \
    if (fusedrnn_s_ != CUBLAS_STATUS_SUCCESS) ::fusedrnn::cuda::fail(#call, fusedrnn_s_); \
  } while (0)
