"""Data-parallel training over MPI: ``model.fit(..., distributed=True)`` under ``mpiexec``.

    mpiexec -n 4 python train.py          # train.py calls model.fit(..., distributed=True)

Every process (rank) holds the whole model and the whole data set.  At the start of fit, the
ranks compare a fingerprint of their settings (model layout, optimiser, loss, batch size,
epochs, data shapes and a checksum of sampled rows) and raise the same error on every rank
when they differ; then rank 0's weights, optimiser state and random generators are broadcast,
so the shuffling order is the same everywhere.  Each global batch is cut into one contiguous
slice of rows per rank (rank r takes rows r*n//p .. (r+1)*n//p, so a short last batch gives
some ranks fewer rows, or none).  A rank computes the loss and its gradient *summed* over its
rows; one allreduce of the flattened gradient (one contiguous buffer, in place, in the model's
dtype, with the loss and metric sums at its end) adds them, and every rank divides by the global count the single-process loss divides
by (samples, valid steps of padded sequences: training.py's reductions).  The gradient is
therefore the single-process gradient of the global batch, clipping (clipnorm,
global_clipnorm) sees it whole, and every rank applies the same optimiser step.  Loss and
metrics are reduced the same way, so every rank logs the same history; only rank 0 shows
progress and writes checkpoints.

Faults: an exception inside a distributed fit prints its traceback and calls MPI_Abort, which
ends every rank (a rank killed outright is noticed by the MPI runtime, which ends the job).
A rank waiting in a collective operation for longer than FUSEDRNN_MPI_TIMEOUT seconds
(default 600; 0 turns the watchdog off) aborts the job as well: a peer stuck in a loop would
otherwise keep the others waiting for ever.

Without mpi4py, distributed=True in a process started by an MPI launcher of several processes
is an ImportError naming the extra to install; in a plain process it warns and trains alone.
With one rank, fit is the plain single-process fit.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback
import warnings
import zlib

import numpy as np

from . import distributed_steps as _steps

__all__ = ["rank", "size", "start", "Group", "writes_files", "TIMEOUT_ENV"]

TIMEOUT_ENV = "FUSEDRNN_MPI_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
_LAUNCHER_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS")
_INSTALL = 'pip install "fusedrnn[mpi]" (mpi4py with an MPI library)'


def _launcher_size() -> int:
    """Processes in the MPI job this process was started in, from the launcher's environment
    (1 when no launcher is seen)."""
    for name in _LAUNCHER_SIZE_VARS:
        try:
            return max(1, int(os.environ[name]))
        except (KeyError, ValueError):
            continue
    return 1


def _mpi(required: bool):
    """mpi4py's MPI module, or None (with a warning) when it is missing and the process is alone."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        n = _launcher_size()
        if required or n > 1:
            where = f"this process is one of {n} started by an MPI launcher; " if n > 1 else ""
            raise ImportError(f"distributed training needs mpi4py: {where}install it with "
                              f"{_INSTALL}") from exc
        warnings.warn(f"distributed=True but mpi4py is not installed, so this process trains "
                      f"alone; {_INSTALL} to train over several processes", RuntimeWarning,
                      stacklevel=4)
        return None
    return MPI


def rank() -> int:
    """This process's rank in MPI_COMM_WORLD (0 without mpi4py): write files when it is 0."""
    MPI = _mpi(required=False) if _launcher_size() > 1 else _optional_mpi()
    return 0 if MPI is None else MPI.COMM_WORLD.Get_rank()


def size() -> int:
    """Processes in MPI_COMM_WORLD (1 without mpi4py)."""
    MPI = _mpi(required=False) if _launcher_size() > 1 else _optional_mpi()
    return 1 if MPI is None else MPI.COMM_WORLD.Get_size()


def _optional_mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value != value or value == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds >= 0 (0: no timeout), got {raw!r}")
    return value


def start(distributed):
    """The Group that fit trains over, or None for a plain single-process fit."""
    if distributed is None or distributed is False:
        return None
    if distributed is True:
        MPI = _mpi(required=False)
        if MPI is None:
            return None
        comm = MPI.COMM_WORLD
    elif hasattr(distributed, "Allreduce") and hasattr(distributed, "Get_size"):
        MPI = _mpi(required=True)
        comm = distributed
    else:
        raise TypeError(f"distributed must be True, False or an mpi4py communicator, got "
                        f"{type(distributed).__name__}")
    if comm.Get_size() == 1:
        return None
    _share_cores(MPI, comm)
    return Group(MPI, comm)


_CORES_SHARED = False


