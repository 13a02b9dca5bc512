"""torch.nn-shaped LSTM, GRU and RNN layers over the fused kernels: NumPy in, NumPy out.

    lstm = LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                dropout=0.0, bidirectional=False, proj_size=0, activation='tanh',
                dtype='float32', seed=None)
    out, (h_n, c_n) = lstm(x, (h0, c0)=None, lengths=None)
    dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n)=None)
    out, h_n = gru(x, h0=None, lengths=None);  dx, dh0 = gru.backward(dout, dh_n=None)

Shapes are torch's: x is (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched;
states are (num_layers * num_directions, B, H) (h is P-sized for a projected LSTM); out is
(T, B, num_directions * P).  ``lengths`` gives each sequence's length in a right-padded batch;
the results are torch's with pack_padded_sequence (zeros in ``out`` past each length).  Cell
equations, gate order and the lengths/reverse semantics: docs/conventions.md.

The interface other modules build on:
    params        dict name -> array, torch's state_dict names; updated in place by optimisers
    grads         same keys; backward adds (+=) into it, zero_grad() clears it
    forward / __call__, backward, train(), eval(), training
    get_config() / from_config(), state_dict() / load_state_dict(), save() / load()

A training forward keeps, per layer and direction, the kernels' cache (which references the
layer's input and weight arrays rather than copying them), so modify neither between a
forward and its backward.  One backward per training forward, as in torch.

Threads: one layer may be called from several threads at once.  Each thread's backward uses
that thread's own last training forward (the trace is kept per thread), and the gradients are
added into ``grads`` under a lock, so concurrent backward calls sum exactly as serial ones
would (up to the order of the floating-point sums).  Changing the weights (an optimiser step,
load_state_dict) while another thread runs a forward is the caller's to synchronise.
Layers pickle and deep-copy (configuration, weights, grads, rng; no trace).

Streaming: ``out_t, state = layer.step(x_t, state)`` runs one time step of every layer
(fusedrnn/layers_step.py).  It, the forward on the CPU of a layer in eval mode (after
``layer.eval()``) and the CUDA path keep copies of the weights (packed, or on the device), made
again only when the layer's weight version (``params.version``) has moved on, so many short
calls do not repack.  Every API
that changes weights moves it: assigning ``params[name]``, load_state_dict, reset_parameters,
load_keras_weights, the Keras trainer's set_weights/load, backward() (an optimiser updates
the arrays in place after it) and an optimiser's ``apply`` on the layer's arrays (with or
without a backward before it).  An edit of a parameter array in place made any other way
(``layer.params['weight_hh_l0'][...] = 0`` outside a training step) cannot be seen by
step() or the CPU forward of a layer in eval mode: call ``layer.weights_changed()`` after it
(the CUDA path compares the arrays as well; in train mode, the default, every forward reads the
arrays, so finite-difference checks that nudge weights in place need nothing).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import threading
import warnings
import weakref
from collections.abc import Mapping

import numpy as np

from . import _core, _dask, _device, _npz, ops
from ._files import path_str
from .layers_step import StepMixin
from ._checks import GATES, check_bool, check_int, float_dtype, shape_str
from .keras_import import from_keras_weights, to_keras_weights

__all__ = ["LSTM", "GRU", "RNN"]

_FILE_FORMAT = 1
# Constructor defaults, so repr() shows only what differs (as torch's does).
_DEFAULTS = dict(num_layers=1, bias=True, batch_first=False, dropout=0.0, bidirectional=False,
                 proj_size=0, activation="tanh", nonlinearity="tanh", dtype="float32")


def _act(value, name: str) -> str:
    if value not in ("tanh", "relu"):
        raise ValueError(f"{name} must be 'tanh' or 'relu', got {value!r}")
    return value


def _shapes(cell, input_size, hidden_size, num_layers, bias, num_directions, proj_size):
    """(parameter name, shape) pairs in torch's order, generated one at a time."""
    G, H, P = GATES[cell], hidden_size, proj_size or hidden_size
    for layer in range(num_layers):
        for direction in range(num_directions):
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            I = input_size if layer == 0 else num_directions * P
            yield "weight_ih" + sfx, (G * H, I)
            yield "weight_hh" + sfx, (G * H, P)
            if bias:
                yield "bias_ih" + sfx, (G * H,)
                yield "bias_hh" + sfx, (G * H,)
            if proj_size:
                yield "weight_hr" + sfx, (P, H)


def _param_count(cell, input_size, hidden_size, num_layers, bias, num_directions, proj_size) -> int:
    """Number of parameters _shapes lists, in closed form (however many layers)."""
    G, H, P, D = GATES[cell], hidden_size, proj_size or hidden_size, num_directions
    per_layer = G * H * P + (2 * G * H if bias else 0) + (P * H if proj_size else 0)
    inputs = input_size + (num_layers - 1) * D * P  # the widths of every layer's x, summed
    return D * (G * H * inputs + num_layers * per_layer)


# Above the machine's memory (or this where it cannot be read), a layer cannot be built.
_FALLBACK_MEMORY = 1 << 40
# Bytes each array costs besides its numbers, at least (its object, its name, its dict slot).
_ARRAY_OVERHEAD = 128


def _physical_memory() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_MEMORY
    return total if total > 0 else _FALLBACK_MEMORY


