"""The compiled module called directly, and sizes no machine has, run in a child process
(isolation.Worker): a segfault, abort or hang there fails the case instead of the run.

Property: a raw _core call returns what the NumPy reference returns, or raises TypeError/
ValueError/MemoryError naming the argument; never anything else, never a crash."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from .counting import counted, examples
from .oracle import GATES, assert_matches
from .strategies import PROVENANCE, Variant, bad_values, materialize, ops_cases
from .test_ops_fuzz import forward as ops_style_forward
from fusedrnn import reference as ref

FWD_NAMES = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "h0", "c0", "lengths", "reverse",
             "activation", "training"]
BWD_NAMES = ["x", "w_ih", "w_hh", "w_hr", "lengths", "reverse", "activation", "workspace",
             "dout", "dh_n", "dc_n"]
CLEAN = ("TypeError", "ValueError", "MemoryError")
GEOMETRY = ("x", "w_ih", "w_hr")  # T, B, I, H and P are read off these


def raw_args(cell, kw):
    """ops-style kwargs -> the compiled function's positional arguments (all checked there)."""
    x = kw["x"]
    dt = x.dtype
    T, B, _ = x.shape
    GH, P = kw["w_hh"].shape
    H = GH // GATES[cell]
    zeros = lambda *s: np.zeros(s, dt)  # noqa: E731
    lengths = kw.get("lengths")
    act = kw.get("activation", kw.get("nonlinearity", "tanh"))
    c0 = (kw.get("c0") if kw.get("c0") is not None else zeros(B, H)) if cell == "lstm" else None
    return [x, kw["w_ih"], kw["w_hh"],
            kw["b_ih"] if kw.get("b_ih") is not None else zeros(GH),
            kw["b_hh"] if kw.get("b_hh") is not None else zeros(GH),
            kw.get("w_hr"), kw["h0"] if kw.get("h0") is not None else zeros(B, P), c0,
            None if lengths is None else lengths.astype(np.int64), kw["reverse"], act, False]


def reference_of(cell, args):
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse, act, _ = args
    kw = dict(x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, h0=h0, lengths=lengths,
              reverse=reverse)
    if cell == "lstm":
        kw.update(c0=c0, w_hr=w_hr, activation=act)
    elif cell == "rnn":
        kw["nonlinearity"] = act
    return ops_style_forward(ref, cell, kw)[:3]


def judge(outcome, name, what, others=()):
    """A clean error must be one of CLEAN and name the argument (pybind's own conversion
    error lists every argument's name and type, so it names it too); `others` may be named
    instead when the argument sets the geometry the others are checked against."""
    names = [name, *others] + (["activation"] if name == "_unused" else [])
    kind, exc_type, msg = outcome
    assert exc_type in CLEAN, f"{what}: {exc_type}: {msg}"
    if exc_type != "MemoryError":
        assert any(n in msg for n in names), f"{what}: {exc_type} does not name {name!r}: {msg}"


@examples(120)
@given(case=ops_cases(), data=st.data())
@counted
def test_raw_forward_with_one_fuzzed_argument(worker, case, data):
    cell, kw = case
    args = raw_args(cell, kw)
    i = data.draw(st.integers(0, len(args) - 1), label="position")
    # The GRU's compiled forward has no activation; pybind names that slot '_unused'.
    name = "_unused" if (cell, FWD_NAMES[i]) == ("gru", "activation") else FWD_NAMES[i]
    like = args[i] if isinstance(args[i], np.ndarray) else None
    choices = [bad_values(like)]
    if like is not None:
        choices.append(st.sampled_from(sorted(PROVENANCE)).map(lambda v: (v, Variant(v, like))))
        choices.append(st.just(("list", like.tolist())))
    label, value = data.draw(st.one_of(*choices), label="value")
    args[i] = value
    outcome, _ = worker.run("core_forward", cell, args)
    what = f"_core.{cell}_forward with {name} = {label}"
    if outcome[0] == "raise":
        judge(outcome, name, what, FWD_NAMES[:9] if name in GEOMETRY else ())
        return
    # Accepted: it must then mean what the reference makes of the same values.
    try:
        with np.errstate(all="ignore"):
            expected = reference_of(cell, [np.asarray(a) if isinstance(a, list) else a
                                           for a in materialize(args)])
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{what} was accepted, but the reference rejects it: {exc!r}")
    for got, exp, part in zip(outcome[1], expected, ("out", "h_n", "c_n")):
        if exp is not None:
            assert_matches(got, exp, f"{what}: {part}")


