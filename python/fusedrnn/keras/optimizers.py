"""Optimisers (SGD with momentum/Nesterov, Adam, AdamW, RMSprop) and learning-rate schedules.

An optimiser updates arrays in place from their gradients:

    opt = Adam(learning_rate=1e-3, global_clipnorm=1.0)
    opt.apply([(key, param, grad), ...])      # one step; keys name the per-parameter state

The update rules and defaults are Keras' (noted on each class).  ``global_clipnorm`` rescales
all gradients together when their joint L2 norm exceeds it.  ``learning_rate`` is a number or
a schedule, a function of the step count ``iterations`` (0 for the first step).

get_config() / from_config() rebuild an optimiser; get_state() / set_state() carry its step
count and slot arrays (momenta) so that a restored optimiser continues exactly.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _core
from ..layers import arrays_changed

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "ExponentialDecay", "CosineDecay",
           "PiecewiseConstantDecay", "get", "global_norm"]


def _positive(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, "
                         f"got {value!r}")
    return float(value)


def _fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


# --- learning-rate schedules ------------------------------------------------------------------

class Schedule:
    """A learning rate as a function of the optimiser's step count."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class ExponentialDecay(Schedule):
    """initial * decay_rate ** (step / decay_steps), the exponent floored when staircase."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.decay_rate = _positive(decay_rate, "decay_rate")
        self.staircase = bool(staircase)

    def __call__(self, step):
        p = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (math.floor(p) if self.staircase else p)

    def get_config(self):
        return dict(initial_learning_rate=self.initial_learning_rate, decay_steps=self.decay_steps,
                    decay_rate=self.decay_rate, staircase=self.staircase)


class CosineDecay(Schedule):
    """Half a cosine from initial down to initial * alpha over decay_steps, then flat; with
    warmup_steps, a linear ramp from 0 first."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_steps=0):
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.alpha = _fraction(alpha, "alpha") if alpha != 1 else 1.0
        self.warmup_steps = int(_positive(warmup_steps, "warmup_steps", allow_zero=True))

    def __call__(self, step):
        if step < self.warmup_steps:
            return self.initial_learning_rate * (step + 1) / self.warmup_steps
        p = min(step - self.warmup_steps, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1 + math.cos(math.pi * p))
        return self.initial_learning_rate * ((1 - self.alpha) * cosine + self.alpha)

    def get_config(self):
        return dict(initial_learning_rate=self.initial_learning_rate, decay_steps=self.decay_steps,
                    alpha=self.alpha, warmup_steps=self.warmup_steps)


class PiecewiseConstantDecay(Schedule):
    """values[i] while step < boundaries[i] (values has one more entry than boundaries)."""

    def __init__(self, boundaries, values):
        self.boundaries = [int(b) for b in boundaries]
        self.values = [_positive(v, "values") for v in values]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"values needs len(boundaries) + 1 = {len(self.boundaries) + 1} "
                             f"entries, got {len(self.values)}")
        if self.boundaries != sorted(self.boundaries):
            raise ValueError(f"boundaries must be increasing, got {self.boundaries}")

    def __call__(self, step):
        for b, v in zip(self.boundaries, self.values):
            if step < b:
                return v
        return self.values[-1]

    def get_config(self):
        return dict(boundaries=self.boundaries, values=self.values)


_SCHEDULES = {c.__name__: c for c in (ExponentialDecay, CosineDecay, PiecewiseConstantDecay)}


def _learning_rate(value):
    if isinstance(value, Schedule) or callable(value):
        return value
    return _positive(value, "learning_rate")


# --- optimisers -------------------------------------------------------------------------------

def _on_device(a) -> bool:
    """True for a CUDA DeviceArray (a parameter, gradient or slot kept on the device)."""
    return _core.cuda_compiled and isinstance(a, _core.DeviceArray)


def _host(a):
    """A NumPy array for a slot array on either side."""
    return a.numpy() if _on_device(a) else a


def global_norm(grads) -> float:
    """sqrt of the sum of squares of every gradient entry (NumPy or device arrays), each
    array's sum taken to float64 and the arrays' sums added in float64."""
    return math.sqrt(sum(_core.cuda_sum_squares(g) if _on_device(g) else float(np.vdot(g, g))
                         for g in grads))