def _check_param_memory(layer) -> None:
    """MemoryError, before anything is allocated, when the parameters and their gradients
    need more bytes than the machine has (a typo such as num_layers=10**9 would otherwise
    allocate small arrays until memory runs out)."""
    count = _param_count(layer._cell, layer.input_size, layer.hidden_size, layer.num_layers,
                         layer.bias, layer.num_directions, layer.proj_size)
    arrays = layer.num_layers * layer.num_directions * (
        2 + (2 if layer.bias else 0) + (1 if layer.proj_size else 0))
    # params and grads
    need = 2 * (count * layer.dtype.itemsize + arrays * _ARRAY_OVERHEAD)
    have = _physical_memory()
    if need > have:
        raise MemoryError(f"{type(layer).__name__} with num_layers={layer.num_layers}, "
                          f"hidden_size={layer.hidden_size}, input_size={layer.input_size} needs "
                          f"{need / 2**30:.3g} GiB for its parameters and gradients ({count} "
                          f"{layer.dtype} parameters), more than this machine's "
                          f"{have / 2**30:.3g} GiB of memory")


# Parameter name (before its layer/direction suffix) -> its gradient's key in the kernels' dict.
_GRAD_OF = {"weight_ih": "dw_ih", "weight_hh": "dw_hh", "bias_ih": "db_ih", "bias_hh": "db_hh",
            "weight_hr": "dw_hr"}


class _Trace:
    """What a training forward keeps for its backward."""

    def __init__(self, layers, batched, T, B):
        self.layers = layers  # per layer: ([ops cache per direction], dropout mask or None)
        self.batched = batched
        self.T, self.B = T, B


# id(parameter array) -> (weak reference to the array, {id: weak reference} of the _Params
# dicts holding it): how an optimiser's in-place step on arrays reaches the weight versions of
# the layers they are in.
_HOLDERS: dict = {}


def _release(key, ref) -> None:
    entry = _HOLDERS.get(key)
    if entry is not None and entry[0] is ref:
        del _HOLDERS[key]


def _hold(params, arr) -> None:
    """Note that the _Params dict `params` holds `arr`."""
    if type(arr) is not np.ndarray:
        return
    key = id(arr)
    entry = _HOLDERS.get(key)
    if entry is None or entry[0]() is not arr:
        entry = _HOLDERS[key] = (weakref.ref(arr, functools.partial(_release, key)), {})
    entry[1][id(params)] = weakref.ref(params)


def arrays_changed(arrays) -> None:
    """Say that these arrays were written in place (an optimiser step): the layers whose
    parameters they are count a weight change (their packed copies are made again).  Arrays
    that are no layer's parameters are ignored."""
    bumped = set()
    for arr in arrays:
        entry = _HOLDERS.get(id(arr))
        if entry is None or entry[0]() is not arr:
            continue
        for key, ref in list(entry[1].items()):
            params = ref()
            if params is not None and key not in bumped:
                bumped.add(key)
                params._bump()


class _Params(dict):
    """A layer's parameter dict, with ``version``: bumped by every change made through the
    dict itself (putting in another array), by the layer's weights_changed() and by an
    optimiser's step on its arrays (arrays_changed)."""

    version = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for arr in self.values():
            _hold(self, arr)

    def _bump(self):
        self.version += 1

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        _hold(self, value)
        self._bump()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._bump()

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        for arr in self.values():
            _hold(self, arr)
        self._bump()

    def setdefault(self, key, default=None):
        self._bump()
        value = super().setdefault(key, default)
        _hold(self, value)
        return value

    def pop(self, *args):
        self._bump()
        return super().pop(*args)

    def popitem(self):
        self._bump()
        return super().popitem()

    def clear(self):
        super().clear()
        self._bump()

    def __ior__(self, other):
        self.update(other)
        return self


