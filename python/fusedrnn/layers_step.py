"""Streaming inference for the torch-like layers: one time step of every layer per call.

    out_t, (h, c) = lstm.step(x_t, (h, c))      # LSTM; state None means zeros
    out_t, h = gru.step(x_t, h)                 # GRU and RNN

x_t is (B, I), or (I,) for one unbatched stream; h is (num_layers, B, P) and c
(num_layers, B, H) (2-D without B for an unbatched x_t), the layer's h_n / c_n convention, so
a forward's final state continues in step() and back.  out_t is the top layer's new h, (B, P)
(a view of it: copy it before writing into it).
T calls give the numbers of one forward over the T steps (to rounding: the products sum in
another order).  A step is inference: no dropout, nothing kept for backward, whatever
train()/eval() says; it runs on the CPU whatever the layer's device.  Bidirectional layers have
no step (the reverse direction needs the future).

The weights are packed once into a compiled object (fusedrnn._core.Step32 / Step64) kept on
the layer and packed again when ``params.version`` moved on (see fusedrnn.layers: in-place
edits outside a training step need ``layer.weights_changed()``).
"""

from __future__ import annotations

import numpy as np

from . import _core, ops

__all__ = ["StepMixin"]

_CLASSES = {np.dtype(np.float32): _core.Step32, np.dtype(np.float64): _core.Step64}


class StepMixin:
    """step() for fusedrnn.layers._RNNBase (uses its params, _cell, _act, _P, _array)."""

    def step(self, x, state=None):
        """``out_t, state = layer.step(x_t, state=None)``: one time step of every layer; see
        fusedrnn.layers_step for shapes.  Returns new arrays; the arguments are not modified."""
        # The per-call path is kept short (at streaming sizes it is a fair part of a step): the
        # compiled object takes x and the state as they come and checks them itself.
        d = self.__dict__
        entry, params = d.get("_step_model"), d["_params"]
        if entry is None or entry[0] is not params or entry[1] != params.version:
            entry = self._pack_step()
        try:
            return entry[2].step_state(x, state)
        except TypeError:
            converted = self._step_arrays(x, state)  # array-likes; the layer's dtype message
            return entry[2].step_state(*converted)

    def _step_arrays(self, x, state):
        def arr(value, name):  # array-likes and byte-swapped arrays, as the forward takes them
            if value is None or (type(value) is np.ndarray and value.dtype.isnative):
                return value
            return self._array(value, name)

        if self._cell == "lstm" and isinstance(state, (tuple, list)) and len(state) == 2:
            state = (arr(state[0], "h"), arr(state[1], "c"))
        elif self._cell != "lstm":
            state = arr(state, "state")
        return arr(x, "x"), state

    def _pack_step(self):
        if self.bidirectional:
            raise ValueError(f"step() runs one time step forward, which a bidirectional "
                             f"{type(self).__name__} cannot: its reverse direction starts from "
                             "the end of the sequence; call the layer on the whole sequence")
        params = self._params
        version = params.version  # read first: a change while packing packs again next call
        layers = [self._step_weights(params, layer) for layer in range(self.num_layers)]
        model = _CLASSES[self.dtype](self._cell, self._act, self.hidden_size, self._P, layers)
        entry = (params, version, model)
        self._step_model = entry
        return entry

    def _step_weights(self, params, layer):
        """Layer `layer`'s (w_ih, w_hh, b_ih, b_hh, w_hr), checked and converted by the forward's
        own rules (the same TypeError for a weight of another dtype, the same ValueError for a
        missing one or a wrong shape; byte-swapped or strided arrays taken as they are)."""
        w_ih, w_hh, b_ih, b_hh, w_hr = self._weights(params, f"_l{layer}")
        probe = np.empty((1, 1, self.input_size if layer == 0 else self._P), self.dtype)  # x's place
        act = "tanh" if self._cell == "gru" else self._act
        _, w_ih_, w_hh_, b_ih_, b_hh_, w_hr_, *_ = ops._forward_args(
            self._cell, probe, w_ih, w_hh, b_ih, b_hh, None, None, w_hr, None, False, act, False)
        return (w_ih_, w_hh_, None if b_ih is None else b_ih_, None if b_hh is None else b_hh_,
                w_hr_)
