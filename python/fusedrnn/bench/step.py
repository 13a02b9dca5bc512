"""`fusedrnn bench --step`: the latency of one streaming step (layer.step) against torch's cell
on the same weights, input and threads, and T steps against one whole-sequence call.

Timing: each measurement is a block of calls carrying the state from call to call (as a stream
does), its time divided by the calls; blocks of the contenders alternate (round robin) and the
median over blocks is reported, with the quartiles.  torch runs under no_grad.
"""

from __future__ import annotations

import json
import time

import numpy as np

from . import report

_TORCH_CELL = {"lstm": "LSTMCell", "gru": "GRUCell", "rnn": "RNNCell"}


def _layer(cell, I, H, layers, dtype, seed):
    from ..layers import GRU, LSTM, RNN

    cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[cell]
    return cls(I, H, num_layers=layers, dtype=dtype, seed=seed).eval()


def _torch_cells(layer):
    """A stack of torch cells holding the layer's weights, and one step over it."""
    import torch

    tdtype = getattr(torch, layer.dtype.name)
    cls = getattr(torch.nn, _TORCH_CELL[layer._cell])
    cells = []
    for li in range(layer.num_layers):
        c = cls(layer.input_size if li == 0 else layer.hidden_size, layer.hidden_size).to(tdtype)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(c, name).copy_(torch.from_numpy(layer.params[f"{name}_l{li}"]))
        cells.append(c)
    lstm = layer._cell == "lstm"

    def step(x, state):
        new = []
        for c, s in zip(cells, state):
            s = c(x, s)
            new.append(s)
            x = s[0] if lstm else s
        return new

    return cells, step


def _blocks(fns: dict, calls: int, repeats: int) -> dict:
    """Per-call seconds of each fn() (which runs `calls` calls), round robin, `repeats` blocks."""
    out = {name: [] for name in fns}
    for fn in fns.values():  # warm up: packing, first-touch, caches
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append((time.perf_counter() - t0) / calls)
    return out


def _stats(samples) -> dict:
    q1, med, q3 = np.percentile(np.asarray(samples) * 1e6, [25, 50, 75])
    return {"median_us": float(med), "q1_us": float(q1), "q3_us": float(q3), "blocks": len(samples)}


def run(cell, B, I, H, T, layers, dtype, threads, seed, repeats, use_torch, json_path=None) -> dict:
    import fusedrnn

    fusedrnn.set_num_threads(threads)
    layer = _layer(cell, I, H, layers, dtype, seed)
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((T, B, I)).astype(dtype)
    calls = max(1, 2000 // T) * T  # ~2000 step calls per block, a whole number of sequences

    def fused_steps():
        state = None
        for i in range(calls):
            out, state = layer.step(xs[i % T], state)

    def fused_sequence():
        for _ in range(calls // T):
            layer(xs)

    fns = {"fusedrnn step": fused_steps, "fusedrnn sequence": fused_sequence}
    head = {"cell": cell, "B": B, "I": I, "H": H, "T": T, "layers": layers, "dtype": dtype,
            "threads": threads, "cpu": report.cpu_model(), "load_average": report._load_average(),
            "fusedrnn_isa": fusedrnn._core.isa()}
    if use_torch:
        import torch

        torch.set_num_threads(threads)
        cells, tstep = _torch_cells(layer)
        txs = torch.from_numpy(xs)
        zeros = torch.zeros(B, H, dtype=txs.dtype)
        start = [(zeros, zeros) if cell == "lstm" else zeros for _ in cells]

        def torch_steps():
            state = start
            with torch.no_grad():
                for i in range(calls):
                    state = tstep(txs[i % T], state)

        fns["torch cell"] = torch_steps
        head["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                         "capability": torch.backends.cpu.get_cpu_capability(),
                         "cell": f"torch.nn.{_TORCH_CELL[cell]}" + (f" x {layers}" if layers > 1 else "")}
    times = _blocks(fns, calls, repeats)
    res = {name: _stats(t) for name, t in times.items()}
    # the sequence call's time per step; its ratio to one step call is "T steps / one call"
    res["ratios"] = {"steps_over_sequence": res["fusedrnn step"]["median_us"] / res["fusedrnn sequence"]["median_us"]}
    if use_torch:
        res["ratios"]["torch_cell_over_step"] = res["torch cell"]["median_us"] / res["fusedrnn step"]["median_us"]
    result = {"header": head, "results": res}
    _print(result)
    if json_path:
        report.write_atomic(json_path, json.dumps(result, indent=1) + "\n")
    return result


def _print(result):
    h, r = result["header"], result["results"]
    load = h["load_average"]
    print(f"fusedrnn bench --step · {h['cpu']} · threads {h['threads']} · isa {h['fusedrnn_isa']}"
          + (f" · load average {load[0]:.2f}" if load else ""))
    if "torch" in h:
        t = h["torch"]
        print(f"torch {t['version']} ({t['cell']}, cpu capability {t['capability']}, no_grad)")
    print(f"{h['cell']} B={h['B']} I={h['I']} H={h['H']} layers={h['layers']} {h['dtype']}; "
          f"median over {r['fusedrnn step']['blocks']} blocks of calls, µs per step [IQR]")
    for name, label in (("fusedrnn step", "fusedrnn layer.step"), ("torch cell", "torch cell(s)"),
                        ("fusedrnn sequence", f"fusedrnn forward, T={h['T']}, per step")):
        if name in r:
            s = r[name]
            print(f"  {label:<32} {s['median_us']:9.2f}  [{s['q1_us']:.2f} .. {s['q3_us']:.2f}]")
    ratios = r["ratios"]
    if "torch_cell_over_step" in ratios:
        print(f"  torch cell / layer.step: {ratios['torch_cell_over_step']:.2f}x")
    print(f"  {h['T']} calls of layer.step / one forward over T={h['T']}: {ratios['steps_over_sequence']:.2f}x")
