"""Writes the tf2onnx fixtures of tests/test_onnx_tf2onnx.py: Keras models converted by tf2onnx,
with an input and Keras' own output for it (the oracle).  Not run by the tests: it needs
TensorFlow and tf2onnx, which the test environment does not install.  Made with Python 3.11,
tensorflow-cpu 2.15.1 (Keras 2.15), tf2onnx 1.16.1, onnx 1.17, protobuf 3.20.3:

    pip install tensorflow-cpu==2.15.1 tf2onnx==1.16.1 onnx "protobuf~=3.20"
    python tests/data/tf2onnx/make_fixtures.py
"""

import os

import numpy as np
import tensorflow as tf
import tf2onnx

HERE = os.path.dirname(os.path.abspath(__file__))
L = tf.keras.layers
F = 5


def build(key, steps):
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input(shape=(steps, F), name="x")
    if key == "lstm_last":
        y = L.LSTM(16)(inp)
    elif key == "gru_sequences":
        y = L.GRU(16, return_sequences=True)(inp)  # reset_after=True, Keras' default
    elif key == "bidirectional_lstm":
        y = L.Bidirectional(L.LSTM(8, return_sequences=True))(inp)
    elif key == "stacked_classifier":
        y = L.LSTM(16, return_sequences=True)(inp)
        y = L.GRU(8)(y)
        y = L.Dense(3, activation="softmax")(y)
    elif key == "simplernn":  # tf2onnx writes a Loop here, not an RNN node
        y = L.SimpleRNN(16)(inp)
    else:
        raise KeyError(key)
    model = tf.keras.Model(inp, y, name=key)
    # every weight random, biases too (Keras' zero/one biases would hide a bias-layout error)
    rng = np.random.default_rng(1)
    model.set_weights([(0.4 * rng.standard_normal(w.shape)).astype(np.float32)
                       for w in model.get_weights()])
    return model


def main():
    for key, steps in (("lstm_last", None), ("gru_sequences", 7), ("bidirectional_lstm", 7),
                       ("stacked_classifier", None), ("simplernn", 7)):
        model = build(key, steps)
        spec = (tf.TensorSpec((None, steps, F), tf.float32, name="x"),)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17,
                                   output_path=os.path.join(HERE, key + ".onnx"))
        rng = np.random.default_rng(100)
        cases = {}
        for i, (batch, t) in enumerate(((3, 7), (1, 7)) + (((2, 11), (2, 1)) if steps is None else ())):
            x = rng.standard_normal((batch, t, F)).astype(np.float32)
            cases[f"x{i}"] = x
            cases[f"y{i}"] = model(x, training=False).numpy()
        np.savez_compressed(os.path.join(HERE, key + ".npz"), **cases)


if __name__ == "__main__":
    main()