class _RNNBase(StepMixin):
    """Shared machinery; the concrete classes only fix the cell and its options."""

    _cell = ""  # 'lstm' | 'gru' | 'rnn'

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, proj_size=0, act="tanh",
                 dtype="float32", seed=None, device="cpu"):
        self.input_size = check_int(input_size, "input_size", 1)
        self.hidden_size = check_int(hidden_size, "hidden_size", 1)
        self.num_layers = check_int(num_layers, "num_layers", 1)
        self.bias = check_bool(bias, "bias")
        self.batch_first = check_bool(batch_first, "batch_first")
        self.bidirectional = check_bool(bidirectional, "bidirectional")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout must be a number in [0, 1], got {type(dropout).__name__}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            # As torch: dropout acts between layers only, so one layer never uses it.
            warnings.warn(f"dropout={self.dropout} has no effect with num_layers=1: dropout is "
                          "applied between stacked layers only", UserWarning, stacklevel=3)
        self.proj_size = check_int(proj_size, "proj_size", 0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size = {self.hidden_size}, "
                             f"got {self.proj_size}")
        self._act = act
        self.dtype = float_dtype(dtype)
        if seed is not None and not isinstance(seed, np.random.Generator) and (
                isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be None, an int or a numpy.random.Generator, "
                            f"got {type(seed).__name__}")
        # An int seed is remembered for get_config(); a Generator is shared, not copied.
        self._seed = int(seed) if isinstance(seed, numbers.Integral) else None
        if isinstance(seed, numbers.Integral) and seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

        self.num_directions = 2 if self.bidirectional else 1
        self._device = "cpu"
        self._dev = None  # _device.DeviceState on CUDA
        self._init_thread_state()  # before to(): moving to a device resets the thread's trace
        self.to(device)
        self.training = True
        _check_param_memory(self)
        self.params = {name: np.empty(shape, self.dtype) for name, shape in self._param_shapes()}
        self.grads = {name: np.zeros(shape, self.dtype) for name, shape in self._param_shapes()}
        self.reset_parameters()

    # --- threads and pickling -------------------------------------------------------------

    def _init_thread_state(self) -> None:
        # Each thread keeps its own forward's trace, so concurrent forward/backward pairs on one
        # layer never mix their inputs; the lock makes the += into the shared grads atomic.
        self._local = threading.local()
        self._grad_lock = threading.Lock()
        # (direction suffix, instruction set) -> (weight version, ops.PackedWeights): the packed
        # loop's copy of the weights, kept while the version stays (see _packed_weights).
        self._packed = {}

    @property
    def _trace(self):
        return getattr(self._local, "trace", None)

    @_trace.setter
    def _trace(self, value):
        self._local.trace = value

    @property
    def _trace_state(self) -> str:
        """'none' | 'train' | 'eval' | 'used', for the calling thread's last forward."""
        return getattr(self._local, "state", "none")

    @_trace_state.setter
    def _trace_state(self, value):
        self._local.state = value

    def __getstate__(self):
        # Traces belong to the threads that made them; a copy starts with none.  The host
        # arrays are brought up to date first: a copy carries them, not the device's.
        self._pull()
        state = dict(self.__dict__)
        del state["_local"], state["_grad_lock"]
        state.pop("_packed", None)  # made again by the next forward
        state.pop("_step_model", None)  # packed weights are made again on the next step
        return state

    def __setstate__(self, state):
        if "params" in state:  # written before params carried a version
            state["_params"] = _Params(state.pop("params"))
        if "grads" in state:  # written before grads were read through a property
            state["_grads"] = state.pop("grads")
        if "_device_weights" in state:  # written before the device kept gradients too
            state["_dev"] = _device.DeviceState() if state.pop("_device_weights") is not None else None
        self.__dict__.update(state)
        self._init_thread_state()

    # --- configuration --------------------------------------------------------------------

    @property
    def _P(self) -> int:
        """Size of h (and of each direction's output): proj_size if set, else hidden_size."""
        return self.proj_size or self.hidden_size

    def _slots(self):
        """(layer, direction, name suffix) in torch's parameter order."""
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                yield layer, direction, f"_l{layer}" + ("_reverse" if direction else "")

    def _param_shapes(self):
        return _shapes(self._cell, self.input_size, self.hidden_size, self.num_layers, self.bias,
                       self.num_directions, self.proj_size)

    @classmethod
    def param_shapes(cls, config: Mapping):
        """(parameter name, shape) pairs of the layer ``cls.from_config(config)`` would build,
        generated without building it (so a file's header can be checked against its arrays
        first, however large the header says the layer is)."""
        c = dict(_DEFAULTS, **config)
        return _shapes(cls._cell, check_int(c["input_size"], "input_size", 1),
                       check_int(c["hidden_size"], "hidden_size", 1), check_int(c["num_layers"], "num_layers", 1),
                       check_bool(c["bias"], "bias"), 2 if check_bool(c["bidirectional"], "bidirectional") else 1,
                       check_int(c["proj_size"], "proj_size", 0) if cls._cell == "lstm" else 0)

    def get_config(self) -> dict:
        """The constructor arguments (JSON-able); ``type(self).from_config(cfg)`` rebuilds the
        layer with fresh weights.  ``seed`` is None unless an int was given."""
        cfg = dict(input_size=self.input_size, hidden_size=self.hidden_size,
                   num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                   dropout=self.dropout, bidirectional=self.bidirectional)
        cfg.update(self._extra_config())
        cfg.update(dtype=self.dtype.name, seed=self._seed)
        return cfg

    def _extra_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: Mapping):
        return cls(**config)

    def __repr__(self) -> str:
        cfg = self.get_config()
        shown = [f"{cfg['input_size']}, {cfg['hidden_size']}"]
        shown += [f"{k}={v!r}" for k, v in cfg.items() if k in _DEFAULTS and v != _DEFAULTS[k]]
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def rng(self) -> np.random.Generator:
        """The generator initial weights and dropout masks are drawn from."""
        return self._rng

    @rng.setter
    def rng(self, generator: np.random.Generator) -> None:
        if not isinstance(generator, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(generator).__name__}")
        self._rng = generator

    # --- parameters -----------------------------------------------------------------------

    @property
    def params(self) -> dict:
        """Parameter name -> array (torch's names).  Its ``version`` counts weight changes.
        On CUDA, after an optimiser step on the device, reading it copies the weights back
        into these arrays first (so hold on to the dict or its arrays only between steps)."""
        if self._dev is not None:
            self._dev.pull_params(self._params)
        return self._params

    @params.setter
    def params(self, value) -> None:
        old = self.__dict__.get("_params")
        self._params = _Params(value)
        self._params.version = (old.version + 1) if old is not None else 0
        if self._dev is not None:
            self._dev.params_newer = False  # new host arrays: they count now

    @property
    def grads(self) -> dict:
        """Gradient name -> array, the keys of ``params``; backward adds into it.  On CUDA the
        gradients are summed on the device and copied into these arrays when this is read."""
        if self._dev is not None:
            with self._grad_lock:
                self._dev.pull_grads(self._grads)
        return self._grads

    @grads.setter
    def grads(self, value) -> None:
        self._grads = dict(value)
        if self._dev is not None:
            self._dev.grads_on = "host"

    def _pull(self) -> None:
        """Bring the host arrays up to date with the device's (no-op on the CPU)."""
        if self._dev is not None:
            self._dev.pull_params(self._params)
            with self._grad_lock:
                self._dev.pull_grads(self._grads)

    def trainable(self, prefix: str = "") -> list:
        """(prefix + name, parameter, gradient) triples for an optimiser's ``apply`` (e.g.
        ``fusedrnn.keras.optimizers.Adam().apply(layer.trainable())``).  On CUDA they are the
        device arrays themselves, so the step runs on the device and the weights, gradients and
        the optimiser's slots stay there; ``params`` and ``grads`` read them back when read."""
        if self._dev is None:
            return [(prefix + k, p, self._grads[k]) for k, p in self._params.items()]
        with self._grad_lock:
            grads = self._dev.grads(self._grads)
        weights = self._dev.for_update(self._params)
        self.weights_changed()  # copies kept elsewhere (step()) are made again
        return [(prefix + k, weights[k], grads[k]) for k in self._params]

    def weights_changed(self) -> None:
        """Say that parameter arrays were edited in place outside a training step, so the
        copies kept for step() and the CUDA device are made again on their next use."""
        self._params.version += 1

    def reset_parameters(self) -> None:
        """torch's initialisation: every parameter ~ uniform(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for arr in self.params.values():
            arr[...] = self._rng.uniform(-bound, bound, size=arr.shape)
        self.weights_changed()

    def state_dict(self) -> dict:
        """Copies of the parameters, keyed by torch's names, in torch's order."""
        return {name: arr.copy() for name, arr in self.params.items()}

    def load_state_dict(self, state: Mapping) -> None:
        """Copy parameters in from any array-likes keyed by torch's names (e.g. a torch
        module's ``{k: v.numpy() for k, v in m.state_dict().items()}``).  Everything is
        checked before anything is written; arrays keep their identity (optimisers that hold
        them stay valid)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of parameter names to arrays, "
                            f"got {type(state).__name__}")
        missing = [k for k in self.params if k not in state]
        if missing:
            raise ValueError(f"state_dict is missing key {missing[0]!r} (missing: {missing}; "
                             f"{type(self).__name__} expects {list(self.params)})")
        unexpected = [k for k in state if k not in self.params]
        if unexpected:
            raise ValueError(f"state_dict has unexpected key {unexpected[0]!r} (unexpected: "
                             f"{unexpected}; {type(self).__name__} expects {list(self.params)})")
        staged = {}
        for name, target in self.params.items():
            try:
                arr = np.asarray(state[name])
            except Exception as exc:
                raise TypeError(f"state_dict[{name!r}] is not an array "
                                f"({type(state[name]).__name__}): {exc}") from exc
            if arr.dtype == np.bool_ or arr.dtype.kind not in "fiu":
                raise TypeError(f"state_dict[{name!r}] must hold real numbers, got dtype {arr.dtype}")
            if arr.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {shape_str(target.shape)}, "
                                 f"got {shape_str(arr.shape)}")
            staged[name] = arr
        for name, arr in staged.items():
            np.copyto(self.params[name], arr, casting="unsafe")
        self.weights_changed()

    def zero_grad(self) -> None:
        with self._grad_lock:
            if self._dev is not None:
                self._dev.zero_grads(self._grads)
            else:
                for g in self._grads.values():
                    g.fill(0)
        self.weights_changed()  # a training loop's step boundary: the weights may have moved

    # --- device (CUDA hook; fusedrnn/_device.py, fusedrnn/cuda_ops.py) ----------------------

    @property
    def device(self) -> str:
        """'cpu' or 'cuda': where the kernels run.  ``params`` and ``grads`` read as NumPy
        arrays on either device.  On CUDA the weights are kept on the device between calls
        (uploaded again only after the host arrays change), backward sums the gradients there,
        and an optimiser given ``trainable()`` steps them there."""
        return self._device

    def to(self, device):
        """Run the kernels on ``device`` ('cpu' or 'cuda') from the next call on; returns self."""
        device = _device.check_device(device)
        if device == self._device:
            return self
        self._trace, self._trace_state = None, "none"
        if "_params" in self.__dict__:
            self._pull()  # what the device holds comes back to the host arrays
        self._device = device
        self._dev = _device.DeviceState() if device == "cuda" else None
        return self

    def train(self, mode: bool = True):
        self.training = check_bool(mode, "mode")
        return self

    def eval(self):
        return self.train(False)

    # --- saving ---------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write configuration and parameters to an .npz file at path, atomically (a failed
        save leaves any previous file there intact).  ``load`` reads it back."""
        header = {"format": _FILE_FORMAT, "class": type(self).__name__, "config": self.get_config()}
        _npz.save(path, header, self.params)

    @classmethod
    def load(cls, path):
        """A new layer built from a file written by ``save``; ``LSTM.load`` insists on an
        LSTM file and so on (``_RNNBase.load`` accepts any of the three).  A file that is not
        one is a ValueError naming it; nothing is allocated before the header and the stored
        arrays are found to agree."""
        path = path_str(path)
        found = {}

        def validate(header, specs):
            name = header.get("class")
            if name not in _CLASSES or header.get("format") != _FILE_FORMAT:
                raise ValueError(f"{path} does not hold a fusedrnn layer (class {name!r}, "
                                 f"format {header.get('format')!r})")
            klass = _CLASSES[name]
            if cls is not _RNNBase and klass is not cls:
                raise ValueError(f"{path} holds a {name}, not a {cls.__name__}; use {name}.load")
            if not isinstance(header.get("config"), dict):
                raise ValueError(f"{path}: the layer's config must be a JSON object")
            _npz.check_shapes(path, specs, klass.param_shapes(header["config"]), f"{name} config")
            found["klass"] = klass

        with _npz.reading(path):
            header, arrays = _npz.load(path, validate)
            layer = found["klass"].from_config(header["config"])
            layer.load_state_dict(arrays)
        return layer

    # --- Keras ----------------------------------------------------------------------------

    def _keras_group(self) -> int:
        return 3 if self.bias else 2

    def load_keras_weights(self, weights) -> None:
        """Load weights as Keras' ``get_weights()`` lists them for the equivalent Keras
        stack: for each layer, for each direction (forward, then backward as in Keras'
        Bidirectional), [kernel, recurrent_kernel] plus bias when this layer has biases.
        Conversion rules (gate order, GRU reset_after): fusedrnn.keras_import."""
        if self.proj_size:
            raise ValueError("Keras has no LSTM with a projection (proj_size); "
                             "build the layer with proj_size=0")
        weights = list(weights)
        per = self._keras_group()
        expected = self.num_layers * self.num_directions * per
        if len(weights) != expected:
            parts = "[kernel, recurrent_kernel, bias]" if self.bias else "[kernel, recurrent_kernel]"
            raise ValueError(f"expected {expected} arrays: {parts} for each of {self.num_layers} "
                             f"layer(s) x {self.num_directions} direction(s), got {len(weights)}"
                             + ("" if self.bias else " (this layer has bias=False)"))
        state = {}
        for i, (_, _, sfx) in enumerate(self._slots()):
            group = weights[i * per:(i + 1) * per]
            try:
                conv = from_keras_weights(self._cell, *group)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"Keras weights for {sfx[1:]}: {exc}") from exc
            for key, value in conv.items():
                state[key + sfx] = value
        for name, arr in state.items():
            if arr.shape != self.params[name].shape:
                raise ValueError(f"Keras weights for {name} convert to shape {shape_str(arr.shape)}, "
                                 f"this layer needs {shape_str(self.params[name].shape)}")
        self.load_state_dict(state)

    def keras_weights(self) -> list:
        """The parameters as the equivalent Keras stack's ``get_weights()`` list (the
        inverse of load_keras_weights; LSTM/RNN biases are summed into Keras' one bias)."""
        if self.proj_size:
            raise ValueError("Keras has no LSTM with a projection (proj_size)")
        out = []
        for _, _, sfx in self._slots():
            p = self.params
            b_ih = p["bias_ih" + sfx] if self.bias else None
            b_hh = p["bias_hh" + sfx] if self.bias else None
            out += [w.astype(self.dtype) for w in
                    to_keras_weights(self._cell, p["weight_ih" + sfx], p["weight_hh" + sfx], b_ih, b_hh)]
        return out

    # --- input checks ---------------------------------------------------------------------

    def _array(self, value, name: str) -> np.ndarray:
        if isinstance(value, np.ndarray):
            arr = value
        else:
            try:
                arr = np.asarray(value)
            except Exception as exc:
                raise TypeError(f"{name} must be an array, got {type(value).__name__}") from exc
        if not arr.dtype.isnative:
            arr = ops._native(arr)  # same numbers, other byte order: no ambiguity to refuse
        if arr.dtype != self.dtype:
            # Strict, as torch: a silent cast would hide a float64 pipeline running in float32.
            hint = f"; convert it with .astype(np.{self.dtype.name})" if arr.dtype.kind in "fiu" else ""
            raise TypeError(f"{name} must have dtype {self.dtype} (the layer's dtype), "
                            f"got {arr.dtype}{hint}")
        return arr

    def _layout(self, batched: bool, T: int, B: int, F: int) -> tuple:
        if not batched:
            return (T, F)
        return (B, T, F) if self.batch_first else (T, B, F)

    def _layout_name(self, batched: bool) -> str:
        if not batched:
            return "(T, features) unbatched"
        return "(B, T, features) with batch_first=True" if self.batch_first else "(T, B, features)"

    def _input(self, x):
        """x -> (time-major (T, B, I) array, batched?)."""
        x = self._array(x, "x")
        if x.ndim not in (2, 3):
            order = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"x must be 3-D {order} or 2-D (T, I) for an unbatched sequence, "
                             f"got shape {shape_str(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x must have input_size = {self.input_size} features in its last axis, "
                             f"got shape {shape_str(x.shape)}")
        batched = x.ndim == 3
        if not batched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"x must hold at least one step and one sequence, got shape {shape_str(x.shape)}")
        return x, batched

    def _state(self, value, name: str, width: int, batched: bool, B: int):
        """A state argument (h0, c0, dh_n, dc_n) -> (L*D, B, width) array or None."""
        if value is None:
            return None
        arr = self._array(value, name)
        LD = self.num_layers * self.num_directions
        shape = (LD, B, width) if batched else (LD, width)
        if arr.shape != shape:
            what = "(num_layers * num_directions, B, " if batched else "(num_layers * num_directions, "
            what += ("P)" if width == self._P and self.proj_size else "H)")
            extra = "" if batched else " (x is unbatched, so states are 2-D)"
            raise ValueError(f"{name} must have shape {what} = {shape_str(shape)}{extra}, got {shape_str(arr.shape)}")
        return arr if batched else arr[:, None, :]

    def _lengths(self, lengths, batched: bool, T: int, B: int):
        if lengths is None:
            return None
        if not batched:
            raise ValueError("lengths needs a batched (3-D) x; an unbatched sequence has one length, T")
        return ops._lengths(lengths, T, B)  # the one lengths check

    # --- forward / backward ---------------------------------------------------------------

    def _weights(self, p, sfx):
        """One layer and direction's (w_ih, w_hh, b_ih, b_hh, w_hr) from the parameter dict p:
        None for the biases of a layer built with bias=False and for w_hr without proj_size.
        A parameter missing from p is a ValueError naming it (never zeros in its place)."""
        def get(name, present=True):
            if not present:
                return None
            try:
                return p[name + sfx]
            except KeyError:
                raise ValueError(
                    f"params has no {name + sfx!r}: {type(self).__name__} needs each of its "
                    f"parameters ({', '.join(k for k, _ in self._param_shapes())}); put the array "
                    "back, or restore them all with load_state_dict") from None

        return (get("weight_ih"), get("weight_hh"), get("bias_ih", self.bias),
                get("bias_hh", self.bias), get("weight_hr", self.proj_size > 0))

    def _run(self, x, sfx, h0, c0, lengths, reverse, training):
        """One layer, one direction, through ops: (out, h_n, c_n or None, cache)."""
        p = self._params
        w_ih, w_hh, b_ih, b_hh, w_hr = self._weights(p, sfx)
        if self._dev is not None:  # --- CUDA hook: weights from the device copies ---
            p = self._dev.weights(p, [k for k in p if k.endswith(sfx)])
            w_ih, w_hh, b_ih, b_hh, w_hr = self._weights(p, sfx)
        w = (x, w_ih, w_hh, b_ih, b_hh)
        kw = dict(lengths=lengths, reverse=reverse, training=training, device=self._device)
        if self._device == "cpu" and not training and not self.training:  # eval mode only
            kw["packed"] = self._packed_weights(sfx)
        if self._cell == "lstm":
            return ops.lstm_forward(*w, h0, c0, w_hr=w_hr, activation=self._act, **kw)
        if self._cell == "gru":
            out, h_n, cache = ops.gru_forward(*w, h0, **kw)
        else:
            out, h_n, cache = ops.rnn_forward(*w, h0, nonlinearity=self._act, **kw)
        return out, h_n, None, cache

    def _packed_weights(self, sfx: str):
        """The packed-weight cache of one direction's weights at their current version, for the
        forward of a layer in eval mode.  The kernels fill it on the first forward and reuse it
        until the version moves (the same contract as step(): an in-place edit outside the
        APIs needs weights_changed())."""
        key, version = (sfx, _core.isa()), self._params.version
        entry = self._packed.get(key)
        if entry is None or entry[0] != version:
            self._packed = {k: e for k, e in self._packed.items() if e[0] == version}
            entry = self._packed[key] = (version, ops.PackedWeights())
        return entry[1]

    def _dropout_mask(self, shape) -> np.ndarray:
        # Inverted dropout: survivors are scaled by 1/(1-p) so eval needs no rescaling.
        keep = self._rng.random(shape) >= self.dropout
        scale = 0.0 if self.dropout >= 1.0 else 1.0 / (1.0 - self.dropout)
        return (keep * scale).astype(self.dtype)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _forward(self, x, h0, c0, lengths):
        if _dask.is_dask_array(x):  # chunked inference: fusedrnn/_dask.py
            return _dask.layer_forward(self, x, h0, c0, lengths)
        x, batched = self._input(x)
        T, B = x.shape[:2]
        h0 = self._state(h0, "h0", self._P, batched, B)
        c0 = self._state(c0, "c0", self.hidden_size, batched, B)
        lengths = self._lengths(lengths, batched, T, B)
        training = self.training
        # Drop any earlier trace first: eval keeps nothing, and memory is freed early.
        self._trace, self._trace_state = None, "none"

        LD, P, H = self.num_layers * self.num_directions, self._P, self.hidden_size
        h_n = np.empty((LD, B, P), self.dtype)
        c_n = np.empty((LD, B, H), self.dtype) if self._cell == "lstm" else None
        layer_in, kept = x, []
        for layer in range(self.num_layers):
            outs, caches = [], []
            for direction in range(self.num_directions):
                i = layer * self.num_directions + direction
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                out, h, c, cache = self._run(
                    layer_in, sfx, None if h0 is None else h0[i], None if c0 is None else c0[i],
                    lengths, direction == 1, training)
                outs.append(out)
                caches.append(cache)
                h_n[i] = h
                if c_n is not None:
                    c_n[i] = c
            layer_in = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
            mask = None
            if training and self.dropout > 0 and layer < self.num_layers - 1:
                mask = self._dropout_mask(layer_in.shape)
                layer_in = layer_in * mask
            kept.append((caches, mask))

        if training:
            self._trace, self._trace_state = _Trace(kept, batched, T, B), "train"
        else:
            self._trace_state = "eval"
        out = self._from_time_major(layer_in, batched)
        if not batched:
            h_n = h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        return out, h_n, c_n

    def _from_time_major(self, a, batched):
        if not batched:
            return a[:, 0]
        return np.ascontiguousarray(a.transpose(1, 0, 2)) if self.batch_first else a

    def _take_trace(self) -> _Trace:
        state = self._trace_state
        if state == "none":
            raise RuntimeError("backward needs a forward first: call the layer in training mode "
                               "(layer.train(), the default), then backward")
        if state == "eval":
            raise RuntimeError("the last forward ran in eval mode, which keeps nothing for "
                               "backward; call layer.train() and run the forward again")
        if state == "used":
            raise RuntimeError("backward already ran for the last forward (its cache is freed); "
                               "run the forward again")
        return self._trace

    def _backward(self, dout, dh_n, dc_n, need_dx=True):
        _dask.refuse("backward", dout=dout, dh_n=dh_n, dc_n=dc_n)
        trace = self._take_trace()
        batched, T, B = trace.batched, trace.T, trace.B
        D, P, H = self.num_directions, self._P, self.hidden_size
        if dout is None:
            d_in = None  # zeros, made by the kernels' side (on the device, nothing to copy)
        else:
            d = self._array(dout, "dout")
            shape = self._layout(batched, T, B, D * P)
            if d.shape != shape:
                raise ValueError(f"dout must have the shape of out, {self._layout_name(batched)} "
                                 f"= {shape_str(shape)}, got {shape_str(d.shape)}")
            d_in = d[:, None, :] if not batched else (d.transpose(1, 0, 2) if self.batch_first else d)
        dh_n = self._state(dh_n, "dh_n", P, batched, B)
        dc_n = self._state(dc_n, "dc_n", H, batched, B)

        # Validated: from here on the trace is consumed, even if a kernel raises.
        self._trace, self._trace_state = None, "used"
        LD = self.num_layers * D
        dh0 = np.empty((LD, B, P), self.dtype)
        dc0 = np.empty((LD, B, H), self.dtype) if self._cell == "lstm" else None
        for layer in reversed(range(self.num_layers)):
            caches, mask = trace.layers[layer]
            if mask is not None and d_in is not None:
                d_in = d_in * mask
            dx = None
            for direction in range(D):
                i = layer * D + direction
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                g = self._run_backward(caches[direction],
                                       None if d_in is None else d_in[:, :, direction * P:(direction + 1) * P],
                                       None if dh_n is None else dh_n[i],
                                       None if dc_n is None else dc_n[i], need_dx or layer > 0)
                self._accumulate(sfx, g)
                dh0[i] = g["dh0"]
                if dc0 is not None:
                    dc0[i] = g["dc0"]
                if g["dx"] is not None:
                    dx = g["dx"] if dx is None else dx + g["dx"]
            d_in = dx
        dx = None if d_in is None else self._from_time_major(d_in, batched)
        if not batched:
            dh0 = dh0[:, 0]
            dc0 = None if dc0 is None else dc0[:, 0]
        return dx, dh0, dc0

    def _run_backward(self, cache, dout, dh_n, dc_n, need_dx):
        if self._dev is not None:  # --- CUDA hook: weight gradients stay on the device ---
            from . import cuda_ops

            g = cuda_ops.backward(self._cell, cache, dout, dh_n, dc_n, keep=True, need_dx=need_dx)
            for k in ("dx", "dh0", "dc0"):
                if g.get(k) is not None:
                    g[k] = g[k].numpy()
            return g
        if self._cell == "lstm":
            return ops.lstm_backward(cache, dout, dh_n, dc_n, need_dx=need_dx)
        if self._cell == "gru":
            return ops.gru_backward(cache, dout, dh_n, need_dx=need_dx)
        return ops.rnn_backward(cache, dout, dh_n, need_dx=need_dx)

    def _accumulate(self, sfx, g):
        with self._grad_lock:
            self._add_grads(sfx, g)
        # An optimiser updates the arrays in place after a backward: copies must be made again.
        self.weights_changed()

    def _add_grads(self, sfx, g):
        # On CUDA the sums stay on the device; the layer's grads read them back when read.
        on_device = self._dev is not None
        grads = self._dev.grads(self._grads) if on_device else self._grads
        for name, key in _GRAD_OF.items():
            target = grads.get(name + sfx)  # absent: no bias, or no projection
            if target is None:
                continue
            if on_device:
                _core.cuda_add_into(target, g[key])
            else:
                target += g[key]


