"""fusedrnn.keras: the trainer, laid out like Keras' public API.

    from fusedrnn.keras.models import Sequential
    from fusedrnn.keras.layers import LSTM, Dense, Dropout

Programs written for tf.keras / Keras 3 run with their import lines changed (what is not
supported raises a clear error naming it).  Inputs are batch-first NumPy arrays.
"""

from . import callbacks, losses, metrics, optimizers, pieces  # noqa: F401
from . import models  # noqa: F401
from .models import Sequential  # noqa: F401

__all__ = ["models", "layers", "optimizers", "losses", "metrics", "callbacks", "utils",
           "Sequential", "Model", "Input"]
