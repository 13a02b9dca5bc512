# usage: python simd_ab.py threads dtype  -> prints median ms of fwd and fwd+bwd per case
import sys, time, numpy as np, fusedrnn
from fusedrnn import ops
th, dt = int(sys.argv[1]), np.dtype(sys.argv[2])
fusedrnn.set_num_threads(th)
rng = np.random.default_rng(0)
G = {"lstm": 4, "gru": 3, "rnn": 1}
for cell, B, T, H in [("lstm", 32, 50, 256), ("gru", 32, 50, 256), ("rnn", 32, 50, 256), ("lstm", 16, 100, 64), ("lstm", 1, 100, 128)]:
    x = rng.standard_normal((T, B, H)).astype(dt)
    w_ih = (rng.uniform(-1, 1, (G[cell] * H, H)) / np.sqrt(H)).astype(dt)
    w_hh = (rng.uniform(-1, 1, (G[cell] * H, H)) / np.sqrt(H)).astype(dt)
    f = getattr(ops, cell + "_forward"); bw = getattr(ops, cell + "_backward")
    def fwd(): f(x, w_ih, w_hh)
    def fb():
        r = f(x, w_ih, w_hh, training=True); bw(r[-1], np.ones_like(r[0]))
    res = []
    for fn in (fwd, fb):
        fn(); fn()
        ts = []
        t_end = time.perf_counter() + 0.6
        while len(ts) < 7 or time.perf_counter() < t_end:
            t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
        res.append(np.median(ts) * 1e3)
    print(f"{cell} B={B} T={T} H={H} fwd {res[0]:.2f} fwdbwd {res[1]:.2f}", flush=True)
