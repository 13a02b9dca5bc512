"""Packed weights kept between whole-sequence forward calls (ops.PackedWeights, and the layers'
cache keyed by their weight version): a call that reuses the cache gives bit-for-bit the
results of one that packs afresh, the cache really is reused (and never re-read from the
weights), it is refused for another layout, and the layers drop it whenever their weights move.
"""

import copy
import pickle
import threading

import numpy as np
import pytest

from conftest import CELL_CONFIGS, make_case, run_forward, use_isa
import fusedrnn
from fusedrnn import _core, ops

PACKED_ISAS = ["avx2", "avx512"]
CASES = [("lstm-tanh", 0), ("lstm-relu", 6), ("gru", 0), ("rnn-tanh", 0), ("rnn-relu", 0)]


@pytest.fixture(params=PACKED_ISAS)
def packed_isa(request):
    return use_isa(request, request.param)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config,proj", CASES, ids=[f"{c}-P{p}" for c, p in CASES])
def test_reused_cache_matches_a_fresh_pack(rng, packed_isa, config, proj, dtype):
    cell, act = CELL_CONFIGS[config]
    case = make_case(rng, cell, 5, 3, 7, 19, dtype, proj=proj, lengths=True)
    fresh = run_forward(ops, cell, act, case, reverse=True)
    packed = ops.PackedWeights()
    assert not packed.ready and packed.nbytes == 0
    for training in (False, True, False):  # fills on the first call, reused by the next ones
        got = run_forward(ops, cell, act, case, reverse=True, training=training, packed=packed)
        assert packed.ready and packed.nbytes > 0
        for a, b in zip(fresh[:3], got[:3]):
            if a is not None:
                np.testing.assert_array_equal(a, b)


def test_the_cache_is_reused_not_reread(rng, packed_isa):
    """Filled from w, then called with other weights of the same shape: the contract says the
    cache stands for w, and the results show it was used (a new cache gives the new weights)."""
    case = make_case(rng, "gru", 4, 2, 6, 10, np.float32)
    packed = ops.PackedWeights()
    first = run_forward(ops, "gru", None, case, packed=packed)
    other = dict(case, w_ih=case["w_ih"] * 0.5, w_hh=-case["w_hh"])
    again = run_forward(ops, "gru", None, other, packed=packed)
    np.testing.assert_array_equal(first[0], again[0])
    fresh = run_forward(ops, "gru", None, other, packed=ops.PackedWeights())
    assert not np.array_equal(fresh[0], first[0])


@pytest.mark.parametrize("fill_threads,use_threads", [(2, 1), (1, 2)])
def test_the_cache_keeps_its_panel_width_when_the_threads_change(rng, packed_isa, fill_threads,
                                                                  use_threads):
    """An RNN with H = 192 takes forward panels of 64 units at one thread and of 32 at two
    (sequence.h: forward_entry).  A cache filled at one thread count is still used at the
    other: the results show the weights it was filled from, as in the test above."""
    case = make_case(rng, "rnn", 5, 8, 16, 192, np.float32)
    other = dict(case, w_ih=case["w_ih"] * 0.5, w_hh=-case["w_hh"])
    before = fusedrnn.get_num_threads()
    _core.set_contention_guard(False)
    try:
        packed = ops.PackedWeights()
        fusedrnn.set_num_threads(fill_threads)
        first = run_forward(ops, "rnn", "tanh", case, packed=packed)
        fusedrnn.set_num_threads(use_threads)
        again = run_forward(ops, "rnn", "tanh", other, packed=packed)
        fresh = run_forward(ops, "rnn", "tanh", other)
    finally:
        fusedrnn.set_num_threads(before)
        _core.set_contention_guard(True)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(fresh[0], first[0])


def test_a_cache_of_another_layout_is_left_alone(rng, packed_isa):
    """The same cache handed to a layer of another shape or dtype: packed afresh, cache kept."""
    packed = ops.PackedWeights()
    small = make_case(rng, "lstm", 3, 2, 4, 8, np.float32)
    run_forward(ops, "lstm", "tanh", small, packed=packed)
    size = packed.nbytes
    for other in (make_case(rng, "lstm", 3, 2, 4, 24, np.float32),
                  make_case(rng, "lstm", 3, 2, 4, 8, np.float64)):
        want = run_forward(ops, "lstm", "tanh", other)
        got = run_forward(ops, "lstm", "tanh", other, packed=packed)
        np.testing.assert_array_equal(want[0], got[0])
    assert packed.nbytes == size
    np.testing.assert_array_equal(run_forward(ops, "lstm", "tanh", small, packed=packed)[0],
                                  run_forward(ops, "lstm", "tanh", small)[0])


def test_baseline_isa_ignores_the_cache(request, rng):
    use_isa(request, "baseline")
    case = make_case(rng, "rnn", 3, 2, 4, 8, np.float64)
    packed = ops.PackedWeights()
    np.testing.assert_array_equal(run_forward(ops, "rnn", "tanh", case, packed=packed)[0],
                                  run_forward(ops, "rnn", "tanh", case)[0])
    assert not packed.ready


