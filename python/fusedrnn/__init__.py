"""fusedrnn: fused LSTM, GRU and RNN kernels (forward and backward) for NumPy.

Conventions (shapes, gate order, lengths): docs/conventions.md and README.md.
"""

from ._blas import load_core as _load_core

_core = _load_core()

from . import ops, reference  # noqa: E402
from .layers import GRU, LSTM, RNN  # noqa: E402
from ._info import (build_info, cuda_available, cuda_device_count, empty_cache,  # noqa: E402
                    get_num_threads, set_num_threads)
from . import callbacks, losses, metrics, optimizers  # noqa: E402
from .nn import Dense, Dropout, Embedding, Recurrent  # noqa: E402
from .models import Sequential  # noqa: E402

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