def _state_pair(value, name: str, first: str, second: str):
    if value is None:
        return None, None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a tuple ({first}, {second}), got {type(value).__name__}")
    return value[0], value[1]


class LSTM(_RNNBase):
    """Multi-layer LSTM with torch.nn.LSTM's arguments, plus ``activation`` ('tanh' or
    'relu', replacing both tanh's of the cell), ``dtype`` and ``seed`` (int or Generator:
    weight init and dropout masks) and ``device`` ('cpu' or 'cuda').
    ``out, (h_n, c_n) = lstm(x, (h0, c0), lengths)``."""

    _cell = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, activation="tanh", *,
                 dtype="float32", seed=None, device="cpu"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size=proj_size, act=_act(activation, "activation"),
                         dtype=dtype, seed=seed, device=device)

    @property
    def activation(self) -> str:
        return self._act

    def forward(self, x, hx=None, lengths=None):
        """``out, (h_n, c_n) = lstm(x, (h0, c0), lengths)``; hx None (or either state None)
        means zeros."""
        h0, c0 = _state_pair(hx, "hx", "h0", "c0")
        out, h_n, c_n = self._forward(x, h0, c0, lengths)
        return out, (h_n, c_n)

    def backward(self, dout, dhx=None, *, need_dx=True):
        """``dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n))`` after a training forward,
        in the layouts of x and h0; adds every parameter gradient into ``self.grads``.
        None for dout or dhx (or either part of it) means zeros.  need_dx=False: dx is None,
        and the first layer skips computing it (for an input that needs no gradient)."""
        dh_n, dc_n = _state_pair(dhx, "dhx", "dh_n", "dc_n")
        dx, dh0, dc0 = self._backward(dout, dh_n, dc_n, need_dx)
        return dx, (dh0, dc0)

    def _extra_config(self) -> dict:
        return {"proj_size": self.proj_size, "activation": self._act}