def test_packed_must_be_a_packed_weights(rng):
    case = make_case(rng, "rnn", 3, 2, 4, 8, np.float32)
    with pytest.raises(TypeError, match="packed must be a fusedrnn.ops.PackedWeights or None, got dict"):
        run_forward(ops, "rnn", "tanh", case, packed={})


def _fresh_copy(layer):
    """A layer of the same configuration and weights that has never run (no cache)."""
    twin = type(layer).from_config(layer.get_config())
    twin.load_state_dict(layer.state_dict())
    return twin


@pytest.mark.parametrize("make", [
    lambda: fusedrnn.LSTM(5, 12, num_layers=2, bidirectional=True, proj_size=4, seed=1),
    lambda: fusedrnn.GRU(5, 12, num_layers=2, seed=2, dtype="float64"),
    lambda: fusedrnn.RNN(5, 12, nonlinearity="relu", bidirectional=True, seed=3),
], ids=["lstm", "gru", "rnn"])
def test_layers_drop_the_cache_when_the_weights_move(rng, make):
    layer = make().eval()
    x = rng.standard_normal((6, 3, 5)).astype(layer.dtype)
    out0 = layer(x)[0]
    if _core.isa() != "baseline":
        assert all(p.ready for _, p in layer._packed.values())
    np.testing.assert_array_equal(layer(x)[0], out0)  # reused

    def check(what):
        want = _fresh_copy(layer)(x)[0]
        np.testing.assert_array_equal(layer(x)[0], want, err_msg=what)
        assert not np.array_equal(want, out0), what

    layer.params["weight_hh_l0"] = layer.params["weight_hh_l0"] * 0.5
    check("assigning params[...]")
    state = layer.state_dict()
    state["weight_ih_l0"] = state["weight_ih_l0"] + 0.25
    layer.load_state_dict(state)
    check("load_state_dict")
    layer.params["bias_ih_l0"][...] += 1.0
    layer.weights_changed()
    check("in-place edit + weights_changed()")
    layer.train()  # in train mode no forward takes the cache: in-place edits are seen at once
    layer.params["weight_hh_l0"][...] *= -1.0
    before = dict(layer._packed)
    want = _fresh_copy(layer)(x)[0]
    np.testing.assert_array_equal(layer(x)[0], want)
    assert layer._packed == before
    layer.weights_changed()
    layer.train()
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    for name, g in layer.grads.items():  # an optimiser step, in place, after backward
        layer.params[name][...] -= 0.1 * g
    layer.eval()
    check("backward + in-place optimiser step")


def test_copies_and_threads_share_nothing_stale(rng):
    layer = fusedrnn.LSTM(6, 16, num_layers=2, seed=4).eval()
    x = rng.standard_normal((5, 4, 6)).astype(np.float32)
    want = layer(x)[0]
    for twin in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert twin._packed == {}
        np.testing.assert_array_equal(twin(x)[0], want)
    layer.weights_changed()  # a fresh cache, filled by whichever thread gets there first
    results, errors = [None] * 6, []

    def run(i):
        try:
            results[i] = layer(x)[0]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, want)


@pytest.mark.parametrize("triples", ["trainable", "hand-built", "copied layer", "model"])
def test_an_optimiser_step_without_backward_reaches_the_cache_and_step(rng, triples):
    from fusedrnn.keras import optimizers
    layer = fusedrnn.LSTM(3, 4, num_layers=2, seed=0)
    if triples == "copied layer":
        layer = pickle.loads(pickle.dumps(copy.deepcopy(layer)))
    model = fusedrnn.Sequential([fusedrnn.Recurrent(layer)]) if triples == "model" else None
    x = rng.random((5, 2, 3)).astype(np.float32)
    layer.eval()
    old = layer(x)[0]
    old_step = layer.step(x[0])[0]
    for g in layer.grads.values():
        g[...] = 1.0  # by hand: no backward
    if triples == "hand-built":
        pairs = [(k, p, layer.grads[k]) for k, p in layer.params.items()]
    elif triples == "model":
        pairs = model._trainable()
    else:
        pairs = layer.trainable()
    optimizers.SGD(learning_rate=0.5).apply(pairs)
    fresh = _fresh_copy(layer).eval()
    np.testing.assert_array_equal(layer(x)[0], fresh(x)[0])
    np.testing.assert_array_equal(layer.step(x[0])[0], fresh.step(x[0])[0])
    assert not np.allclose(layer(x)[0], old) and not np.allclose(layer.step(x[0])[0], old_step)


def test_an_optimiser_step_on_other_arrays_keeps_the_cache(rng):
    from fusedrnn.keras import optimizers
    layer, other = fusedrnn.GRU(3, 4, seed=0).eval(), fusedrnn.GRU(3, 4, seed=1)
    x = rng.random((5, 2, 3)).astype(np.float32)
    layer(x), layer.step(x[0])
    packed, stepped, version = dict(layer._packed), layer._step_model, layer.params.version
    for _ in range(3):  # inference calls between steps of another layer and of plain arrays
        optimizers.Adam().apply(other.trainable() + [("w", np.ones(3), np.ones(3))])
        layer(x), layer.step(x[0])
    assert layer.params.version == version
    assert layer._packed == packed and layer._step_model is stepped
