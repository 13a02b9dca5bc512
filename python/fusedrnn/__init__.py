"""fusedrnn: fused LSTM, GRU and RNN kernels (forward and backward) for NumPy.

Conventions (shapes, gate order, lengths): docs/conventions.md and README.md.
"""

import sys as _sys

from ._blas import load_core as _load_core

_core = _load_core()

from . import ops, reference  # noqa: E402
from .layers import GRU, LSTM, RNN  # noqa: E402
from ._info import (build_info, cuda_available, cuda_device_count, empty_cache,  # noqa: E402
                    get_num_threads, set_num_threads)
from . import keras  # noqa: E402
from .keras import callbacks, losses, metrics, optimizers  # noqa: E402
from .keras.pieces import Dense, Dropout, Embedding, Recurrent  # noqa: E402
from .keras.models import Sequential  # noqa: E402
from . import bench  # noqa: E402

# The trainer lives in fusedrnn.keras and the benchmark in the package fusedrnn.bench; their
# former modules keep answering to their old names.
for _old, _new in (("models", keras.models), ("nn", keras.pieces), ("losses", losses),
                   ("metrics", metrics), ("optimizers", optimizers), ("callbacks", callbacks),
                   ("bench_cases", bench.cases), ("bench_contenders", bench.contenders),
                   ("bench_report", bench.report)):
    _sys.modules[f"{__name__}.{_old}"] = _new
    globals()[_old] = _new
del _old, _new

__version__ = "0.1.0"

__all__ = [
    "LSTM",
    "GRU",
    "RNN",
    "Sequential",
    "Dense",
    "Dropout",
    "Embedding",
    "Recurrent",
    "keras",
    "losses",
    "optimizers",
    "metrics",
    "callbacks",
    "ops",
    "reference",
    "build_info",
    "empty_cache",
    "cuda_available",
    "cuda_device_count",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]