@examples(80)
@given(case=ops_cases(), data=st.data())
@counted
def test_raw_backward_with_one_fuzzed_argument(worker, case, data):
    cell, kw = case
    fwd = raw_args(cell, kw)
    fwd[-1] = True
    rng = np.random.default_rng(0)
    dt, (T, B, _) = kw["x"].dtype, kw["x"].shape
    GH, P = kw["w_hh"].shape
    H = GH // GATES[cell]
    bwd = [rng.standard_normal((T, B, P)).astype(dt), rng.standard_normal((B, P)).astype(dt),
           rng.standard_normal((B, H)).astype(dt) if cell == "lstm" else None]
    i = data.draw(st.integers(0, len(BWD_NAMES) - 1), label="position")
    name = "_unused" if (cell, BWD_NAMES[i]) == ("gru", "activation") else BWD_NAMES[i]
    full = [fwd[0], fwd[1], fwd[2], fwd[5], fwd[8], fwd[9], fwd[10], None] + bwd
    like = full[i]
    if name == "workspace":
        label, value = data.draw(st.sampled_from([
            ("a garbage workspace of the right shape", "garbage"),
            ("a copy", "<workspace-copy>"), ("a list", [1.0]), ("None", None),
            ("an empty array", np.zeros(0, dt)), ("a huge zero-stride array", "<virtual>")]))
        if isinstance(value, str) and value == "garbage":
            # The forward's workspace geometry: read it off a real one in the parent.
            ws = __import__("fusedrnn")._core.__dict__[f"{cell}_forward"](*fwd)[3]
            value = np.full(ws.shape, np.nan, dt) if data.draw(st.booleans()) \
                else (rng.standard_normal(ws.shape) * 1e30).astype(dt)
    else:
        choices = [bad_values(like if isinstance(like, np.ndarray) else None)]
        if isinstance(like, np.ndarray):
            choices.append(st.sampled_from(sorted(PROVENANCE)).map(lambda v: (v, Variant(v, like))))
        label, value = data.draw(st.one_of(*choices), label="value")
    outcome, _ = worker.run("core_backward", cell, fwd, bwd, {i: value})
    what = f"_core.{cell}_backward with {name} = {label}"
    if outcome[0] == "raise":
        judge(outcome, name, what, BWD_NAMES if name in GEOMETRY else ())
    # Accepted values that differ from the forward's (a garbage workspace, other lengths)
    # give garbage gradients by contract of the raw API; the property is no crash.


HUGE = [
    # (cell, T, B, I, H, P, dtype, training, virtual x): internal scratch of >= 16 GiB
    ("lstm", 1024, 1, 1, 2**22, 1, "float32", False, False),
    ("lstm", 1024, 1, 1, 2**22, 1, "float32", True, False),
    ("gru", 64, 16, 1, 2**22, 2**22, "float32", False, True),
    ("rnn", 2**16, 2**8, 1, 2**12, 2**12, "float64", True, True),
    ("rnn", 2**31, 2, 1, 1, 1, "float32", False, True),
    ("lstm", 2**40, 2**20, 1, 1, 1, "float32", True, True),
    ("gru", 2**20, 2**20, 2**20, 1, 1, "float64", False, True),
]


@pytest.mark.parametrize("case", HUGE, ids=lambda c: f"{c[0]}-T{c[1]}-B{c[2]}-H{c[4]}-{c[6]}"
                         + ("-train" if c[7] else ""))
def test_sizes_past_memory_fail_cleanly(worker, case):
    outcome, _ = worker.run("huge_ops", *case, timeout=120)
    assert outcome[0] == "raise", f"{case} computed under a 3 GiB address-space limit?"
    judge(outcome, "x" if outcome[1] != "MemoryError" else "", f"ops at {case}")


@pytest.mark.parametrize("args", [("lstm", 2**20, 2**20, 1, 0), ("gru", 2**16, 2**16, 2, 0),
                                  ("rnn", 2**62, 2**62, 1, 0), ("lstm", 8, 2**40, 1, 2**39)],
                         ids=str)
def test_layers_past_memory_fail_cleanly(worker, args):
    outcome, _ = worker.run("huge_layer", *args, timeout=60)
    assert outcome[0] == "raise", f"a layer {args} was built under a 3 GiB limit?"
    judge(outcome, "size", f"{args}")
