"""`fusedrnn bench` and `fusedrnn check`: validate fusedrnn against the float64 reference, then
time it beside the reference and torch.nn, and on the CUDA device beside torch.nn with cuDNN
(``--device cuda``: fusedrnn-cuda and torch-cuda).  One module per job:

    cases        what a case is, its flops, the named grids, its seeded inputs
    contenders   how fusedrnn, the NumPy reference, torch.nn, fusedrnn-cuda, torch-cuda (torch.nn
                 on CUDA) and onnxruntime run a case
    validation   validate first: every contender against the float64 reference
    timing       warm-up, round robin, medians and IQR, peak memory, other processes' load
    report       the header block, terminal table, JSON, CSV, markdown and plot
    cli          the `bench` and `check` subcommands (fusedrnn.cli dispatches to them)

The names of the former single module ``fusedrnn.bench`` stay importable from here.
"""

from . import cases, contenders, report, timing, validation
from .timing import (MEMORY_HELP, TIMING_HELP, Settings, estimate_call, memory_method, other_load,
                     peak_extra_bytes, run_case, set_threads, settle, statistics, time_contenders)
from .validation import TOLERANCE, max_error, validate, validation_summary

__all__ = [
    "cases", "contenders", "validation", "timing", "report",
    "Settings", "run_case", "validate", "validation_summary", "max_error", "TOLERANCE",
    "time_contenders", "estimate_call", "statistics", "settle", "set_threads", "memory_method",
    "peak_extra_bytes", "other_load", "MEMORY_HELP", "TIMING_HELP",
]
