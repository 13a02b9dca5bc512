"""fit(..., distributed=True) under `mpiexec -n 2`: the weights and history equal a
single-process fit on the same global batches, checkpoints come from rank 0 and resume on
one process, settings that differ between ranks raise on every rank, and a rank that dies,
raises or hangs ends the whole job quickly.

Two launches of tests/mpi_workers/fit_worker.py do the MPI side (one for training, three
fault runs at once); the single-process oracles run here, without MPI.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import assert_close

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_workers"))

from cases import CASES, RESUME_AT, RESUME_EPOCHS, classifier, resume_case  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_workers", "fit_worker.py")
FAULT_BOUND_S = 15.0  # measured: about 0.3 s (kill), 0.1 s (raise) after the fault
TIMEOUT_S = 2  # FUSEDRNN_MPI_TIMEOUT of the hang run
LAUNCH_LIMIT_S = 120
CLI_ARGS = ["-m", "fusedrnn", "train", "--distributed", "--text", "text.txt", "--epochs", "2",
            "--hidden", "16", "--layers", "1", "--embed", "8", "--batch-size", "4", "--steps", "8",
            "--sample-length", "20", "--quiet"]
CLI_TEXT = "def f(x):\n    return x * 2 + 1\n" * 40


def _mpiexec():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'fusedrnn[mpi]')")
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = here if os.access(here, os.X_OK) else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec next to the Python executable or on PATH")
    return found


def _env(**extra):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", **extra)
    for name in ("FUSEDRNN_NUM_THREADS", "OMP_NUM_THREADS"):
        env.pop(name, None)  # the ranks choose their share of the cores
    return env


def _launch(out, mode, **env):
    out.mkdir()
    cmd = [_mpiexec(), "-n", "2", "--oversubscribe", sys.executable, WORKER, str(out), mode]
    return subprocess.Popen(cmd, env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi") / "train"
    proc = _launch(out, "train")
    log, _ = proc.communicate(timeout=LAUNCH_LIMIT_S)
    assert proc.returncode == 0, log
    ranks = [(json.loads((out / f"rank{r}.json").read_text()), dict(np.load(out / f"rank{r}.npz")))
             for r in range(2)]
    return out, ranks


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """The kill, raise and hang runs and `fusedrnn train --distributed`, started together:
    (rc, output, seconds after the fault, whether a rank returned from fit) per mode."""
    root = tmp_path_factory.mktemp("mpi_faults")
    (root / "cli").mkdir()
    (root / "cli" / "text.txt").write_text(CLI_TEXT)
    procs = {mode: _launch(root / mode, mode, FUSEDRNN_MPI_TIMEOUT=str(TIMEOUT_S))
             for mode in ("kill", "raise", "hang")}
    procs["cli"] = subprocess.Popen(
        [_mpiexec(), "-n", "2", "--oversubscribe", sys.executable] + CLI_ARGS, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=root / "cli")
    results = {}
    for mode, proc in procs.items():
        log, _ = proc.communicate(timeout=LAUNCH_LIMIT_S)
        ended = time.time()
        stamp = root / mode / "fault_time"
        after = ended - float(stamp.read_text()) if stamp.exists() else None
        finished = any((root / mode / f"finished{r}").exists() for r in range(2))
        results[mode] = (proc.returncode, log, after, finished)
    return root, results


@pytest.mark.parametrize("name", list(CASES))
def test_weights_and_history_equal_a_single_process(trained, name):
    _, ranks = trained
    model, fit = CASES[name]()
    history = model.fit(**fit).history
    expected = model.get_weights()
    dtype = expected[0].dtype
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for r, (report, arrays) in enumerate(ranks):
        for i, w in enumerate(expected):
            assert_close(arrays[f"{name}.{i}"], w, dtype, f"{name} weight {i} on rank {r}", rtol=rtol)
        assert report[name].keys() == history.keys()
        for k, values in history.items():
            assert_close(np.array(report[name][k]), np.array(values, np.float64), np.float64,
                         f"{name} history {k} on rank {r}", rtol=1e-10 if dtype == np.float64 else 1e-6)
    assert ranks[0][0][name] == ranks[1][0][name], "the ranks logged different histories"
    for i in range(len(expected)):
        np.testing.assert_array_equal(ranks[0][1][f"{name}.{i}"], ranks[1][1][f"{name}.{i}"])


def test_a_communicator_of_one_rank_is_the_plain_fit(trained):
    _, ranks = trained
    model, fit = CASES["sequences32"]()
    model.fit(**fit)
    for r, (_, arrays) in enumerate(ranks):
        for i, w in enumerate(model.get_weights()):
            np.testing.assert_array_equal(arrays[f"solo.{i}"], w, err_msg=f"rank {r} weight {i}")


def test_each_rank_takes_its_share_of_the_cores(trained):
    _, ranks = trained
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert [report["threads"] for report, _ in ranks] == [max(1, cpus // 2)] * 2


def test_rank_0_checkpoints_and_one_process_resumes(trained):
    out, ranks = trained
    path = str(out / "resume.keras")
    assert ranks[0][0]["checkpoints"] == [path] * RESUME_AT
    assert ranks[1][0]["checkpoints"] == []
    from fusedrnn.keras.models import load_model

    resumed = load_model(path)
    assert resumed.epoch == RESUME_AT
    _, fit = resume_case()
    resumed.fit(**{**fit, "initial_epoch": resumed.epoch})
    model, fit = resume_case()
    model.fit(**fit)
    for i, (a, e) in enumerate(zip(resumed.get_weights(), model.get_weights())):
        assert_close(a, e, np.float64, f"resumed weight {i} after {RESUME_EPOCHS} epochs", rtol=1e-10)
    assert resumed.optimizer.iterations == model.optimizer.iterations


def test_settings_that_differ_raise_on_every_rank(trained):
    _, ranks = trained
    checks = [report["checks"] for report, _ in ranks]
    for what, field in (("batch_size", "batch_size: rank 0 has 8, rank 1 has 9"),
                        ("data", "in training data"), ("optimizer", "in optimizer")):
        for r in range(2):
            msg = checks[r][what]
            assert msg is not None and msg.startswith("ValueError: distributed fit: rank 1's "
                                                      "settings differ"), (r, what, msg)
            assert field in msg, (r, what, msg)
    assert checks[1]["failing rank"] == "ValueError: fit needs targets y"
    assert checks[0]["failing rank"] == ("RuntimeError: distributed fit: rank 1 failed to start: "
                                         "ValueError: fit needs targets y")


def test_a_killed_rank_ends_the_job(faults):
    rc, log, after, finished = faults[1]["kill"]
    assert rc != 0 and not finished, log
    assert after is not None and after < FAULT_BOUND_S, (after, log)


def test_a_raising_rank_aborts_the_job(faults):
    rc, log, after, finished = faults[1]["raise"]
    assert rc != 0 and not finished, log
    assert "RuntimeError: rank 1 fails on purpose" in log, log
    assert "fusedrnn: rank 1 of 2: RuntimeError raised during the distributed fit" in log, log
    assert after is not None and after < FAULT_BOUND_S, (after, log)


def test_a_hanging_rank_is_ended_by_the_watchdog(faults):
    rc, log, after, finished = faults[1]["hang"]
    assert rc != 0 and not finished, log
    assert f"fusedrnn: rank 0 of 2: waited more than {TIMEOUT_S} s" in log, log
    assert after is not None and TIMEOUT_S <= after < TIMEOUT_S + FAULT_BOUND_S, (after, log)


# --- without MPI ------------------------------------------------------------------------------

def test_without_mpi4py_a_lone_process_warns_and_trains_alone(monkeypatch):
    from fusedrnn.keras import distributed

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    for name in distributed._LAUNCHER_SIZE_VARS:
        monkeypatch.delenv(name, raising=False)
    model, fit = classifier()
    with pytest.warns(RuntimeWarning, match=r'pip install "fusedrnn\[mpi\]"'):
        model.fit(**fit, distributed=True)
    plain, fit = classifier()
    plain.fit(**fit)
    for a, e in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, e)


def test_without_mpi4py_under_a_launcher_is_an_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    model, fit = classifier()
    with pytest.raises(ImportError, match=r'one of 4 .*pip install "fusedrnn\[mpi\]"'):
        model.fit(**fit, distributed=True)


def test_bad_arguments(monkeypatch):
    from fusedrnn.keras import distributed

    model, fit = classifier()
    with pytest.raises(TypeError, match="distributed must be True, False or an mpi4py communicator"):
        model.fit(**fit, distributed="yes")
    monkeypatch.setenv("FUSEDRNN_MPI_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="FUSEDRNN_MPI_TIMEOUT must be a number of seconds >= 0"):
        distributed._timeout()


def test_train_cli_distributed_equals_one_process(faults, tmp_path, monkeypatch, capsys):
    root, results = faults
    rc, log, _, _ = results["cli"]
    assert rc == 0, log
    assert log.count("final: loss") == 1 and log.count("--- sample") == 1, log  # rank 0 alone
    from fusedrnn.keras.models import load_model
    from fusedrnn.train_cli import main

    (tmp_path / "text.txt").write_text(CLI_TEXT)
    monkeypatch.chdir(tmp_path)
    assert main([a for a in CLI_ARGS[3:] if a != "--distributed"]) == 0
    def final(text):
        return [line for line in text.splitlines() if line.startswith("final:")]

    assert final(capsys.readouterr().out) == final(log)
    alone = load_model(tmp_path / "fusedrnn-char.npz")
    together = load_model(root / "cli" / "fusedrnn-char.npz")
    assert together.epoch == alone.epoch == 2
    for i, (a, e) in enumerate(zip(together.get_weights(), alone.get_weights())):
        assert_close(a, e, np.float32, f"checkpoint weight {i}", rtol=1e-5)