class _SingleState:
    """forward/backward of the cells whose state is h alone (GRU, RNN)."""

    def forward(self, x, h0=None, lengths=None):
        """``out, h_n = layer(x, h0, lengths)``; h0 None means zeros."""
        out, h_n, _ = self._forward(x, h0, None, lengths)
        return out, h_n

    def backward(self, dout, dh_n=None, *, need_dx=True):
        """``dx, dh0 = layer.backward(dout, dh_n)`` after a training forward, in the layouts
        of x and h0; adds every parameter gradient into ``self.grads``.  None means zeros.
        need_dx=False: dx is None, not computed (as LSTM.backward)."""
        dx, dh0, _ = self._backward(dout, dh_n, None, need_dx)
        return dx, dh0


class GRU(_SingleState, _RNNBase):
    """Multi-layer GRU with torch.nn.GRU's arguments, plus ``dtype`` and ``seed``.
    ``out, h_n = gru(x, h0, lengths)``."""

    _cell = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype="float32", seed=None, device="cpu"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype=dtype, seed=seed, device=device)


class RNN(_SingleState, _RNNBase):
    """Multi-layer Elman RNN with torch.nn.RNN's arguments (``nonlinearity`` 'tanh' or
    'relu'), plus ``dtype`` and ``seed``.  ``out, h_n = rnn(x, h0, lengths)``."""

    _cell = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype="float32",
                 seed=None, device="cpu"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, act=_act(nonlinearity, "nonlinearity"), dtype=dtype,
                         seed=seed, device=device)

    @property
    def nonlinearity(self) -> str:
        return self._act

    def _extra_config(self) -> dict:
        return {"nonlinearity": self._act}