def _share_cores(MPI, comm) -> None:
    """Give each rank its share of the node's CPUs as kernel threads (once per process), unless
    the thread count was chosen (FUSEDRNN_NUM_THREADS, OMP_NUM_THREADS, set_num_threads)."""
    global _CORES_SHARED
    if _CORES_SHARED:
        return
    _CORES_SHARED = True
    from .. import _core, _info

    default = _core.thread_default()
    chosen = not default["source"] in ("affinity", "cgroup quota", "hardware_concurrency") \
        or _info.get_num_threads() != default["threads"]
    own = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else list(range(os.cpu_count() or 1))
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        everyone = node.allgather(own)
        local = node.Get_size()
    finally:
        node.Free()
    if chosen:
        return
    budget = len(set().union(*map(set, everyone)))
    if default["source"] == "cgroup quota":
        budget = min(budget, default["cpus"])
    _info.set_num_threads(max(1, min(len(own), budget // local)))


def writes_files(model) -> bool:
    """Whether this process writes the model's files during fit (rank 0 of a distributed fit)."""
    group = getattr(model, "_group", None)
    return group is None or group.rank == 0


def _on_every_rank(exc):
    exc._fusedrnn_every_rank = True  # every rank raises it: no need to abort the job
    return exc


class _Watchdog:
    """Aborts the job when this rank waits in one collective operation longer than timeout."""

    def __init__(self, group, timeout):
        self.group, self.timeout = group, timeout
        self.deadline, self.what = None, ""
        if timeout > 0:
            threading.Thread(target=self._run, name="fusedrnn-mpi-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def waiting(self, what):
        if self.timeout <= 0:
            yield
            return
        self.what = what
        self.deadline = time.monotonic() + self.timeout
        try:
            yield
        finally:
            self.deadline = None

    def _run(self):
        poll = min(1.0, self.timeout / 10)
        while True:
            time.sleep(poll)
            deadline = self.deadline
            if deadline is not None and time.monotonic() > deadline:
                self.group.abort(f"waited more than {self.timeout:g} s in the {self.what} for the "
                                 f"other ranks (one is stuck or gone; {TIMEOUT_ENV} sets the limit)")


class Group:
    """The ranks of one distributed fit and the operations fit needs from them."""

    def __init__(self, MPI, comm):
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.watchdog = _Watchdog(self, _timeout())

    # --- faults -------------------------------------------------------------------------------

    def abort(self, why: str) -> None:
        sys.stdout.flush()
        sys.stderr.write(f"fusedrnn: rank {self.rank} of {self.size}: {why}; aborting the MPI job\n")
        sys.stderr.flush()
        self.comm.Abort(1)

    @contextlib.contextmanager
    def guard(self):
        """Abort the whole job on an exception raised on this rank alone (the others would wait
        for it for ever); an error raised on every rank at once propagates normally."""
        try:
            yield
        except BaseException as exc:
            if getattr(exc, "_fusedrnn_every_rank", False):
                raise
            traceback.print_exc()
            self.abort(f"{type(exc).__name__} raised during the distributed fit")
            raise

    # --- collectives --------------------------------------------------------------------------

    def allreduce(self, buf, what="gradient allreduce"):
        """Sum buf over the ranks, in place (one contiguous array)."""
        with self.watchdog.waiting(what):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def allgather(self, obj, what="allgather"):
        with self.watchdog.waiting(what):
            return self.comm.allgather(obj)

    def bcast(self, obj, what="broadcast"):
        with self.watchdog.waiting(what):
            return self.comm.bcast(obj, root=0)

    def rows(self, idx):
        """This rank's slice of the global batch idx."""
        n = len(idx)
        return idx[self.rank * n // self.size:(self.rank + 1) * n // self.size]

    # --- start of fit -------------------------------------------------------------------------

    def setup(self, model, prepare):
        """prepare() on every rank (the fit's checks and data), then the fingerprints compared
        and rank 0's state broadcast.  A failure on any rank, or settings that differ, raise on
        every rank."""
        try:
            settings = prepare()
            _build(model, settings["data"])
            self.metric_kinds = [_steps.metric_kind(m) for m in model.metrics]
            fp, err = _fingerprint(model, settings), None
        except Exception as exc:  # noqa: BLE001 (sent to the other ranks, then raised)
            fp, err = None, exc
        everyone = self.allgather((None if err is None else f"{type(err).__name__}: {err}", fp),
                                  "start-up check")
        if err is not None:
            raise _on_every_rank(err)
        failed = [(r, e) for r, (e, _) in enumerate(everyone) if e is not None]
        if failed:
            r, e = failed[0]
            raise _on_every_rank(RuntimeError(f"distributed fit: rank {r} failed to start: {e}"))
        for r, (_, other) in enumerate(everyone[1:], start=1):
            diff = [k for k in everyone[0][1] if everyone[0][1][k] != other.get(k)]
            if diff:
                k = diff[0]
                raise _on_every_rank(ValueError(
                    f"distributed fit: rank {r}'s settings differ from rank 0's in "
                    f"{', '.join(diff)}; {k}: rank 0 has {_short(everyone[0][1][k])}, rank {r} has "
                    f"{_short(other.get(k))}.  Every rank must build the same model and call fit "
                    "with the same data and arguments"))
        self._broadcast_state(model)
        model.reset_states()
        return settings

    def _broadcast_state(self, model):
        from . import pieces
        from .saving import _generators

        params = [p for _, p, _ in model._trainable()]
        if params:
            flat = np.concatenate([p.reshape(-1) for p in params])
            with self.watchdog.waiting("broadcast of the weights"):
                self.comm.Bcast(flat, root=0)
            offset = 0
            for p in params:
                np.copyto(p, flat[offset:offset + p.size].reshape(p.shape))
                offset += p.size
            pieces.weights_changed(model.layers)
        iterations, state = self.bcast(model.optimizer.get_state() if self.rank == 0 else None,
                                       "broadcast of the optimizer state")
        model.optimizer.set_state(iterations, state)
        states = self.bcast([g.bit_generator.state for g in _generators(model)] if self.rank == 0
                            else None, "broadcast of the random state")
        for g, s in zip(_generators(model), states):
            g.bit_generator.state = s
        if self.rank:
            # The same shuffling everywhere (model.rng), but each rank its own dropout masks:
            # the layers' generators jump ahead by rank (rank 0 keeps the saved stream).
            for layer in model.layers:
                layer.rng = np.random.Generator(layer.rng.bit_generator.jumped(self.rank))
        self.gradients = _steps.FlatGradients(model, 2 + 2 * self.metric_kinds.count("mean"))

    def check_replicas(self, model) -> None:
        """Raise on every rank if the ranks' weights are no longer identical."""
        crc = 0
        for _, p, _ in model._trainable():
            crc = zlib.crc32(np.ascontiguousarray(p).view(np.uint8), crc)
        sums = self.allgather(crc, "weight check")
        if len(set(sums)) > 1:
            raise _on_every_rank(RuntimeError(
                f"distributed fit: the ranks' weights differ after an epoch (checksums {sums}); "
                "something outside fit changed one rank's model"))


# --- fingerprints -----------------------------------------------------------------------------

def _build(model, data):
    """Build the layers on one sample so every rank has its weights before the broadcast."""
    if all(layer.built for layer in model.layers):
        return
    model._forward(data.x[:1], training=False,
                   lengths=None if data.lengths is None else data.lengths[:1])
    model.reset_states()


def _digest(a) -> str:
    """dtype, shape and a checksum of at most 256 evenly spaced rows."""
    if a is None:
        return "none"
    a = np.asarray(a)
    rows = np.ascontiguousarray(a[::max(1, len(a) // 256)])
    return f"{a.dtype.str}{list(a.shape)}:{zlib.crc32(rows.view(np.uint8)):08x}"


def _data_digest(d):
    if d is None:
        return None
    return [_digest(a) for a in (d.x, d.y, d.lengths, d.sample_weight)]


def _config(obj) -> str:
    try:
        return json.dumps(obj.get_config(), sort_keys=True, default=str)
    except Exception:  # noqa: BLE001 (a config that cannot be written: compare the class alone)
        return type(obj).__name__


def _fingerprint(model, s) -> dict:
    return {
        "model class": type(model).__name__,
        "layers": [f"{type(layer).__name__} {_config(layer)}" for layer in model.layers],
        "weight shapes": [f"{k} {p.dtype.str}{list(p.shape)}" for k, p, _ in model._trainable()],
        "optimizer": f"{type(model.optimizer).__name__} {_config(model.optimizer)}",
        "loss": f"{type(model.loss).__name__} {_config(model.loss)}",
        "metrics": list(model._metric_names),
        "batch_size": s["batch_size"], "epochs": s["epochs"],
        "initial_epoch": s["initial_epoch"], "shuffle": s["shuffle"],
        "training data": _data_digest(s["data"]), "validation data": _data_digest(s["val"]),
        "callbacks": [type(cb).__name__ for cb in s["callbacks"]],
    }


def _short(value, limit=160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
