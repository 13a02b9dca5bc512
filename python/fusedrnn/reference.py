"""Plain NumPy reference implementation of the LSTM, GRU and Elman RNN layers.

This module is the test oracle for the fused kernels.  It is written straight
from the equations in docs/conventions.md (which are exactly torch.nn's), with
an explicit Python loop over time, and shares no code with the rest of the
package on purpose.  It favours readability over speed.

Shapes (time-major):
    x        (T, B, I)
    w_ih     (G*H, I)        gates stacked: LSTM i,f,g,o   GRU r,z,n   RNN one gate
    w_hh     (G*H, P)        P = H, or the LSTM projection size
    b_ih     (G*H,) or None  (None means zeros)
    b_hh     (G*H,) or None
    w_hr     (P, H)  or None LSTM projection (torch's proj_size)
    h0, h_n  (B, P)
    c0, c_n  (B, H)
    out      (T, B, P)
    lengths  (B,) ints in 1..T, or None (= every sequence has length T)

Batching over sequences of different lengths: iteration k = 0..T-1 processes,
for every sequence b with k < lengths[b], the time step
    t = k                    (forward)
    t = lengths[b] - 1 - k   (reverse)
Sequences with k >= lengths[b] are finished: their state is carried unchanged
and nothing is written to out (which stays 0 there).

Every computation happens in the dtype of x (float32 or float64).
"""

import numpy as np

__all__ = [
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
    "rnn_forward",
    "rnn_backward",
]


# ----------------------------------------------------------------------------
# small private helpers
# ----------------------------------------------------------------------------

def _sigmoid(z):
    # numerically safe logistic function: never exponentiates a large positive number
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def _check_act(name):
    if name not in ("tanh", "relu"):
        raise ValueError(f"unknown activation/nonlinearity {name!r}: expected 'tanh' or 'relu'")
    return name


def _act(name, z):
    if name == "tanh":
        return np.tanh(z)
    return np.maximum(z, 0).astype(z.dtype, copy=False)


def _act_grad(name, z, a):
    """Derivative of the activation at pre-activation z, where a = act(z)."""
    if name == "tanh":
        # d tanh(z) = 1 - tanh(z)^2
        return 1 - a * a
    # d relu(z) = 1 if z > 0 else 0   (0 at exactly z == 0)
    return (z > 0).astype(z.dtype)


def _as(a, dtype, shape):
    """a as an array of dtype, or zeros of shape when a is None."""
    if a is None:
        return np.zeros(shape, dtype=dtype)
    return np.asarray(a, dtype=dtype)


def _lengths(lengths, T, B):
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    return np.asarray(lengths, dtype=np.int64).reshape(B)


def _step_index(k, lengths, reverse):
    """Time index per sequence at iteration k, and which sequences are active.

    Returns (t, active): t (B,) ints, always a valid index into 0..T-1 (clipped
    for inactive sequences, whose value must not be used); active (B,) bools.
    """
    active = k < lengths
    t = lengths - 1 - k if reverse else np.full_like(lengths, k)
    return np.clip(t, 0, None), active


# ----------------------------------------------------------------------------
# LSTM
# ----------------------------------------------------------------------------

