"""Inference over Dask arrays (fusedrnn/_dask.py): layers and Keras predict, chunked along the
batch axis, against the same model run in memory on the whole array.

The oracle is the in-memory call, and the comparison is exact: the kernels compute each row
with the same operations in the same order whatever the batch size (checked here on uneven
chunks of the batch), so a block's rows are bitwise the rows of the whole batch.  The one
exception is NumPy's matmul on a single row, which goes through gemv instead of gemm and can
differ in the last bit: a Keras predict batch of one row (a chunk of size 1, or a chunk one row
longer than a multiple of batch_size) meets it in its Dense layers, so that case has a test of
its own at float32 rounding.
"""

import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fusedrnn  # noqa: E402
from fusedrnn import _dask  # noqa: E402
from fusedrnn.keras import Model, Sequential  # noqa: E402
from fusedrnn.keras.layers import GRU, LSTM, Bidirectional, Dense, Embedding, Masking  # noqa: E402

T, B, I, H = 6, 40, 5, 8
CHUNKS = (12, 18, 2, 8)  # uneven, with a block of two rows; no batch of one row at batch_size 8


def _threads(*arrays):
    return dask.compute(*arrays, scheduler="threads")


def _layer(cls, dtype="float32", **kw):
    return cls(I, H, num_layers=2, dtype=dtype, seed=3, **kw).eval()


def _data(rng, dtype="float32", batch_first=False):
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B)
    return x, lengths


def _chunked(x, batch_axis, chunks=CHUNKS):
    c = [x.shape[0], x.shape[1], x.shape[2]]
    c[batch_axis] = chunks
    return da.from_array(x, chunks=tuple(c))


def _flat(result):
    """(out, h_n) or (out, (h_n, c_n)) as a flat list."""
    out, state = result
    return [out] + (list(state) if isinstance(state, tuple) else [state])


# --- layers ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,bidirectional,batch_first,dtype,extra", [
    (fusedrnn.LSTM, False, False, "float32", {}),
    (fusedrnn.LSTM, True, True, "float64", {}),
    (fusedrnn.LSTM, True, False, "float32", {"proj_size": 3}),
    (fusedrnn.GRU, True, False, "float32", {}),
    (fusedrnn.GRU, False, True, "float64", {}),
    (fusedrnn.RNN, True, False, "float64", {"nonlinearity": "relu"}),
    (fusedrnn.RNN, False, True, "float32", {}),
])
def test_layer_matches_in_memory(rng, cls, bidirectional, batch_first, dtype, extra):
    layer = _layer(cls, dtype, bidirectional=bidirectional, batch_first=batch_first, **extra)
    x, lengths = _data(rng, dtype, batch_first)
    LD = 2 * layer.num_directions
    h0 = rng.standard_normal((LD, B, extra.get("proj_size", H))).astype(dtype)
    hx = (h0, rng.standard_normal((LD, B, H)).astype(dtype)) if cls is fusedrnn.LSTM else h0
    expected = _flat(layer(x, hx, lengths=lengths))

    bax = 0 if batch_first else 1
    # lengths as a dask array chunked unlike x (rechunked to match); the initial states as
    # NumPy (split to match) and, for the LSTM's c0, as dask.
    dl = da.from_array(lengths, chunks=7)
    dhx = (h0, da.from_array(hx[1], chunks=(1, 9, H))) if cls is fusedrnn.LSTM else h0
    got = _flat(layer(_chunked(x, bax), dhx, lengths=dl))
    for g, e in zip(got, expected):
        assert isinstance(g, da.Array)
        assert g.dtype == np.dtype(dtype) and g.shape == e.shape
        assert isinstance(g._meta, np.ndarray) and g._meta.dtype == np.dtype(dtype)
    assert got[0].chunks[bax] == CHUNKS
    assert all(g.chunks[1] == CHUNKS for g in got[1:])
    for g, e in zip(_threads(*got), expected):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