class Optimizer:
    _slots: tuple = ()  # names of the per-parameter state arrays
    # _native_args(lr): the rule's constants for fusedrnn._core.optimizer_update, the same
    # rule in one compiled pass (bit-identical to _update); used for the classes in _NATIVE.

    def __init__(self, learning_rate, global_clipnorm=None, clipnorm=None, clipvalue=None, *,
                 lr=None, name=None, decay=0.0):
        if lr is not None:  # the tf.keras 2 name, still common in tutorials
            learning_rate = lr
        if decay:
            raise ValueError(f"decay={decay!r} (the legacy per-step decay) is not supported; pass a "
                             "schedule as learning_rate, e.g. optimizers.ExponentialDecay(...)")
        self.learning_rate = _learning_rate(learning_rate)
        self.global_clipnorm = None if global_clipnorm is None else _positive(global_clipnorm, "global_clipnorm")
        self.clipnorm = None if clipnorm is None else _positive(clipnorm, "clipnorm")
        self.clipvalue = None if clipvalue is None else _positive(clipvalue, "clipvalue")
        given = [k for k in ("clipnorm", "clipvalue", "global_clipnorm") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of clipnorm, clipvalue and global_clipnorm, got {given}")
        self.name = name
        self.iterations = 0
        self.state: dict = {}  # slot name -> {key: array}

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        lr = self.learning_rate
        return float(lr(self.iterations)) if callable(lr) else lr

    def apply(self, triples) -> None:
        """One step over (key, param, grad) triples, params updated in place.

        The slot arrays are kept flat with per-key views.  The built-in rules run in one
        compiled pass over the parameters (fusedrnn._core.optimizer_update, the same operations
        in the same order as _update); otherwise, and for subclasses, _update runs once over
        all parameters laid end to end (one flat copy of the params and grads), not once per
        parameter: a model's dozen small arrays would otherwise cost a dozen rounds of NumPy
        calls per step.

        Triples of CUDA device arrays (a layer's ``trainable()`` on device='cuda') are stepped
        on the device by the same rules (bit-identical), with their slots kept there too;
        clipping and the global norm take every triple into account, host and device alike."""
        triples = list(triples)
        if not triples:
            return
        device = [t for t in triples if _on_device(t[1])]
        host = [t for t in triples if not _on_device(t[1])] if device else triples
        if self.clipnorm is not None or self.clipvalue is not None:
            host = [(k, p, self._clip(g)) for k, p, g in host]
        scale = 1.0
        if self.global_clipnorm is not None:
            norm = global_norm([g for _, _, g in host + device])
            if norm > self.global_clipnorm:
                scale = self.global_clipnorm / norm
        lr = self.lr
        self.iterations += 1
        if host:
            self._apply_host(host, lr, scale)
            arrays_changed(p for _, p, _ in host)  # the layers' packed copies are made again
        if device:
            self._apply_device(device, lr, scale)

    def _apply_host(self, triples, lr, scale) -> None:
        grads = [g for _, _, g in triples]
        dtype = triples[0][1].dtype
        if any(p.dtype != dtype or g.dtype != dtype for _, p, g in triples):
            for key, p, g in triples:  # mixed dtypes: one parameter at a time
                if scale != 1.0:
                    g = g * p.dtype.type(scale)
                slots = {name: self._slot(name, key, p) for name in self._slots}
                self._update(p, g, lr, slots)
            return
        rule = _NATIVE.get(type(self))  # a subclass may change _update: NumPy
        if rule is not None and _core.optimizer_update(
                rule, [p for _, p, _ in triples], grads,
                list(self._flat_slots(triples).values()), lr=lr, scale=scale,
                **self._native_args(lr)):
            return
        flat_g = np.concatenate([g.reshape(-1) for g in grads])
        if scale != 1.0:
            flat_g *= dtype.type(scale)
        flat_p = np.concatenate([p.reshape(-1) for _, p, _ in triples])
        self._update(flat_p, flat_g, lr, self._flat_slots(triples))
        offset = 0
        for _, p, _ in triples:
            np.copyto(p, flat_p[offset:offset + p.size].reshape(p.shape))
            offset += p.size

    def _apply_device(self, triples, lr, scale) -> None:
        """The step for triples of device arrays; each slot is a device array per key."""
        rule = _NATIVE.get(type(self))
        if rule is None:  # a subclass's own _update: NumPy on host copies, written back
            for key, p, g in triples:
                ph, gh = p.numpy(), g.numpy()
                if self.clipnorm is not None or self.clipvalue is not None:
                    gh = self._clip(gh)
                if scale != 1.0:
                    gh = gh * ph.dtype.type(scale)
                self._update(ph, gh, lr, {name: self._slot(name, key, ph) for name in self._slots})
                p.copy_from(ph)
            return
        for dtype in {p.dtype for _, p, _ in triples}:  # one call per dtype
            group = [t for t in triples if t[1].dtype == dtype]
            scales = []
            if self.clipnorm is not None:
                norms = [global_norm([g]) for _, _, g in group]
                scales = [self.clipnorm / n if n > self.clipnorm else 1.0 for n in norms]
            slots = [[self._device_slot(name, k, p) for k, p, _ in group] for name in self._slots]
            _core.cuda_optimizer_update(
                rule, [p for _, p, _ in group], [g for _, _, g in group], slots, lr=lr, scale=scale,
                scales=scales, clip=self.clipvalue or 0.0, **self._native_args(lr))

    def _device_slot(self, name, key, p):
        """The device array of one slot for one key (zeros at first; a host array found there,
        from set_state or a step on the host, is uploaded)."""
        table = self.state.setdefault(name, {})
        slot = table.get(key)
        if not _on_device(slot):
            host = np.zeros(p.shape, p.dtype) if slot is None else np.ascontiguousarray(slot, p.dtype)
            slot = table[key] = _core.DeviceArray.from_numpy(host)
            self._flat = None
        return slot

    def _clip(self, g):
        """One gradient after clipnorm (its own norm at most clipnorm) or clipvalue."""
        if self.clipvalue is not None:
            return np.clip(g, -self.clipvalue, self.clipvalue)
        norm = global_norm([g])
        return g * g.dtype.type(self.clipnorm / norm) if norm > self.clipnorm else g

    def _flat_slots(self, triples):
        """Each slot as one flat array over the triples' parameters; state[slot][key] are
        views into it (rebuilt when the parameters change, keeping existing values)."""
        layout = tuple((k, p.shape, p.dtype.str) for k, p, _ in triples)
        cached = getattr(self, "_flat", None)
        if cached is not None and cached[0] == layout:
            return cached[1]
        flats = {}
        for name in self._slots:
            table = self.state.setdefault(name, {})
            flat = np.concatenate([_host(table[k]).reshape(-1) if k in table else np.zeros(p.size, p.dtype)
                                   for k, p, _ in triples]).astype(triples[0][1].dtype, copy=False)
            offset = 0
            for k, p, _ in triples:
                table[k] = flat[offset:offset + p.size].reshape(p.shape)
                offset += p.size
            flats[name] = flat
        self._flat = (layout, flats)
        return flats

    def _slot(self, name, key, p):
        self._flat = None
        table = self.state.setdefault(name, {})
        if key not in table:
            table[key] = np.zeros_like(p)
        elif _on_device(table[key]):
            table[key] = table[key].numpy()
        return table[key]

    def _update(self, p, g, lr, slots) -> None:
        raise NotImplementedError

    # --- configuration and state --------------------------------------------------------------

    def _options(self) -> dict:
        return {}

    def get_config(self) -> dict:
        lr = self.learning_rate
        if isinstance(lr, Schedule):
            lr = {"schedule": type(lr).__name__, "config": lr.get_config()}
        elif callable(lr):
            raise ValueError("a learning_rate given as a plain function cannot be saved; use one "
                             "of fusedrnn.optimizers' schedules (ExponentialDecay, CosineDecay, ...)")
        cfg = {"learning_rate": lr, "global_clipnorm": self.global_clipnorm}
        cfg.update({k: getattr(self, k) for k in ("clipnorm", "clipvalue") if getattr(self, k) is not None})
        cfg.update(self._options())
        return cfg

    @classmethod
    def from_config(cls, config):
        cfg = dict(config)
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict):
            cfg["learning_rate"] = _SCHEDULES[lr["schedule"]](**lr["config"])
        return cls(**cfg)

    def get_state(self):
        """(iterations, {slot: {key: array}}) with copies of the arrays."""
        copy = lambda a: a.numpy() if _on_device(a) else a.copy()  # noqa: E731  (numpy() copies)
        return self.iterations, {s: {k: copy(a) for k, a in t.items()} for s, t in self.state.items()}

    def set_state(self, iterations, state) -> None:
        self._flat = None
        self.iterations = int(iterations)
        self.state = {s: {k: np.array(a) for k, a in t.items()} for s, t in state.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class SGD(Optimizer):
    """Keras' SGD: v = momentum v - lr g; p += v, or with nesterov p += momentum v - lr g."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, global_clipnorm=None, **keras_args):
        super().__init__(learning_rate, global_clipnorm, **keras_args)
        self.momentum = _fraction(momentum, "momentum")
        self.nesterov = bool(nesterov)
        self._slots = ("velocity",) if self.momentum > 0 else ()

    def _options(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _native_args(self, lr):
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _update(self, p, g, lr, slots):
        t = p.dtype.type
        if self.momentum == 0:
            p -= t(lr) * g
            return
        v = slots["velocity"]
        v *= t(self.momentum)
        v -= t(lr) * g
        if self.nesterov:
            p += t(self.momentum) * v - t(lr) * g
        else:
            p += v


class Adam(Optimizer):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), t = 1, 2, ...
    Keras' defaults; the bias correction is written as torch's Adam writes it (Keras folds it
    into the learning rate, which scales eps by sqrt(1 - b2^t): a difference only near eps)."""

    _slots = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 global_clipnorm=None, **keras_args):
        super().__init__(learning_rate, global_clipnorm, **keras_args)
        self.beta_1 = _fraction(beta_1, "beta_1")
        self.beta_2 = _fraction(beta_2, "beta_2")
        self.epsilon = _positive(epsilon, "epsilon")

    def _options(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def _corrections(self):
        """The bias corrections 1 - beta_1^t and 1 - beta_2^t of this step."""
        step = self.iterations  # already counts this step
        return 1 - self.beta_1 ** step, 1 - self.beta_2 ** step

    def _native_args(self, lr):
        c1, c2 = self._corrections()
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "lr_c1": lr / c1, "c2": c2}

    def _update(self, p, g, lr, slots):
        t = p.dtype.type
        m, v = slots["m"], slots["v"]
        m *= t(self.beta_1)
        m += t(1 - self.beta_1) * g
        v *= t(self.beta_2)
        v += t(1 - self.beta_2) * (g * g)
        c1, c2 = self._corrections()
        denom = np.sqrt(v / t(c2))
        denom += t(self.epsilon)
        p -= t(lr / c1) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay: p -= lr * weight_decay * p before the Adam step."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, global_clipnorm=None, **keras_args):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, global_clipnorm, **keras_args)
        self.weight_decay = _positive(weight_decay, "weight_decay", allow_zero=True)

    def _options(self):
        return {"weight_decay": self.weight_decay, **super()._options()}

    def _native_args(self, lr):
        return dict(super()._native_args(lr), decay=1 - lr * self.weight_decay)

    def _update(self, p, g, lr, slots):
        p *= p.dtype.type(1 - lr * self.weight_decay)
        super()._update(p, g, lr, slots)