def lstm_forward(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, *, w_hr=None,
                 lengths=None, reverse=False, activation="tanh"):
    """LSTM layer.  Returns (out (T,B,P), h_n (B,P), c_n (B,H), cache)."""
    act = _check_act(activation)
    x = np.asarray(x)
    dt = x.dtype
    T, B, I = x.shape
    H = np.shape(w_ih)[0] // 4
    P = H if w_hr is None else np.shape(w_hr)[0]
    w_ih = _as(w_ih, dt, (4 * H, I))                      # (4H, I)
    w_hh = _as(w_hh, dt, (4 * H, P))                      # (4H, P)
    b_ih = _as(b_ih, dt, (4 * H,))                        # (4H,)
    b_hh = _as(b_hh, dt, (4 * H,))                        # (4H,)
    w_hr_ = None if w_hr is None else _as(w_hr, dt, (P, H))  # (P, H)
    h = _as(h0, dt, (B, P)).copy()                        # (B, P)
    c = _as(c0, dt, (B, H)).copy()                        # (B, H)
    lens = _lengths(lengths, T, B)
    bidx = np.arange(B)

    out = np.zeros((T, B, P), dtype=dt)
    steps = []
    for k in range(T):
        t, active = _step_index(k, lens, reverse)
        xt = x[t, bidx]                                   # (B, I)
        a = xt @ w_ih.T + b_ih + h @ w_hh.T + b_hh        # (B, 4H) gate pre-activations
        ai, af, ag, ao = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        i = _sigmoid(ai)                                  # (B, H)
        f = _sigmoid(af)
        g = _act(act, ag)
        o = _sigmoid(ao)
        c_new = f * c + i * g                             # (B, H)
        ac = _act(act, c_new)                             # (B, H) act(c')
        m = o * ac                                        # (B, H) unprojected hidden
        h_new = m if w_hr_ is None else m @ w_hr_.T       # (B, P)

        steps.append(dict(t=t, active=active, x=xt, h_prev=h, c_prev=c,
                          i=i, f=f, ag=ag, g=g, o=o, c=c_new, ac=ac, m=m))
        act_col = active[:, None]
        out[t[active], bidx[active]] = h_new[active]
        h = np.where(act_col, h_new, h)
        c = np.where(act_col, c_new, c)

    cache = dict(cell="lstm", act=act, dtype=dt, shape=(T, B, I, H, P), lengths=lens,
                 reverse=bool(reverse), w_ih=w_ih, w_hh=w_hh, w_hr=w_hr_, steps=steps)
    return out, h, c, cache


def lstm_backward(cache, dout=None, dh_n=None, dc_n=None):
    """Gradients of an LSTM layer; keys dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh (+ dw_hr)."""
    act = cache["act"]
    dt = cache["dtype"]
    T, B, I, H, P = cache["shape"]
    w_ih, w_hh, w_hr = cache["w_ih"], cache["w_hh"], cache["w_hr"]
    bidx = np.arange(B)
    dout = _as(dout, dt, (T, B, P))                       # (T, B, P)
    dh = _as(dh_n, dt, (B, P)).copy()                     # (B, P) grad wrt the running h
    dc = _as(dc_n, dt, (B, H)).copy()                     # (B, H) grad wrt the running c

    dx = np.zeros((T, B, I), dtype=dt)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    db = np.zeros(4 * H, dtype=dt)                        # db_ih == db_hh
    dw_hr = None if w_hr is None else np.zeros_like(w_hr)

    for k in reversed(range(T)):
        s = cache["steps"][k]
        t, active = s["t"], s["active"]
        mask = active[:, None].astype(dt)                 # (B, 1)
        # gradient reaching this step's output h' (only for active sequences)
        dh_new = (dh + dout[t, bidx]) * mask              # (B, P)
        if w_hr is None:
            dm = dh_new                                   # (B, H)
        else:
            dw_hr += dh_new.T @ s["m"]                    # (P, H)
            dm = dh_new @ w_hr                            # (B, H)
        i, f, g, o, ac = s["i"], s["f"], s["g"], s["o"], s["ac"]
        do = dm * ac
        dc_tot = dc * mask + dm * o * _act_grad(act, s["c"], ac)  # (B, H) grad wrt c'
        di = dc_tot * g
        df = dc_tot * s["c_prev"]
        dg = dc_tot * i
        dc_prev = dc_tot * f
        # d sigmoid(z) = sigmoid(z) * (1 - sigmoid(z))
        da = np.concatenate([di * i * (1 - i),
                             df * f * (1 - f),
                             dg * _act_grad(act, s["ag"], g),
                             do * o * (1 - o)], axis=1)   # (B, 4H)
        dw_ih += da.T @ s["x"]                            # (4H, I)
        dw_hh += da.T @ s["h_prev"]                       # (4H, P)
        db += da.sum(axis=0)
        dxt = da @ w_ih                                   # (B, I)
        dx[t[active], bidx[active]] = dxt[active]
        dh_prev = da @ w_hh                               # (B, P)
        act_col = active[:, None]
        dh = np.where(act_col, dh_prev, dh)
        dc = np.where(act_col, dc_prev, dc)

    grads = dict(dx=dx, dh0=dh, dc0=dc, dw_ih=dw_ih, dw_hh=dw_hh, db_ih=db, db_hh=db.copy())
    if w_hr is not None:
        grads["dw_hr"] = dw_hr
    return grads


