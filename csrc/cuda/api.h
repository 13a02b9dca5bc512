// Entry points of the CUDA kernels (csrc/cuda/{lstm,gru,rnn}.cu).  Every pointer in the
// weights and args structs is device memory.  q.lengths is the host copy (the host decides
// which loop to run); d_lengths the device copy (or nullptr), which the kernels read.
#pragma once

#include "fusedrnn/common.h"
#include "fusedrnn/optim.h"

namespace fusedrnn::cuda {

#define FUSEDRNN_CUDA_DECLARE(cell)                                                          \
  template <typename T>                                                                      \
  void cell##_forward(const Seq& q, const int64_t* d_lengths, Act act, const Weights<T>& w,  \
                      const ForwardArgs<T>& a, bool training);                               \
  template <typename T>                                                                      \
  void cell##_backward(const Seq& q, const int64_t* d_lengths, Act act, const Weights<T>& w, \
                       const BackwardArgs<T>& a);

FUSEDRNN_CUDA_DECLARE(lstm)
FUSEDRNN_CUDA_DECLARE(gru)
FUSEDRNN_CUDA_DECLARE(rnn)
#undef FUSEDRNN_CUDA_DECLARE

// Training state on the device (csrc/cuda/optim.cu): one optimiser step over n entries of one
// parameter (s0, s1 its slots, nullptr where the rule keeps fewer); acc += x; the sum of x's
// squares in double.
template <typename T>
void optimizer_step(const optim::Rule& r, T* p, const T* g, T* s0, T* s1, int64_t n);
template <typename T>
void add_into(T* acc, const T* x, int64_t n);
template <typename T>
double sum_squares(const T* x, int64_t n);

}  // namespace fusedrnn::cuda
