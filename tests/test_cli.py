"""The `fusedrnn` command line: bench (files, consistency, validation refusal), check, usage errors.

Everything runs in-process through fusedrnn.cli.main on tiny cases with short timing settings;
one subprocess checks `python -m fusedrnn`.
"""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import fusedrnn
from fusedrnn import bench_contenders, ops
from fusedrnn.bench import timing
from fusedrnn.bench_cases import Case, grid
from fusedrnn.cli import main

# timing settings that keep a case well under a second
FAST = ["--warmup", "1", "--repeats", "3", "--min-time", "0.005", "--settle", "0.02", "--threads", "1"]
CONTENDERS = "fusedrnn,numpy,torch" if bench_contenders.torch_available() else "fusedrnn,numpy"


@pytest.fixture(autouse=True)
def restore_threads():
    """main() sets the thread count of every contender; give the other tests theirs back."""
    before = fusedrnn.get_num_threads()
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch else None
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        blas_before = []
    else:
        blas_before = [(lib, lib.num_threads) for lib in ThreadpoolController().lib_controllers]
    yield
    fusedrnn.set_num_threads(before)
    torch = sys.modules.get("torch")
    if torch and torch_before:
        torch.set_num_threads(torch_before)
    for lib, n in blas_before:
        lib.set_num_threads(n)


def _csv_rows(path):
    with open(path, newline="") as f:
        header = [line for line in f if line.startswith("#")]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    return header, rows


def test_bench_writes_json_and_csv(tmp_path, capsys):
    js, cs = tmp_path / "out.json", tmp_path / "out.csv"
    code = main(["bench", "--cell", "lstm,gru", "-B", "3", "-T", "5", "-I", "6", "-H", "8", "--layers", "2",
                 "--bidirectional", "--contenders", CONTENDERS, "--json", str(js), "--csv", str(cs), *FAST])
    assert code == 0
    printed = capsys.readouterr().out
    assert "lstm B=3 T=5 I=6 H=8 L=2 bi" in printed and "speed-up" in printed

    doc = json.loads(js.read_text())
    assert doc["complete"] is True and doc["exit_code"] == 0
    head = doc["header"]
    for key in ("cpu", "logical_cores", "usable_cores"):
        assert key in head["machine"]
    assert head["fusedrnn"] == {**fusedrnn.build_info(), "num_threads": head["fusedrnn"]["num_threads"]}
    assert head["numpy"]["version"] == np.__version__
    assert head["threads"]["requested"] == 1 and head["threads"]["fusedrnn"] == 1
    assert head["date"] and head["methods"]["memory"] in ("rss", "tracemalloc")
    names = CONTENDERS.split(",")
    assert [c["label"] for c in doc["cases"]] == [
        f"{cell} B=3 T=5 I=6 H=8 L=2 bi {mode}" for cell in ("lstm", "gru") for mode in ("fwd", "fwdbwd")]
    for case in doc["cases"]:
        assert case["validation"]["status"] == "ok"
        assert case["flops"] == Case(**case["case"]).flops
        assert list(case["results"]) == names
        ours = case["results"]["fusedrnn"]["median_ms"]
        for name, r in case["results"].items():
            assert r["status"] == "ok" and r["calls"] >= 3
            assert r["min_ms"] <= r["q1_ms"] <= r["median_ms"] <= r["q3_ms"]
            assert r["iqr_ms"] == pytest.approx(r["q3_ms"] - r["q1_ms"])
            assert r["speedup"] == pytest.approx(r["median_ms"] / ours)
            assert r["gflops"] == pytest.approx(case["flops"] / (r["median_ms"] * 1e-3) / 1e9)
            assert r["peak_bytes"] is None or r["peak_bytes"] >= 0

    header, rows = _csv_rows(cs)
    assert any(line.startswith("# machine.cpu:") for line in header)
    assert any(line.startswith("# fusedrnn.isa:") for line in header)
    assert len(rows) == 4 * len(names)
    for row in rows:
        assert row["validation"] == "ok" and row["status"] == "ok"
        ours = next(r for r in rows if r["contender"] == "fusedrnn" and r["cell"] == row["cell"]
                    and r["mode"] == row["mode"])
        assert float(row["speedup"]) == pytest.approx(float(row["median_ms"]) / float(ours["median_ms"]))


def test_speedup_formula_and_flops():
    # forward 2*T*B*(I+H)*G*H per layer and direction; fwdbwd 3x; layers after a bi layer read 2H
    assert Case("lstm", 32, 100, 256, 256).flops == 2 * 100 * 32 * 512 * 4 * 256
    assert Case("gru", 2, 3, 5, 7, mode="fwdbwd").flops == 3 * 2 * 3 * 2 * 12 * 3 * 7
    stacked = Case("rnn", 2, 3, 5, 7, layers=2, bidirectional=True)
    assert stacked.flops == 2 * (2 * 3 * 2 * (5 + 7) * 7) + 2 * (2 * 3 * 2 * (14 + 7) * 7)


