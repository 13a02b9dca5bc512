"""fusedrnn: fused LSTM, GRU and RNN kernels (forward and backward) for NumPy.

Conventions (shapes, gate order, lengths): docs/conventions.md and README.md.
"""

import sys as _sys


def _installed_version() -> str:
    # The version is written once, in pyproject.toml; the installed package's metadata has it.
    try:
        from importlib.metadata import version

        return version("fusedrnn")
    except Exception:  # e.g. run from a source tree with no metadata: never fail the import
        return "0+unknown"


__version__ = _installed_version()

from ._blas import load_core as _load_core  # noqa: E402

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
from . import onnx  # noqa: E402  (fusedrnn.onnx imports the onnx package only when used)

# The trainer lives in fusedrnn.keras and the benchmark in the package fusedrnn.bench; their
# former modules keep answering to their old names.
for _old, _new in (("models", keras.models), ("nn", keras.pieces), ("losses", losses),
                   ("metrics", metrics), ("optimizers", optimizers), ("callbacks", callbacks),
                   ("bench_cases", bench.cases), ("bench_contenders", bench.contenders),
                   ("bench_report", bench.report)):
    _sys.modules[f"{__name__}.{_old}"] = _new
    globals()[_old] = _new
del _old, _new

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
    "onnx",
    "build_info",
    "empty_cache",
    "cuda_available",
    "cuda_device_count",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]