# ----------------------------------------------------------------------------
# GRU
# ----------------------------------------------------------------------------

def gru_forward(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, lengths=None, reverse=False):
    """GRU layer.  Returns (out (T,B,H), h_n (B,H), cache)."""
    x = np.asarray(x)
    dt = x.dtype
    T, B, I = x.shape
    H = np.shape(w_ih)[0] // 3
    w_ih = _as(w_ih, dt, (3 * H, I))                      # (3H, I)
    w_hh = _as(w_hh, dt, (3 * H, H))                      # (3H, H)
    b_ih = _as(b_ih, dt, (3 * H,))
    b_hh = _as(b_hh, dt, (3 * H,))
    h = _as(h0, dt, (B, H)).copy()                        # (B, H)
    lens = _lengths(lengths, T, B)
    bidx = np.arange(B)

    out = np.zeros((T, B, H), dtype=dt)
    steps = []
    for k in range(T):
        t, active = _step_index(k, lens, reverse)
        xt = x[t, bidx]                                   # (B, I)
        gi = xt @ w_ih.T + b_ih                           # (B, 3H) input part
        gh = h @ w_hh.T + b_hh                            # (B, 3H) recurrent part
        r = _sigmoid(gi[:, :H] + gh[:, :H])               # (B, H)
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])     # (B, H)
        ghn = gh[:, 2 * H:]                               # (B, H) W_hn h + b_hn
        n = np.tanh(gi[:, 2 * H:] + r * ghn)              # (B, H)
        h_new = (1 - z) * n + z * h                       # (B, H)

        steps.append(dict(t=t, active=active, x=xt, h_prev=h, r=r, z=z, n=n, ghn=ghn))
        out[t[active], bidx[active]] = h_new[active]
        h = np.where(active[:, None], h_new, h)

    cache = dict(cell="gru", dtype=dt, shape=(T, B, I, H), lengths=lens,
                 reverse=bool(reverse), w_ih=w_ih, w_hh=w_hh, steps=steps)
    return out, h, cache


def gru_backward(cache, dout=None, dh_n=None):
    """Gradients of a GRU layer; keys dx, dh0, dw_ih, dw_hh, db_ih, db_hh."""
    dt = cache["dtype"]
    T, B, I, H = cache["shape"]
    w_ih, w_hh = cache["w_ih"], cache["w_hh"]
    bidx = np.arange(B)
    dout = _as(dout, dt, (T, B, H))
    dh = _as(dh_n, dt, (B, H)).copy()                     # (B, H)

    dx = np.zeros((T, B, I), dtype=dt)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    db_ih = np.zeros(3 * H, dtype=dt)
    db_hh = np.zeros(3 * H, dtype=dt)

    for k in reversed(range(T)):
        s = cache["steps"][k]
        t, active = s["t"], s["active"]
        mask = active[:, None].astype(dt)
        dh_new = (dh + dout[t, bidx]) * mask              # (B, H)
        r, z, n, h_prev = s["r"], s["z"], s["n"], s["h_prev"]
        # h' = (1 - z) * n + z * h  =>  dh'/dn = 1 - z, dh'/dz = h - n, dh'/dh = z
        dn = dh_new * (1 - z)
        dz = dh_new * (h_prev - n)
        # d tanh(z) = 1 - tanh(z)^2
        dan = dn * (1 - n * n)                            # grad wrt n's pre-activation
        dr = dan * s["ghn"]
        # d sigmoid(z) = sigmoid(z) * (1 - sigmoid(z))
        dar = dr * r * (1 - r)
        daz = dz * z * (1 - z)
        dgi = np.concatenate([dar, daz, dan], axis=1)     # (B, 3H) grad wrt gi
        dgh = np.concatenate([dar, daz, dan * r], axis=1)  # (B, 3H) grad wrt gh
        dw_ih += dgi.T @ s["x"]
        dw_hh += dgh.T @ h_prev
        db_ih += dgi.sum(axis=0)
        db_hh += dgh.sum(axis=0)
        dxt = dgi @ w_ih                                  # (B, I)
        dx[t[active], bidx[active]] = dxt[active]
        dh_prev = dh_new * z + dgh @ w_hh                 # (B, H)
        dh = np.where(active[:, None], dh_prev, dh)

    return dict(dx=dx, dh0=dh, dw_ih=dw_ih, dw_hh=dw_hh, db_ih=db_ih, db_hh=db_hh)


