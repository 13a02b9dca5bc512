// One marker for code that runs on both sides: the CPU row loops and the CUDA kernels call
// the same functions (cells/*.h, activations.h).
#pragma once

#if defined(__CUDACC__)
#define FUSEDRNN_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Forced on the host too: GCC's inliner otherwise leaves the per-unit calls in the CPU row
// loops (a "cold" call to it) and those loops stop being vectorised.
#define FUSEDRNN_HD inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define FUSEDRNN_HD __forceinline
#else
#define FUSEDRNN_HD inline
#endif
