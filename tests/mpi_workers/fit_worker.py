"""One rank of the distributed-fit tests (run by tests/test_distributed.py under mpiexec).

    fit_worker.py OUT_DIR train       every case of cases.py, the resume checkpoint, the
                                      start-up checks; writes OUT_DIR/rank<r>.npz and .json
    fit_worker.py OUT_DIR kill        rank 1 kills itself (SIGKILL) in the second epoch
    fit_worker.py OUT_DIR raise       rank 1 raises in the second epoch
    fit_worker.py OUT_DIR hang        rank 1 sleeps in the second epoch (with a short
                                      FUSEDRNN_MPI_TIMEOUT the watchdog of rank 0 aborts)
"""

import json
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fusedrnn  # noqa: E402
from fusedrnn.keras import callbacks, distributed  # noqa: E402

from cases import CASES, RESUME_AT, classifier, resume_case  # noqa: E402


def _error(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 (the message is what the test checks)
        return f"{type(exc).__name__}: {exc}"
    return None


def train(out, rank):
    arrays, report = {}, {"size": distributed.size(), "rank": distributed.rank()}
    for name, make in CASES.items():
        model, fit = make()
        hist = model.fit(**fit, distributed=True)
        report[name] = hist.history
        for i, w in enumerate(model.get_weights()):
            arrays[f"{name}.{i}"] = w
    report["threads"] = fusedrnn.get_num_threads()

    # A communicator of one rank: the plain fit.
    from mpi4py import MPI

    solo = MPI.COMM_WORLD.Split(rank, 0)
    model, fit = CASES["sequences32"]()
    model.fit(**fit, distributed=solo)
    solo.Free()
    for i, w in enumerate(model.get_weights()):
        arrays[f"solo.{i}"] = w

    model, fit = resume_case()
    fit["epochs"] = RESUME_AT
    ckpt = callbacks.ModelCheckpoint(os.path.join(out, "resume.keras"), save_best_only=False)
    model.fit(**fit, callbacks=[ckpt], distributed=True)
    report["checkpoints"] = ckpt.saved

    # Settings that differ between the ranks: every rank must raise.
    checks = {}
    model, fit = classifier()
    checks["batch_size"] = _error(lambda: model.fit(**{**fit, "batch_size": 8 + rank},
                                                    distributed=True))
    checks["data"] = _error(lambda: model.fit(**{**fit, "x": fit["x"][:17 - rank],
                                                 "y": fit["y"][:17 - rank],
                                                 "lengths": fit["lengths"][:17 - rank],
                                                 "sample_weight": fit["sample_weight"][:17 - rank]},
                                              distributed=True))
    other, _ = classifier()
    if rank:
        other.optimizer.learning_rate = 0.5
    checks["optimizer"] = _error(lambda: other.fit(**fit, distributed=True))
    checks["failing rank"] = _error(lambda: model.fit(**{**fit, "y": None if rank else fit["y"]},
                                                      distributed=True))
    report["checks"] = checks
    np.savez(os.path.join(out, f"rank{rank}.npz"), **arrays)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)


class Fault(callbacks.Callback):
    def __init__(self, mode, out, rank):
        self.mode, self.out, self.rank = mode, out, rank

    def on_batch_end(self, batch, logs=None):
        if self.rank != 1 or self.model.epoch < 1 or batch != 1:
            return
        with open(os.path.join(self.out, "fault_time"), "w") as f:
            f.write(repr(time.time()))
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "raise":
            raise RuntimeError("rank 1 fails on purpose")
        time.sleep(120)  # hang


def main():
    out, mode = sys.argv[1], sys.argv[2]
    rank = distributed.rank()
    if mode == "train":
        train(out, rank)
        return
    model, fit = classifier()
    fit["epochs"] = 50
    model.fit(**fit, callbacks=[Fault(mode, out, rank)], distributed=True)
    with open(os.path.join(out, f"finished{rank}"), "w") as f:
        f.write("the fit returned")


if __name__ == "__main__":
    main()
