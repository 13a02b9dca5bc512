// Elementwise activations, written so that the compiler vectorises loops that call them.
// float uses a polynomial exp (max error ~2 ulp); double uses the C library.
// Host and device run the same polynomial (parity with the CPU kernels); only the clamps and
// the bit casts are spelled with the device's own functions in device code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fusedrnn/common.h"
#include "fusedrnn/macros.h"

namespace fusedrnn::act {

// exp(x) for float: x = n*ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial, and
// 2^n applied as two factors 2^a 2^b (a + b = n) so that results from the subnormal range up to
// overflow (+inf past ~88.72) come out right.
// NaN is returned as NaN without ever converting it to an integer.
FUSEDRNN_HD float exp_poly(float x) {
  const bool nan = x != x;
#if defined(__CUDA_ARCH__)
  const float xc = nan ? 0.0f : fminf(fmaxf(x, -104.0f), 89.0f);
#else
  const float xc = nan ? 0.0f : std::min(std::max(x, -104.0f), 89.0f);
#endif
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t ni = static_cast<int32_t>(n);  // in -150..128
  const int32_t na = ni / 2, nb = ni - na;     // each in -75..64: normal powers of two
  const uint32_t bits_a = static_cast<uint32_t>(na + 127) << 23;
  const uint32_t bits_b = static_cast<uint32_t>(nb + 127) << 23;
  float sa, sb;
#if defined(__CUDA_ARCH__)
  sa = __uint_as_float(bits_a);
  sb = __uint_as_float(bits_b);
#else
  std::memcpy(&sa, &bits_a, sizeof sa);
  std::memcpy(&sb, &bits_b, sizeof sb);
#endif
  const float y = (p * sa) * sb;
  return nan ? x : y;
}

FUSEDRNN_HD float exp_(float x) { return exp_poly(x); }
#if defined(__CUDA_ARCH__)
FUSEDRNN_HD double exp_(double x) { return ::exp(x); }
FUSEDRNN_HD float abs_(float x) { return fabsf(x); }
FUSEDRNN_HD double abs_(double x) { return ::fabs(x); }
#else
FUSEDRNN_HD double exp_(double x) { return std::exp(x); }
FUSEDRNN_HD float abs_(float x) { return std::fabs(x); }
FUSEDRNN_HD double abs_(double x) { return std::fabs(x); }
#endif

// sigmoid(x) = 1 / (1 + e^-x) = e^x / (1 + e^x): the second form for x < 0 keeps tiny values
// (sigmoid(-100) ~ 3.7e-44) instead of 1 / (1 + inf) = 0.  NaN stays NaN.
template <typename T>
FUSEDRNN_HD T sigmoid(T x) {
  const T e = exp_(-abs_(x));
  const T s = T(1) / (T(1) + e);
  return x >= T(0) ? s : (x < T(0) ? e * s : x);
}

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|)
FUSEDRNN_HD float tanh_(float x) {
  const float e = exp_poly(-2.0f * abs_(x));
  const float t = (1.0f - e) / (1.0f + e);
#if defined(__CUDA_ARCH__)
  return copysignf(t, x);
#else
  return std::copysign(t, x);
#endif
}
#if defined(__CUDA_ARCH__)
FUSEDRNN_HD double tanh_(double x) { return ::tanh(x); }
#else
FUSEDRNN_HD double tanh_(double x) { return std::tanh(x); }
#endif

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
