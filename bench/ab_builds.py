"""Two builds of fusedrnn timed against each other, interleaved, on one case.

    python bench/ab_builds.py DIR_A DIR_B CELL B T I H MODE ISA THREADS ROUNDS CALLS [DTYPE [PROJ]]

DIR_A and DIR_B are directories that each hold a ``fusedrnn`` package (for instance two
``pip install --target`` outputs of different commits).  One long-lived process per build runs
the same layer (same seed, same input); the parent asks each for CALLS timed calls in turn,
ROUNDS times, alternating which goes first, so both builds see the same minutes of a shared,
noisy machine.  The children run with the contention guard off (see _CHILD).  MODE is ``fwd``
(inference) or ``fwdbwd`` (a training forward and backward).  Prints the median and fastest
call of each and their ratios A/B (above 1: B is faster).  PROJ, for an LSTM: its proj_size.
"""

import os
import platform
import subprocess
import sys

import numpy as np

_CHILD = r"""
import sys, time
import numpy as np
import fusedrnn
from fusedrnn import _core

cell, B, T, I, H, mode, isa, threads, calls, dtype, proj = sys.argv[1:12]
B, T, I, H, calls, proj = int(B), int(T), int(I), int(H), int(calls), int(proj)
_core.set_isa(isa)
fusedrnn.set_num_threads(int(threads))
# Each turn starts with this build's threads asleep while the other build's may still spin: the
# contention guard would read that as a busy machine and run on one thread for seconds.
_core.set_contention_guard(False)
x = np.random.default_rng(0).standard_normal((T, B, I)).astype(dtype)
kw = {"proj_size": proj} if proj else {}
layer = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}[cell](I, H, dtype=dtype, seed=1, **kw)
if mode == "fwd":
    layer.eval()
y, _ = layer(x)
grad = np.ones_like(y)

def once():
    t0 = time.perf_counter()
    layer(x)
    if mode != "fwd":
        layer.backward(grad)
    return (time.perf_counter() - t0) * 1e3

for _ in range(3):
    once()
for _ in sys.stdin:
    print(" ".join(str(once()) for _ in range(calls)), flush=True)
"""


def main(argv):
    if len(argv) not in (12, 13, 14):
        sys.exit(__doc__)
    dir_a, dir_b, cell, B, T, I, H, mode, isa, threads, rounds, calls = argv[:12]
    dtype = argv[12] if len(argv) >= 13 else "float32"
    proj = argv[13] if len(argv) == 14 else "0"
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    print(f"# ab_builds: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"threads {threads}, load average before: {' '.join(f'{v:.2f}' for v in load)}")
    env = dict(os.environ, OMP_NUM_THREADS=threads, FUSEDRNN_NUM_THREADS=threads)
    procs = {
        name: subprocess.Popen([sys.executable, "-c", _CHILD, cell, B, T, I, H, mode, isa, threads, calls, dtype, proj],
                               env=dict(env, PYTHONPATH=d), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
        for name, d in (("A", dir_a), ("B", dir_b))
    }
    times = {"A": [], "B": []}
    try:
        for r in range(int(rounds)):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                p = procs[name]
                p.stdin.write("go\n")
                p.stdin.flush()
                line = p.stdout.readline()
                if not line:
                    sys.exit(f"build {name} stopped")
                times[name] += [float(v) for v in line.split()]
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    a, b = np.array(times["A"]), np.array(times["B"])
    shape = f"B={B} T={T} I={I} H={H}" + (f" P={proj}" if proj != "0" else "")
    print(f"{cell} {shape} {mode} {isa} t{threads} {dtype}: "
          f"A median {np.median(a):.3f} min {a.min():.3f} | B median {np.median(b):.3f} min {b.min():.3f} | "
          f"A/B median {np.median(a) / np.median(b):.3f} min {a.min() / b.min():.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
