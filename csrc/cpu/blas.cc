// GEMM through OpenBLAS (scipy-openblas32: 32-bit integers, symbols prefixed scipy_).
//
// This OpenBLAS instance (private to fusedrnn, NumPy loads its own) is kept single-threaded, and
// a large product is split into row, column or depth blocks that fusedrnn's own threads claim
// one at a time (threading.h: parallel_for).  OpenBLAS's pool would busy-wait on the same cores, and
// the per-step products of the time loop would stall behind its spinning threads.
#include "blas.h"

#include <cblas.h>
#include "omp_compat.h"

#include <algorithm>
#include <stdexcept>

#include "memory.h"
#include "threading.h"

namespace fusedrnn::blas {
namespace {

// Every dimension handed to BLAS must fit its 32-bit integers; the bindings refuse larger
// problems, this is the last line of defence.
blasint dim(int64_t v) {
  if (v < 0 || v > 0x7fffffff) throw std::length_error("fusedrnn: matrix dimension exceeds BLAS's 32-bit range");
  return static_cast<blasint>(v);
}

CBLAS_TRANSPOSE op(bool t) { return t ? CblasTrans : CblasNoTrans; }

template <typename T>
bool trivial(int64_t M, int64_t N, int64_t K, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return true;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return true;
  }
  return false;
}

void call(bool ta, bool tb, blasint M, blasint N, blasint K, float alpha, const float* A, blasint lda,
          const float* B, blasint ldb, float beta, float* C, blasint ldc) {
  scipy_cblas_sgemm(CblasRowMajor, op(ta), op(tb), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void call(bool ta, bool tb, blasint M, blasint N, blasint K, double alpha, const double* A, blasint lda,
          const double* B, blasint ldb, double beta, double* C, blasint ldc) {
  scipy_cblas_dgemm(CblasRowMajor, op(ta), op(tb), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Below fusedrnn::kSplitFlops (threading.h) a product is one BLAS call.
// Larger products are cut into blocks of at least this many flops and at least kMinBlockUnits
// * 16 rows or columns (multiples of 16 keep the pieces aligned with the BLAS kernels), at most
// kMaxBlocks.  Every block re-packs the operand the blocks share: below ~256 rows or columns
// that costs more than one thread gains from the split.
constexpr double kBlockFlops = 4e6;
constexpr int64_t kMinBlockUnits = 16;
constexpr int64_t kMaxBlocks = 32;

// Keep the library itself single-threaded from the first use on.
const bool g_single = [] {
  scipy_openblas_set_num_threads(1);
  return true;
}();

// The blocks of a product depend on its shape alone, never on the thread count: every thread
// count makes the same BLAS calls, so every element of C is summed in the same order and the
// results are bit-identical whatever the threads (threads only choose who runs which block).
//
// A product with a small C and a long K (the whole-sequence weight gradients of a small model:
// C is [G*H, I], K is T*B) has too few rows and columns to split; it is cut along K instead.
// Block 0 writes C, the others write partial products to scratch, and the partials are added
// to C in block order afterwards (the same order at any thread count).
enum class Along { rows, cols, depth };

struct Split {
  Along along;
  int64_t extent;   // rows, columns or depth being split
  int64_t blocks;   // 1: a single call
  int64_t begin(int64_t i) const {
    const int64_t units = (extent + 15) / 16;
    return std::min(extent, units * i / blocks * 16);
  }
};

// Depth blocks: at least kMinDepth deep (a shallower product spends its time packing), at
// most kMaxDepthBlocks, and only while their partial products stay small.
constexpr int64_t kMinDepth = 256;
constexpr int64_t kMaxDepthBlocks = 8;
constexpr double kMaxPartialBytes = 16.0 * (1 << 20);

Split split_of(int64_t M, int64_t N, int64_t K, size_t elem) {
  Split s{M >= N ? Along::rows : Along::cols, M >= N ? M : N, 1};
  const double flops = 2.0 * M * N * K;
  if (flops < fusedrnn::kSplitFlops) return s;
  const int64_t units = (s.extent + 15) / 16;
  const int64_t most = std::min(kMaxBlocks, static_cast<int64_t>(flops / kBlockFlops));
  s.blocks = std::max<int64_t>(1, std::min(units / kMinBlockUnits, most));
  const int64_t deep = std::min({K / kMinDepth, kMaxDepthBlocks, most});
  if (s.blocks < 4 && deep > s.blocks &&
      static_cast<double>(deep - 1) * M * N * elem <= kMaxPartialBytes)
    s = Split{Along::depth, K, deep};
  return s;
}

}  // namespace

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (trivial(M, N, K, beta, C, ldc)) return;
  // Another library may have raised this pool (threadpoolctl limits every OpenBLAS it finds):
  // set it back, or two pools would fight over the cores again.
  if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
  // Checked before any thread starts: nothing below may throw.
  const blasint m = dim(M), n = dim(N), k = dim(K), la = dim(lda), lb = dim(ldb), lc = dim(ldc);
  const Split sp = split_of(M, N, K, sizeof(T));
  const bool deep = sp.along == Along::depth;
  // Partial products of depth blocks 1.. (block 0 writes C itself), allocated before any
  // thread starts.
  mem::Array<T> partial(deep ? static_cast<size_t>((sp.blocks - 1) * M * N) : 0, "partial products");
  // Block i of the split, on whichever thread runs it.
  auto block = [&](int64_t i) noexcept {
    const int64_t b0 = sp.begin(i), b1 = sp.begin(i + 1);
    if (b1 <= b0) return;
    const blasint len = static_cast<blasint>(b1 - b0);
    if (sp.along == Along::rows) {
      const T* a = ta ? A + b0 : A + b0 * lda;  // rows b0.. of op(A)
      call(ta, tb, len, n, k, alpha, a, la, B, lb, beta, C + b0 * ldc, lc);
    } else if (sp.along == Along::cols) {
      const T* b = tb ? B + b0 * ldb : B + b0;  // columns b0.. of op(B)
      call(ta, tb, m, len, k, alpha, A, la, b, lb, beta, C + b0, lc);
    } else {
      const T* a = ta ? A + b0 * lda : A + b0;  // columns b0.. of op(A)
      const T* b = tb ? B + b0 : B + b0 * ldb;  // rows b0.. of op(B)
      if (i == 0) call(ta, tb, m, n, len, alpha, a, la, b, lb, beta, C, lc);
      else call(ta, tb, m, n, len, alpha, a, la, b, lb, T(0), partial.data() + (i - 1) * M * N, n);
    }
  };
  // Called from inside a parallel loop (the AVX-512 time loop's threads), stay on this thread.
  const bool nested = omp_in_parallel();
  const int want = nested ? 1 : fusedrnn::threads_now();
  const int nt = static_cast<int>(std::min<int64_t>(want, sp.blocks));
  if (nt <= 1) {
    for (int64_t i = 0; i < sp.blocks; ++i) {
      // A whole-sequence product can take a second: Ctrl-C is honoured between its blocks
      // (never inside a parallel region, where nothing may throw).
      if (i > 0 && !nested) fusedrnn::throw_if_interrupted();
      block(i);
    }
  } else {
    using Block = decltype(block);
    fusedrnn::parallel_for(sp.blocks, nt, [](void* b, int64_t i) { (*static_cast<Block*>(b))(i); }, &block);
  }
  // Depth blocks: add the partials in block order (a row of C at a time).
  for (int64_t i = 1; deep && i < sp.blocks; ++i) {
    if (sp.begin(i + 1) <= sp.begin(i)) continue;
    const T* p = partial.data() + (i - 1) * M * N;
    for (int64_t r = 0; r < M; ++r) {
      T* __restrict c = C + r * ldc;
      const T* __restrict q = p + r * N;
      for (int64_t j = 0; j < N; ++j) c[j] += q[j];
    }
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

int num_threads() { return scipy_openblas_get_num_threads(); }
std::string corename() { return scipy_openblas_get_corename(); }
std::string config() { return scipy_openblas_get_config(); }

}  // namespace fusedrnn::blas