def test_layer_without_lengths_or_states_and_time_axis_chunked(rng):
    layer = _layer(fusedrnn.LSTM, bidirectional=True)
    x, _ = _data(rng)
    expected = _flat(layer(x))
    dx = da.from_array(x, chunks=(2, CHUNKS, 3))  # time and features chunked: rechunked
    got = _flat(layer(dx))
    assert got[0].chunks == ((T,), CHUNKS, (2 * H,))
    for g, e in zip(_threads(*got), expected):
        np.testing.assert_array_equal(g, e)


def test_layer_unknown_chunk_sizes_and_empty_blocks(rng):
    layer = _layer(fusedrnn.GRU, batch_first=True)
    x, _ = _data(rng, batch_first=True)
    keep = np.zeros(B, bool)
    keep[[0, 3, 30, 31, 39]] = True  # blocks 2 and 3 of CHUNKS keep no row
    dx = _chunked(x, 0)[da.from_array(keep, chunks=CHUNKS)]
    assert np.isnan(dx.shape[0])
    out, h_n = layer(dx)
    got_out, got_h = _threads(out, h_n)
    exp_out, exp_h = layer(x[keep])
    np.testing.assert_array_equal(got_out, exp_out)
    np.testing.assert_array_equal(got_h, exp_h)
    with pytest.raises(ValueError, match="lengths cannot be split.*unknown"):
        layer(dx, lengths=np.full(5, T))


def test_layer_outputs_share_one_forward_per_block(rng, monkeypatch):
    layer = _layer(fusedrnn.LSTM)
    x, _ = _data(rng)
    calls = []
    real = _dask._LayerBlocks.__call__
    monkeypatch.setattr(_dask._LayerBlocks, "__call__",
                        lambda self, *a: calls.append(1) or real(self, *a))
    out, (h_n, c_n) = layer(_chunked(x, 1))
    _threads(out, h_n, c_n)
    assert len(calls) == len(CHUNKS)


def test_layer_errors(rng):
    layer = _layer(fusedrnn.LSTM)
    x, _ = _data(rng)
    dx = _chunked(x, 1)
    with pytest.raises(TypeError, match="training mode.*eval"):
        fusedrnn.LSTM(I, H).__call__(dx)
    with pytest.raises(ValueError, match="must be 3-D .T, B, I."):
        layer(dx[:, 0])
    with pytest.raises(ValueError, match="must be 3-D"):
        layer(dx[None])
    with pytest.raises(ValueError, match="input_size = 5"):
        layer(dx[:, :, :3])
    with pytest.raises(TypeError, match="dtype float32.*got float64"):
        layer(dx.astype("float64"))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 40, 8\), got \(2, 39, 8\)"):
        layer(dx, (np.zeros((2, B - 1, H), "float32"), None))
    with pytest.raises(ValueError, match="lengths"):
        layer(dx, lengths=np.full(B - 1, T))
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\)"):
        layer(dx, lengths=da.zeros((B, 2), chunks=B))
    # backward never takes a dask gradient
    train = fusedrnn.LSTM(I, H, seed=0)
    out, _ = train(x)
    with pytest.raises(TypeError, match="dout is a dask array.*backward"):
        train.backward(da.from_array(out))
    # training mode switched on between building the graph and computing it
    lazy, _ = layer(dx)
    layer.train()
    with pytest.raises(TypeError, match="training mode before its dask result"):
        lazy.compute(scheduler="sync")


# --- Keras models ------------------------------------------------------------------------

