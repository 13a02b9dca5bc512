// The vector registers of the instruction set this translation unit is compiled for, seen
// through one small interface so the packed GEMM and the fused time loop are written once.
//
//   Vec<T>             T = float or double: lanes, zero, set1, load (aligned), loadu, store,
//                      storeu, fmadd(a, b, c) = a * b + c, keep(v): v in a register, its value
//                      hidden from the optimiser
//   kRegisters         vector registers the compiler can allocate (tile shapes derive from it)
//   FUSEDRNN_PACKED_LOOP  1 where the packed loop exists for this ISA (AVX-512, AVX2+FMA,
//                      ARM64 NEON), else 0: the generic loop of sequence.h runs alone.
//
// Everything lives in the per-ISA namespace: the same names mean different registers in the
// avx2 and avx512 objects, and must not be merged by the linker.
#pragma once

// MSVC's /arch:AVX2 implies FMA but defines no __FMA__.
#if defined(__AVX2__) && (defined(__FMA__) || defined(_MSC_VER))
#define FUSEDRNN_SIMD_AVX2_FMA 1
#endif

#include <cstdint>
#include <cstring>

// An empty statement that claims to change v: the compiler no longer knows what v holds (a
// loop that moves vectors through it is not turned into a memcpy/memset call).  MSVC has no
// inline assembly on x64 and ARM64, nor that rewrite of intrinsic loops.
#if defined(_MSC_VER) && !defined(__clang__)
#define FUSEDRNN_SIMD_KEEP(constraint, v) ((void)(v))
#else
#define FUSEDRNN_SIMD_KEEP(constraint, v) __asm__("" : constraint(v))
#endif

#if defined(__AVX512F__) || defined(FUSEDRNN_SIMD_AVX2_FMA)
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

