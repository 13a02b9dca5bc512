// The one way kernels are launched, in both builds: the real build uses <<<grid, block>>>,
// the emulation runs every thread of the grid on the host (emulation/cuda_emu.h).  Launch
// errors (bad configuration, and on a GPU any earlier asynchronous fault) become exceptions.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/runtime.h"

namespace fusedrnn::cuda {

template <class T>
struct same {
  using type = T;
};

constexpr unsigned kBlock = 256;

// Blocks for a grid-stride loop over n items: enough to fill the device, no more.
inline dim3 grid_for(int64_t n) {
  const int64_t blocks = (std::max<int64_t>(n, 1) + kBlock - 1) / kBlock;
  return dim3(static_cast<unsigned>(std::min<int64_t>(blocks, 8192)));
}

// The kernel's parameter types are taken from the kernel alone (arguments convert to them).
template <class... P>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t stream,
            typename same<P>::type... args) {
  // A failed runtime call earlier (already reported by its own check) leaves its error as the
  // "last error"; clear it so that the check below reports this launch's.
  (void)cudaGetLastError();
#if defined(FUSEDRNN_CUDA_EMULATION)
  (void)stream;
  emu::run_grid(grid, block, [&] { kernel(args...); });
#else
  kernel<<<grid, block, 0, stream>>>(args...);
#endif
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail(name, e);
}

// A grid-stride loop over n items: for (i = first(); i < n; i += stride()).
#if defined(__CUDACC__) || defined(FUSEDRNN_CUDA_EMULATION)
__device__ __forceinline__ int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t index_stride() { return static_cast<int64_t>(blockDim.x) * gridDim.x; }
#endif

}  // namespace fusedrnn::cuda
