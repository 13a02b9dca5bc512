// The vector registers of the instruction set this translation unit is compiled for, seen
// through one small interface so the packed GEMM and the fused time loop are written once.
//
//   Vec<T>             T = float or double: lanes, zero, set1, load (aligned), loadu, store,
//                      storeu, fmadd(a, b, c) = a * b + c
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
};

#else
#define FUSEDRNN_PACKED_LOOP 0
#endif

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA::simd
