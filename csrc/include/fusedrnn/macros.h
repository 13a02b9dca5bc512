// One marker for code that runs on both sides: the CPU row loops and the CUDA kernels call
// the same functions (cells/*.h, activations.h).
#pragma once

#if defined(__CUDACC__)
#define FUSEDRNN_HD __host__ __device__ __forceinline__
#else
#define FUSEDRNN_HD inline
#endif
