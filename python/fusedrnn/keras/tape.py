"""The record of one Model.call: which layer turned which array into which, so that the
backward pass of a subclassed Model can run without an autograd engine.

A layer called inside ``Model.call`` appends (layer, input, output) here; the backward pass
walks the records in reverse, routing each gradient by the identity of the array it belongs
to (an array fed to two layers gets the sum of both gradients).  Operations between layers
other than layer calls have no gradient here, so a training call whose data passes through
one is refused with a message naming the layer that received it.
"""

from __future__ import annotations

import re
import threading

import numpy as np

__all__ = ["Tape", "call", "no_input_grad", "unique_name"]

_local = threading.local()
_names: dict = {}
_names_lock = threading.Lock()


def unique_name(class_name: str) -> str:
    """'LSTM' -> 'lstm', 'lstm_1', ...; 'TimeDistributed' -> 'time_distributed'."""
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", class_name).lower().lstrip("_")
    with _names_lock:
        n = _names.get(base, 0)
        _names[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


class Tape:
    def __init__(self, x, training: bool, lengths):
        self.training = bool(training)
        self.lengths = lengths
        self.records: list = []
        self._known = {id(x)}
        self._keep = [x]  # ids stay unique while the arrays they name are alive
        # Whether an array depends on parameters (a layer with parameters made it, or one of
        # its inputs): only those need a gradient, the model's input and what parameter-free
        # layers make of it do not.
        self._trained = {id(x): False}

    def __enter__(self):
        self._outer = getattr(_local, "tape", None)
        _local.tape = self
        return self

    def __exit__(self, *exc):
        _local.tape = self._outer

    def record(self, layer, x, out) -> None:
        if self.training:
            if id(x) not in self._known:
                raise ValueError(
                    f"Model.call: {layer.name} ({type(layer).__name__}) received an array that is "
                    "neither the model's input nor a layer's output; operations between layers have "
                    "no gradient here, so only chains of layer calls can be trained")
            if any(r[0] is layer for r in self.records):
                raise ValueError(f"Model.call: {layer.name} is called twice in one training step; "
                                 "use two layers")
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        self._known.update(id(o) for o in outs)
        self._keep.extend(outs)
        trained = self._trained.get(id(x), False) or has_params(layer)
        self._trained.update((id(o), trained) for o in outs)
        self.records.append((layer, x, outs))

    def backward(self, output, dy) -> None:
        """Every recorded layer's backward, given d loss / d output."""
        if id(output) not in self._known or id(output) == id(self._keep[0]):
            raise ValueError("Model.call must return the output of a layer to be trained")
        grads = {id(output): dy}
        for layer, x, outs in reversed(self.records):
            gs = [grads.pop(id(o), None) for o in outs]
            if all(g is None for g in gs):
                continue  # an output nothing downstream used
            need_dx = self._trained.get(id(x), True)
            if not need_dx and not has_params(layer):
                continue  # nothing to train here or before
            kw = {} if need_dx else no_input_grad(layer)
            if len(outs) == 1:
                dx = layer.backward(gs[0], **kw)
            else:
                dx = layer.backward_outputs(gs, **kw)
            if dx is not None and need_dx:
                grads[id(x)] = dx if id(x) not in grads else grads[id(x)] + dx


def has_params(layer) -> bool:
    """Whether a layer has parameters, asked without reading them (pieces.Layer.has_params)."""
    ask = getattr(layer, "has_params", None)
    return ask() if callable(ask) else bool(getattr(layer, "params", None))


def no_input_grad(layer) -> dict:
    """The backward keywords that spare ``layer`` its input gradient, where its class can
    (``skips_input_grad``: the recurrent pieces; read on the class, not through a wrapper that
    forwards attributes); {} elsewhere."""
    return {"need_dx": False} if getattr(type(layer), "skips_input_grad", False) else {}


def current():
    return getattr(_local, "tape", None)


def call(layer, x, training, lengths, **kwargs):
    """layer(x): forward, recorded on the active tape when there is one."""
    if kwargs.pop("mask", None) is not None:
        raise ValueError(f"{layer.name}: an explicit mask= is not supported; use Masking or "
                         "Embedding(mask_zero=True), or pass lengths")
    if kwargs:
        raise TypeError(f"{type(layer).__name__} got unexpected arguments {sorted(kwargs)}")
    tape = current()
    if tape is None:
        return layer.forward(x, training=bool(training), lengths=lengths)
    training = tape.training if training is None else bool(training)
    out = layer.forward(x, training=training, lengths=tape.lengths if lengths is None else lengths)
    tape.record(layer, x, out)
    return out


def is_array(value) -> bool:
    return isinstance(value, np.ndarray)
