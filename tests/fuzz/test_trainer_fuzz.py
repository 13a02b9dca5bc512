"""fusedrnn.Sequential under fuzzed models, data and arguments: predict equals the NumPy
reference of the same stack; every bad argument of compile/fit/evaluate/predict is a
TypeError/ValueError naming it; save/load keeps predictions bit-equal."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fusedrnn
from fusedrnn import Dense, Dropout, Embedding, Recurrent, Sequential

from .counting import CASES, counted, examples, known_defects
from .oracle import assert_clean_error, assert_matches, layer_forward_backward

CELLS = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}


@st.composite
def models(draw):
    cell = draw(st.sampled_from(sorted(CELLS)))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    F, H, out = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    embed = draw(st.booleans())
    layers = [Embedding(7, F, dtype=dtype)] if embed else []
    rec = CELLS[cell](F, H, num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                      batch_first=draw(st.booleans()), dtype=dtype)
    layers += [Recurrent(rec), Dropout(draw(st.sampled_from([0.0, 0.5]))),
               Dense(rec.num_directions * H, out, activation=draw(st.sampled_from([None, "tanh", "softmax"])),
                     dtype=dtype)]
    return Sequential(layers, seed=draw(st.integers(0, 9))), embed, F


def data_for(model, embed, F, N, T, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 7, (N, T)) if embed else rng.standard_normal((N, T, F)).astype(model.dtype)
    lengths = rng.integers(1, T + 1, N)
    return x, lengths


def reference_predict(model, embed, x, lengths):
    if embed:
        x = model.layers[0].params["weight"][x]
    rec_layer = model.layers[-3].layer
    cell = type(rec_layer).__name__.lower()
    act = getattr(rec_layer, "activation", getattr(rec_layer, "nonlinearity", "tanh"))
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    T, B, _ = xt.shape
    P = rec_layer.hidden_size
    D = rec_layer.num_directions
    zeros = np.zeros((T, B, D * P), model.dtype)
    _, h_n, *_ = layer_forward_backward(cell, act, rec_layer.params, rec_layer.num_layers, D, xt,
                                        None, None, lengths, zeros, None, None)
    last = h_n[-D:].transpose(1, 0, 2).reshape(B, -1)
    dense = model.layers[-1]
    z = last @ dense.params["weight"].T + dense.params["bias"]
    if dense.activation == "tanh":
        return np.tanh(z)
    if dense.activation == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


@examples(40)
@given(models(), st.integers(1, 7), st.integers(1, 6), st.integers(1, 4), st.integers(0, 9))
@counted
def test_predict_matches_reference(model_spec, N, T, batch_size, seed):
    model, embed, F = model_spec
    x, lengths = data_for(model, embed, F, N, T, seed)
    got = model.predict(x, batch_size=batch_size, lengths=lengths)
    assert_matches(got, reference_predict(model, embed, x, lengths), "predict")


def compiled_model():
    model = Sequential([Recurrent(fusedrnn.GRU(2, 3)), Dense(3, 2, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4, 2)).astype(np.float32)
    y = np.eye(2)[rng.integers(0, 2, 6)]
    return model, x, y


BAD = [0, -1, 2.5, float("nan"), "3", None, True, [1], {"a": 1}, object(), np.array([1, 2]),
       (1, 2, 3, 4), "nope", b"x", complex(1, 1)]
FIT_ARGS = ["x", "y", "batch_size", "epochs", "verbose", "callbacks", "validation_split",
            "validation_data", "shuffle", "initial_epoch", "lengths"]
# Values that are valid for an argument (None means 'not given' for the optional ones).
VALID = {"verbose": (0, True, False), "shuffle": (True, False, 0), "callbacks": (None,),
         "validation_data": (None,), "lengths": (None,), "validation_split": (0,),
         "initial_epoch": (0,), "epochs": (0, True), "batch_size": (None,)}  # Keras: None = 32
FIT_DEFECTS: dict = {}  # argument -> a known defect (one line); none today


@pytest.mark.parametrize("name", known_defects(FIT_DEFECTS, FIT_ARGS))
def test_every_bad_fit_argument_is_a_clean_error(name):
    failures = []
    for value in BAD + ([[[1.0, 2.0], [3.0]]] if name in ("x", "y") else []):
        CASES["fit_arguments"] += 1
        if any(value is v or (type(value) is type(v) and value == v) for v in VALID.get(name, ())):
            continue
        model, x, y = compiled_model()
        kw = dict(x=x, y=y, epochs=1, batch_size=3, verbose=0)
        kw[name] = value
        try:
            model.fit(**kw)
        except Exception as exc:  # noqa: BLE001
            try:
                assert_clean_error(exc, [name])
            except AssertionError as why:
                failures.append(f"{name}={value!r}: {why}")
            continue
        failures.append(f"{name}={value!r} was accepted")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("method,name", [
    ("predict", "batch_size"), ("predict", "lengths"), ("evaluate", "batch_size"),
    ("evaluate", "y"), ("compile", "optimizer"), ("compile", "loss"),
    ("compile", "metrics")])
def test_every_bad_argument_of_the_other_methods_is_a_clean_error(method, name):
    failures = []
    for value in BAD:
        CASES["method_arguments"] += 1
        model, x, y = compiled_model()
        kw = {"predict": dict(x=x), "evaluate": dict(x=x, y=y),
              "compile": dict(optimizer="adam", loss="mse")}[method]
        if value is None and name in ("metrics", "lengths", "batch_size"):  # valid: the default
            continue
        kw[name] = value
        try:
            getattr(model, method)(**kw)
        except Exception as exc:  # noqa: BLE001
            try:
                assert_clean_error(exc, [name, name.rstrip("s")])
            except AssertionError as why:
                failures.append(f"{method}({name}={value!r}): {why}")
            continue
        failures.append(f"{method}({name}={value!r}) was accepted")
    assert not failures, "\n".join(failures)


@examples(15)
@given(models(), st.integers(0, 9))
@counted
def test_save_load_keeps_predictions_and_training(tmp_path_factory, model_spec, seed):
    model, embed, F = model_spec
    x, lengths = data_for(model, embed, F, 5, 4, seed)
    out = model.layers[-1].out_features
    y = np.eye(out)[np.random.default_rng(seed).integers(0, out, 5)] if out > 1 else np.ones((5, 1))
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, batch_size=2, verbose=0, lengths=lengths)
    path = tmp_path_factory.mktemp("seq") / "m.npz"
    model.save(path)
    back = Sequential.load(path)
    np.testing.assert_array_equal(back.predict(x, lengths=lengths), model.predict(x, lengths=lengths))
    model.fit(x, y, epochs=2, initial_epoch=1, batch_size=2, verbose=0, lengths=lengths)
    back.fit(x, y, epochs=2, initial_epoch=1, batch_size=2, verbose=0, lengths=lengths)
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