_CLASSES = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}


# Said once, shown by help() on each of the three layers.
_USAGE = """

    INPUT IS TIME-MAJOR: x is (T, B, features) unless the layer is built with
    batch_first=True, as in torch.nn.  Batch-first data (B, T, F), Keras' layout, given to a
    layer built without batch_first=True is read as B steps of T sequences: wrong answers,
    and no error whenever the sizes fit.  Build it with batch_first=True for (B, T, F) data,
    or use fusedrnn.keras.layers.LSTM / GRU / SimpleRNN (batch-first, Keras' arguments).

    Hand-written training loops use ``params`` and ``grads``:
        params   dict of the weights under torch's names (weight_ih_l0, weight_hh_l0,
                 bias_ih_l0, bias_hh_l0, '..._reverse' for the backward direction,
                 weight_hr_l0 with proj_size); an optimiser updates these arrays in place
        grads    the same keys; backward() adds (+=) into them, so zero_grad() every step

        out, state = layer(x)                       # a training forward (train() mode)
        layer.zero_grad()
        dx, dstate0 = layer.backward(dout)          # dout shaped like out (None: zeros);
                                                    # or backward(dout, d_final_state)
        for k, p in layer.params.items():
            p -= lr * layer.grads[k]

    eval() switches to inference (no dropout between layers, no trace kept for backward).

    Streaming inference, one time step of every layer per call (unidirectional layers):
        out_t, state = layer.step(x_t, state)       # x_t (B, I) or (I,); state None: zeros
    The weights are packed once and again only when they change through the layer's API
    (backward + an in-place optimiser step counts, and so does an optimiser's apply on the
    layer's arrays); after editing a parameter array in place any other way, call
    layer.weights_changed().
    """

for _cls in (LSTM, GRU, RNN):
    _cls.__doc__ += _USAGE
del _cls
