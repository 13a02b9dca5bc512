"""Training throughput of a data-parallel fit over MPI: 2 ranks x 1 thread against 1 process x
1 thread, on the same global batches.

    python bench/distributed_scaling.py [--repeats N] [--out bench/results/distributed_scaling.txt]

Two LSTM classifiers (last step -> Dense softmax, Adam, sparse categorical cross-entropy):
'vowels', the size of examples/e_vowels_gru.py's data (T=29, 12 features, H=64, 9 classes,
batch 16), and 'large' (T=100, 32 features, H=256, 10 classes, batch 64).  Each configuration
runs in fresh processes (`python this.py --worker ...`, and the same under `mpiexec -n 2`)
with FUSEDRNN_NUM_THREADS=1 and one-thread BLAS; the worker first checks that one epoch of
the distributed fit logs the single-process loss (validation; that epoch is the warm-up),
then times ``repeats`` more epochs of the same fit (by default about a second of them: 30
for 'vowels', whose epoch takes tens of ms, 5 for 'large') and reports the median samples per
second;
``rounds`` such runs of each kind alternate, and the medians over the rounds are reported.  The load average is
printed with the results: the ranks share the machine with whatever else runs.

A second table bounds what any data-parallel step can reach here: the LSTM's fused forward and
backward alone (fusedrnn.ops, one thread) at the global batch and at half of it, and one
allreduce of the model's parameters between 2 ranks (mpi4py, the call the distributed fit
makes).  ``bound = kernels(batch) / (kernels(batch / 2) + allreduce)`` is the speedup of a step
that did nothing else: the Dense layer, the loss, the optimiser and the Python between the calls
only add the same time to both sides, which moves the ratio towards 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "vowels": dict(T=29, F=12, H=64, C=9, batch=16, steps=24, repeats=30),
    "large": dict(T=100, F=32, H=256, C=10, batch=64, steps=6, repeats=5),
}


def _model_and_data(cfg, share=1):
    import numpy as np

    from fusedrnn import LSTM, Dense, Recurrent, Sequential, optimizers

    rng = np.random.default_rng(0)
    n = cfg["batch"] // share * cfg["steps"]
    x = rng.standard_normal((n, cfg["T"], cfg["F"])).astype(np.float32)
    y = rng.integers(0, cfg["C"], n)
    model = Sequential([Recurrent(LSTM(cfg["F"], cfg["H"])),
                        Dense(cfg["H"], cfg["C"], activation="softmax")], seed=0)
    model.compile(optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model, x, y


def worker(name, distributed, repeats, share=1):
    from fusedrnn.keras import callbacks
    from fusedrnn.keras import distributed as dist

    class EpochTimes(callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = [time.perf_counter()]

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter())

    cfg = CONFIGS[name]
    repeats = repeats or cfg["repeats"]
    model, x, y = _model_and_data(cfg, share)
    timer = EpochTimes()
    # the first epoch warms up (and its loss validates); the next `repeats` are timed
    hist = model.fit(x, y, batch_size=cfg["batch"] // share, epochs=1 + repeats, verbose=0, shuffle=True,
                     callbacks=[timer], distributed=True if distributed else None)
    rates = [len(x) / (b - a) for a, b in zip(timer.times[1:], timer.times[2:])]
    if not distributed or dist.rank() == 0:
        print(json.dumps({"first_loss": hist.history["loss"][0], "params": model.count_params(),
                          "param_bytes": sum(w.nbytes for w in model.get_weights()),
                          "samples_per_s": statistics.median(rates), "rates": rates}), flush=True)


def _median_ms(fn, seconds=1.0, warmup=20):
    for _ in range(warmup):
        fn()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def bound_kernels(name):
    """The LSTM's fused forward (training) and backward at the global batch and at half of it."""
    import numpy as np

    from fusedrnn import ops

    cfg = CONFIGS[name]
    T, F, H = cfg["T"], cfg["F"], cfg["H"]
    rng = np.random.default_rng(0)

    def rand(*shape):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    w = [rand(4 * H, F), rand(4 * H, H), rand(4 * H), rand(4 * H)]
    steps = {}
    for b in (cfg["batch"], cfg["batch"] // 2):
        x, h0, c0, dout = rand(T, b, F), rand(b, H), rand(b, H), rand(T, b, H)

        def step(x=x, h0=h0, c0=c0, dout=dout):
            cache = ops.lstm_forward(x, *w, h0, c0, training=True)[3]
            ops.lstm_backward(cache, dout)

        steps[str(b)] = step
    # the two batches alternate call by call, so that a change of the machine's speed while
    # this runs reaches both medians alike
    times = {b: [] for b in steps}
    end, calls = time.perf_counter() + 2.0, 0
    while calls < 40 or time.perf_counter() < end:
        for b, step in steps.items():
            t = time.perf_counter()
            step()
            if calls >= 10:  # the first ten are the warm-up
                times[b].append(time.perf_counter() - t)
        calls += 1
    print(json.dumps({b: 1e3 * statistics.median(v) for b, v in times.items()}), flush=True)


def bound_allreduce(name):
    """One in-place allreduce of the model's parameters (float32) between the ranks."""
    import numpy as np
    from mpi4py import MPI

    cfg = CONFIGS[name]
    F, H, C = cfg["F"], cfg["H"], cfg["C"]
    comm = MPI.COMM_WORLD
    buf = np.ones(4 * H * (F + H + 2) + C * (H + 1), np.float32)  # the LSTM's and the Dense's
    ms = _median_ms(lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
    ms = comm.allreduce(ms, op=MPI.MAX)  # the slower rank's
    if comm.rank == 0:
        print(json.dumps({"allreduce_ms": ms, "params": int(buf.size)}), flush=True)


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec")


_ENV = dict(os.environ, FUSEDRNN_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
            OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def _run(cmd):
    out = subprocess.run(cmd, env=_ENV, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _run_pair(cmd):
    """Two independent processes at once, each on half the batch, no communication: what two
    cores deliver at this moment (the ceiling of the 2-rank run); their summed rate."""
    procs = [subprocess.Popen(cmd, env=_ENV, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return dict(outs[0], samples_per_s=sum(o["samples_per_s"] for o in outs))


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int,
                   help="timed epochs per run (default: 30 for 'vowels', 5 for 'large')")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs of each kind, alternating 1x1 and 2x1 (default 3)")
    p.add_argument("--out", help="also write the report to this file")
    p.add_argument("--worker", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--bound", choices=("kernels", "allreduce"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.bound == "kernels":
        bound_kernels(args.worker)
        return 0
    if args.bound == "allreduce":
        bound_allreduce(args.worker)
        return 0
    if args.worker:
        worker(args.worker, args.distributed, args.repeats, args.share)
        return 0
    mpiexec = _mpiexec()
    if mpiexec is None:
        sys.exit("no mpiexec next to the Python executable or on PATH (pip install 'fusedrnn[mpi]')")
    me = [sys.executable, os.path.abspath(__file__)] + (["--repeats", str(args.repeats)] if args.repeats else [])
    repeats = args.repeats or ", ".join(f"{n} {c['repeats']}" for n, c in CONFIGS.items())
    lines = [f"# distributed_scaling: {platform.machine()}, {os.cpu_count()} CPUs, "
             f"python {platform.python_version()}, repeats {repeats}, rounds {args.rounds} "
             "(medians over epochs, then over rounds)",
             f"# load average before: {_loadavg()}",
             "config  T  F  H  batch  params  param_bytes  1x1_step_ms  2x1_step_ms  "
             "1x1_samples_s  2x1_samples_s  speedup  pair_speedup  loss_1x1  loss_2x1",
             "# pair_speedup: two independent 1-thread processes on half batches, no MPI: what the "
             "two cores delivered during the run (the ceiling of speedup)"]
    for name, cfg in CONFIGS.items():
        ones, twos, pairs = [], [], []
        for _ in range(args.rounds):  # alternating, so that drifts of the load hit all alike
            ones.append(_run(me + ["--worker", name]))
            twos.append(_run([mpiexec, "-n", "2", "--oversubscribe"] + me
                             + ["--worker", name, "--distributed"]))
            pairs.append(_run_pair(me + ["--worker", name, "--share", "2"]))
        one, two, pair = (dict(runs[0], samples_per_s=statistics.median(r["samples_per_s"] for r in runs))
                          for runs in (ones, twos, pairs))
        if abs(one["first_loss"] - two["first_loss"]) > 1e-5 * max(1.0, abs(one["first_loss"])):
            sys.exit(f"{name}: the distributed fit logged loss {two['first_loss']}, one process "
                     f"{one['first_loss']}: not the same training, not timed")
        step = [1e3 * cfg["batch"] / r["samples_per_s"] for r in (one, two)]
        lines.append(f"{name:6s} {cfg['T']:3d} {cfg['F']:3d} {cfg['H']:3d} {cfg['batch']:5d} "
                     f"{one['params']:7d} {one['param_bytes']:11d} {step[0]:11.2f} {step[1]:11.2f} "
                     f"{one['samples_per_s']:14.1f} {two['samples_per_s']:14.1f} "
                     f"{two['samples_per_s'] / one['samples_per_s']:8.2f} "
                     f"{pair['samples_per_s'] / one['samples_per_s']:13.2f} "
                     f"{one['first_loss']:.6f} {two['first_loss']:.6f}")
    lines += ["# bound: the speedup of a step that ran only the LSTM's kernels and the allreduce",
              "config  batch  kernels_ms  kernels_half_ms  allreduce_ms  bound"]
    for name, cfg in CONFIGS.items():
        k = _run(me + ["--worker", name, "--bound", "kernels"])
        a = _run([mpiexec, "-n", "2", "--oversubscribe"] + me + ["--worker", name, "--bound", "allreduce"])
        full, half = k[str(cfg["batch"])], k[str(cfg["batch"] // 2)]
        lines.append(f"{name:6s} {cfg['batch']:5d} {full:11.3f} {half:16.3f} {a['allreduce_ms']:13.3f} "
                     f"{full / (half + a['allreduce_ms']):6.2f}")
    lines.append(f"# load average after: {_loadavg()}")
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.out:
        from fusedrnn._files import write_atomic

        write_atomic(args.out, lambda f: f.write(report), text=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