namespace fusedrnn::cpu::FUSEDRNN_ISA::simd {

template <typename T>
struct Vec;

#if defined(__AVX512F__)
#define FUSEDRNN_PACKED_LOOP 1
inline constexpr int kRegisters = 32;

template <>
struct Vec<float> {
  using R = __m512;
  static constexpr int lanes = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float x) { return _mm512_set1_ps(x); }
  static R load(const float* p) { return _mm512_load_ps(p); }
  static R loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R v) { _mm512_store_ps(p, v); }
  static void storeu(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static void keep(R& v) { FUSEDRNN_SIMD_KEEP("+v", v); }
};
template <>
struct Vec<double> {
  using R = __m512d;
  static constexpr int lanes = 8;
  static R zero() { return _mm512_setzero_pd(); }
  static R set1(double x) { return _mm512_set1_pd(x); }
  static R load(const double* p) { return _mm512_load_pd(p); }
  static R loadu(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, R v) { _mm512_store_pd(p, v); }
  static void storeu(double* p, R v) { _mm512_storeu_pd(p, v); }
  static R fmadd(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static void keep(R& v) { FUSEDRNN_SIMD_KEEP("+v", v); }
};

#elif defined(FUSEDRNN_SIMD_AVX2_FMA)
#define FUSEDRNN_PACKED_LOOP 1
inline constexpr int kRegisters = 16;

template <>
struct Vec<float> {
  using R = __m256;
  static constexpr int lanes = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R load(const float* p) { return _mm256_load_ps(p); }
  static R loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_store_ps(p, v); }
  static void storeu(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static void keep(R& v) { FUSEDRNN_SIMD_KEEP("+x", v); }
};
template <>
struct Vec<double> {
  using R = __m256d;
  static constexpr int lanes = 4;
  static R zero() { return _mm256_setzero_pd(); }
  static R set1(double x) { return _mm256_set1_pd(x); }
  static R load(const double* p) { return _mm256_load_pd(p); }
  static R loadu(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, R v) { _mm256_store_pd(p, v); }
  static void storeu(double* p, R v) { _mm256_storeu_pd(p, v); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static void keep(R& v) { FUSEDRNN_SIMD_KEEP("+x", v); }
};

#elif defined(__aarch64__) && defined(__ARM_NEON)
#define FUSEDRNN_PACKED_LOOP 1
inline constexpr int kRegisters = 32;

template <>
struct Vec<float> {
  using R = float32x4_t;
  static constexpr int lanes = 4;
  static R zero() { return vdupq_n_f32(0.0f); }
  static R set1(float x) { return vdupq_n_f32(x); }
  static R load(const float* p) { return vld1q_f32(p); }
  static R loadu(const float* p) { return vld1q_f32(p); }
  static void store(float* p, R v) { vst1q_f32(p, v); }
  static void storeu(float* p, R v) { vst1q_f32(p, v); }
  static R fmadd(R a, R b, R c) { return vfmaq_f32(c, a, b); }
  static void keep(R& v) { FUSEDRNN_SIMD_KEEP("+w", v); }
};
template <>
struct Vec<double> {
  using R = float64x2_t;
  static constexpr int lanes = 2;
  static R zero() { return vdupq_n_f64(0.0); }
  static R set1(double x) { return vdupq_n_f64(x); }
  static R load(const double* p) { return vld1q_f64(p); }
  static R loadu(const double* p) { return vld1q_f64(p); }
  static void store(double* p, R v) { vst1q_f64(p, v); }
  static void storeu(double* p, R v) { vst1q_f64(p, v); }
  static R fmadd(R a, R b, R c) { return vfmaq_f64(c, a, b); }
  static void keep(R& v) { FUSEDRNN_SIMD_KEEP("+w", v); }
};

#else
#define FUSEDRNN_PACKED_LOOP 0
#endif

#if FUSEDRNN_PACKED_LOOP
// Asks for the cache line at p to be brought into L2 (a hint: never faults, any address), for
// reading or, with Write, for writing.
template <bool Write = false>
inline void prefetch_l2(const void* p) {
#if defined(_MSC_VER) && !defined(__clang__)  // x64 (the packed loop's only MSVC target)
  _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
#else
  __builtin_prefetch(p, Write ? 1 : 0, 2);
#endif
}

// Asks for the cache lines of p[0:n] into L2, for writing (rows a time loop will write at its
// next step, so that their stores do not stall on fetching the lines then) or for reading.
template <bool Write = false, typename T>
inline void prefetch_row(const T* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / static_cast<int64_t>(sizeof(T))) prefetch_l2<Write>(p + i);
}
template <typename T>
inline void prefetch_write(const T* p, int64_t n) { prefetch_row<true>(p, n); }
template <typename T>
inline void prefetch_read(const T* p, int64_t n) { prefetch_row<false>(p, n); }

// Moves Size bytes (a constant: one load and one store) if rest has that bit.
template <int Size>
inline void move_bytes_if(int64_t rest, unsigned char*& d, const unsigned char*& s) {
  if (rest & Size) {
    std::memcpy(d, s, Size);
    d += Size;
    s += Size;
  }
}
// dst[0:n] = src[0:n] in vector moves (the rest in moves of 32, 16, 8, 4 bytes): the time
// loops' short rows (tens of values per row and step) then cost a few instructions each
// instead of a call into the C library.
template <typename T>
inline void copy_short(T* dst, const T* src, int64_t n) {
  using V = Vec<T>;
  int64_t j = 0;
  for (; j + V::lanes <= n; j += V::lanes) {
    typename V::R v = V::loadu(src + j);
    V::keep(v);
    V::storeu(dst + j, v);
  }
  if (j >= n) return;
  auto* d = reinterpret_cast<unsigned char*>(dst + j);
  auto* s = reinterpret_cast<const unsigned char*>(src + j);
  const int64_t rest = (n - j) * static_cast<int64_t>(sizeof(T));  // below one vector
  move_bytes_if<32>(rest, d, s);
  move_bytes_if<16>(rest, d, s);
  move_bytes_if<8>(rest, d, s);
  move_bytes_if<4>(rest, d, s);
}
// dst[0:n] = 0 for n * sizeof(T) <= kZeroBytes, as a copy from zeros.
inline constexpr int64_t kZeroBytes = 1024;
template <typename T>
inline void zero_short(T* dst, int64_t n) {
  alignas(64) static const T zeros[kZeroBytes / sizeof(T)] = {};
  copy_short(dst, zeros, n);
}
#endif

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA::simd