def _keras_model(dtype="float32", masking=False):
    layers = [Masking(input_shape=(T, I))] if masking else []
    layers += [Bidirectional(LSTM(H, return_sequences=True, dtype=dtype), input_shape=(T, I)),
               GRU(H, dtype=dtype), Dense(3, activation="softmax", dtype=dtype)]
    return Sequential(layers, seed=5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_matches_in_memory(rng, dtype):
    model = _keras_model(dtype)
    x, lengths = _data(rng, dtype, batch_first=True)
    # Blocks of 12, 18, 2, 8 rows with batch_size 8: no batch of one row on either side.
    expected = model.predict(x, batch_size=8, lengths=lengths)
    got = model.predict(_chunked(x, 0), batch_size=8, lengths=lengths)
    assert isinstance(got, da.Array) and got.chunks == (CHUNKS, (3,))
    assert got.dtype == np.dtype(dtype)
    value, = _threads(got)
    assert value.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(value, expected)
    # lengths as dask; x's time axis chunked (rechunked)
    got = model.predict(da.from_array(x, chunks=(CHUNKS, 2, I)), batch_size=8,
                        lengths=da.from_array(lengths, chunks=5))
    np.testing.assert_array_equal(_threads(got)[0], expected)


def test_predict_sequence_output_mask_and_ids(rng):
    # Masking (left padding: rolled and rolled back in each block), sequence output
    model = Sequential([Masking(input_shape=(T, I)), LSTM(H, return_sequences=True),
                        Dense(2)], seed=1)
    x, lengths = _data(rng, batch_first=True)
    x[np.arange(T)[None, :] < (T - lengths)[:, None]] = 0.0
    expected = model.predict(x, batch_size=8)
    got = model.predict(_chunked(x, 0), batch_size=8)
    assert got.chunks == (CHUNKS, (T,), (2,))
    np.testing.assert_array_equal(_threads(got)[0], expected)
    # token ids into an Embedding (2-D x)
    emb = Sequential([Embedding(20, 4, mask_zero=True), GRU(H), Dense(1)], seed=2)
    ids = rng.integers(1, 20, (B, T))
    ids[:5, 4:] = 0
    expected = emb.predict(ids, batch_size=8)
    got = emb.predict(da.from_array(ids, chunks=(CHUNKS, T)), batch_size=8)
    np.testing.assert_array_equal(_threads(got)[0], expected)


class _Classifier(Model):
    def __init__(self):
        super().__init__(seed=4)
        self.rnn = GRU(H, return_sequences=True)
        self.head = Dense(2)

    def call(self, x, training=False):
        return self.head(self.rnn(x, training=training))


def test_predict_subclassed_model_threads(rng):
    model = _Classifier()
    x, lengths = _data(rng, batch_first=True)
    expected = model.predict(x, batch_size=8, lengths=lengths)
    got = model.predict(_chunked(x, 0, (8,) * 5), batch_size=8, lengths=lengths)
    np.testing.assert_array_equal(_threads(got)[0], expected)


def test_predict_one_row_batches(rng):
    # A block of one row runs the Dense layers through NumPy's gemv (a single-row matmul),
    # whose sums are ordered unlike gemm's: equal to float32 rounding, not bitwise.
    model = _keras_model()
    x, lengths = _data(rng, batch_first=True)
    expected = model.predict(x, batch_size=8, lengths=lengths)
    got = _threads(model.predict(_chunked(x, 0, (1, 9, 30)), batch_size=8, lengths=lengths))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_keras_models_pickle(rng):
    x, _ = _data(rng, batch_first=True)
    model = _keras_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, rng.integers(0, 3, B), epochs=1, batch_size=16, verbose=0)
    sub = _Classifier()
    for m in (model, sub):
        copy = pickle.loads(pickle.dumps(m))
        np.testing.assert_array_equal(copy.predict(x), m.predict(x))


def test_model_ships_once_in_the_graph(rng):
    model = _keras_model()
    x, _ = _data(rng, batch_first=True)
    got = model.predict(_chunked(x, 0), batch_size=2)  # every block starts on a batch
    graph = dict(got.__dask_graph__())
    keys = [k for k in graph if isinstance(k, str) and k.startswith("fusedrnn-model-")]
    assert len(keys) == 1
    deps = [k for k, v in graph.items() if _refers(v, keys[0])]
    assert len(deps) == len(CHUNKS)


@pytest.mark.parametrize("batch_size,blocks", [(8, (8, 16, 8, 8)), (32, (32, 8)), (2, CHUNKS),
                                               (40, (40,)), (64, (40,))])
def test_blocks_start_where_in_memory_batches_start(rng, batch_size, blocks):
    """The blocks are rechunked to start on multiples of batch_size, so each runs the in-memory
    call's very batches: products of another row count may round a row differently (the BLAS
    picks kernels by shape), which would break bitwise equality.  The result keeps x's chunks."""

    x, _ = _data(rng, batch_first=True)
    dx = _chunked(x, 0)
    assert _dask._on_batches(dx, dx.chunks[0], batch_size).chunks[0] == blocks
    model = Sequential([LSTM(H, input_shape=(T, I)), Dense(1)], seed=4)
    got = model.predict(dx, batch_size=batch_size)
    assert got.chunks[0] == CHUNKS
    np.testing.assert_array_equal(_threads(got)[0], model.predict(x, batch_size=batch_size))


