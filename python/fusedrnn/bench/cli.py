"""The `bench` and `check` subcommands of the `fusedrnn` command (fusedrnn.cli dispatches here).

    fusedrnn bench ...   validate, then time fusedrnn against the NumPy reference and torch.nn
                         (--device cuda: fusedrnn-cuda against torch.nn on CUDA, cuDNN)
    fusedrnn check       build facts and a quick parity self-test

Each is a pair: ``add_<name>(subparsers)`` declares its flags, ``run_<name>(args, parser) -> int``
runs it and returns the exit code (fusedrnn.cli's EXIT_* values).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from dataclasses import replace

import numpy as np

from .. import _device, build_info
from ..cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from . import isa, report, timing
from .cases import (CELLS, DEEPBENCH_HELP, DTYPES, FLOPS_HELP, GRIDS, MODES, STANDARD_SIZES, Case,
                    grid)
from .contenders import CONTENDERS, onnxruntime_available, torch_available, torch_cuda_unavailable
from .timing import MEMORY_HELP, TIMING_HELP
from .validation import TOLERANCE, validate


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return value


def _paragraphs(*texts) -> str:
    return "\n\n".join(textwrap.fill(t, width=96, break_on_hyphens=False) for t in texts)


# ----------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------

def add_bench(subparsers):
    standard = ", ".join(f"({b},{t},{h})" for b, t, h in STANDARD_SIZES)
    epilog = _paragraphs(
        "Cases: either --grid NAME, or a single case from -B/-T/-I/-H (defaults B=32, T=100, H=256, "
        "I=H); with neither, --grid quick. --cell, --mode, --dtype, --layers and --bidirectional apply "
        "to the grid's cases too. "
        "quick: each cell at B=16 T=20 I=H=64 in both modes, plus a 2-layer bidirectional lstm. "
        f"standard: each cell at (B,T,I=H) in {standard}, modes fwd and fwdbwd. " + DEEPBENCH_HELP,
        "Modes: fwd is inference (fusedrnn with training=False, torch under inference_mode; the "
        "numpy reference has no such switch and always keeps its cache). fwdbwd is a training "
        "step: the forward keeping what backward needs, then the backward from a fixed random dout, "
        "with gradients for the input, the initial states and every parameter (torch: autograd, "
        "gradients set to None between calls). Stacks run the single-layer op per layer and "
        "direction (torch: num_layers, bidirectional).",
        "Validation: before timing, every contender runs the case (T halved down to 8, then B down "
        "to 4, when the float64 oracle would be slow: over 1e10 flops, counting 16 per weight read "
        "per step) and its outputs and gradients "
        "are compared with fusedrnn.reference in float64 on the same values: max|error| / max(1, "
        f"max|oracle|) <= {TOLERANCE['float32']:g} (float32), {TOLERANCE['float64']:g} (float64). "
        "A case that fails is not timed and the exit code is 1.",
        "onnxruntime (--contenders ...,onnxruntime; needs onnx and onnxruntime): the case exported "
        "once by fusedrnn.onnx.export, run by an InferenceSession on the CPU provider with "
        "intra_op_num_threads = --threads, inter_op 1, sequential execution; inference only, so it "
        "is timed in fwd mode on float32 cases and left out of fwdbwd and float64 cases with a note.",
        "--device cuda: the contenders are fusedrnn (CPU), fusedrnn-cuda and torch-cuda. fusedrnn-cuda "
        "is fusedrnn with device='cuda', timed with CUDA events around the whole call; a case of "
        "one layer and one direction leaves its results on the device (copied to the host for "
        "validation only), a stacked or bidirectional one joins the layers' outputs on the host "
        "and that copying is timed. torch-cuda is torch.nn.LSTM/GRU/RNN "
        "(same num_layers, bidirectional, weights, inputs, states and dout) on torch's CUDA device, "
        "cuDNN where torch picks it (whatever torch runs is timed, float64 included), float32 at "
        "full precision (cuDNN's RNN TF32 off: TF32 products miss the float32 tolerance); timed "
        "with torch.cuda.Event pairs on the current stream, its results left on the device (copied "
        "to the host for validation only). Same warm-up, repeats, modes and dtype as every contender. The header shows torch's "
        "CUDA and cuDNN versions, whether cuDNN is enabled, and the GPU. Without torch, or with "
        "torch.cuda.is_available() False, torch-cuda is listed in every case as 'unavailable' with "
        "the reason and the rest still runs; naming it in --contenders is then a usage error. In an "
        "emulated build (FUSEDRNN_CUDA_EMULATION) the fusedrnn-cuda times are the host emulation's.",
        TIMING_HELP,
        FLOPS_HELP + " speed-up = a contender's median / fusedrnn's median.",
        MEMORY_HELP,
        "Output: a table on the terminal; --json and --csv add a header block (machine, CPU, cores, "
        "fusedrnn build_info, numpy/torch versions, torch-cuda's CUDA, cuDNN and GPU, threads, date, "
        "settings); all files are written "
        "atomically after every case. Exit codes: 0 ok, 1 validation failed, 2 usage error.",
    )
    p = subparsers.add_parser(
        "bench", help="time fusedrnn against the NumPy reference and torch.nn",
        description="Validate, then time fusedrnn's LSTM/GRU/RNN against the NumPy reference and "
                    "torch.nn on the same weights, inputs and thread count (--device cuda: "
                    "fusedrnn-cuda against torch.nn on CUDA with cuDNN).",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("cases")
    g.add_argument("--grid", choices=GRIDS, help="a named grid of cases (see below)")
    g.add_argument("--cell", help=f"comma-separated cells out of {','.join(CELLS)} (default: all)")
    g.add_argument("-B", dest="B", type=_positive_int, metavar="N", help="batch size (single case)")
    g.add_argument("-T", dest="T", type=_positive_int, metavar="N", help="time steps (single case)")
    g.add_argument("-I", dest="I", type=_positive_int, metavar="N", help="input size (single case; default H)")
    g.add_argument("-H", dest="H", type=_positive_int, metavar="N", help="hidden size (single case)")
    g.add_argument("--layers", type=_positive_int, metavar="N", help="stacked layers (default 1)")
    g.add_argument("--bidirectional", action="store_true", help="bidirectional layers")
    g.add_argument("--dtype", choices=DTYPES, help="float32 (default) or float64")
    g.add_argument("--mode", choices=("fwd", "fwdbwd", "both"),
                   help="fwd, fwdbwd, or both (default: both, or the grid's own modes)")
    g.add_argument("--list", action="store_true", help="print the cases and their flops, run nothing")
    g.add_argument("--step", action="store_true",
                   help="streaming latency instead: one layer.step call against torch's cell, and T "
                        "steps against one forward (defaults B=1, I=H=128, T=100, cell lstm)")
    g = p.add_argument_group("contenders and threads")
    g.add_argument("--contenders", metavar="LIST",
                   help="comma-separated out of " + ",".join(CONTENDERS) + " (default: "
                        "fusedrnn,numpy,torch; torch when importable; with --device cuda: "
                        "fusedrnn,fusedrnn-cuda,torch-cuda). onnxruntime runs the case "
                        "exported by fusedrnn.onnx.export, in fwd mode on float32 cases only (left "
                        "out of the others, with a note). torch-cuda is torch.nn on torch's CUDA "
                        "device (cuDNN); it needs torch with torch.cuda.is_available()")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: time fusedrnn-cuda and torch-cuda (torch.nn with cuDNN), both "
                        "with CUDA events, against fusedrnn on the CPU; torch-cuda is reported "
                        "unavailable, with the reason, when torch has no CUDA device; in an "
                        "emulated build the fusedrnn-cuda times are marked as emulated")
    g.add_argument("--threads", type=_positive_int, metavar="N",
                   help="threads for every contender (default: all usable cores)")
    g.add_argument("--isa", choices=tuple(isa.ISAS), help=isa.HELP)
    g.add_argument("--isa-child", choices=tuple(isa.ISAS), help=argparse.SUPPRESS)
    g = p.add_argument_group("timing")
    g.add_argument("--warmup", type=_positive_int, default=2, metavar="N",
                   help="untimed calls per contender before timing (default 2)")
    g.add_argument("--repeats", type=_positive_int, default=5, metavar="N",
                   help="minimum timed calls per contender (default 5)")
    g.add_argument("--min-time", type=_seconds, default=0.3, metavar="S",
                   help="minimum seconds of timed calls per contender (default 0.3)")
    g.add_argument("--numpy-limit", type=_seconds, default=30.0, metavar="S",
                   help="skip the numpy reference when it would need more than S seconds (default 30)")
    g.add_argument("--settle", type=_seconds, default=0.5, metavar="S",
                   help="longest wait for idle worker threads before each block (default 0.5)")
    g.add_argument("--seed", type=int, default=0, help="seed of the inputs and weights (default 0)")
    g.add_argument("--no-memory", action="store_true", help="skip the peak memory measurement")
    g = p.add_argument_group("output")
    g.add_argument("--json", metavar="PATH", help="write the results as JSON")
    g.add_argument("--csv", metavar="PATH", help="write the results as CSV ('# key: value' header lines)")
    g.add_argument("--markdown", metavar="PATH", help="write a short markdown table (for bench/ and README)")
    g.add_argument("--plot", metavar="PATH", help="bar chart of the speed-ups, .png/.svg/.pdf (needs matplotlib)")
    return p


def _split_names(text, allowed, flag, parser):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        parser.error(f"{flag} needs at least one name out of {','.join(allowed)}")
    for n in names:
        if n not in allowed:
            parser.error(f"{flag}: unknown name {n!r} (choose from {','.join(allowed)})")
    if len(set(names)) != len(names):
        parser.error(f"{flag}: a name is repeated in {text!r}")
    return tuple(names)


def _bench_cases(args, parser):
    single = any(v is not None for v in (args.B, args.T, args.I, args.H))
    if single and args.grid:
        parser.error("give either --grid or a single case (-B/-T/-I/-H), not both")
    cells = CELLS if args.cell is None else _split_names(args.cell, CELLS, "--cell", parser)
    modes = MODES if args.mode in (None, "both") else (args.mode,)
    if single:
        H = args.H or 256
        B, T, I = args.B or 32, args.T or 100, args.I or H
        cases = [Case(cell, B, T, I, H, mode=mode) for cell in cells for mode in modes]
    else:
        cases = [c for c in grid(args.grid or "quick") if c.cell in cells and c.mode in modes]
    overrides = {}
    if args.layers is not None:
        overrides["layers"] = args.layers
    if args.bidirectional:
        overrides["bidirectional"] = True
    if args.dtype is not None:
        overrides["dtype"] = args.dtype
    cases = [replace(c, **overrides) for c in cases]
    if not cases:
        parser.error("no case left: the grid has none for this --cell/--mode")
    return cases


def _cuda_note(parser):
    try:
        _device.check_device("cuda")
    except RuntimeError as exc:
        parser.error(f"--device cuda: {exc}")
    if build_info()["cuda_emulated"]:
        return ("device: EMULATED CUDA (FUSEDRNN_CUDA_EMULATION build): fusedrnn-cuda times are the "
                "host emulation's, not GPU performance")
    return "device: CUDA; fusedrnn-cuda and torch-cuda timed with CUDA events"


def _bench_contenders(args, parser):
    """(contender names, a note for the header or None, {name: why it is unavailable})."""
    cuda = args.device == "cuda" or "fusedrnn-cuda" in (args.contenders or "")
    cuda_note = _cuda_note(parser) if cuda else None
    if args.contenders is None:
        if cuda:
            # torch-cuda stays in the list when it cannot run: every case then shows why
            reason = torch_cuda_unavailable()
            unavailable = {"torch-cuda": reason} if reason else {}
            return ("fusedrnn", "fusedrnn-cuda", "torch-cuda"), cuda_note, unavailable
        names = tuple(n for n in CONTENDERS if n not in ("fusedrnn-cuda", "torch-cuda", "onnxruntime")
                      and (n != "torch" or torch_available()))
        note = None if torch_available() else "torch: not importable, left out (pip install 'fusedrnn[torch]')"
        return names, note, {}
    names = _split_names(args.contenders, CONTENDERS, "--contenders", parser)
    if "torch-cuda" in names:
        reason = torch_cuda_unavailable()
        if reason:
            parser.error(f"--contenders names torch-cuda (torch.nn on torch's CUDA device), which cannot "
                         f"run here: {reason}")
    if "torch" in names and not torch_available():
        parser.error("--contenders names torch, which is not importable (pip install 'fusedrnn[torch]')")
    if "onnxruntime" in names and not onnxruntime_available():
        parser.error("--contenders names onnxruntime, which needs the onnx and onnxruntime packages "
                     "(pip install onnx onnxruntime)")
    return names, cuda_note, {}


def _write_files(args, head, results, complete, exit_code):
    if args.json:
        report.write_atomic(args.json, report.to_json(head, results, complete, exit_code))
    if args.csv:
        report.write_atomic(args.csv, report.to_csv(head, results))
    if args.markdown:
        report.write_atomic(args.markdown, report.to_markdown(head, results))


def _run_step(args, parser) -> int:
    from . import step

    if args.grid or args.bidirectional or args.mode or args.device != "cpu":
        parser.error("--step times one configuration: use -B/-T/-I/-H, --cell, --layers, --dtype, "
                     "--threads, --seed, --repeats and --json (no --grid, --mode, --bidirectional, --device)")
    cells = ("lstm",) if args.cell is None else _split_names(args.cell, CELLS, "--cell", parser)
    use_torch = torch_available() and (args.contenders is None
                                       or "torch" in [n.strip() for n in args.contenders.split(",")])
    H = args.H or 128
    for cell in cells:
        step.run(cell, args.B or 1, args.I or H, H, args.T or 100, args.layers or 1,
                 args.dtype or "float32", args.threads or 1, args.seed, max(args.repeats, 15),
                 use_torch, args.json)
    return EXIT_OK


def run_bench(args, parser) -> int:
    if args.step:
        if args.isa:
            parser.error("--isa does not apply to --step (run it under the environment instead)")
        return _run_step(args, parser)
    cases = _bench_cases(args, parser)
    if args.list:
        for c in cases:
            v = c.validation_case()
            print(f"{c.label:<48} {c.flops / 1e9:10.3f} GFLOP per call   validated at T={v.T} B={v.B}")
        return EXIT_OK
    contenders, note, unavailable = _bench_contenders(args, parser)
    for flag in ("json", "csv", "markdown", "plot"):
        path = getattr(args, flag)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            parser.error(f"--{flag}: the folder of {path!r} does not exist")
    if args.plot:
        problem = report.check_plot_available(args.plot)
        if problem:
            parser.error(problem)

    if args.isa and not args.isa_child:
        if args.device != "cpu" or any(c.endswith("cuda") for c in contenders):
            parser.error("--isa restricts the CPU contenders; it does not apply to --device cuda")
        problem = isa.check(args.isa)
        if problem:
            parser.error(f"--isa {args.isa}: {problem}")
    child_record = isa.enter_child(args.isa_child) if args.isa_child else None

    settings = timing.Settings(contenders=contenders, warmup=args.warmup, repeats=args.repeats,
                              min_time=args.min_time, numpy_limit=args.numpy_limit, settle=args.settle,
                              seed=args.seed, memory=not args.no_memory, unavailable=unavailable)
    threads = timing.set_threads(args.threads or report.usable_cores(), contenders)
    head = report.header(args.argv, settings, threads)
    if child_record is not None:
        head["isa_child"] = child_record
    if args.isa and not args.isa_child:
        return isa.run(args, cases, contenders, threads, head, note, _write_files)
    table = report.Table(cases)
    table.print_header(report.header_lines(head) + ([note] if note else []))

    results, exit_code = [], EXIT_OK
    try:
        for case in cases:
            result = timing.run_case(case, settings)
            results.append(result)
            if result["validation"]["status"] != "ok":
                exit_code = EXIT_FAILED
            table.print_case(result, case.shape_label, case.mode)
            _write_files(args, head, results, complete=False, exit_code=None)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {len(results)} of {len(cases)} cases", file=sys.stderr)
        _write_files(args, head, results, complete=False, exit_code=EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    _write_files(args, head, results, complete=True, exit_code=exit_code)
    if args.plot:
        report.write_plot(args.plot, head, results)

    failed = [r["label"] for r in results if r["validation"]["status"] != "ok"]
    print()
    print(f"{len(results)} cases, {len(results) - len(failed)} validated and timed"
          + (f", {len(failed)} FAILED validation: " + "; ".join(failed) if failed else ""))
    for flag in ("json", "csv", "markdown", "plot"):
        if getattr(args, flag):
            print(f"wrote {getattr(args, flag)}")
    return exit_code


# ----------------------------------------------------------------------------
# check
# ----------------------------------------------------------------------------

# (B, T, I, H, layers, bidirectional): tiny ones, single and stacked, and one large enough for
# the kernels' threaded paths (over 0.2 MFLOP per step) and several input-projection chunks
_CHECK_SHAPES = ((3, 5, 7, 9, 1, False), (3, 5, 7, 9, 2, True), (64, 20, 32, 64, 1, False))


def add_check(subparsers):
    return subparsers.add_parser(
        "check", help="print build facts and run a quick parity self-test",
        description="Print fusedrnn.build_info() and versions, then compare every cell's forward "
                    "(inference and training) and backward with the float64 NumPy reference on "
                    "small cases, one and two layers, uni- and bidirectional, float32 and float64. "
                    "Exit code 1 when a comparison fails.")


def run_check(args, parser) -> int:
    print("fusedrnn build:")
    for key, value in build_info().items():
        print(f"  {key:<15} {value}")
    print(f"  {'numpy':<15} {np.__version__}")
    print(f"  {'python':<15} {sys.version.split()[0]}")
    print()
    print("parity with the float64 reference (max|error| / max(1, max|oracle|)):")
    failures = 0
    for cell in CELLS:
        for dtype in DTYPES:
            worst, count, failed = 0.0, 0, []
            for B, T, I, H, layers, bidirectional in _CHECK_SHAPES:
                for mode in MODES:
                    case = Case(cell, B, T, I, H, layers, bidirectional, dtype, mode)
                    outcome = validate(case, ("fusedrnn",))
                    count += 1
                    entry = outcome["contenders"]["fusedrnn"]
                    if outcome["status"] != "ok":
                        failed.append((case.label, entry))
                    else:
                        worst = max(worst, entry["max_error"])
            status = "ok" if not failed else "FAILED"
            print(f"  {cell:<5} {dtype:<8} {count - len(failed)}/{count} {status:<6} max error {worst:.1e}")
            for label, entry in failed:
                detail = entry.get("error") or f"{entry['worst']} max error {entry['max_error']:.2e}"
                print(f"      FAILED {label}: {detail}")
            failures += len(failed)
    print()
    print("all parity checks passed" if not failures else f"{failures} parity checks FAILED")
    return EXIT_FAILED if failures else EXIT_OK
