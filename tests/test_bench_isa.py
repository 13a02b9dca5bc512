"""`fusedrnn bench --isa` runs every contender in a child restricted to the ISA (and says so),
and `fusedrnn bench --step` times the streaming step against torch's cell."""

import json
import os
import subprocess
import sys

import pytest

from fusedrnn import _core
from fusedrnn.bench import isa
from fusedrnn.bench.cases import Case

QUICK = ["-B", "2", "-T", "3", "-H", "8", "--cell", "lstm", "--mode", "fwd", "--repeats", "1",
         "--warmup", "1", "--min-time", "0", "--no-memory", "--threads", "1"]


def bench(*args):
    return subprocess.run([sys.executable, "-m", "fusedrnn", "bench", *args], capture_output=True,
                          text=True, timeout=300)


def cpu_has(name):
    return isa.check(name) is None


@pytest.mark.parametrize("name,torch_cap,blas", [("baseline", "DEFAULT", "Nehalem"),
                                                 ("avx2", "AVX2", "Haswell")])
def test_isa_runs_each_contender_restricted(tmp_path, name, torch_cap, blas):
    if not cpu_has(name):
        pytest.skip(f"this CPU or build has no {name}")
    torch = pytest.importorskip("torch")  # noqa: F841 (the child imports it)
    path = tmp_path / "out.json"
    proc = bench("--isa", name, *QUICK, "--json", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(path.read_text())
    records = out["header"]["isa"]["contenders"]
    assert set(records) == {"fusedrnn", "numpy", "torch"}
    for rec in records.values():  # every child really ran under the restricted environment
        assert rec["env"] == isa.ISAS[name][1]
    assert records["fusedrnn"]["fusedrnn"] == {"kernels": name, "blas_core": blas}
    assert records["torch"]["torch"]["capability"] == torch_cap
    numpy_blas = records["numpy"]["numpy_blas"]
    if numpy_blas and None not in numpy_blas:  # an OpenBLAS NumPy (threadpoolctl names its core)
        assert numpy_blas == [blas]
    case = out["cases"][0]
    assert case["validation"]["status"] == "ok"
    assert set(case["validation"]["contenders"]) == {"fusedrnn", "numpy", "torch"}
    for entry in case["results"].values():
        assert entry["status"] == "ok" and entry["median_ms"] > 0
    assert case["results"]["fusedrnn"]["speedup"] == 1.0
    line = f"isa {name}: fusedrnn kernels {name}, OpenBLAS {blas}"
    assert line in proc.stdout
    assert f"torch {torch_cap} (ATEN_CPU_CAPABILITY={isa.ISAS[name][1]['ATEN_CPU_CAPABILITY']}" in proc.stdout
    assert f"(isa {name}, " in proc.stdout  # the fusedrnn header line is its child's


def test_an_isa_the_cpu_lacks_is_a_clear_error():
    missing = [n for n in isa.ISAS if not cpu_has(n)]
    if not missing:
        pytest.skip("this CPU and build run every ISA")
    proc = bench("--isa", missing[-1], *QUICK)
    assert proc.returncode == 2
    assert f"--isa {missing[-1]}: isa '{missing[-1]}' is not" in proc.stderr
    assert f"best here: {_core.best_isa()}" in proc.stderr


def test_the_parent_flags_are_not_passed_to_children():
    argv = ["--isa", "avx2", "-B", "2", "--json=x.json", "--threads", "3", "--csv", "y.csv", "--cell", "gru"]
    assert isa._strip(argv) == ["-B", "2", "--cell", "gru"]


def test_step_mode_reports_step_torch_and_sequence(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "step.json"
    proc = bench("--step", "-H", "8", "-I", "4", "-T", "5", "--layers", "2", "--json", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(path.read_text())
    res = out["results"]
    for name in ("fusedrnn step", "torch cell", "fusedrnn sequence"):
        assert res[name]["median_us"] > 0
    assert res["ratios"]["torch_cell_over_step"] == pytest.approx(
        res["torch cell"]["median_us"] / res["fusedrnn step"]["median_us"])
    assert out["header"]["torch"]["cell"] == "torch.nn.LSTMCell x 2"
    assert "torch cell / layer.step" in proc.stdout
    bad = bench("--step", "--grid", "quick")
    assert bad.returncode == 2 and "--step times one configuration" in bad.stderr


def test_isa_children_go_case_by_case(tmp_path):
    """Each case runs in its own child per contender, so both sides of a ratio are timed within
    seconds of each other; the merged table keeps the cases in order."""
    if not cpu_has("avx2"):
        pytest.skip("this CPU or build has no avx2")
    path = tmp_path / "out.json"
    quick = [a if a != "lstm" else "lstm,gru" for a in QUICK]
    proc = bench("--isa", "avx2", *quick, "--contenders", "fusedrnn,numpy", "--json", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 case(s), each in a child process per contender" in proc.stderr
    out = json.loads(path.read_text())
    assert [c["case"]["cell"] for c in out["cases"]] == ["lstm", "gru"]
    for case in out["cases"]:
        assert case["validation"]["status"] == "ok"
        assert set(case["results"]) == {"fusedrnn", "numpy"}
        assert case["results"]["numpy"]["speedup"] == pytest.approx(
            case["results"]["numpy"]["median_ms"] / case["results"]["fusedrnn"]["median_ms"])
    assert "alternating" in out["header"]["isa"]["note"]


def test_the_case_flags_are_replaced_in_children():
    argv = ["--grid", "standard", "--dtype=float64", "--bidirectional", "--cell", "gru", "--repeats", "3"]
    assert isa._strip(argv, isa._CASE_FLAGS) == ["--repeats", "3"]
    case = Case("gru", 4, 5, 6, 7, layers=2, bidirectional=True, dtype="float64", mode="fwdbwd")
    assert isa._case_args(case) == ["--cell", "gru", "-B", "4", "-T", "5", "-I", "6", "-H", "7",
                                    "--layers", "2", "--dtype", "float64", "--mode", "fwdbwd",
                                    "--bidirectional"]