# ----------------------------------------------------------------------------
# Elman RNN
# ----------------------------------------------------------------------------

def rnn_forward(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, lengths=None, reverse=False,
                nonlinearity="tanh"):
    """Elman RNN layer.  Returns (out (T,B,H), h_n (B,H), cache)."""
    act = _check_act(nonlinearity)
    x = np.asarray(x)
    dt = x.dtype
    T, B, I = x.shape
    H = np.shape(w_ih)[0]
    w_ih = _as(w_ih, dt, (H, I))                          # (H, I)
    w_hh = _as(w_hh, dt, (H, H))                          # (H, H)
    b_ih = _as(b_ih, dt, (H,))
    b_hh = _as(b_hh, dt, (H,))
    h = _as(h0, dt, (B, H)).copy()                        # (B, H)
    lens = _lengths(lengths, T, B)
    bidx = np.arange(B)

    out = np.zeros((T, B, H), dtype=dt)
    steps = []
    for k in range(T):
        t, active = _step_index(k, lens, reverse)
        xt = x[t, bidx]                                   # (B, I)
        a = xt @ w_ih.T + b_ih + h @ w_hh.T + b_hh        # (B, H) pre-activation
        h_new = _act(act, a)                              # (B, H)

        steps.append(dict(t=t, active=active, x=xt, h_prev=h, a=a, h=h_new))
        out[t[active], bidx[active]] = h_new[active]
        h = np.where(active[:, None], h_new, h)

    cache = dict(cell="rnn", act=act, dtype=dt, shape=(T, B, I, H), lengths=lens,
                 reverse=bool(reverse), w_ih=w_ih, w_hh=w_hh, steps=steps)
    return out, h, cache


def rnn_backward(cache, dout=None, dh_n=None):
    """Gradients of an Elman RNN layer; keys dx, dh0, dw_ih, dw_hh, db_ih, db_hh."""
    act = cache["act"]
    dt = cache["dtype"]
    T, B, I, H = cache["shape"]
    w_ih, w_hh = cache["w_ih"], cache["w_hh"]
    bidx = np.arange(B)
    dout = _as(dout, dt, (T, B, H))
    dh = _as(dh_n, dt, (B, H)).copy()                     # (B, H)

    dx = np.zeros((T, B, I), dtype=dt)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    db = np.zeros(H, dtype=dt)                            # db_ih == db_hh

    for k in reversed(range(T)):
        s = cache["steps"][k]
        t, active = s["t"], s["active"]
        mask = active[:, None].astype(dt)
        dh_new = (dh + dout[t, bidx]) * mask              # (B, H)
        da = dh_new * _act_grad(act, s["a"], s["h"])      # (B, H)
        dw_ih += da.T @ s["x"]
        dw_hh += da.T @ s["h_prev"]
        db += da.sum(axis=0)
        dxt = da @ w_ih                                   # (B, I)
        dx[t[active], bidx[active]] = dxt[active]
        dh_prev = da @ w_hh                               # (B, H)
        dh = np.where(active[:, None], dh_prev, dh)

    return dict(dx=dx, dh0=dh, dw_ih=dw_ih, dw_hh=dw_hh, db_ih=db, db_hh=db.copy())
