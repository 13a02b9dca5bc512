"""fusedrnn.keras: the trainer, laid out like Keras' public API.

    from fusedrnn.keras.models import Sequential, Model, load_model
    from fusedrnn.keras.layers import LSTM, GRU, SimpleRNN, Dense, Dropout, Bidirectional, ...
    from fusedrnn.keras import optimizers, losses, metrics, callbacks, utils

Programs written for tf.keras / Keras 3 run with their import lines changed; what is not
supported raises an error naming it.  Inputs are batch-first NumPy arrays.
"""

from . import callbacks, losses, metrics, optimizers, pieces  # noqa: F401
from . import layers, models, utils  # noqa: F401
from .layers import Input  # noqa: F401
from .models import Model, Sequential, load_model  # noqa: F401

__all__ = ["models", "layers", "optimizers", "losses", "metrics", "callbacks", "utils",
           "Sequential", "Model", "Input", "load_model"]
