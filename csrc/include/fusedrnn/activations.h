// Elementwise activations, written so that the compiler vectorises loops that call them.
// float and double use polynomial exps (max error ~2 ulp), so the row loops vectorise.
// Host and device run the same polynomial (parity with the CPU kernels); only the clamps and
// the bit casts are spelled with the device's own functions in device code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fusedrnn/common.h"
#include "fusedrnn/macros.h"

namespace fusedrnn::act {

// Bit casts between float and uint32, and between double and int64 (two's complement), on
// either side.
template <class To, class From>
FUSEDRNN_HD To bit_cast_(From x) {
  static_assert(sizeof(To) == sizeof(From), "a bit cast keeps the size");
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<From, float>) return __float_as_uint(x);
  else if constexpr (std::is_same_v<To, float>) return __uint_as_float(x);
  else if constexpr (std::is_same_v<From, double>) return __double_as_longlong(x);
  else return __longlong_as_double(x);
#else
  To y;
  std::memcpy(&y, &x, sizeof y);
  return y;
#endif
}

// The float exps below: x = n*ln2 + r with |r| <= ln2/2, n = round(x / ln2) by adding and
// removing kShifterF = 1.5 * 2^23 (the sum's low bits then hold n: see float_exponent_plus),
// and e^r by a degree-6 polynomial.
constexpr float kShifterF = 12582912.0f;
FUSEDRNN_HD float exp_reduced(float xc, float& shifted) {
  shifted = xc * 1.44269504088896341f + kShifterF;
  const float n = shifted - kShifterF;  // round to nearest
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * r * r + r + 1.0f;
}
// n + k as the low bits of a uint32 (two's complement), from the `shifted` of exp_reduced
// (1.5 * 2^23 + n, in the binade of 2^23 for |n| < 2^22).
FUSEDRNN_HD uint32_t float_exponent_plus(float shifted, uint32_t k) {
  return bit_cast_<uint32_t>(shifted) - (bit_cast_<uint32_t>(kShifterF) - k);
}

// exp(x) for float, 2^n applied as two factors 2^a 2^b (a + b = n) so that results from the
// subnormal range up to overflow (+inf past ~88.72) come out right.  exp_clamped takes x
// already in [-104, 89].
FUSEDRNN_HD float exp_clamped(float xc) {
  float shifted;
  const float p = exp_reduced(xc, shifted);
  const int32_t ni = static_cast<int32_t>(float_exponent_plus(shifted, 0));  // in -150..128
  const int32_t na = ni >> 1, nb = ni - na;    // each in -75..64: normal powers of two
  const float sa = bit_cast_<float>(static_cast<uint32_t>(na + 127) << 23);
  const float sb = bit_cast_<float>(static_cast<uint32_t>(nb + 127) << 23);
  return (p * sa) * sb;
}
// min(max(x, lo), hi), on either side (x is never NaN here).
FUSEDRNN_HD float clamp_(float x, float lo, float hi) {
#if defined(__CUDA_ARCH__)
  return fminf(fmaxf(x, lo), hi);
#else
  return std::min(std::max(x, lo), hi);
#endif
}
FUSEDRNN_HD double clamp_(double x, double lo, double hi) {
#if defined(__CUDA_ARCH__)
  return fmin(fmax(x, lo), hi);
#else
  return std::min(std::max(x, lo), hi);
#endif
}

// Round to the nearest integer for |x| < 2^51 by adding and removing 1.5 * 2^52: the sum's
// low bits then hold that integer, read back as
// bit_cast_<int64_t>(x + kShifter) - bit_cast_<int64_t>(kShifter).
// Integer work on 64-bit lanes stays within add, subtract and left shift, which every vector
// instruction set has (AVX2 has no 64-bit arithmetic right shift and no double -> int64), so
// the loops that call the double functions below are vectorised like the float ones.
constexpr double kShifter = 6755399441055744.0;
// ln 2 in two parts: n * kLn2Hi is exact for |n| < 2^11 (kLn2Hi has 32 significant bits).
constexpr double kLn2Hi = 6.93147180369123816490e-01;
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kLog2e = 1.44269504088896338700e+00;

