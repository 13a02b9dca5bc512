"""`fusedrnn bench --isa NAME`: every contender restricted to one instruction set, in one run.

torch fixes its kernels (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) and OpenBLAS its core
(OPENBLAS_CORETYPE, for fusedrnn's BLAS and NumPy's) when they load, so each contender runs in
a child process started with those variables set: the same command line minus --isa, with one
contender, the same seed (so the same weights and inputs), the same thread count, and a JSON
file the parent merges into one table.  fusedrnn's kernels are switched with _core.set_isa in
its child.  Each child reports what its libraries really chose; the header shows it.

The children run case by case: for every case, one child per contender, the contenders
alternating which goes first.  So both contenders of a case are timed within seconds of each
other: on a shared machine whose speed drifts over minutes, a whole grid of one contender and
then a whole grid of the other would compare different minutes.  (A child's start, about a
second with torch, is paid per case.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ISAS = {
    # name: (fusedrnn kernels, environment of every child)
    "baseline": ("baseline", {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                              "OPENBLAS_CORETYPE": "Nehalem"}),
    "avx2": ("avx2", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                      "OPENBLAS_CORETYPE": "Haswell"}),
    "avx512": ("avx512", {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
                          "OPENBLAS_CORETYPE": "SkylakeX"}),
}
HELP = ("run every contender on one instruction set: fusedrnn's kernels (set_isa), torch "
        "(ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) and OpenBLAS (OPENBLAS_CORETYPE: Nehalem, "
        "Haswell, SkylakeX), each contender in a child process; the header shows what each used")

# Flags the parent sets itself for each child (with how many values they take).
_PARENT_FLAGS = {"--isa": 1, "--contenders": 1, "--threads": 1, "--json": 1, "--csv": 1,
                 "--markdown": 1, "--plot": 1, "--isa-child": 1}
# The flags that choose cases, replaced by one case's own in each child.
_CASE_FLAGS = {"--grid": 1, "--cell": 1, "-B": 1, "-T": 1, "-I": 1, "-H": 1, "--layers": 1,
               "--bidirectional": 0, "--dtype": 1, "--mode": 1}


def check(name: str) -> str | None:
    """None when this build and CPU can run `name`, else why not."""
    from .. import _core

    before = _core.isa()
    try:
        _core.set_isa(ISAS[name][0])
    except ValueError as exc:
        return f"{exc} (best here: {_core.best_isa()})"
    finally:
        _core.set_isa(before)
    return None


def _strip(argv, flags=None):
    """argv without `flags` (default: the parent's) and their values."""
    flags = _PARENT_FLAGS if flags is None else flags
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        flag = a.split("=", 1)[0]
        if flag in flags:
            skip = 0 if "=" in a else flags[flag]
            continue
        out.append(a)
    return out


def _case_args(case) -> list:
    """The bench flags that select exactly `case`."""
    args = ["--cell", case.cell, "-B", str(case.B), "-T", str(case.T), "-I", str(case.I),
            "-H", str(case.H), "--layers", str(case.layers), "--dtype", case.dtype, "--mode", case.mode]
    return args + (["--bidirectional"] if case.bidirectional else [])


def enter_child(name: str) -> dict:
    """In a child: switch fusedrnn's kernels; return what every library chose (for the header)."""
    from .. import _core

    _core.set_isa(ISAS[name][0])
    record = {"isa": name, "env": {k: os.environ.get(k) for k in ISAS[name][1]},
              "fusedrnn": {"kernels": _core.isa(), "blas_core": _core.blas_corename()}}
    try:
        import threadpoolctl

        from .timing import _fusedrnn_blas_path

        ours = _fusedrnn_blas_path()
        record["numpy_blas"] = [i.get("architecture") for i in threadpoolctl.threadpool_info()
                                if i.get("user_api") == "blas" and os.path.realpath(i["filepath"]) != ours]
    except ImportError:
        record["numpy_blas"] = None
    if "torch" in sys.modules or _wants_torch():
        import torch

        record["torch"] = {"capability": torch.backends.cpu.get_cpu_capability()}
    return record


def _wants_torch() -> bool:
    argv = sys.argv
    return any(a == "torch" or a.endswith("=torch") for a in argv)


def describe(name: str, record: dict) -> str:
    """One header fragment: what the child of contender `name` ran on."""
    if name == "torch" and "torch" in record:
        return (f"torch {record['torch']['capability']} (ATEN_CPU_CAPABILITY={record['env']['ATEN_CPU_CAPABILITY']}, "
                f"ONEDNN_MAX_CPU_ISA={record['env']['ONEDNN_MAX_CPU_ISA']})")
    if name == "numpy":
        return f"numpy OpenBLAS {'/'.join(map(str, record.get('numpy_blas') or ['?']))}"
    f = record["fusedrnn"]
    return f"{name} kernels {f['kernels']}, OpenBLAS {f['blas_core']}"


def run_children(name: str, argv, contenders, threads: int, cases, out=sys.stderr) -> tuple:
    """Run each case in one child per contender under ISA `name`, the contenders alternating
    which goes first.  Returns ({contender: {"header": its first child's header, "cases": its
    result of every case}}, exit code of the worst child) or raises RuntimeError with a child's
    output."""
    env = dict(os.environ, **ISAS[name][1])
    base = _strip(list(argv), {**_PARENT_FLAGS, **_CASE_FLAGS})
    runs, worst = {c: {"cases": []} for c in contenders}, 0
    print(f"  {len(cases)} case(s), each in a child process per contender ({', '.join(contenders)}) "
          f"under --isa {name}, alternating which goes first ...", file=out, flush=True)
    with tempfile.TemporaryDirectory(prefix="fusedrnn-isa-") as tmp:
        for i, case in enumerate(cases):
            for contender in (contenders if i % 2 == 0 else contenders[::-1]):
                path = os.path.join(tmp, f"{contender}-{i}.json")
                cmd = [sys.executable, "-m", "fusedrnn", "bench", *base, *_case_args(case),
                       "--contenders", contender, "--threads", str(threads), "--json", path,
                       "--isa-child", name]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode not in (0, 1) or not os.path.exists(path):
                    raise RuntimeError(f"the {contender} child under --isa {name} failed on {case.label} "
                                       f"(exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
                worst = max(worst, proc.returncode)
                with open(path) as f:
                    record = json.load(f)
                if len(record["cases"]) != 1:
                    raise RuntimeError(f"the {contender} child under --isa {name} ran "
                                       f"{len(record['cases'])} cases for {case.label}, not one")
                runs[contender].setdefault("header", record["header"])
                runs[contender]["cases"].append(record["cases"][0])
    return runs, worst


def merge(runs: dict, contenders) -> list:
    """One list of case results with every contender's numbers (speed-ups against fusedrnn's
    median when fusedrnn ran)."""
    first = runs[contenders[0]]["cases"]
    merged = []
    for i, case in enumerate(first):
        result = dict(case, results={}, validation=dict(case["validation"], contenders={}))
        for name in contenders:
            theirs = runs[name]["cases"][i]
            result["results"][name] = theirs["results"][name]
            result["validation"]["contenders"].update(theirs["validation"]["contenders"])
            if theirs["validation"]["status"] != "ok":
                result["validation"]["status"] = theirs["validation"]["status"]
        ours = result["results"].get("fusedrnn", {}).get("median_ms")
        for entry in result["results"].values():
            entry["speedup"] = entry["median_ms"] / ours if ours and "median_ms" in entry else None
        merged.append(result)
    return merged


def run(args, cases, contenders, threads, head, note, write_files) -> int:
    """The parent of `bench --isa`: each contender in a child process restricted to the ISA, merged
    into one table and the files (write_files as the bench command writes them)."""
    from ..cli import EXIT_FAILED, EXIT_OK
    from . import report

    try:
        runs, worst = run_children(args.isa, args.argv, contenders, threads["requested"], cases)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    records = {name: runs[name]["header"]["isa_child"] for name in contenders}
    if "fusedrnn" in records:  # the header's fusedrnn line shows what its child ran
        f = records["fusedrnn"]["fusedrnn"]
        head["fusedrnn"] = dict(head["fusedrnn"], isa=f["kernels"], blas_core=f["blas_core"])
    head["isa"] = {"requested": args.isa, "contenders": records,
                   "note": "each case ran in one child process per contender, the contenders "
                           "alternating which went first"}
    results = merge(runs, contenders)
    table = report.Table(cases)
    lines = report.header_lines(head)
    lines.append(f"isa {args.isa}: " + " · ".join(describe(n, records[n]) for n in contenders))
    table.print_header(lines + ([note] if note else []))
    for case, result in zip(cases, results):
        table.print_case(result, case.shape_label, case.mode)
    exit_code = EXIT_FAILED if worst or any(r["validation"]["status"] != "ok" for r in results) else EXIT_OK
    write_files(args, head, results, complete=True, exit_code=exit_code)
    if args.plot:
        report.write_plot(args.plot, head, results)
    for flag in ("json", "csv", "markdown", "plot"):
        if getattr(args, flag):
            print(f"wrote {getattr(args, flag)}")
    return exit_code