def test_validation_size_is_reduced_only_when_large():
    small = Case("lstm", 16, 20, 64, 64, mode="fwdbwd")
    assert small.validation_case() == small
    big = Case("lstm", 128, 25, 2048, 2048, mode="fwdbwd")
    v = big.validation_case()
    assert (v.T, v.B, v.I, v.H, v.cell, v.mode) == (8, 4, 2048, 2048, "lstm", "fwdbwd")


def test_broken_forward_is_refused(tmp_path, monkeypatch):
    real = ops.lstm_forward

    def wrong(*args, **kwargs):
        out, h, c, cache = real(*args, **kwargs)
        return out * 1.01, h, c, cache

    def no_timing(*args, **kwargs):
        raise AssertionError("a case that failed validation was timed")

    monkeypatch.setattr(ops, "lstm_forward", wrong)
    monkeypatch.setattr(timing, "time_contenders", no_timing)
    js = tmp_path / "out.json"
    code = main(["bench", "--cell", "lstm", "-B", "2", "-T", "3", "-H", "4", "--mode", "fwd",
                 "--contenders", "fusedrnn,numpy", "--json", str(js), *FAST])
    assert code == 1
    case = json.loads(js.read_text())["cases"][0]
    assert case["validation"]["status"] == "FAILED"
    assert case["validation"]["contenders"]["fusedrnn"]["max_error"] > 1e-3
    assert case["validation"]["contenders"]["numpy"]["max_error"] < 1e-4
    assert all(r == {"status": "not timed (validation failed)"} for r in case["results"].values())


def test_broken_gradient_is_refused_in_fwdbwd_only(tmp_path, monkeypatch):
    real = ops.gru_backward

    def wrong(*args, **kwargs):
        grads = real(*args, **kwargs)
        grads["dw_hh"] = grads["dw_hh"] * 0.9
        return grads

    monkeypatch.setattr(ops, "gru_backward", wrong)
    js = tmp_path / "out.json"
    code = main(["bench", "--cell", "gru", "-B", "2", "-T", "3", "-H", "4", "--contenders", "fusedrnn",
                 "--json", str(js), *FAST])
    assert code == 1
    fwd, fwdbwd = json.loads(js.read_text())["cases"]
    assert fwd["validation"]["status"] == "ok" and fwd["results"]["fusedrnn"]["status"] == "ok"
    assert fwdbwd["validation"]["status"] == "FAILED"
    assert fwdbwd["validation"]["contenders"]["fusedrnn"]["worst"] == "dw_hh_l0"


