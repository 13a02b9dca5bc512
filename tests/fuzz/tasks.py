"""What the crash-isolating worker (worker.py) runs: calls that may crash the interpreter
(the compiled module called directly, huge sizes, malformed files).  Each returns something
small and picklable for the parent to judge."""

import numpy as np

import fusedrnn
from fusedrnn import _core, ops

from .strategies import materialize


def core_forward(cell, args):
    """_core.<cell>_forward(*args): its outputs (out, h_n, c_n)."""
    out, h_n, c_n, _ = getattr(_core, f"{cell}_forward")(*materialize(args))
    return out, h_n, c_n


def core_backward(cell, fwd_args, bwd_args, replace):
    """A training _core forward, then _core.<cell>_backward with bwd_args (x, w_ih, w_hh, w_hr,
    lengths, reverse, activation from the forward unless given) where `replace` maps argument
    positions to fuzzed values; returns the gradients."""
    out, h_n, c_n, ws = getattr(_core, f"{cell}_forward")(*fwd_args)
    x, w_ih, w_hh, _, _, w_hr, _, _, lengths, reverse, act, _ = fwd_args
    args = [x, w_ih, w_hh, w_hr, lengths, reverse, act, ws] + list(bwd_args)
    for i, v in materialize(replace).items():
        if isinstance(v, str) and v == "<workspace-copy>":
            v = ws.copy()
        elif isinstance(v, str) and v == "<virtual>":  # made here: it cannot be pickled
            v = np.lib.stride_tricks.as_strided(np.zeros(1, x.dtype), (2**20, 2**20, 8), (0, 0, 0))
        args[i] = v
    return getattr(_core, f"{cell}_backward")(*args)


def huge_ops(cell, T, B, I, H, P, dtype, training, virtual_x):
    """ops forward (and backward) at sizes whose memory the worker does not have.  Inputs
    are np.zeros (never touched, so not resident) or, with virtual_x, a zero-stride x."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    if virtual_x:
        x = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), (T, B, I), (0, 0, 0))
    else:
        x = np.zeros((T, B, I), dtype)
    kw = dict(x=x, w_ih=np.zeros((G * H, I), dtype), w_hh=np.zeros((G * H, P), dtype),
              training=training)
    if P != H:
        kw["w_hr"] = np.zeros((P, H), dtype)
    res = getattr(ops, f"{cell}_forward")(**kw)
    if training:
        getattr(ops, f"{cell}_backward")(res[-1])
    return "computed"


def huge_layer(cell, input_size, hidden_size, num_layers, proj_size):
    """Construct a layer whose parameters need more memory than the worker has."""
    cls = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}[cell]
    kw = {"proj_size": proj_size} if proj_size else {}
    cls(input_size, hidden_size, num_layers, **kw)
    return "constructed"


def load_file(kind, path):
    """Load a (possibly malformed) file with LSTM.load / RNN-any load / Sequential.load, and
    use what loaded (a forward), so half-built objects are caught too."""
    if kind == "sequential":
        model = fusedrnn.Sequential.load(path)
        x = np.zeros((2, 3, model.layers[0].layer.input_size), model.dtype)
        return model.predict(x).shape
    layer = fusedrnn.layers._RNNBase.load(path)
    x = np.zeros((3, 2, layer.input_size), layer.dtype)
    return layer(x)[0].shape
