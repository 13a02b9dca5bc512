"""(c) Binary sequence classification: LSTM(128) -> Dense(1, sigmoid), binary cross-entropy.

The task: is the handwritten digit odd?  scikit-learn's 8x8 digits, rows as 8 time steps.
Needs: pip install "fusedrnn[examples]".   Run: python examples/c_digits_binary.py [--epochs N]
"""

import argparse

from fusedrnn import LSTM, Dense, Recurrent, Sequential, datasets, optimizers


def build_model(features=8, hidden=128, seed=0, learning_rate=0.002):
    model = Sequential([
        Recurrent(LSTM(features, hidden)),
        Dense(hidden, 1, activation="sigmoid"),
    ], seed=seed)
    model.compile(optimizers.Adam(learning_rate), "binary_crossentropy", ["accuracy"])
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=2)
    args = p.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = datasets.load_digits()
    odd_train = (y_train % 2).astype("float32")[:, None]
    odd_test = (y_test % 2).astype("float32")[:, None]
    model = build_model(seed=args.seed)
    model.fit(x_train, odd_train, epochs=args.epochs, batch_size=args.batch_size,
              validation_split=0.15, verbose=args.verbose)
    loss, acc = model.evaluate(x_test, odd_test)
    print(f"odd-digit test: loss {loss:.4f}, accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
