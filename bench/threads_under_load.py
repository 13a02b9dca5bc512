"""Two threads against one, on idle cores and on cores another process keeps busy.

Runs the 'standard' grid (python/fusedrnn/bench/cases.py), fwd and fwdbwd, for lstm, gru and
rnn in float32, at 1 and 2 threads, without and with a CPU hog (a process busy-looping, started
and stopped here by its PID), and prints a markdown table of medians and ratios.

    python bench/threads_under_load.py [--baseline SITE] [--out bench/results/threads_under_load.md]

--baseline SITE also times another build of fusedrnn (a directory holding its installed
package, e.g. one made with `pip install --target SITE .` at an older commit) in the same run,
interleaved with this one, so both see the same load.

Each build runs in its own worker process; every measurement alternates 1 and 2 threads
(1, 2, 1, 2, ...) so that slow drifts of the machine's load hit both alike.  The hog is started
for the 'hog' half of each case and stopped after it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

_WORKER = r"""
import json, sys, time
import numpy as np
import fusedrnn
from fusedrnn import bench_cases, bench_contenders

built = {}
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "info":
        print(json.dumps({"file": fusedrnn.__file__, "threads": fusedrnn.get_num_threads()}), flush=True)
        continue
    case = bench_cases.Case(**req["case"])
    key = json.dumps(req["case"], sort_keys=True)
    if key not in built:
        built.clear()
        built[key] = bench_contenders.make("fusedrnn", case, bench_cases.make_inputs(case, 0))
    runner = built[key]
    fusedrnn.set_num_threads(req["threads"])
    times = []
    for _ in range(req["reps"]):
        t0 = time.perf_counter()
        runner.run()
        times.append(time.perf_counter() - t0)
    print(json.dumps(times), flush=True)
"""


class Worker:
    """One build of fusedrnn in its own interpreter, timing what it is asked to."""

    def __init__(self, site: str | None):
        env = dict(os.environ)
        env.pop("OMP_NUM_THREADS", None)
        env.pop("FUSEDRNN_NUM_THREADS", None)
        if site:
            env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._ask({"op": "info"})

    def _ask(self, req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def time(self, case: dict, threads: int, reps: int) -> list[float]:
        return self._ask({"op": "time", "case": case, "threads": threads, "reps": reps})

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class Hog:
    """A process that keeps one CPU busy until stopped."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.2)  # let the scheduler see it
        return self

    def __exit__(self, *exc):
        self.proc.kill()  # by its PID
        self.proc.wait(timeout=10)


def measure(worker: Worker, case: dict, budget: float, min_reps: int, max_reps: int) -> dict:
    """Median seconds at 1 and 2 threads, alternating single calls until the budget is spent."""
    worker.time(case, 1, 1)  # warm up: inputs, packed weights, scratch memory
    worker.time(case, 2, 1)
    got = {1: [], 2: []}
    start = time.perf_counter()
    while len(got[2]) < max_reps and (len(got[2]) < min_reps or time.perf_counter() - start < budget):
        for threads in (1, 2):
            got[threads] += worker.time(case, threads, 1)
    return {t: statistics.median(v) for t, v in got.items()}


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} usable CPUs, {platform.system()} {platform.release()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="site directory of another fusedrnn build to time alongside")
    ap.add_argument("--out", help="also write the markdown table here (atomically)")
    ap.add_argument("--budget", type=float, default=0.6, help="seconds per measurement (default 0.6)")
    ap.add_argument("--min-reps", type=int, default=5)
    ap.add_argument("--max-reps", type=int, default=40)
    ap.add_argument("--cells", default="lstm,gru,rnn")
    args = ap.parse_args(argv)

    from fusedrnn.bench.cases import grid  # the installed package

    cells = args.cells.split(",")
    cases = [c for c in grid("standard") if c.cell in cells and c.dtype == "float32"]
    builds = {"new": Worker(None)}
    if args.baseline:
        builds["base"] = Worker(args.baseline)
    for name, w in builds.items():
        print(f"# {name}: {w.info['file']} (default {w.info['threads']} threads)", file=sys.stderr)

    rows = []
    t_start = time.time()
    try:
        for case in cases:
            cd = case.as_dict()
            res = {}
            for name, w in builds.items():
                res[(name, "idle")] = measure(w, cd, args.budget, args.min_reps, args.max_reps)
            with Hog():
                for name, w in builds.items():
                    res[(name, "hog")] = measure(w, cd, args.budget, args.min_reps, args.max_reps)
            rows.append((case, res))
            print(f"{case.label:40s} " + "  ".join(
                f"{n}/{h}: {fmt_ms(r[1])} {fmt_ms(r[2])} ms" for (n, h), r in res.items()), file=sys.stderr)
    finally:
        for w in builds.values():
            w.close()

    has_base = "base" in builds
    head = ["case", "mode", "idle 1T ms", "idle 2T ms", "idle 2T/1T", "hog 1T ms", "hog 2T ms", "hog 2T/1T"]
    if has_base:
        head += ["base idle 2T/1T", "base hog 2T/1T", "idle 1T new/base", "idle 2T new/base"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    worst_hog = 0.0
    for case, r in rows:
        n_i, n_h = r[("new", "idle")], r[("new", "hog")]
        worst_hog = max(worst_hog, n_h[2] / n_h[1])
        cells_ = [f"{case.cell} B={case.B} T={case.T} H={case.H}", case.mode,
                  fmt_ms(n_i[1]), fmt_ms(n_i[2]), f"{n_i[2] / n_i[1]:.2f}",
                  fmt_ms(n_h[1]), fmt_ms(n_h[2]), f"{n_h[2] / n_h[1]:.2f}"]
        if has_base:
            b_i, b_h = r[("base", "idle")], r[("base", "hog")]
            cells_ += [f"{b_i[2] / b_i[1]:.2f}", f"{b_h[2] / b_h[1]:.2f}",
                       f"{n_i[1] / b_i[1]:.2f}", f"{n_i[2] / b_i[2]:.2f}"]
        lines.append("| " + " | ".join(cells_) + " |")
    minutes = (time.time() - t_start) / 60
    text = "\n".join([
        "# Two threads against one, idle and with a CPU hog",
        "",
        f"Machine: {machine()}.  Command: `python bench/threads_under_load.py"
        + (" --baseline SITE" if has_base else "") + "`;"
        f" float32, the 'standard' grid; medians of {args.min_reps}-{args.max_reps} alternating calls per cell"
        f" ({minutes:.1f} min).  'hog': one other process busy-looping on the same CPUs.",
        "",
        *lines,
        "",
        f"Worst hog 2T/1T: {worst_hog:.2f}.",
        "",
    ])
    print(text)
    if args.out:
        from fusedrnn._files import write_atomic

        write_atomic(args.out, lambda f: f.write(text), text=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