def test_raising_kernel_is_a_validation_failure(monkeypatch, capsys):
    def raises(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(ops, "rnn_forward", raises)
    code = main(["bench", "--cell", "rnn", "-B", "2", "-T", "3", "-H", "4", "--mode", "fwd",
                 "--contenders", "fusedrnn", *FAST])
    assert code == 1
    assert "kernel exploded" in capsys.readouterr().out


def test_nan_is_a_validation_failure(tmp_path, monkeypatch):
    real = ops.rnn_forward

    def nan(*args, **kwargs):
        out, h, cache = real(*args, **kwargs)
        out[0, 0, 0] = np.nan
        return out, h, cache

    monkeypatch.setattr(ops, "rnn_forward", nan)
    js = tmp_path / "out.json"
    code = main(["bench", "--cell", "rnn", "-B", "2", "-T", "3", "-H", "4", "--mode", "fwd",
                 "--contenders", "fusedrnn", "--json", str(js), *FAST])
    assert code == 1
    entry = json.loads(js.read_text())["cases"][0]["validation"]["contenders"]["fusedrnn"]
    assert entry["worst"] == "out" and "non-finite" in entry["error"]


@pytest.mark.parametrize("begun, running, expected", [(2, False, 2), (0, True, 1)])
def test_guard_fallbacks_are_reported(tmp_path, monkeypatch, capsys, begun, running, expected):
    # While the first case is timed, the contention guard begins `begun` fallbacks to one thread,
    # or (`running`) one is already under way when its timing starts: that case says so under
    # its rows and in its JSON and CSV entries; the next case, clear of both, says nothing.
    from fusedrnn import _core

    real_stats, real_timing = _core.contention_stats, timing.time_contenders
    state = {"extra": 0, "cases": 0}

    def stats():  # the real counters, but no spell other than the test's own
        s = dict(real_stats())
        s["fallbacks"] += state["extra"]
        s["contended"] = running and state["cases"] == 0
        return s

    def time_contenders(contenders, settings):
        samples = real_timing(contenders, settings)
        state["cases"] += 1
        if state["cases"] == 1:
            state["extra"] += begun
        return samples

    monkeypatch.setattr(timing._core, "contention_stats", stats)
    monkeypatch.setattr(timing, "time_contenders", time_contenders)
    js, cs = tmp_path / "out.json", tmp_path / "out.csv"
    code = main(["bench", "--cell", "rnn", "-B", "2", "-T", "3", "-H", "4", "--contenders", "fusedrnn,numpy",
                 "--json", str(js), "--csv", str(cs), *FAST])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("fell back to one thread") == 1
    assert f"fell back to one thread {expected} time" in printed
    fwd, fwdbwd = json.loads(js.read_text())["cases"]
    assert fwd["results"]["fusedrnn"]["guard_fallbacks"] == expected
    assert fwdbwd["results"]["fusedrnn"]["guard_fallbacks"] == 0
    assert "guard_fallbacks" not in fwd["results"]["numpy"]
    _, rows = _csv_rows(cs)
    assert [r["guard_fallbacks"] for r in rows] == [str(expected), "", "0", ""]


def test_slow_numpy_is_skipped(tmp_path):
    js = tmp_path / "out.json"
    code = main(["bench", "--cell", "rnn", "-B", "2", "-T", "3", "-H", "4", "--mode", "fwd",
                 "--contenders", "fusedrnn,numpy", "--numpy-limit", "0", "--no-memory", "--json", str(js), *FAST])
    assert code == 0
    results = json.loads(js.read_text())["cases"][0]["results"]
    assert results["numpy"]["status"] == "skipped (slow)" and results["numpy"]["speedup"] is None
    assert results["fusedrnn"]["peak_bytes"] is None


@pytest.mark.parametrize("argv", [
    ["bench", "--bogus"],
    ["bench", "-B", "0"],
    ["bench", "--grid", "huge"],
    ["bench", "--grid", "quick", "-B", "4"],
    ["bench", "--cell", "lstm,cnn"],
    ["bench", "--contenders", "fusedrnn,fusedrnn"],
    ["bench", "--contenders", "jax"],
    ["bench", "--min-time", "-1"],
    ["bench", "--dtype", "float16"],
    ["bench", "--json", "/nonexistent-folder/out.json"],
    ["bench", "--plot", "speedups.txt"],
    ["frobnicate"],
    [],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err  # argparse explains on stderr


def test_plot_without_matplotlib_is_a_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["bench", "-B", "2", "-T", "2", "-H", "2", "--plot", str(tmp_path / "p.png"), *FAST]) == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_markdown_and_plot(tmp_path, monkeypatch):
    # matplotlib is an optional extra: a stand-in records the chart and writes the file
    import types
    from unittest import mock

    pyplot = mock.MagicMock()
    fig, ax = mock.MagicMock(), mock.MagicMock()
    pyplot.subplots.return_value = (fig, ax)
    # like matplotlib's savefig: a path or a binary file object
    fig.savefig.side_effect = lambda dst, **kw: (dst.write(b"png") if hasattr(dst, "write")
                                                 else open(dst, "wb").write(b"png"))
    matplotlib = types.ModuleType("matplotlib")
    matplotlib.use = lambda backend: None
    matplotlib.pyplot = pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)

    md, png, js = tmp_path / "t.md", tmp_path / "s.png", tmp_path / "s.json"
    assert main(["bench", "--cell", "rnn", "-B", "2", "-T", "3", "-H", "4", "--contenders", "fusedrnn,numpy",
                 "--markdown", str(md), "--plot", str(png), "--json", str(js), *FAST]) == 0
    table = md.read_text().splitlines()
    assert table[0].startswith("Machine: ") and "| case | mode | fusedrnn ms | GFLOP/s | numpy ms | x numpy |" in table
    assert sum(line.startswith("| rnn B=2 T=3 I=4 H=4 |") for line in table) == 2
    assert png.read_bytes() == b"png"
    speedups = [c["results"]["numpy"]["speedup"] for c in json.loads(js.read_text())["cases"]]
    (positions, heights, width), _ = ax.bar.call_args
    assert heights == speedups


def test_list_prints_the_grid(capsys):
    assert main(["bench", "--grid", "standard", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(grid("standard")) == 24
    assert main(["bench", "--grid", "deepbench", "--mode", "fwd", "--cell", "gru", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12 and all(line.startswith("gru B=") and " fwd " in line for line in lines)


def test_check_runs(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "isa" in out and "all parity checks passed" in out


def test_python_m_fusedrnn_help():
    done = subprocess.run([sys.executable, "-m", "fusedrnn", "bench", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2*T*B*(I+H)*G*H" in done.stdout and "--grid" in done.stdout