// (e^r - 1 - r) / r^2 for |r| <= ln2/2: Taylor terms 1/2! .. 1/14! (truncation below 2e-18).
FUSEDRNN_HD double expm1_tail(double r) {
  double q = 1.0 / 87178291200.0;
  q = q * r + 1.0 / 6227020800.0;
  q = q * r + 1.0 / 479001600.0;
  q = q * r + 1.0 / 39916800.0;
  q = q * r + 1.0 / 3628800.0;
  q = q * r + 1.0 / 362880.0;
  q = q * r + 1.0 / 40320.0;
  q = q * r + 1.0 / 5040.0;
  q = q * r + 1.0 / 720.0;
  q = q * r + 1.0 / 120.0;
  q = q * r + 1.0 / 24.0;
  q = q * r + 1.0 / 6.0;
  q = q * r + 0.5;
  return q;
}

// exp(x) for double, the float scheme above with a longer polynomial: x = n ln2 + r,
// e^r = 1 + r + r^2 tail(r), 2^n applied as two normal factors (a + b = n) so that results
// from the subnormal range (x >= -745.2) up to overflow (+inf past ~709.78) come out right.
// Within ~2 ulp of the correctly rounded value.  exp_clamped takes x already in [-746, 710].
FUSEDRNN_HD double exp_clamped(double xc) {
  const double shifted = xc * kLog2e + kShifter;
  const double n = shifted - kShifter;  // in -1076..1024
  double r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  const double p = (expm1_tail(r) * r * r + r) + 1.0;
  const int64_t ni = bit_cast_<int64_t>(shifted) - bit_cast_<int64_t>(kShifter);
  // round(n / 2)
  const int64_t na = bit_cast_<int64_t>(n * 0.5 + kShifter) - bit_cast_<int64_t>(kShifter);
  const int64_t nb = ni - na;                                            // each in -538..512
  const double sa = bit_cast_<double>((na + 1023) << 52);
  const double sb = bit_cast_<double>((nb + 1023) << 52);
  return (p * sa) * sb;
}
// The range exp_clamped takes: below lo every result is 0, above hi every result is +inf.
template <typename T>
struct ExpRange;
template <>
struct ExpRange<float> {
  static constexpr float lo = -104.0f, hi = 89.0f;
};
template <>
struct ExpRange<double> {
  static constexpr double lo = -746.0, hi = 710.0;
};

// exp(x), float or double.  NaN is returned as NaN without ever converting it to an integer.
template <typename T>
FUSEDRNN_HD T exp_poly(T x) {
  const bool nan = x != x;
  const T y = exp_clamped(nan ? T(0) : clamp_(x, ExpRange<T>::lo, ExpRange<T>::hi));
  return nan ? x : y;
}
// exp(x) for x <= 0 in fewer operations (the sigmoid and tanh of every gate go through it): no
// overflow side to guard, and NaN, which the callers return unchanged themselves, taken to
// the clamp (never converted to an integer) instead of carried.
template <typename T>
FUSEDRNN_HD T exp_nonpositive(T x) {
  const T lo = ExpRange<T>::lo;
  return exp_clamped(x > lo ? x : lo);
}
// The float one (every gate's sigmoid and tanh): exp_clamped's result, bit for bit, with 2^n
// applied in four vector operations instead of nine: p * 2^(n+64) by adding n + 64 to the
// exponent field of p (a normal number for every n down to -150, p being in [0.7, 1.5]), then
// one multiplication by 2^-64, which rounds a subnormal result once, as exp_clamped's second
// factor does.  Measured (GCC 12, a row of 256 LSTM units in isolation): 33.6 against 37.3 ns
// per 16 units with AVX-512, 56.5 against 61.7 with AVX2; every result the same bits.
FUSEDRNN_HD float exp_nonpositive(float x) {
  const float xc = x > ExpRange<float>::lo ? x : ExpRange<float>::lo;
  float shifted;
  const float p = exp_reduced(xc, shifted);
  const uint32_t bits = bit_cast_<uint32_t>(p) + (float_exponent_plus(shifted, 64) << 23);
  return bit_cast_<float>(bits) * 0x1p-64f;
}

