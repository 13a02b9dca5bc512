"""Ctrl-C during a long kernel call stops it within a bounded time, and the kernels work after.

Each scenario runs in a fresh interpreter whose main thread starts a long call while a timer
thread sends it SIGINT; the child reports how long after the signal KeyboardInterrupt arrived.
"""

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent("""
    import signal, sys, threading, time
    import numpy as np
    import fusedrnn
    from fusedrnn import ops, reference as ref

    # A process started in the background by a non-interactive shell (a CI script's `cmd &`)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: install
    # it, as an interactive session has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    threads = int(sys.argv[1])
    fusedrnn.set_num_threads(threads)
    rng = np.random.default_rng(0)
    T, B, H = 2000, 64, 256          # seconds per call on two cores
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    w_ih = (rng.standard_normal((4 * H, H)) * 0.05).astype(np.float32)
    w_hh = (rng.standard_normal((4 * H, H)) * 0.05).astype(np.float32)

    def forward():
        return ops.lstm_forward(x, w_ih, w_hh, training=True)

    def interrupted_after(call, delay=0.3):
        sent = []
        timer = threading.Timer(delay, lambda: (sent.append(time.monotonic()),
                                                signal.raise_signal(signal.SIGINT)))
        start = time.monotonic()
        timer.start()
        try:
            call()
        except KeyboardInterrupt:
            end = time.monotonic()
            timer.join()
            return end - sent[0]
        timer.join()
        raise SystemExit(f"no KeyboardInterrupt: the call finished after {time.monotonic() - start:.2f} s")

    t0 = time.monotonic()
    out, h_n, c_n, cache = forward()
    full = time.monotonic() - t0
    late_fwd = interrupted_after(forward)
    again = forward()
    same_fwd = all(np.array_equal(a, b) for a, b in zip((out, h_n, c_n), again[:3]))

    dout = rng.standard_normal(out.shape).astype(np.float32)
    late_bwd = interrupted_after(lambda: ops.lstm_backward(cache, dout))

    # Afterwards the kernels still agree with the reference.
    xs, ds = x[:6, :4, :], dout[:6, :4, :]
    o, h, c, cs = ops.lstm_forward(xs, w_ih, w_hh, training=True)
    g = ops.lstm_backward(cs, ds)
    ro, rh, rc, rcache = ref.lstm_forward(xs.astype(np.float64), w_ih.astype(np.float64), w_hh.astype(np.float64))
    rg = ref.lstm_backward(rcache, ds.astype(np.float64))
    err = max([float(np.abs(o - ro).max())] +
              [float(np.abs(g[k] - rg[k]).max() / max(1.0, np.abs(rg[k]).max())) for k in rg if rg[k] is not None])
    print(full, late_fwd, late_bwd, same_fwd, err)
""")


@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_stops_a_long_call(tmp_path, threads):
    script = tmp_path / "interrupt.py"
    script.write_text(_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(threads)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    full, late_fwd, late_bwd, same_fwd, err = proc.stdout.split()
    # The uninterrupted call must be long enough for the test to mean something.
    assert float(full) > 0.8, f"the forward took only {float(full):.2f} s"
    assert float(late_fwd) < 1.0, f"forward: KeyboardInterrupt {float(late_fwd):.2f} s after SIGINT"
    assert float(late_bwd) < 1.0, f"backward: KeyboardInterrupt {float(late_bwd):.2f} s after SIGINT"
    assert same_fwd == "True"        # the same call runs again, to the same result
    assert float(err) < 1e-5         # and the kernels agree with the reference
