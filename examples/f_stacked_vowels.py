"""(f) A stacked, bidirectional model: two recurrent layers, the first returning every step to
the second, on sktime's JapaneseVowels with variable lengths.  (A stack can also be one layer
object: LSTM(..., num_layers=2, bidirectional=True).)

Needs: pip install "fusedrnn[examples]".   Run: python examples/f_stacked_vowels.py [--epochs N]
"""

import argparse

from fusedrnn import LSTM, Dense, Recurrent, Sequential, datasets, optimizers


def build_model(features=12, classes=9, hidden=32, seed=0, learning_rate=0.003):
    model = Sequential([
        Recurrent(LSTM(features, hidden, bidirectional=True), return_sequences=True),
        Recurrent(LSTM(2 * hidden, hidden)),
        Dense(hidden, classes, activation="softmax"),
    ], seed=seed)
    model.compile(optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", ["accuracy"])
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=2)
    args = p.parse_args(argv)

    (x_train, y_train, len_train), (x_test, y_test, len_test) = datasets.load_japanese_vowels()
    steps = -(-len(x_train) // args.batch_size) * args.epochs
    model = build_model(seed=args.seed, learning_rate=optimizers.CosineDecay(0.003, steps))
    model.fit(x_train, y_train, lengths=len_train, epochs=args.epochs, batch_size=args.batch_size,
              verbose=args.verbose)
    model.summary()
    loss, acc = model.evaluate(x_test, y_test, lengths=len_test)
    print(f"JapaneseVowels test (stacked bidirectional): loss {loss:.4f}, accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