// expm1(y) for y <= 0 (down to -inf), accurate relative to the result also near 0:
// y = n ln2 + r, expm1(y) = 2^n expm1(r) + (2^n - 1).  Below -40 it is -1 to double precision.
FUSEDRNN_HD double expm1_nonpositive(double y) {
  const double yc = y != y ? 0.0 : clamp_(y, -40.0, 0.0);  // the caller keeps NaN
  const double shifted = yc * kLog2e + kShifter;
  const double n = shifted - kShifter;  // in -58..0
  double r = yc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  const double em = expm1_tail(r) * r * r + r;
  const int64_t ni = bit_cast_<int64_t>(shifted) - bit_cast_<int64_t>(kShifter);
  const double s = bit_cast_<double>((ni + 1023) << 52);  // 2^n
  return s * em + (s - 1.0);
}

FUSEDRNN_HD float exp_(float x) { return exp_poly(x); }
FUSEDRNN_HD double exp_(double x) { return exp_poly(x); }
#if defined(__CUDA_ARCH__)
FUSEDRNN_HD float abs_(float x) { return fabsf(x); }
FUSEDRNN_HD double abs_(double x) { return ::fabs(x); }
FUSEDRNN_HD float copysign_(float m, float s) { return copysignf(m, s); }
FUSEDRNN_HD double copysign_(double m, double s) { return ::copysign(m, s); }
#else
FUSEDRNN_HD float abs_(float x) { return std::fabs(x); }
FUSEDRNN_HD double abs_(double x) { return std::fabs(x); }
FUSEDRNN_HD float copysign_(float m, float s) { return std::copysign(m, s); }
FUSEDRNN_HD double copysign_(double m, double s) { return std::copysign(m, s); }
#endif

// sigmoid(x) = 1 / (1 + e^-x) = e^x / (1 + e^x): the second form for x < 0 keeps tiny values
// (sigmoid(-100) ~ 3.7e-44) instead of 1 / (1 + inf) = 0.  NaN stays NaN.
template <typename T>
FUSEDRNN_HD T sigmoid(T x) {
  const T e = exp_nonpositive(-abs_(x));
  const T s = T(1) / (T(1) + e);
  return x >= T(0) ? s : (x < T(0) ? e * s : x);
}

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|).  NaN stays NaN.
FUSEDRNN_HD float tanh_(float x) {
  const float e = exp_nonpositive(-2.0f * abs_(x));
  const float t = (1.0f - e) / (1.0f + e);
  return x != x ? x : copysign_(t, x);
}
// tanh(x) = sign(x) * -m / (2 + m), m = expm1(-2|x|): no cancellation near 0.  NaN stays NaN.
FUSEDRNN_HD double tanh_(double x) {
  const double m = expm1_nonpositive(-2.0 * abs_(x));
  const double t = -m / (2.0 + m);
  return x != x ? x : copysign_(t, x);
}

template <typename T>
FUSEDRNN_HD T relu(T x) {
  return x > T(0) ? x : (x != x ? x : T(0));  // keeps NaN
}

// The cell nonlinearity and its derivative expressed through its output y = act(z).
template <Act A, typename T>
FUSEDRNN_HD T apply(T z) {
  if constexpr (A == Act::Tanh) return tanh_(z);
  else return relu(z);
}
template <Act A, typename T>
FUSEDRNN_HD T grad_from_output(T y) {
  if constexpr (A == Act::Tanh) return T(1) - y * y;  // d tanh(z) = 1 - tanh(z)^2
  else return y > T(0) ? T(1) : T(0);                // d relu(z) = [z > 0] = [relu(z) > 0]
}
// The same derivative from the pre-activation z (needed where only z is kept).
template <Act A, typename T>
FUSEDRNN_HD T grad_from_input(T z, T y) {
  if constexpr (A == Act::Tanh) return T(1) - y * y;
  else return z > T(0) ? T(1) : T(0);
}

}  // namespace fusedrnn::act
