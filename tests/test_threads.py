"""Thread control, and processes forked after the kernels' threads started."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fusedrnn
from fusedrnn import ops
from fusedrnn import reference as ref

_FORK_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp
    import numpy as np
    import fusedrnn
    from fusedrnn import ops

    def work(seed):
        rng = np.random.default_rng(seed)
        T, B, H = 20, 32, 128     # big enough for two threads and the split BLAS products
        x = rng.standard_normal((T, B, H)).astype(np.float32)
        w = (rng.standard_normal((4 * H, H)) * 0.05).astype(np.float32)
        out, h, c, cache = ops.lstm_forward(x, w, w, training=True)
        g = ops.lstm_backward(cache, np.ones_like(out))
        return float(np.abs(g["dx"]).sum()), fusedrnn.get_num_threads()

    if __name__ == "__main__":
        fusedrnn.set_num_threads(2)
        parent = work(0)          # starts the thread pool in the parent
        with mp.get_context("fork").Pool(2) as pool:
            children = pool.map(work, [0, 1])
        print(parent[0] == children[0][0], children[0][1], children[1][1])
""")


def test_forked_children_do_not_hang(tmp_path):
    script = tmp_path / "fork_after_threads.py"
    script.write_text(_FORK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    same, t0, t1 = proc.stdout.split()
    assert same == "True"          # the child computes what the parent computed
    assert (t0, t1) == ("1", "1")  # and runs on one thread


@pytest.mark.parametrize("threads", [1, 2])
def test_results_do_not_depend_on_threads(rng, threads):
    T, B, I, H = 12, 16, 40, 90
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w_ih = (rng.standard_normal((3 * H, I)) * 0.1).astype(np.float32)
    w_hh = (rng.standard_normal((3 * H, H)) * 0.1).astype(np.float32)
    before = fusedrnn.get_num_threads()
    try:
        fusedrnn.set_num_threads(threads)
        assert fusedrnn.get_num_threads() == threads
        out, h_n, cache = ops.gru_forward(x, w_ih, w_hh, training=True)
        grads = ops.gru_backward(cache, np.ones_like(out))
    finally:
        fusedrnn.set_num_threads(before)
    r_out, r_h, r_cache = ref.gru_forward(x, w_ih, w_hh)
    r_grads = ref.gru_backward(r_cache, np.ones_like(r_out))
    np.testing.assert_allclose(out, r_out, atol=1e-5)
    for key in r_grads:
        scale = max(1.0, float(np.abs(r_grads[key]).max()))
        assert np.abs(grads[key] - r_grads[key]).max() / scale < 1e-5, key


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                     ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects(bad, exc):
    with pytest.raises(exc, match="n must"):
        fusedrnn.set_num_threads(bad)
