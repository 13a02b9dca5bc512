"""(e) A GRU model on variable-length sequences: sktime's JapaneseVowels (9 speakers, 12 LPC
coefficients per frame, 7 to 29 frames).  The padding is never read: lengths go to fit,
evaluate and predict, and the GRU's last valid step feeds the classifier.

Needs: pip install "fusedrnn[examples]".   Run: python examples/e_vowels_gru.py [--epochs N]
"""

import argparse

from fusedrnn import GRU, Dense, Dropout, Recurrent, Sequential, datasets, optimizers


def build_model(features=12, classes=9, hidden=64, seed=0, learning_rate=0.003):
    model = Sequential([
        Recurrent(GRU(features, hidden)),
        Dropout(0.3),
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
              validation_data=(x_test, y_test, len_test), verbose=args.verbose)
    loss, acc = model.evaluate(x_test, y_test, lengths=len_test)
    print(f"JapaneseVowels test: loss {loss:.4f}, accuracy {acc:.4f} ({len(x_test)} utterances)")
    return acc


if __name__ == "__main__":
    main()
