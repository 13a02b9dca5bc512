"""A call whose memory cannot be allocated raises MemoryError naming the bytes and their purpose,
and the process goes on working.

The address-space limit (RLIMIT_AS) is set in a child interpreter after the kernels' threads
have started, so that only the large allocation fails.
"""

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import fusedrnn
    from fusedrnn import ops, reference as ref

    cell = sys.argv[1]
    rng = np.random.default_rng(0)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    H, I = 256, 4
    w_ih = (rng.standard_normal((G * H, I)) * 0.1).astype(np.float32)
    w_hh = (rng.standard_normal((G * H, H)) * 0.1).astype(np.float32)
    fwd, bwd = getattr(ops, cell + "_forward"), getattr(ops, cell + "_backward")

    def small():
        x = rng.standard_normal((5, 3, I)).astype(np.float32)
        res = fwd(x, w_ih, w_hh, training=True)
        out, cache = res[0], res[-1]
        g = bwd(cache, np.ones_like(out))
        r = getattr(ref, cell + "_forward")(x.astype(np.float64), w_ih.astype(np.float64), w_hh.astype(np.float64))
        rg = getattr(ref, cell + "_backward")(r[-1], np.ones(out.shape))
        return max(float(np.abs(out - r[0]).max()), float(np.abs(g["dw_hh"] - rg["dw_hh"]).max()))

    fusedrnn.set_num_threads(2)
    # Start the threads and learn the workspace width from a small training call.
    x = rng.standard_normal((40, 64, I)).astype(np.float32)
    width = fwd(x, w_ih, w_hh, training=True)[-1].workspace.shape[2]
    small()

    T, B = 4000, 64
    out_bytes = T * B * H * 4
    ws_bytes = T * B * width * 4
    x = np.zeros((T, B, I), np.float32)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    # Room for the output (and x) but not for the workspace.
    limit = used + out_bytes + (ws_bytes - out_bytes) // 2
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    try:
        fwd(x, w_ih, w_hh, training=True)
        print("NO-ERROR")
    except MemoryError as e:
        print(ws_bytes, "|", e, "|", small())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="needs an enforced address-space limit (RLIMIT_AS) and /proc: Linux only")
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_workspace_memory_error_names_the_size(tmp_path, cell):
    script = tmp_path / "oom.py"
    script.write_text(_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), cell], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "NO-ERROR" not in proc.stdout
    ws_bytes, message, err = proc.stdout.strip().split(" | ")
    assert f"cannot allocate {ws_bytes} bytes" in message
    assert "training workspace (4000, 64," in message and "float32" in message
    assert float(err) < 1e-4   # small calls still work and agree with the reference
