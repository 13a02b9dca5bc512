"""What `fusedrnn bench` writes: the header block, the terminal table, JSON, CSV and the plot.

Every file is written atomically (a temporary file in the same folder, then os.replace), and
rewritten after each case, so an interrupted run leaves the finished cases readable.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import platform
import shlex
import sys

import numpy as np

from .. import _files
from .cases import FLOPS_HELP
from .timing import MEMORY_HELP, TIMING_HELP, memory_method
from .validation import TOLERANCE, validation_summary

# Above this share of the CPUs taken by other processes during a case, the case gets a note;
# above this load average per core before the run, the header gets one.
NOISY_LOAD = 0.05
NOISY_LOAD_AVERAGE_PER_CORE = 0.5

# ----------------------------------------------------------------------------
# header
# ----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _numpy_blas() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # older NumPy: no mode="dicts"
        return "unknown"
    return " ".join(str(blas.get(k, "")) for k in ("name", "version")).strip() or "unknown"


def header(argv, settings, threads) -> dict:
    """The header block of every output: machine, builds, versions, threads, date, settings."""
    import fusedrnn

    head = {
        "tool": "fusedrnn bench",
        "command": shlex.join(["fusedrnn", "bench", *argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "logical_cores": os.cpu_count(),
            "usable_cores": usable_cores(),
            "load_average": _load_average(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "fusedrnn": fusedrnn.build_info(),
        "numpy": {"version": np.__version__, "blas": _numpy_blas()},
        "torch": None,
        "threads": threads,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(settings).items()},
        "methods": {
            "flops": FLOPS_HELP,
            "timing": TIMING_HELP,
            "memory": memory_method(),
            "memory_meaning": MEMORY_HELP,
            "validation": "each contender against fusedrnn.reference run in float64 on the same values; "
                          "error = max|actual - oracle| / max(1, max|oracle|) per output and gradient",
            "validation_tolerance": TOLERANCE,
            "speedup": "a contender's median time / fusedrnn's median time (above 1: fusedrnn is faster)",
        },
    }
    if "torch" in settings.contenders:
        import torch

        head["torch"] = {"version": torch.__version__, "mkldnn": bool(torch.backends.mkldnn.is_available())}
    if "torch-cuda" in settings.contenders:
        from .contenders import torch_cuda_info

        head["torch_cuda"] = torch_cuda_info()
    if "onnxruntime" in settings.contenders:
        import onnxruntime

        head["onnxruntime"] = {"version": onnxruntime.__version__}
    return head


def header_lines(head: dict) -> list:
    m, info, threads = head["machine"], head["fusedrnn"], head["threads"]
    torch = f" · torch {head['torch']['version']}" if head["torch"] else ""
    if head.get("onnxruntime"):
        torch += f" · onnxruntime {head['onnxruntime']['version']}"
    lines = [
        f"fusedrnn bench · {head['date']} · {m['cpu']} · {m['logical_cores']} logical cores "
        f"({m['usable_cores']} usable) · threads {threads['requested']}",
        f"fusedrnn {info['version']} (isa {info['isa']}, {info['blas']} {info['blas_core']}) · "
        f"numpy {head['numpy']['version']} ({head['numpy']['blas']}){torch}",
    ]
    if head.get("torch_cuda"):
        lines.append(torch_cuda_line(head["torch_cuda"]))
    for name, reason in head["settings"].get("unavailable", {}).items():
        if name != "torch-cuda" or not head.get("torch_cuda"):
            lines.append(f"{name}: unavailable: {reason}")
    load = m["load_average"]
    if load is not None and load[0] > NOISY_LOAD_AVERAGE_PER_CORE * m["logical_cores"]:
        lines.append(f"note: load average {load[0]:.2f} on {m['logical_cores']} cores before starting: "
                     "other processes are running, timings will be noisy")
    if not isinstance(threads.get("numpy"), int) and "numpy" in head["settings"]["contenders"]:
        lines.append(f"numpy threads: {threads['numpy']}")
    s = head["settings"]
    lines.append(f"timing: {s['warmup']} warm-up, >= {s['repeats']} calls and >= {s['min_time']} s per "
                 f"contender, round robin; median, IQR, min in ms")
    lines.append("GFLOP/s: forward 2*T*B*(I+H)*G*H per layer and direction, G = 4/3/1; fwdbwd counts 3x")
    lines.append("speed-up: contender median / fusedrnn median (above 1: fusedrnn is faster)")
    lines.append(f"peak MiB: extra memory of one call ({head['methods']['memory']}; see --help)")
    return lines


def torch_cuda_line(info: dict) -> str:
    """One line on the torch-cuda contender: why it is unavailable, or torch, CUDA, cuDNN, GPU."""
    if not info["available"]:
        return f"torch-cuda: unavailable: {info['reason']}"
    if not info["cudnn_available"]:
        cudnn = "no cuDNN (torch native kernels)"
    else:
        cudnn = f"cuDNN {info['cudnn_version']} " + ("enabled" if info["cudnn_enabled"]
                                                     else "DISABLED (torch native kernels)")
    return (f"torch-cuda: torch {info['torch']} (CUDA {info['cuda']}) on {info['device']} · {cudnn} · "
            f"float32 at full precision ({info['float32']}) · timed with CUDA events, results left on the device")


# ----------------------------------------------------------------------------
# terminal table
# ----------------------------------------------------------------------------

def _ms(value: float) -> str:
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.1f}"


class Table:
    """Prints one block of rows per case as the case finishes."""

    COLUMNS = (("contender", 13, "<"), ("median ms", 10, ">"), ("IQR ms", 8, ">"), ("min ms", 9, ">"),
               ("GFLOP/s", 8, ">"), ("speed-up", 8, ">"), ("peak MiB", 9, ">"))

    def __init__(self, cases, out=None):
        self.out = out or sys.stdout
        self.width = max([len(c.shape_label) for c in cases] + [len("case")])

    def _line(self, case: str, mode: str, cells) -> str:
        parts = [f"{case:<{self.width}}", f"{mode:<6}"]
        parts += [f"{text:{align}{width}}" for text, (_, width, align) in zip(cells, self.COLUMNS)]
        return "  ".join(parts).rstrip()

    def print_header(self, lines):
        for line in lines:
            print(line, file=self.out)
        print(file=self.out)
        print(self._line("case", "mode", [c[0] for c in self.COLUMNS]), file=self.out)
        self.out.flush()

    def print_case(self, result: dict, shape_label: str, mode: str):
        val = result["validation"]
        first = True
        for name, r in result["results"].items():
            label, m = (shape_label, mode) if first else ("", "")
            first = False
            if r["status"] == "ok":
                speed = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
                peak = "n/a" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2**20:.1f}"
                cells = [name, _ms(r["median_ms"]), _ms(r["iqr_ms"]), _ms(r["min_ms"]),
                         f"{r['gflops']:.1f}", speed, peak]
                print(self._line(label, m, cells), file=self.out)
            elif r["status"].startswith("unavailable"):  # the reason is in the header
                print(self._line(label, m, [name]) + "  unavailable (see the header)", file=self.out)
            elif r["status"] == "skipped (slow)":
                print(self._line(label, m, [name]) + f"  skipped (slow: ~{r['estimated_ms'] / 1e3:.1f} s per call)",
                      file=self.out)
            else:
                print(self._line(label, m, [name]) + f"  {r['status']}", file=self.out)
        indent = f"{'':<{self.width}}  {'':<6}  "
        if val["status"] != "ok":
            print(indent + validation_summary(val), file=self.out)
        load = result.get("other_load")
        if load is not None and load > NOISY_LOAD:
            print(indent + f"note: other processes took {load:.0%} of the CPU time during this case; "
                  "its timings are unreliable", file=self.out)
        falls = result["results"].get("fusedrnn", {}).get("guard_fallbacks")
        if falls:
            print(indent + f"note: fusedrnn's kernels fell back to one thread {falls} time{'s' * (falls > 1)} "
                  "during this case (the cores looked busy: other processes, or a VM's lost time); its "
                  "calls mix one- and multi-thread times, so read its ratios with care", file=self.out)
        self.out.flush()


# ----------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------

def write_atomic(path, data, mode="w"):
    """Write text or bytes to path atomically (temporary file + rename)."""
    _files.write_atomic(path, lambda f: f.write(data), text="b" not in mode)


def to_json(head: dict, results: list, complete: bool, exit_code: int | None) -> str:
    """{"header": ..., "cases": [run_case results], "complete": bool, "exit_code": int | null}."""
    return json.dumps({"header": head, "cases": results, "complete": complete, "exit_code": exit_code},
                      indent=1, allow_nan=False, default=_jsonable) + "\n"


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


RESULT_FIELDS = ("status", "median_ms", "q1_ms", "q3_ms", "iqr_ms", "min_ms", "calls", "gflops",
                 "speedup", "peak_bytes", "guard_fallbacks")
CSV_FIELDS = ("cell", "B", "T", "I", "H", "layers", "bidirectional", "dtype", "mode", "flops",
              "validation", "validation_max_error", "contender") + RESULT_FIELDS


def _flatten(prefix: str, value, out: list):
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=_jsonable)
        out.append(f"# {prefix}: " + " ".join(str(text).split()))


def to_csv(head: dict, results: list) -> str:
    """'# key: value' header lines, then one row per case and contender."""
    lines = []
    _flatten("", head, lines)
    buf = io.StringIO()
    buf.write("\n".join(lines) + "\n")
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for res in results:
        val = res["validation"]
        worst = [r["max_error"] for r in val["contenders"].values() if "max_error" in r]
        for name, r in res["results"].items():
            row = dict(res["case"], flops=res["flops"], validation=val["status"],
                       validation_max_error=max(worst) if worst else "", contender=name)
            row.update({k: ("" if r.get(k) is None else r[k]) for k in RESULT_FIELDS if k in r})
            writer.writerow(row)
    return buf.getvalue()


def to_markdown(head: dict, results: list) -> str:
    """A short table for bench/ and the README: one row per case, the machine above it."""
    m, info = head["machine"], head["fusedrnn"]
    torch = f", torch {head['torch']['version']}" if head["torch"] else ""
    if head.get("onnxruntime"):
        torch += f", onnxruntime {head['onnxruntime']['version']}"
    if head.get("torch_cuda"):
        torch += "; " + torch_cuda_line(head["torch_cuda"])
    names = head["settings"]["contenders"]
    lines = [
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores; threads: {head['threads']['requested']}; "
        f"fusedrnn {info['version']} (isa {info['isa']}, BLAS {info['blas_core']}), numpy "
        f"{head['numpy']['version']}{torch}; {head['date']}.",
        f"Command: `{head['command']}`. Median ms of each contender; GFLOP/s of fusedrnn; "
        "x = speed-up of fusedrnn over the contender.",
        "",
    ]
    columns = ["case", "mode"]
    for name in names:
        columns.append(f"{name} ms")
        columns.append("GFLOP/s" if name == "fusedrnn" else f"x {name}")
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(columns) - 2)) + "|")
    for res in results:
        case = res["label"].rsplit(" ", 1)
        row = [case[0], case[1]]
        for name in names:
            r = res["results"].get(name, {})
            if r.get("status") == "ok":
                row.append(_ms(r["median_ms"]))
                if name == "fusedrnn":
                    row.append(f"{r['gflops']:.1f}")
                else:
                    row.append("-" if r["speedup"] is None else f"{r['speedup']:.2f}")
            else:
                status = r.get("status", "-")
                if status.startswith("unavailable"):
                    status = "unavailable"  # the reason is in the line above the table
                elif res["validation"]["status"] != "ok":
                    status = "FAILED"
                row += [status, ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


PLOT_FORMATS = (".png", ".svg", ".pdf")


def check_plot_available(path) -> str | None:
    """None when the plot can be written to path, else the message to show."""
    if os.path.splitext(os.fspath(path))[1].lower() not in PLOT_FORMATS:
        return f"--plot: the file name must end in {', '.join(PLOT_FORMATS)}, got {os.fspath(path)!r}"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib, which is not installed (pip install 'fusedrnn[plot]')"
    return None


def write_plot(path, head: dict, results: list):
    """Bar chart of fusedrnn's speed-up over each other contender, per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in results]
    others = [n for n in head["settings"]["contenders"] if n != "fusedrnn"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(labels) * max(1, len(others)) + 2), 4.8))
    width = 0.8 / max(1, len(others))
    for i, name in enumerate(others):
        values = [(r["results"].get(name) or {}).get("speedup") or 0.0 for r in results]
        positions = [x + (i - (len(others) - 1) / 2) * width for x in range(len(labels))]
        bars = ax.bar(positions, values, width, label=f"over {name}")
        ax.bar_label(bars, labels=[f"{v:.2g}x" if v else "" for v in values], fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("fusedrnn speed-up (contender time / fusedrnn time)")
    ax.set_title(f"fusedrnn speed-up · {head['machine']['cpu']} · {head['threads']['requested']} threads",
                 fontsize=9)
    if others:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fmt = os.path.splitext(os.fspath(path))[1][1:].lower()
    try:
        _files.write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=120))
    finally:
        plt.close(fig)
