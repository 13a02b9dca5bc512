"""Keras weights in and out of fusedrnn layers (fusedrnn.keras_import).

Two oracles:
* Keras' own layer tests (keras-team/keras, keras/src/layers/rnn/lstm_test.py, gru_test.py,
  simple_rnn_test.py) publish the outputs of small layers with constant initialisers
  (kernel 0.01, recurrent kernel 0.02, bias 0.03); the numbers below are theirs, checked
  at their tolerance (1e-5).  Constant weights are blind to gate order except through the
  LSTM's unit_forget_bias, so:
* a forward written here straight from the Keras cell equations (batch-major, its own gate
  order, one bias for LSTM/SimpleRNN, [input; recurrent] biases for GRU reset_after=True),
  run with random weights in float64.
"""

import numpy as np
import pytest

from conftest import assert_close
from keras_reference import GATES, constant_weights, keras_forward, random_keras
from fusedrnn import GRU, LSTM, RNN
from fusedrnn.keras_import import from_keras_weights, to_keras_weights

CLASSES = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
KERAS_TOL = 1e-5


def keras_layer(cell, I, H, bidirectional=True, **kw):
    """A fusedrnn layer holding the Keras constant weights; with bidirectional=True the
    reverse direction holds them too, so h_n[1] is Keras' go_backwards=True result."""
    bias = kw.get("use_bias", True)
    layer = CLASSES[cell](I, H, bias=bias, batch_first=True, bidirectional=bidirectional, seed=0)
    layer.load_keras_weights(constant_weights(cell, I, H, **kw) * (2 if bidirectional else 1))
    return layer


def final_states(layer, x, h0=None, c0=None, lengths=None):
    if isinstance(layer, LSTM):
        return layer(x, None if h0 is None else (h0, c0), lengths=lengths)[1][0]
    return layer(x, h0, lengths=lengths)[1]


def close(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64), rtol=KERAS_TOL,
                               atol=KERAS_TOL)


# ----------------------------------------------------------------------------
# Keras' published numbers
# ----------------------------------------------------------------------------

SEQ_3x6x4 = np.arange(72).reshape((3, 6, 4)).astype(np.float32)
SEQ_2x4x3 = np.arange(24).reshape((2, 4, 3)).astype(np.float32)
SEQ_2x3x4 = np.arange(24).reshape((2, 3, 4)).astype(np.float32)


def rows(*values, width):
    """Keras' constant-weight outputs repeat one value across the units."""
    return [[v] * width for v in values]


def test_lstm_published_correctness():
    h = final_states(keras_layer("lstm", 4, 3), SEQ_3x6x4)
    close(h[0], rows(0.6288687, 0.86899155, 0.9460773, width=3))
    close(h[1], rows(0.35622165, 0.74789524, 0.8872726, width=3))  # go_backwards=True
    h = final_states(keras_layer("lstm", 4, 3, bidirectional=False, unit_forget_bias=False), SEQ_3x6x4)
    close(h[0], rows(0.57019705, 0.8661914, 0.9459622, width=3))
    h = final_states(keras_layer("lstm", 4, 3, bidirectional=False, use_bias=False), SEQ_3x6x4)
    close(h[0], rows(0.54986924, 0.86226785, 0.9443936, width=3))


