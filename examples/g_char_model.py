"""(g) A character-level language model that generates text, sampling with a temperature.

Embedding -> 2-layer LSTM (every step, state carried across chunks: truncated backpropagation
through time) -> Dense(vocab, softmax).  By default it reads the Python standard library's
own sources, so it runs on any Python install.  This is `fusedrnn train`; every flag of
`fusedrnn train --help` works here too.

Run: python examples/g_char_model.py [--text FILE] [--epochs N] [--temperature T]
"""

import sys

from fusedrnn.train_cli import build_model, generate, main  # noqa: F401  (build_model: tests)

if __name__ == "__main__":
    sys.exit(main())
