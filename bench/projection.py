"""LSTM with a projection (torch's proj_size): forward+backward of fusedrnn.LSTM against
torch.nn.LSTM on the same weights, inputs and thread count.

    python bench/projection.py [--threads 2] [--min-time 2] [--out bench/results/projection.txt]

Each case is first validated (outputs and every gradient against torch's, float32 tolerances),
then both contenders run round robin after two warm-up calls until each has at least
``--min-time`` seconds and 5 calls; the report gives medians and the interquartile range in ms
and the ratio torch / fusedrnn (above 1: fusedrnn is faster).  The cases: a small
classifier-sized layer, two mid-sized ones, and a speech-style layer (H = 1024, P = 256).
torch 2.x runs a projected LSTM on its own per-step loop on the CPU, not through oneDNN (it
warns so), which is why the ratios here are larger than for the plain LSTM.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

# (B, T, I, H, P)
CASES = [(16, 100, 64, 128, 32), (32, 100, 256, 512, 128), (64, 50, 512, 512, 256),
         (16, 50, 512, 1024, 256)]


def _quartiles(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], q[1], q[2]


def _pair(B, T, I, H, P):
    import torch

    import fusedrnn

    rng = np.random.default_rng(0)
    ours = fusedrnn.LSTM(I, H, proj_size=P, seed=0)
    ours.train()
    theirs = torch.nn.LSTM(I, H, proj_size=P)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(ours.state_dict()[name]))
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dout = rng.standard_normal((T, B, P)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    dt = torch.from_numpy(dout)

    def run_ours():
        ours.zero_grad()
        out, _ = ours(x)
        return out, ours.backward(dout)[0]

    def run_theirs():
        xt.grad = None
        theirs.zero_grad(set_to_none=True)
        out, _ = theirs(xt)
        out.backward(dt)
        return out

    return ours, theirs, xt, run_ours, run_theirs


def _validate(ours, theirs, xt, run_ours, run_theirs):
    out, dx = run_ours()
    out_t = run_theirs()
    checks = [("out", out, out_t.detach().numpy()), ("dx", dx, xt.grad.numpy())]
    checks += [("d" + name, ours.grads[name], p.grad.numpy()) for name, p in theirs.named_parameters()]
    worst = 0.0
    for name, a, b in checks:
        scale = max(1.0, float(np.max(np.abs(b))))
        err = float(np.max(np.abs(a - b))) / scale
        if err > 1e-4:
            sys.exit(f"{name} differs from torch's by {err:.2e} (relative to its largest value)")
        worst = max(worst, err)
    return worst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds per contender and case")
    p.add_argument("--out", help="also write the report to this file")
    args = p.parse_args(argv)

    import warnings

    import torch

    import fusedrnn

    # torch says once that its oneDNN path has no projection and it takes its own loop
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    fusedrnn.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    info = fusedrnn.build_info()
    lines = [f"# projection: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"threads {args.threads}, fusedrnn isa {info.get('isa')}, torch {torch.__version__}",
             f"# load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
             "case                          fusedrnn_ms  (IQR)    torch_ms  (IQR)    torch/fusedrnn"
             "  max_rel_err"]
    print("\n".join(lines), flush=True)
    for B, T, I, H, P in CASES:
        ours, theirs, xt, run_ours, run_theirs = _pair(B, T, I, H, P)
        err = _validate(ours, theirs, xt, run_ours, run_theirs)
        times = {"ours": [], "theirs": []}
        for fn in (run_ours, run_theirs):  # warm-up
            fn()
            fn()
        spent = {"ours": 0.0, "theirs": 0.0}
        while min(spent.values()) < args.min_time or min(len(v) for v in times.values()) < 5:
            for key, fn in (("ours", run_ours), ("theirs", run_theirs)):
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                times[key].append(dt * 1e3)
                spent[key] += dt
        (o1, om, o3), (t1, tm, t3) = _quartiles(times["ours"]), _quartiles(times["theirs"])
        label = f"B={B} T={T} I={I} H={H} P={P}"
        lines.append(f"{label:<29} {om:>11.2f} {o3 - o1:>6.2f} {tm:>11.2f} {t3 - t1:>6.2f} "
                     f"{tm / om:>16.2f}x {err:>11.1e}")
        print(lines[-1], flush=True)
    lines.append(f"# load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(lines[-1])
    if args.out:  # written whole, then renamed
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
