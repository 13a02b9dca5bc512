// Training state kept on the device: the optimiser step (the rules of
// include/fusedrnn/optim.h, the CPU pass's own), gradient accumulation and the sums of
// squares that gradient clipping needs.  All grid-stride loops without shared memory, so the
// emulated device runs them as a GPU would.  Compiled without contraction into fused
// multiply-adds (nvcc --fmad=false, -ffp-contract=off when emulated): the step is then
// bit-identical to the CPU pass and to NumPy.
#include <vector>

#include "cuda/api.h"
#include "cuda/device.h"
#include "cuda/launch.h"
#include "fusedrnn/optim.h"

namespace fusedrnn::cuda {
namespace {

template <typename T>
__global__ void step_kernel(optim::Consts<T> c, T* p, const T* g, T* s0, T* s1, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) optim::update_entry(c, p, g, s0, s1, i);
}

template <typename T>
__global__ void add_kernel(T* acc, const T* x, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) acc[i] += x[i];
}

// Each thread adds the squares of its grid-stride share in double; the host adds the threads'
// sums in a fixed order (deterministic, no atomics).
template <typename T>
__global__ void squares_kernel(const T* x, int64_t n, double* partial) {
  double s = 0;
  for (int64_t i = first_index(); i < n; i += index_stride()) s += static_cast<double>(x[i]) * x[i];
  partial[first_index()] = s;
}

constexpr unsigned kSquareBlocks = 16;

}  // namespace

template <typename T>
void optimizer_step(const optim::Rule& r, T* p, const T* g, T* s0, T* s1, int64_t n) {
  if (n <= 0) return;
  launch("optimizer step", step_kernel<T>, grid_for(n), dim3(kBlock), nullptr, optim::Consts<T>(r), p, g, s0, s1, n);
}

template <typename T>
void add_into(T* acc, const T* x, int64_t n) {
  if (n <= 0) return;
  launch("gradient accumulation", add_kernel<T>, grid_for(n), dim3(kBlock), nullptr, acc, x, n);
}

template <typename T>
double sum_squares(const T* x, int64_t n) {
  if (n <= 0) return 0.0;
  const int64_t threads = int64_t(kSquareBlocks) * kBlock;
  Buffer partial = buffer<double>(threads);
  launch("sum of squares", squares_kernel<T>, dim3(kSquareBlocks), dim3(kBlock), nullptr, x, n,
         partial.as<double>());
  std::vector<double> host(static_cast<size_t>(threads));
  copy(host.data(), partial.get(), sizeof(double) * host.size(), cudaMemcpyDeviceToHost);
  double s = 0;
  for (double v : host) s += v;
  return s;
}

template void optimizer_step<float>(const optim::Rule&, float*, const float*, float*, float*, int64_t);
template void optimizer_step<double>(const optim::Rule&, double*, const double*, double*, double*, int64_t);
template void add_into<float>(float*, const float*, int64_t);
template void add_into<double>(double*, const double*, int64_t);
template double sum_squares<float>(const float*, int64_t);
template double sum_squares<double>(const double*, int64_t);

}  // namespace fusedrnn::cuda