def test_lstm_published_initial_state_statefulness_and_masking():
    state = np.arange(4).reshape((2, 2)).astype(np.float32)
    both = np.stack([state, state])
    h = final_states(keras_layer("lstm", 3, 2), SEQ_2x4x3, both, both)
    close(h[0], [[0.20574439, 0.3558822], [0.64930826, 0.66276]])
    close(h[1], [[0.13281618, 0.2790356], [0.5839337, 0.5992567]])  # go_backwards=True

    # stateful=True: the second call starts from the first call's final (h, c)
    layer = keras_layer("lstm", 4, 4, bidirectional=False)
    _, hc = layer(SEQ_2x3x4)
    _, (h, _) = layer(SEQ_2x3x4, hc)
    close(h[0], rows(0.3124785, 0.6863672, width=4))

    # mask [[1, 1, 1, 0], [1, 1, 0, 0]] is right padding: lengths 3 and 2
    layer = keras_layer("lstm", 3, 2, bidirectional=False)
    out, (h, _) = layer(SEQ_2x4x3, lengths=[3, 2])
    close(h[0], rows(0.11755939, 0.28556206, width=2))
    # return_sequences with zero_output_for_mask=True
    close(out[0], rows(0.01588910, 0.05552048, 0.11755939, 0.0, width=2))
    close(out[1], rows(0.14185596, 0.28556206, 0.0, 0.0, width=2))
    # go_backwards with mask [[0, 1, 1, 1], [0, 0, 1, 1]]: Keras reverses input and mask,
    # which is the time-flipped sequence right-padded to lengths 3 and 2
    flipped = np.ascontiguousarray(SEQ_2x4x3[:, ::-1])
    _, (h, _) = layer(flipped, lengths=[3, 2])
    close(h[0], rows(0.15341201, 0.3844719, width=2))


def test_gru_published_numbers():
    h = final_states(keras_layer("gru", 4, 3), SEQ_3x6x4)  # reset_after=True, Keras' default
    close(h[0], rows(0.5217289, 0.6371659, 0.39384964, width=3))
    close(h[1], rows(0.24406259, 0.611516, 0.3928808, width=3))  # go_backwards=True
    h = final_states(keras_layer("gru", 4, 3, bidirectional=False, use_bias=False), SEQ_3x6x4)
    close(h[0], rows(0.49988455, 0.64701194, 0.4103359, width=3))

    state = np.arange(4).reshape((2, 2)).astype(np.float32)
    h = final_states(keras_layer("gru", 3, 2), SEQ_2x4x3, np.stack([state, state]))
    close(h[0], [[0.23774096, 0.33508456], [0.83659905, 1.0227708]])
    close(h[1], [[0.13486053, 0.23261218], [0.78257304, 0.9691353]])

    layer = keras_layer("gru", 4, 4, bidirectional=False)
    _, h = layer(SEQ_2x3x4)
    _, h = layer(SEQ_2x3x4, h)
    close(h[0], rows(0.29542392, 0.5885018, width=4))


def test_simple_rnn_published_numbers():
    h = final_states(keras_layer("rnn", 4, 4), SEQ_2x3x4)
    close(h[0], rows(0.405432, 0.73605347, width=4))
    close(h[1], rows(0.11144729, 0.5528889, width=4))  # go_backwards=True

    layer = keras_layer("rnn", 4, 4, bidirectional=False)
    _, h = layer(SEQ_2x3x4)
    _, h = layer(SEQ_2x3x4, h)
    close(h[0], rows(0.40559256, 0.7361247, width=4))

    state = np.arange(8).reshape((2, 4)).astype(np.float32)
    h = final_states(keras_layer("rnn", 3, 4), SEQ_2x4x3, np.stack([state, state]))
    close(h[0], rows(0.33621645, 0.6262637, width=4))
    close(h[1], rows(0.07344437, 0.43043602, width=4))


def test_keras_gru_reset_before_is_refused():
    weights = constant_weights("gru", 4, 3)
    weights[2] = np.full(9, 0.03)  # reset_after=False keeps one (3H,) bias
    with pytest.raises(ValueError, match=r"shape \(9,\) comes from reset_after=False"):
        GRU(4, 3, batch_first=True).load_keras_weights(weights)


