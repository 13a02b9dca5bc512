// The optimiser rules of fusedrnn.keras.optimizers (SGD with momentum/Nesterov, Adam, AdamW,
// RMSprop) for one parameter entry, shared by the CPU pass (csrc/bindings/optim.cc) and the
// CUDA kernel (csrc/cuda/optim.cu).  The NumPy formulation in optimizers.py is the
// definition: every operation here is the same IEEE operation in the same order and dtype, and
// both callers are compiled without contraction into fused multiply-adds, so parameters and
// slots come out bit-identical to NumPy's on either device.
#pragma once

#include <cmath>
#include <cstdint>

#include "fusedrnn/macros.h"

namespace fusedrnn::optim {

enum class Kind : int32_t { Sgd = 0, Adam = 1, RmsProp = 2 };

// The rule's constants as Python passes them (doubles, in the forms optimizers.py rounds).
struct Rule {
  Kind kind = Kind::Sgd;
  double lr = 0, momentum = 0, beta_1 = 0, beta_2 = 0, epsilon = 0, rho = 0;
  double lr_c1 = 0, c2 = 1;  // Adam: lr / (1 - beta_1^t) and 1 - beta_2^t
  double decay = 1;          // AdamW: p *= decay before the step
  double scale = 1;          // global_clipnorm (or clipnorm): g *= scale first
  double clip = 0;           // clipvalue: g = clip(g, -clip, clip) first (0: none)
  bool nesterov = false;
};

// The same constants rounded once to the dtype, as NumPy rounds a Python float operand.
template <typename T>
struct Consts {
  Kind kind;
  T scale, clip, lr, mom, b1, b2, one_b1, one_b2, c2, eps, lr_c1, decay, rho, one_rho;
  bool scaled, clipped, decayed, nesterov, momentum;

  explicit Consts(const Rule& r)
      : kind(r.kind), scale(T(r.scale)), clip(T(r.clip)), lr(T(r.lr)), mom(T(r.momentum)), b1(T(r.beta_1)),
        b2(T(r.beta_2)), one_b1(T(1 - r.beta_1)), one_b2(T(1 - r.beta_2)), c2(T(r.c2)), eps(T(r.epsilon)),
        lr_c1(T(r.lr_c1)), decay(T(r.decay)), rho(T(r.rho)), one_rho(T(1 - r.rho)), scaled(r.scale != 1.0),
        clipped(r.clip > 0), decayed(r.decay != 1.0), nesterov(r.nesterov), momentum(r.momentum > 0) {}
};

FUSEDRNN_HD float root(float v) { return sqrtf(v); }
FUSEDRNN_HD double root(double v) { return sqrt(v); }

// The gradient entry the rule sees: clipped (np.clip) and scaled as the Python side would.
template <typename T>
FUSEDRNN_HD T grad_in(const Consts<T>& c, T g) {
  if (c.clipped) g = g < -c.clip ? -c.clip : (g > c.clip ? c.clip : g);
  return c.scaled ? g * c.scale : g;
}

// SGD: v = mom v - lr g; p += v, or with nesterov p += mom v - lr g; without momentum p -= lr g.
template <typename T>
FUSEDRNN_HD void sgd(const Consts<T>& c, T& p, T g, T* v) {
  if (!c.momentum) {
    p -= c.lr * g;
    return;
  }
  *v = *v * c.mom - c.lr * g;
  p += c.nesterov ? c.mom * *v - c.lr * g : *v;
}

// Adam (AdamW with decay != 1): m, v moments; p -= lr_c1 m / (sqrt(v / c2) + eps).
template <typename T>
FUSEDRNN_HD void adam(const Consts<T>& c, T& p, T g, T* m, T* v) {
  T pi = c.decayed ? p * c.decay : p;
  const T mi = *m * c.b1 + c.one_b1 * g;
  const T vi = *v * c.b2 + c.one_b2 * (g * g);
  *m = mi;
  *v = vi;
  pi -= c.lr_c1 * mi / (root(vi / c.c2) + c.eps);
  p = pi;
}

// RMSprop: v = rho v + (1 - rho) g^2; step = lr g / (sqrt(v) + eps); with momentum it runs
// through the second slot.
template <typename T>
FUSEDRNN_HD void rmsprop(const Consts<T>& c, T& p, T g, T* v, T* mom) {
  const T vi = *v * c.rho + c.one_rho * (g * g);
  *v = vi;
  const T step = c.lr * g / (root(vi) + c.eps);
  if (c.momentum) {
    *mom = *mom * c.mom + step;
    p -= *mom;
  } else {
    p -= step;
  }
}

// Entry i of one parameter (s0, s1 the slots at the same offsets, or nullptr when the rule
// keeps fewer).
template <typename T>
FUSEDRNN_HD void update_entry(const Consts<T>& c, T* p, const T* g, T* s0, T* s1, int64_t i) {
  const T gi = grad_in(c, g[i]);
  switch (c.kind) {
    case Kind::Sgd:
      sgd(c, p[i], gi, s0 ? s0 + i : nullptr);
      return;
    case Kind::Adam:
      adam(c, p[i], gi, s0 + i, s1 + i);
      return;
    case Kind::RmsProp:
      rmsprop(c, p[i], gi, s0 + i, s1 ? s1 + i : nullptr);
      return;
  }
}

// Slot arrays each rule keeps.
inline int slots_of(const Rule& r) {
  switch (r.kind) {
    case Kind::Sgd:
      return r.momentum > 0 ? 1 : 0;
    case Kind::Adam:
      return 2;
    case Kind::RmsProp:
      return r.momentum > 0 ? 2 : 1;
  }
  return 0;
}

}  // namespace fusedrnn::optim
