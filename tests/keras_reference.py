"""Keras' recurrent cells written straight from their equations, in Keras' own weight layout
(batch-major x, gates side by side in the kernel's columns, one bias for LSTM/SimpleRNN,
[input; recurrent] biases for GRU reset_after=True): the oracle for every test of Keras weights.
"""

import numpy as np

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def constant_weights(cell, I, H, use_bias=True, unit_forget_bias=True):
    """The weights Keras' tests build with Constant(0.01 / 0.02 / 0.03) initialisers."""
    G = GATES[cell]
    weights = [np.full((I, G * H), 0.01), np.full((H, G * H), 0.02)]
    if use_bias:
        if cell == "gru":
            bias = np.full((2, 3 * H), 0.03)
        else:
            bias = np.full(G * H, 0.03)
            if cell == "lstm" and unit_forget_bias:
                bias[H:2 * H] = 1.0  # Keras' unit_forget_bias: the f block starts at one
        weights.append(bias)
    return weights


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def keras_forward(cell, x, kernel, recurrent, bias, h0, c0=None, go_backwards=False):
    """One Keras layer, batch-major x (B, T, I); returns (outputs in processing order,
    final h, final c) as Keras' return_sequences / return_state give them."""
    H = recurrent.shape[0]
    h, c = h0, c0
    outs = []
    for t in (range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])):
        xt = x[:, t]
        if cell == "lstm":  # gates i, f, c, o side by side
            z = xt @ kernel + h @ recurrent + (0 if bias is None else bias)
            i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        elif cell == "gru":  # gates z, r, h; reset_after=True: r scales (h R_h + b_rh)
            mx = xt @ kernel + (0 if bias is None else bias[0])
            mh = h @ recurrent + (0 if bias is None else bias[1])
            z = sigmoid(mx[:, :H] + mh[:, :H])
            r = sigmoid(mx[:, H:2 * H] + mh[:, H:2 * H])
            cand = np.tanh(mx[:, 2 * H:] + r * mh[:, 2 * H:])
            h = z * h + (1 - z) * cand
        else:
            h = np.tanh(xt @ kernel + h @ recurrent + (0 if bias is None else bias))
        outs.append(h)
    return np.stack(outs, axis=1), h, c


def random_keras(rng, cell, I, H, use_bias):
    G = GATES[cell]
    w = [rng.uniform(-0.6, 0.6, (I, G * H)), rng.uniform(-0.6, 0.6, (H, G * H))]
    if use_bias:
        w.append(rng.uniform(-0.6, 0.6, (2, 3 * H) if cell == "gru" else (G * H,)))
    return w