def _refers(task, key) -> bool:
    """Whether a graph value uses key: a Task's dependencies (newer dask), or the key found
    in a tuple task (older dask)."""
    if hasattr(task, "dependencies"):
        return key in task.dependencies
    if isinstance(task, (tuple, list)):
        return any(t == key or _refers(t, key) for t in task)
    return False


def test_predict_errors(rng):
    x, lengths = _data(rng, batch_first=True)
    dx = _chunked(x, 0)
    model = _keras_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    y = np.zeros(B, int)
    with pytest.raises(TypeError, match="x is a dask array.*training and evaluation"):
        model.fit(dx, y, verbose=0)
    with pytest.raises(TypeError, match="y is a dask array"):
        model.evaluate(x, da.from_array(y))
    with pytest.raises(TypeError, match="x is a dask array.*model.predict"):
        model(dx, training=True)
    with pytest.raises(ValueError, match="batch axis first"):
        model.predict(dx[:, 0, 0])
    with pytest.raises(ValueError, match=r"lengths must have shape \(N,\)"):
        model.predict(dx, lengths=da.zeros((B, 1), chunks=B))
    with pytest.raises(ValueError, match="lengths"):
        model.predict(dx, lengths=lengths[:-1])
    with pytest.raises(ValueError, match="lengths or a mask"):
        _keras_model(masking=True).predict(dx, lengths=lengths)
    stateful = Sequential([GRU(H, stateful=True, input_shape=(T, I)), Dense(1)], seed=0)
    with pytest.raises(ValueError, match="stateful"):
        stateful.predict(dx)


def test_import_without_dask():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dask' or name.startswith('dask.'):\n"
        "            raise ImportError('dask blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np, fusedrnn, fusedrnn.keras\n"
        "out, _ = fusedrnn.GRU(3, 4, seed=0).eval()(np.ones((2, 5, 3), np.float32))\n"
        "assert out.shape == (2, 5, 4)\n"
        "assert not any(m == 'dask' or m.startswith('dask.') for m in sys.modules)\n"
        "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


# --- a dask.distributed cluster ----------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    start = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    print(f"\nLocalCluster(2 processes) started in {time.perf_counter() - start:.1f} s")
    yield client
    client.close()
    cluster.close()


def test_distributed_matches_in_memory(rng, client, monkeypatch):
    layer = _layer(fusedrnn.LSTM, "float64", bidirectional=True, batch_first=True)
    x, lengths = _data(rng, "float64", batch_first=True)
    expected = _flat(layer(x, lengths=lengths))
    model = _keras_model()
    x32 = x.astype("float32")
    expected_predict = model.predict(x32, batch_size=8, lengths=lengths)

    pickled = {_dask._LayerBlocks: 0, _dask._Predictor: 0}
    for klass in pickled:
        real = klass.__reduce_ex__

        def spy(self, proto, klass=klass, real=real):
            pickled[klass] += 1
            return real(self, proto)
        monkeypatch.setattr(klass, "__reduce_ex__", spy)
    chunks = (5,) * 8  # batch_size 8 in memory, 5 here: no batch of one row on either side
    start = time.perf_counter()
    out, (h_n, c_n) = layer(_chunked(x, 0, chunks), lengths=da.from_array(lengths, chunks=9))
    pred = model.predict(_chunked(x32, 0, chunks), batch_size=8, lengths=lengths)
    got = client.compute([out, h_n, c_n, pred], sync=True)
    print(f"distributed compute: {time.perf_counter() - start:.2f} s")
    for g, e in zip(got[:3], expected):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(got[3], expected_predict)
    # Each model is serialised a fixed number of times (the client's submission; the
    # scheduler, which a LocalCluster runs in this process, handing its task to a worker), not
    # once per block: the workers pass it on among themselves.
    assert all(1 <= n <= 3 for n in pickled.values()), pickled