# ----------------------------------------------------------------------------
# random weights against the Keras equations
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_two_layer_bidirectional_stack_matches_keras_equations(rng, cell, use_bias):
    """A Keras stack of two Bidirectional(cell) layers (merge_mode='concat'), weights listed
    as its get_weights() does: layer by layer, forward then backward."""
    B, T, I, H = 3, 5, 4, 3
    per_layer_in = (I, 2 * H)
    groups = [random_keras(rng, cell, per_layer_in[k // 2], H, use_bias) for k in range(4)]
    layer = CLASSES[cell](I, H, num_layers=2, bias=use_bias, batch_first=True,
                          bidirectional=True, dtype="float64", seed=0)
    layer.load_keras_weights([a for g in groups for a in g])

    x = rng.standard_normal((B, T, I))
    h0 = rng.standard_normal((4, B, H))
    c0 = rng.standard_normal((4, B, H))
    inp, h_ref, c_ref = x, [], []
    for k in range(2):
        fw = keras_forward(cell, inp, *groups[2 * k][:2], groups[2 * k][2] if use_bias else None,
                           h0[2 * k], c0[2 * k])
        bw = keras_forward(cell, inp, *groups[2 * k + 1][:2], groups[2 * k + 1][2] if use_bias else None,
                           h0[2 * k + 1], c0[2 * k + 1], go_backwards=True)
        # Bidirectional re-reverses the backward sequence to line it up in time
        inp = np.concatenate([fw[0], bw[0][:, ::-1]], axis=2)
        h_ref += [fw[1], bw[1]]
        c_ref += [fw[2], bw[2]]
    if cell == "lstm":
        out, (h, c) = layer(x, (h0, c0))
        assert_close(c, np.stack(c_ref), np.float64, "c_n")
    else:
        out, h = layer(x, h0)
    assert_close(out, inp, np.float64, "out")
    assert_close(h, np.stack(h_ref), np.float64, "h_n")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_export_is_the_inverse_and_drives_the_keras_equations(rng, cell):
    layer = CLASSES[cell](3, 4, num_layers=2, dtype="float64", seed=1)  # torch-style init
    weights = layer.keras_weights()
    G = GATES[cell]
    shapes = [(3, G * 4), (4, G * 4), (2, 12) if cell == "gru" else (G * 4,),
              (4, G * 4), (4, G * 4), (2, 12) if cell == "gru" else (G * 4,)]
    assert [w.shape for w in weights] == shapes
    x = rng.standard_normal((6, 2, 3))  # time-major for the layer, (T, B, I)
    h0 = rng.standard_normal((2, 2, 4))
    c0 = rng.standard_normal((2, 2, 4))
    out1, h1, _ = keras_forward(cell, x.transpose(1, 0, 2).copy(), *weights[:3], h0[0], c0[0])
    out2, _, _ = keras_forward(cell, out1, *weights[3:], h0[1], c0[1])
    hx = (h0, c0) if cell == "lstm" else h0
    out = layer(x, hx)[0]
    assert_close(out, out2.transpose(1, 0, 2), np.float64, "out")

    again = CLASSES[cell](3, 4, num_layers=2, dtype="float64", seed=2)
    again.load_keras_weights(weights)
    assert_close(again(x, hx)[0], out, np.float64, "round trip")


def test_conversion_functions_move_gate_blocks():
    H = 2
    # column j of the kernel is unit j of the stacked gates: give each block its own value
    kernel = np.repeat(np.arange(3.0), H)[None, :] * np.ones((1, 3 * H))  # Keras z, r, h
    bias = np.stack([np.repeat([10.0, 20.0, 30.0], H), np.repeat([1.0, 2.0, 3.0], H)])
    torch_w = from_keras_weights("gru", kernel, np.zeros((H, 3 * H)), bias)
    np.testing.assert_array_equal(torch_w["weight_ih"][:, 0], np.repeat([1.0, 0.0, 2.0], H))  # r, z, n
    np.testing.assert_array_equal(torch_w["bias_ih"], np.repeat([20.0, 10.0, 30.0], H))
    np.testing.assert_array_equal(torch_w["bias_hh"], np.repeat([2.0, 1.0, 3.0], H))
    back = to_keras_weights("gru", torch_w["weight_ih"], torch_w["weight_hh"],
                            torch_w["bias_ih"], torch_w["bias_hh"])
    np.testing.assert_array_equal(back[0], kernel)
    np.testing.assert_array_equal(back[2], bias)
    lstm = from_keras_weights("lstm", np.arange(8.0).reshape(1, 8), np.zeros((2, 8)), np.arange(8.0))
    np.testing.assert_array_equal(lstm["weight_ih"][:, 0], np.arange(8.0))  # same order, transposed
    np.testing.assert_array_equal(lstm["bias_hh"], np.zeros(8))
    summed = to_keras_weights("rnn", np.ones((2, 1)), np.zeros((2, 2)), np.ones(2), 2 * np.ones(2))
    np.testing.assert_array_equal(summed[2], [3.0, 3.0])


KERAS_ERRORS = [
    (lambda: LSTM(4, 3).load_keras_weights(constant_weights("lstm", 4, 3)[:2]), ValueError,
     r"expected 3 arrays: \[kernel, recurrent_kernel, bias\] for each of 1 layer\(s\) x 1 direction\(s\), got 2"),
    (lambda: LSTM(4, 3, bias=False).load_keras_weights(constant_weights("lstm", 4, 3)), ValueError,
     r"expected 2 arrays: \[kernel, recurrent_kernel\].*got 3 \(this layer has bias=False\)"),
    (lambda: LSTM(4, 3, proj_size=2).load_keras_weights([]), ValueError, "Keras has no LSTM with a projection"),
    (lambda: LSTM(4, 3, proj_size=2).keras_weights(), ValueError, "no LSTM with a projection"),
    (lambda: LSTM(5, 3).load_keras_weights(constant_weights("lstm", 4, 3)), ValueError,
     r"Keras weights for weight_ih_l0 convert to shape \(12, 4\), this layer needs \(12, 5\)"),
    (lambda: LSTM(4, 3).load_keras_weights(constant_weights("lstm", 4, 2)), ValueError,
     r"weight_ih_l0 convert to shape \(8, 4\), this layer needs \(12, 4\)"),
    (lambda: GRU(4, 3, bidirectional=True).load_keras_weights(
        constant_weights("gru", 4, 3) + constant_weights("lstm", 4, 3)), ValueError,
     r"Keras weights for l0_reverse: recurrent_kernel of a Keras GRU must have shape \(H, 3\*H\), got \(3, 12\)"),
    (lambda: from_keras_weights("lstm", np.zeros((4, 12)), np.zeros((3, 12)), np.zeros(9)), ValueError,
     r"bias of a Keras LSTM must have shape \(12,\), got \(9,\)"),
    (lambda: from_keras_weights("gru", np.zeros((4, 9)), np.zeros((3, 9)), np.zeros((3, 9))), ValueError,
     r"bias of a Keras GRU \(reset_after=True\) must have shape \(2, 9\), got \(3, 9\)"),
    (lambda: from_keras_weights("rnn", np.zeros((4, 2)), np.zeros((3, 3))), ValueError,
     r"kernel must have shape \(I, 3\) to match recurrent_kernel \(H = 3\), got \(4, 2\)"),
    (lambda: from_keras_weights("lstm", np.zeros((4, 12), complex), np.zeros((3, 12))), TypeError,
     "kernel must hold real numbers, got dtype complex128"),
    (lambda: from_keras_weights("conv", np.zeros((4, 3)), np.zeros((3, 3))), ValueError,
     "cell must be 'lstm', 'gru' or 'rnn', got 'conv'"),
    (lambda: to_keras_weights("lstm", np.zeros((12, 4)), np.zeros((12, 2))), ValueError,
     r"weight_hh must have shape \(4\*H, H\).*got \(12, 2\)"),
    (lambda: to_keras_weights("rnn", np.zeros((3, 4)), np.zeros((3, 3)), np.zeros(3)), ValueError,
     "give both bias_ih and bias_hh, or neither"),
]


@pytest.mark.parametrize("fn,exc,msg", KERAS_ERRORS)
def test_keras_errors(fn, exc, msg):
    with pytest.raises(exc, match=msg):
        fn()