class RMSprop(Optimizer):
    """Keras' RMSprop: v = rho v + (1-rho) g^2; step = lr g / (sqrt(v) + eps);
    with momentum, mom = momentum mom + step and p -= mom, else p -= step."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 global_clipnorm=None, **keras_args):
        super().__init__(learning_rate, global_clipnorm, **keras_args)
        self.rho = _fraction(rho, "rho")
        self.momentum = _fraction(momentum, "momentum")
        self.epsilon = _positive(epsilon, "epsilon")
        self._slots = ("v", "momentum") if self.momentum > 0 else ("v",)

    def _options(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon}

    def _native_args(self, lr):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon}

    def _update(self, p, g, lr, slots):
        t = p.dtype.type
        v = slots["v"]
        v *= t(self.rho)
        v += t(1 - self.rho) * (g * g)
        denom = np.sqrt(v)
        denom += t(self.epsilon)
        step = t(lr) * g / denom
        if self.momentum > 0:
            mom = slots["momentum"]
            mom *= t(self.momentum)
            mom += step
            p -= mom
        else:
            p -= step


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
_NATIVE = {SGD: "sgd", Adam: "adam", AdamW: "adam", RMSprop: "rmsprop"}
_CLASSES = {c.__name__: c for c in _BY_NAME.values()}


def get(optimizer) -> Optimizer:  # noqa: D401
    """An optimiser from its Keras name ('adam', 'sgd', 'rmsprop', 'adamw'), with Keras'
    defaults, or an Optimizer instance."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer()
    if isinstance(optimizer, str) and optimizer.lower() in _BY_NAME:
        return _BY_NAME[optimizer.lower()]()
    raise ValueError(f"unknown optimizer {optimizer!r}; choose from {sorted(_BY_NAME)} or pass "
                     "an Optimizer instance")


def to_config(opt: Optimizer) -> dict:
    return {"class": type(opt).__name__, "config": opt.get_config()}


def from_config(cfg) -> Optimizer:
    return _CLASSES[cfg["class"]].from_config(cfg["config"])
